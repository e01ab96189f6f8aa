"""The peers' schedule tables and timestep grids, computed in float64 on the host.

diffusers and MONAI build their betas and cumulative alphas in float32; we follow their formulas
(every beta schedule they accept, zero-terminal-SNR rescaling, their timestep spacings and sigma
grids) in float64, so cumulative alphas never round to 1 near t = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mridpm.dpm.schedules import karras_sigmas

# diffusers' beta_schedule names; "squaredcos_cap_v2" and "laplace" are its betas_for_alpha_bar transforms
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
SPACINGS = ("linspace", "leading", "trailing")


def _cosine(t: float) -> float:
    return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2


def _laplace(t: float) -> float:
    lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
    snr = math.exp(lmb)
    return math.sqrt(snr / (1 + snr))


def _betas_for_alpha_bar(n: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> torch.Tensor:
    return torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)],
                        dtype=torch.float64)


def _linear_betas(kind: str, n: int, beta_start: float, beta_end: float, sig_range: float = 6.0) -> torch.Tensor:
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, n, dtype=torch.float64)
    if kind == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, n, dtype=torch.float64) ** 2
    ramp = torch.linspace(-sig_range, sig_range, n, dtype=torch.float64)
    return torch.sigmoid(ramp) * (beta_end - beta_start) + beta_start


def diffusers_betas(beta_schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float,
                    trained_betas: Any = None, rescale_betas_zero_snr: bool = False) -> torch.Tensor:
    """Betas as diffusers' schedulers make them (float64), optionally rescaled to zero terminal SNR."""
    if trained_betas is not None:
        betas = torch.as_tensor(trained_betas, dtype=torch.float64).reshape(-1)
    elif beta_schedule in ("linear", "scaled_linear", "sigmoid"):
        betas = _linear_betas(beta_schedule, num_train_timesteps, beta_start, beta_end)
    elif beta_schedule in ("squaredcos_cap_v2", "laplace"):
        betas = _betas_for_alpha_bar(num_train_timesteps, _cosine if beta_schedule != "laplace" else _laplace)
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; choose one of {BETA_SCHEDULES}")
    return rescale_zero_terminal_snr(betas) if rescale_betas_zero_snr else betas


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. (2024) Algorithm 1: shift and scale sqrt(abar) so that abar_{T-1} = 0 exactly."""
    if betas.numel() < 2:
        raise ValueError("rescale_betas_zero_snr needs at least 2 training steps")
    root = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = root[0].item(), root[-1].item()
    abar = ((root - last) * (first / (first - last))) ** 2
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


_MONAI_DEFAULTS = {"linear_beta": {"beta_start": 1e-4, "beta_end": 2e-2},
                   "scaled_linear_beta": {"beta_start": 1e-4, "beta_end": 2e-2},
                   "sigmoid_beta": {"beta_start": 1e-4, "beta_end": 2e-2, "sig_range": 6.0},
                   "cosine": {"s": 8e-3}}


def monai_betas(schedule: str, num_train_timesteps: int, schedule_args: dict[str, float]) -> torch.Tensor:
    """Betas of MONAI's NoiseSchedules (linear_beta, scaled_linear_beta, sigmoid_beta, cosine) in float64."""
    if schedule not in _MONAI_DEFAULTS:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(_MONAI_DEFAULTS)}")
    unknown = set(schedule_args) - set(_MONAI_DEFAULTS[schedule])
    if unknown:
        raise TypeError(f"schedule {schedule!r} got unexpected arguments {sorted(unknown)}")
    args = {**_MONAI_DEFAULTS[schedule], **schedule_args}
    n = num_train_timesteps
    if schedule != "cosine":
        return _linear_betas(schedule.removesuffix("_beta"), n, **args)
    x = torch.linspace(0, n, n + 1, dtype=torch.float64)
    abar = torch.cos((x / n + args["s"]) / (1 + args["s"]) * math.pi * 0.5) ** 2
    abar = abar / abar[0]
    return (1.0 - abar[1:] / abar[:-1]).clip(0.0, 0.999)


