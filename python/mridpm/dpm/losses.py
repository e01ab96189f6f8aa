"""Training objectives: discrete-time eps / x0 / v regression, continuous-time denoising score
matching (optionally likelihood-weighted, Song et al. 2021b), and condition dropout for
classifier-free guidance."""

from __future__ import annotations

import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm.schedules import ContinuousSchedule, DiscreteSchedule


def _per_sample(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """Host values as a (batch, 1, ...) tensor that broadcasts against like."""
    t = torch.tensor(values, dtype=torch.float64).to(like.device, like.real.dtype)
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error (complex values count as pairs)."""
    d = a - b
    d = torch.view_as_real(d) if d.is_complex() else d
    return d.square().reshape(d.shape[0], -1).mean(1)


def diffusion_loss(model: torch.nn.Module, x0: torch.Tensor, schedule: DiscreteSchedule, *,
                   prediction: str = "eps", generator: torch.Generator | None = None,
                   model_kwargs: dict | None = None, t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch of ||model(x_t, t) - target||^2 with t uniform over training steps and
    target the noise, the clean sample or v = alpha eps - sigma x0, as prediction says. t and noise
    may be given (drawn elsewhere, e.g. for a whole data-parallel batch) instead of drawn here."""
    if param.check_prediction(prediction) == "score":
        raise ValueError("discrete-time training regresses eps, x0 or v; use dsm_loss for scores")
    if t is None:
        t = torch.randint(0, schedule.num_train_timesteps, (x0.shape[0],), generator=generator)
    t = t.cpu()
    abar = schedule.alphas_cumprod[t]
    alpha, sigma = _per_sample(abar.sqrt().tolist(), x0), _per_sample((1 - abar).sqrt().tolist(), x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    noise = noise.to(x0.device, x0.dtype)
    x_t = alpha * x0 + sigma * noise
    target = {"eps": noise, "x0": x0, "v": alpha * noise - sigma * x0}[prediction]
    return _mse(model(x_t, t.to(x0.device), **(model_kwargs or {})), target).mean()


def dsm_loss(model: torch.nn.Module, x0: torch.Tensor, schedule: ContinuousSchedule, *,
             prediction: str = "score", likelihood_weighting: bool = False, t_min: float = 1e-5,
             generator: torch.Generator | None = None, model_kwargs: dict | None = None) -> torch.Tensor:
    """Denoising score matching: lambda(t) ||score(x_t, t) + eps / sigma||^2, t ~ U(t_min, 1), with
    lambda = sigma^2 or, with likelihood_weighting, g(t)^2 (which bounds the NLL)."""
    param.check_prediction(prediction)
    t = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64) * (1 - t_min) + t_min
    coef = [schedule.alpha_sigma(v) for v in t.tolist()]
    alpha, sigma = _per_sample([c[0] for c in coef], x0), _per_sample([c[1] for c in coef], x0)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = alpha * x0 + sigma * noise
    out = model(x_t, t.to(x0.device, torch.float32), **(model_kwargs or {}))
    ab = [param.score_coeffs(prediction, a, s) for a, s in coef]
    score = _per_sample([c[0] for c in ab], x0) * x_t + _per_sample([c[1] for c in ab], x0) * out
    weight = [schedule.sde(v)[1] for v in t.tolist()] if likelihood_weighting else [s * s for _, s in coef]
    return (torch.tensor(weight, dtype=torch.float64).to(x0.device) * _mse(score, -noise / sigma)).mean()


def drop_condition(cond: torch.Tensor, p: float, null: torch.Tensor | float | int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Replaces each sample's condition by null with probability p (classifier-free training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must lie in [0, 1], got {p}")
    drop = (torch.rand(cond.shape[0], generator=generator) < p).to(cond.device)
    null_t = torch.as_tensor(null, dtype=cond.dtype, device=cond.device)
    return torch.where(drop.reshape(-1, *([1] * (cond.dim() - 1))), null_t, cond)
