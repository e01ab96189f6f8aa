"""Drop-in Euler scheduler: diffusers' EulerDiscreteScheduler, rule for rule.

Karras et al. (2022) Algorithm 2 with churn on the sigma = sqrt((1 - abar) / abar) scale. The
timesteps, sigmas (spaced and interpolated, or Karras, exponential or beta grids, or log-linear),
the step counter and the update are diffusers'; the sigmas are kept at float32 values, as diffusers
keeps them, and every coefficient is computed from them in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from mridpm.compat._base import Scheduler, SchedulerOutput, arguments, check_choice, limits
from mridpm.compat._tables import diffusers_table, f32, sigma_grid, sigma_kind, sigma_to_t, spaced
from mridpm.dpm import parameterization as param
from mridpm.random import Generator


class EulerDiscreteScheduler(Scheduler):
    """diffusers' EulerDiscreteScheduler: same arguments, timesteps, sigmas, step counter and update.

    Beyond diffusers: clip_sample / clip_sample_range and thresholding limit the x0 prediction
    (diffusers' Euler has neither; the defaults leave it as diffusers computes it).
    """

    counts_steps = True

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, prediction_type: str = "epsilon",
                 interpolation_type: str = "linear", use_karras_sigmas: bool = False,
                 use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False, sigma_min: float | None = None,
                 sigma_max: float | None = None, timestep_spacing: str = "linspace", timestep_type: str = "discrete",
                 steps_offset: int = 0, rescale_betas_zero_snr: bool = False, final_sigmas_type: str = "zero",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 sample_max_value: float = 1.0, clip_sample: bool = False, clip_sample_range: float = 1.0) -> None:
        config = arguments(locals())
        check_choice("final_sigmas_type", final_sigmas_type, ("zero", "sigma_min"))
        check_choice("interpolation_type", interpolation_type, ("linear", "log_linear"))
        check_choice("timestep_type", timestep_type, ("discrete", "continuous"))
        self.sigma_kind = sigma_kind(config)
        table = diffusers_table(config, sigma_scale=True)
        super().__init__(config, table, "sample" if prediction_type == "original_sample" else prediction_type,
                         *limits(config))
        self._train_sigmas = table.sigmas()
        self._set_sigmas(np.arange(num_train_timesteps - 1, -1, -1, dtype=np.float64),
                         f32([*self._train_sigmas[::-1], 0.0]), None)
        self.num_inference_steps = None

    def _set_sigmas(self, ts: np.ndarray, sigmas: list[float], device: str | torch.device | None) -> None:
        self.sigmas_list = sigmas
        if self.config.timestep_type == "continuous" and self.prediction == "v":  # float32 logs, one by one
            ts = np.array([float(0.25 * s.log()) for s in torch.tensor(sigmas[:-1], dtype=torch.float32)])
        self._set_list(f32(ts), torch.float32, device)
        self.sigmas = torch.tensor(sigmas, dtype=torch.float32)

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[float] | None = None, sigmas: list[float] | None = None) -> None:
        """Timesteps and sigmas as diffusers makes them: spaced, custom timesteps or custom sigmas; then
        interpolated (or log-linear) sigmas, optionally replaced by a Karras, exponential or beta grid."""
        if sum(v is not None for v in (num_inference_steps, timesteps, sigmas)) != 1:
            raise ValueError("pass exactly one of num_inference_steps, timesteps and sigmas")
        if timesteps is not None and self.sigma_kind is not None:
            raise ValueError(f"custom timesteps cannot be combined with use_{self.sigma_kind}_sigmas=True")
        T, log_train = self.num_train_timesteps, np.log(self._train_sigmas)
        if sigmas is not None:  # float32 sigmas, whose logs diffusers then takes in float32
            grid = np.asarray(sigmas, dtype=np.float32)
            self._set_sigmas(sigma_to_t(grid[:-1], log_train), f32(grid), device)
            return
        if timesteps is not None:
            ts = np.asarray(timesteps, dtype=np.float32).astype(np.float64)
            if np.any(ts < 0) or np.any(ts > T - 1) or np.any(np.diff(ts) >= 0):
                raise ValueError(f"timesteps must strictly decrease within [0, {T - 1}]")
        else:
            ts = spaced(self.config.timestep_spacing, T, num_inference_steps, self.config.steps_offset,
                        round_linspace=False)
        n = num_inference_steps if num_inference_steps is not None else len(ts)
        if self.config.interpolation_type == "linear":
            grid = np.interp(ts, np.arange(T), self._train_sigmas)
        else:  # log-linear over the whole range, n + 1 values: diffusers then never reaches the final sigma
            ramp = torch.linspace(float(log_train[-1]), float(log_train[0]), n + 1)
            grid = ramp.exp().double().numpy()
        if self.sigma_kind is not None:
            lo = self.config.sigma_min if self.config.sigma_min is not None else float(grid[-1])
            hi = self.config.sigma_max if self.config.sigma_max is not None else float(grid[0])
            grid = sigma_grid(self.sigma_kind, lo, hi, n)
            ts = sigma_to_t(grid, log_train)
        last = 0.0 if self.config.final_sigmas_type == "zero" else float(self._train_sigmas[0])
        self._set_sigmas(ts, f32([*grid, last]), device)

    @property
    def init_noise_sigma(self) -> float:  # type: ignore[override]
        top = max(self.sigmas_list)
        return top if self.config.timestep_spacing in ("linspace", "trailing") else math.sqrt(top * top + 1)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """sample / sqrt(sigma^2 + 1): the model sees the variance-preserving scale."""
        if self._step_index is None:
            self._step_index = self._start(timestep)
        return sample / math.sqrt(self.sigmas_list[self._step_index] ** 2 + 1)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x0 + sigma_t noise on the Euler (variance-exploding) scale."""
        if self._begin_index is None:
            index = [self._lookup(v) for v in torch.as_tensor(timesteps).reshape(-1).tolist()]
        else:
            index = [self._step_index if self._step_index is not None else self._begin_index] * len(timesteps)
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        scale = torch.tensor([self.sigmas_list[i] for i in index], dtype=original_samples.real.dtype,
                             device=original_samples.device).reshape(shape)
        return original_samples + scale * noise

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, s_churn: float = 0.0,
             s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
             generator: torch.Generator | Generator | None = None, return_dict: bool = True) -> SchedulerOutput:
        """prev = sample_hat + (sample_hat - x0) / sigma_hat * (sigma_next - sigma_hat), sample_hat with churn."""
        i = self._advance(timestep)[1]
        assert i is not None
        sigma, sigma_next = self.sigmas_list[i], self.sigmas_list[i + 1]
        gamma = min(s_churn / (len(self.sigmas_list) - 1), math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if self.prediction == "eps":  # as diffusers: eps uses sigma_hat, v and x0 use sigma
            c1, c2 = 1.0, -sigma_hat
        else:
            alpha_vp = 1 / math.sqrt(sigma * sigma + 1)
            c1, c2 = param.x0_coeffs(self.prediction, alpha_vp, sigma * alpha_vp)
            c1 *= alpha_vp
        ratio = (sigma_next - sigma_hat) / sigma_hat
        inputs, coeffs, x0c = [sample, model_output.to(sample.dtype)], [1 + ratio, 0.0], [c1, c2]
        if gamma > 0:  # churn: sample_hat = sample + k z, drawn as diffusers draws it
            k = s_noise * math.sqrt(sigma_hat * sigma_hat - sigma * sigma)
            inputs.append(self._noise(model_output, generator, None, as_tensor=True).to(sample.dtype))
            coeffs.append((1 + ratio) * k)
            x0c.append(c1 * k)
        return self._update(inputs, coeffs, x0c, -ratio)
