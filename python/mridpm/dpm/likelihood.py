"""Exact likelihood through the probability-flow ODE (Song et al. 2021, Appendix D.2):

    log p_0(x) = log p_1(x_1) + int_0^1 div(dx/dt) dt,

integrated by Dormand-Prince, with the divergence from the Hutchinson-Skilling estimator
(one fixed Gaussian or Rademacher probe per sample) or computed exactly for small data.
"""

from __future__ import annotations

import math

import torch

from mridpm.dpm._common import Model, check_continuous
from mridpm.dpm.ode_solvers import dopri5
from mridpm.dpm.schedules import ContinuousSchedule
from mridpm.dpm.sde import ode_drift


def log_likelihood(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, prediction: str = "score",
                   t_min: float = 1e-5, estimator: str = "gaussian", rtol: float = 1e-5, atol: float = 1e-5,
                   generator: torch.Generator | None = None, model_kwargs: dict | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample negative log-likelihood of x (taken as a sample at t_min) in nats, and in bits per
    dimension. estimator: "gaussian" or "rademacher" probes, or "exact" (one backward pass per
    dimension). Real data; scale and dequantize outside (for 8-bit images add 8 bits and the
    log of the scaling)."""
    check_continuous(schedule, prediction)
    if estimator not in ("gaussian", "rademacher", "exact"):
        raise ValueError(f"estimator must be 'gaussian', 'rademacher' or 'exact', got {estimator!r}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"log_likelihood needs real floating-point data, got {x.dtype}")
    batch, dims = x.shape[0], math.prod(x.shape[1:])
    probe = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    if estimator == "rademacher":
        probe = probe.sign()

    def fun(t: float, state: list[torch.Tensor]) -> list[torch.Tensor]:
        a, b = ode_drift(schedule, prediction, t)
        with torch.enable_grad():
            xg = state[0].detach().requires_grad_(True)
            tt = torch.full((batch,), t, dtype=torch.float32, device=x.device)
            drift = a * xg + b * model(xg, tt, **(model_kwargs or {}))
            if estimator == "exact":
                flat = drift.reshape(batch, -1)
                div = sum(torch.autograd.grad(flat[:, j].sum(), xg, retain_graph=True)[0].reshape(batch, -1)[:, j]
                          for j in range(dims))
            else:
                jvp = torch.autograd.grad((drift * probe).sum(), xg)[0]
                div = (jvp * probe).reshape(batch, -1).sum(1)
        return [drift.detach(), div.detach()]

    (x1, delta), _ = dopri5(fun, [x, torch.zeros(batch, dtype=x.dtype, device=x.device)], t_min, 1.0,
                            rtol=rtol, atol=atol)
    std = schedule.prior_std
    prior = -0.5 * dims * math.log(2 * math.pi * std * std) - x1.reshape(batch, -1).square().sum(1) / (2 * std * std)
    nll = -(prior + delta)
    return nll, nll / (dims * math.log(2))
