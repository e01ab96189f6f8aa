"""Noise schedules, all in float64 on the host.

Every schedule states the marginal x_t = alpha(t) x_0 + sigma(t) eps. Discrete schedules
index t by training step 0..T-1 (t = -1 is the clean end, alpha = 1, sigma = 0);
continuous ones take t in (0, 1] and also give the forward SDE dx = f(t) x dt + g(t) dW.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

SPACINGS = ("linspace", "leading", "trailing")
BETA_SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")


def make_betas(name: str, num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               max_beta: float = 0.999) -> torch.Tensor:
    """Betas of a named discrete schedule (float64): linear (DDPM), scaled_linear (latent
    diffusion), cosine (Nichol & Dhariwal, betas clipped at max_beta) or sigmoid (GeoDiff)."""
    if name not in BETA_SCHEDULES:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {BETA_SCHEDULES}")
    if not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    n = num_train_timesteps
    if name == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if name == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    if name == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, n, dtype=torch.float64)) * (beta_end - beta_start) + beta_start

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float64)


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete-time schedule from its betas; alphas_cumprod stays in float64."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor = field(init=False, repr=False)
    _abar: list[float] = field(init=False, repr=False, compare=False)  # host floats for per-step lookups

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if betas.numel() == 0 or not bool(torch.isfinite(betas).all()):
            raise ValueError("betas must be a non-empty sequence of finite numbers")
        if bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("every beta must lie in (0, 1)")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))
        object.__setattr__(self, "_abar", self.alphas_cumprod.tolist())

    @classmethod
    def from_name(cls, name: str = "linear", num_train_timesteps: int = 1000, **kwargs: float) -> DiscreteSchedule:
        """A named schedule (see make_betas)."""
        return cls(make_betas(name, num_train_timesteps, **kwargs))

    @property
    def num_train_timesteps(self) -> int:
        return self.betas.numel()

    def alpha_bar(self, t: int) -> float:
        """Cumulative alpha at training step t; 1 at t = -1 (the clean end)."""
        if not -1 <= t < len(self._abar):
            raise ValueError(f"timestep {t} outside [-1, {len(self._abar) - 1}]")
        return 1.0 if t < 0 else self._abar[t]

    def alpha_sigma(self, t: int) -> tuple[float, float]:
        """(alpha, sigma) = (sqrt(abar_t), sqrt(1 - abar_t))."""
        abar = self.alpha_bar(t)
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def timesteps(self, steps: int, spacing: str = "leading", offset: int = 0) -> list[int]:
        """Descending training steps for a sampler of `steps` steps, spaced as diffusers does."""
        T = self.num_train_timesteps
        if not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"steps must be an integer in [1, {T}] (the training steps), got {steps!r}")
        if spacing == "linspace":
            ts = np.linspace(0, T - 1, steps).round()[::-1]
        elif spacing == "leading":
            ts = (np.arange(0, steps) * (T // steps)).round()[::-1] + offset
        elif spacing == "trailing":
            ts = np.round(np.arange(T, 0, -T / steps)) - 1
        else:
            raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")
        out = [int(v) for v in ts]
        if out[0] >= T:
            raise ValueError(f"steps_offset {offset} runs past the last training step {T - 1}")
        return out


@dataclass(frozen=True)
class VPSchedule:
    """Variance-preserving SDE (Song et al. 2021): beta(t) linear from beta_min to beta_max."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        if not 0 <= self.beta_min < self.beta_max or not math.isfinite(self.beta_max):
            raise ValueError(f"need 0 <= beta_min < beta_max, got {self.beta_min}, {self.beta_max}")

    def _integral(self, t: float) -> float:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def beta(self, t: float) -> float:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        B = self._integral(t)
        return math.exp(-0.5 * B), math.sqrt(-math.expm1(-B))

    def sde(self, t: float) -> tuple[float, float]:
        """(f(t), g(t)^2) of dx = f x dt + g dW."""
        return -0.5 * self.beta(t), self.beta(t)

    prior_std = 1.0


@dataclass(frozen=True)
class SubVPSchedule(VPSchedule):
    """Sub-VP SDE: the VP mean with variance (1 - exp(-int beta))^2, always below VP's."""

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        B = self._integral(t)
        return math.exp(-0.5 * B), -math.expm1(-B)

    def sde(self, t: float) -> tuple[float, float]:
        return -0.5 * self.beta(t), self.beta(t) * -math.expm1(-2 * self._integral(t))


@dataclass(frozen=True)
class VESchedule:
    """Variance-exploding SDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t, alpha = 1."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max or not math.isfinite(self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        return 1.0, self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def sde(self, t: float) -> tuple[float, float]:
        sigma = self.alpha_sigma(t)[1]
        return 0.0, 2 * sigma * sigma * math.log(self.sigma_max / self.sigma_min)

    @property
    def prior_std(self) -> float:
        return self.sigma_max


ContinuousSchedule = VPSchedule | SubVPSchedule | VESchedule


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras et al. (2022) noise levels, descending, without the final 0."""
    if steps < 1 or not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need steps >= 1 and 0 < sigma_min <= sigma_max, got {steps}, {sigma_min}, {sigma_max}")
    ramp = np.linspace(0, 1, steps)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [float(s) for s in (hi + ramp * (lo - hi)) ** rho]


def time_grid(steps: int, t_end: float = 1e-3, t_start: float = 1.0) -> list[float]:
    """steps + 1 descending times from t_start to t_end for continuous-time samplers."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < t_end < t_start <= 1:
        raise ValueError(f"need 0 < t_end < t_start <= 1, got {t_end}, {t_start}")
    return [float(t) for t in np.linspace(t_start, t_end, steps + 1)]
