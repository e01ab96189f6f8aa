"""What the image tasks share: resolving a prior, checking images against it, noising to a chosen
level and running DDIM from there, with or without conditions and an x0 correction per step."""

from __future__ import annotations

import os

import torch

from mridpm.dpm._common import ModelRun
from mridpm.dpm.discrete import Denoised, ddim_update, sample_ddim
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.priors import Prior, load_prior
from mridpm.ops.step import fused_step, randn
from mridpm.random import Generator


def as_prior(prior: Prior | str | os.PathLike, device: str | torch.device | None = None) -> Prior:
    """A Prior as given, or a bundled prior / `mridpm train` run directory loaded by name."""
    if isinstance(prior, Prior):
        return prior
    return load_prior(prior, device or "cpu")


def check_images(x: object, prior: Prior, name: str = "images", channels: int | None = None) -> torch.Tensor:
    """x as a finite float (batch, C, *spatial) tensor the prior's UNet takes: C its input channels (or
    `channels`), spatial dimensions as many as the UNet's and divisible by its downsampling."""
    cfg = prior.model.config
    c = cfg.in_channels if channels is None else channels
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != cfg.dims + 2 or x.shape[1] != c or x.shape[0] == 0:
        raise ValueError(f"{name} must be (batch, {c}, *{cfg.dims} spatial) for this model, got {tuple(x.shape)}")
    down = 2 ** (len(cfg.channel_mult) - 1)
    if any(n % down for n in x.shape[2:]):
        raise ValueError(f"{name}' spatial sizes {tuple(x.shape[2:])} must be divisible by {down} for this UNet")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    return x


def image_shape(prior: Prior, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The spatial shape to generate: given, or the size the prior was trained on."""
    if shape is not None:
        return tuple(int(n) for n in shape)
    size = prior.info.get("image_size")
    if size is None:
        raise ValueError("this prior does not record its image size; pass shape")
    return tuple(int(n) for n in size)


def timesteps_from(schedule: DiscreteSchedule, t_start: int, steps: int) -> list[int]:
    """`steps` strictly decreasing timesteps from t_start to 0 (fewer when t_start is small)."""
    if not 0 <= t_start < schedule.num_train_timesteps:
        raise ValueError(f"t_start must lie in [0, {schedule.num_train_timesteps - 1}], got {t_start}")
    if steps < 1:
        raise ValueError(f"steps must be positive, got {steps}")
    ts = torch.linspace(t_start, 0, min(steps, t_start + 1)).round().long().tolist()
    return sorted(set(ts), reverse=True)


def noise_to(prior: Prior, x0: torch.Tensor, t: int, noise: torch.Tensor | None = None,
             generator: Generator | None = None) -> torch.Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise (Philox noise when none is given)."""
    a, s = prior.schedule.alpha_sigma(t)
    if noise is None:
        noise = randn(tuple(x0.shape), generator=generator, device=x0.device)
    return fused_step([x0, noise.to(x0.dtype)], [a, s])


def data_range(prior: Prior) -> tuple[float, float]:
    """The (low, high) range of the prior's training data, what every clean estimate is clipped to."""
    lo, hi = prior.info.get("data_range", [-1.0, 1.0])
    return float(lo), float(hi)


def ddim_step(prior: Prior, x: torch.Tensor, t: int, t_to: int, *, eta: float = 0.0,
              generator: Generator | None = None, correct: Denoised | None = None,
              **model_kwargs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step from timestep t to t_to (-1: the clean end) with the prior's model: (x_to, the
    step's x0), x0 clipped to the prior's data range and replaced by correct(x0, t) when given, the
    update's eps re-derived from that x0 (dpm.ddim_update, direction "x0")."""
    out = ModelRun(prior.model, model_kwargs, discrete=True)(x, t)
    hook = None if correct is None else lambda x0: correct(x0, t)
    return ddim_update(x, out, prior.schedule.alpha_bar(t), prior.schedule.alpha_bar(t_to),
                       prediction=prior.prediction, eta=eta, generator=generator, clip=data_range(prior),
                       denoised=hook, direction="x0")


def ddim(prior: Prior, x: torch.Tensor, timesteps: list[int], *, generator: Generator | None = None,
         eta: float = 0.0, correct: Denoised | None = None, progress: bool = False, **model_kwargs: torch.Tensor
         ) -> torch.Tensor:
    """DDIM from x at timesteps[0] down to a clean sample with the prior's model (see ddim_step): the
    prior's card given to dpm.sample_ddim. Refuses a batch that would not fit in memory."""
    check_memory(prior, x.shape[0], tuple(x.shape[2:]))
    return sample_ddim(prior.model, x, prior.schedule, timesteps=timesteps, generator=generator, progress=progress,
                       prediction=prior.prediction, eta=eta, clip=data_range(prior), model_kwargs=model_kwargs,
                       denoised=correct, direction="x0")


def check_memory(prior: Prior, batch: int, shape: tuple[int, ...]) -> None:
    """Refuses (ValueError with the estimate) sampling `batch` images of `shape` when one UNet pass
    would not fit in the free memory of the prior's device."""
    from mridpm._memory import require, unet_bytes

    device = next(prior.model.parameters()).device
    require(unet_bytes(prior.model.config, batch, shape), f"sampling {batch} images of {shape}", device)


def to_unit(x: torch.Tensor, prior: Prior) -> torch.Tensor:
    """Model range ([-1, 1]) -> image range [0, 1]."""
    lo, hi = data_range(prior)
    return (x - lo) / (hi - lo)


def from_unit(x: torch.Tensor, prior: Prior) -> torch.Tensor:
    """Image range [0, 1] -> model range."""
    lo, hi = data_range(prior)
    return x * (hi - lo) + lo


def check_unit_images(x: object, name: str = "images", dims: int = 2) -> torch.Tensor:
    """x as a finite real (N, C, *spatial) tensor with values in [0, 1] (images normalised to peak 1)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != dims + 2 or x.numel() == 0:
        raise ValueError(f"{name} must be (N, C, *{dims} spatial), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contain NaN or Inf")
    if float(x.min()) < -0.5 or float(x.max()) > 1.5:
        raise ValueError(f"{name} must be normalised to [0, 1] (peak 1), got values in "
                         f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return x.float()