@dataclass(frozen=True)
class Table:
    """A discrete schedule's float64 betas and cumulative alphas; abar may be given (zero-SNR samplers
    replace its last entry with 2**-24, as diffusers' Euler and DPM-Solver do)."""

    betas: torch.Tensor
    alphas_cumprod: torch.Tensor = None  # type: ignore[assignment]
    num_train_timesteps: int = field(init=False)
    _abar: list[float] = field(init=False, repr=False, compare=False)  # abar_t at t + 1; t = -1 is the clean end

    def __post_init__(self) -> None:
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if betas.numel() == 0 or not bool(torch.isfinite(betas).all()) or bool(((betas < 0) | (betas > 1)).any()):
            raise ValueError("betas must be a non-empty sequence of numbers in [0, 1]")
        abar = torch.cumprod(1.0 - betas, dim=0) if self.alphas_cumprod is None else self.alphas_cumprod
        for name, value in (("betas", betas), ("alphas_cumprod", abar.to(torch.float64)),
                            ("num_train_timesteps", betas.numel()), ("_abar", [1.0, *abar.tolist()])):
            object.__setattr__(self, name, value)

    def alpha_bar(self, t: int) -> float:
        """Cumulative alpha at training step t, from t = -1 (the clean end, 1) to T - 1."""
        if not -1 <= t < self.num_train_timesteps:
            raise ValueError(f"timestep {t} outside [-1, {self.num_train_timesteps - 1}]")
        return self._abar[t + 1]

    def sigmas(self) -> np.ndarray:
        """sqrt((1 - abar) / abar) for every training step, ascending in t (the Euler / DPM-Solver scale)."""
        abar = self.alphas_cumprod.numpy()
        return np.sqrt((1 - abar) / abar)


def diffusers_table(config: dict[str, Any], sigma_scale: bool = False) -> Table:
    """The float64 table of a diffusers-style config. sigma_scale: for the samplers on the sigma scale
    (Euler, DPM-Solver), where diffusers sets a zero-SNR schedule's last abar to 2**-24 (sigma = 4096)."""
    zero_snr = config.get("rescale_betas_zero_snr", False)
    betas = diffusers_betas(config["beta_schedule"], config["num_train_timesteps"], config["beta_start"],
                            config["beta_end"], config["trained_betas"], zero_snr)
    if not (sigma_scale and zero_snr):
        return Table(betas)
    abar = torch.cumprod(1.0 - betas, dim=0)
    abar[-1] = 2.0**-24
    return Table(betas, abar)


def f32(values: Any) -> list[float]:
    """Values rounded to float32, as the peers store sigmas and timesteps, as Python floats."""
    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


def spaced(spacing: str, T: int, n: object, offset: int = 0, round_linspace: bool = True) -> np.ndarray:
    """n descending timesteps spaced as diffusers' DDPM, DDIM and Euler space them (float64 values)."""
    if not isinstance(n, int) or not 1 <= n <= T:
        raise ValueError(f"num_inference_steps must be an integer in [1, {T}] (the training steps), got {n!r}")
    if spacing == "linspace":
        ts = np.linspace(0, T - 1, n, dtype=np.float64 if round_linspace else np.float32)
        return (ts.round() if round_linspace else ts)[::-1].astype(np.float64)
    if spacing == "leading":
        return (np.arange(0, n) * (T // n)).round()[::-1] + offset
    if spacing == "trailing":
        return np.round(np.arange(T, 0, -T / n)) - 1
    raise ValueError(f"unknown timestep_spacing {spacing!r}; choose one of {SPACINGS}")


def sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """diffusers' _sigma_to_t: the fractional training step of each sigma, linear in log sigma."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma - log_sigmas[:, np.newaxis]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return ((1 - w) * low + w * (low + 1)).reshape(np.shape(sigmas))


def sigma_grid(kind: str, lo: float, hi: float, n: int) -> np.ndarray:
    """n descending sigmas from hi to lo: Karras et al. (rho = 7), exponential, or beta(0.6, 0.6) quantiles."""
    if kind == "karras":
        return np.array(karras_sigmas(n, lo, hi))
    if kind == "exponential":
        return np.exp(np.linspace(math.log(hi), math.log(lo), n))
    from scipy import stats  # only this grid needs scipy, as in diffusers

    return np.array([lo + ppf * (hi - lo) for ppf in stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6)])


def sigma_kind(config: dict) -> str | None:
    """Which of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas a config sets (at most one)."""
    kinds = [k for k in ("karras", "exponential", "beta") if config.get(f"use_{k}_sigmas")]
    if len(kinds) > 1:
        raise ValueError("only one of use_beta_sigmas, use_exponential_sigmas, use_karras_sigmas can be used")
    return kinds[0] if kinds else None
