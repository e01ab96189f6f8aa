"""Priors trained on the sigma scale (VE SDEs, SMLD, EDM: x = x0 + sigma * n) run by every sampler
here, which work on the discrete VP scale (x = sqrt(abar) x0 + sqrt(1 - abar) n): the VP schedule with
abar_t = 1 / (1 + sigma_t^2) and the network seen as an eps-model. Both scales hold the same noise n,
so the conversion is exact: x_sigma = x_vp * sqrt(1 + sigma^2)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from mridpm.dpm.schedules import DiscreteSchedule

# net(x on the sigma scale, sigma (batch,) float32, index (batch,) int64 into sigmas) -> the network's output
SigmaNet = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
OUTPUTS = ("score", "x0", "eps")


def discrete_from_sigmas(sigmas: Sequence[float] | torch.Tensor) -> DiscreteSchedule:
    """The VP schedule whose training step t has noise-to-signal ratio sigmas[t] (strictly increasing,
    positive): abar_t = 1 / (1 + sigmas[t]^2)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if s.numel() == 0 or not bool(torch.isfinite(s).all()) or bool((s <= 0).any()) or bool((s.diff() <= 0).any()):
        raise ValueError("sigmas must be positive, finite and strictly increasing")
    abar = 1.0 / (1.0 + s**2)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return DiscreteSchedule(1.0 - abar / prev)


class SigmaPrior(nn.Module):
    """A sigma-scale network as an eps-model on the VP scale of discrete_from_sigmas(sigmas): x is
    rescaled to x * sqrt(1 + sigma_t^2) before the call, and a score s or denoised x0 is turned into
    eps = -sigma s or (x_sigma - x0) / sigma."""

    def __init__(self, net: SigmaNet | nn.Module, sigmas: Sequence[float] | torch.Tensor, output: str) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.net, self.output = net, output
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1), persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        index = torch.as_tensor(t, device=x.device).reshape(-1).round().long().expand(x.shape[0])
        sigma = self.sigmas.to(x.device)[index]
        shape = (-1,) + (1,) * (x.dim() - 1)
        xs = x * torch.sqrt(1.0 + sigma**2).to(x.dtype).view(shape)
        sig = sigma.to(x.dtype).view(shape)
        out = self.net(xs, sigma.float(), index, **kwargs)
        if self.output == "score":
            return -sig * out
        if self.output == "x0":
            return (xs - out) / sig
        return out
