"""Drop-in DDPM schedulers: diffusers' DDPMScheduler and MONAI's DDPMScheduler, rule for rule.

diffusers steps from t to the next entry of its timestep list with beta_t = 1 - abar_t / abar_prev.
MONAI steps from t to t - 1 with that one training step's beta, whatever the timestep list: right
when every step runs, wrong when steps are skipped (see PITFALLS). Each class follows its peer by
default; prev_timestep="list" takes the list-based rule instead (the same as diffusers' own).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mridpm.compat._base import PREV_TIMESTEP, Scheduler, SchedulerOutput, arguments, check_choice, limits
from mridpm.compat._tables import SPACINGS, Table, diffusers_table, monai_betas, spaced
from mridpm.random import Generator

_VARIANCES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
_MONAI_VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")


class DDPMScheduler(Scheduler):
    """diffusers' DDPMScheduler: same arguments, same timesteps, same update and noise draws.

    variance_type "fixed_large_log" follows "fixed_large" (diffusers takes the square root of a log
    variance there and returns NaN). prev_timestep: "peer" (the default) or "list"; for this class
    both are diffusers' rule, the next entry of the timestep list.
    """

    monai = False

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, variance_type: str = "fixed_small",
                 clip_sample: bool = True, prediction_type: str = "epsilon", thresholding: bool = False,
                 dynamic_thresholding_ratio: float = 0.995, clip_sample_range: float = 1.0,
                 sample_max_value: float = 1.0, timestep_spacing: str = "leading", steps_offset: int = 0,
                 rescale_betas_zero_snr: bool = False, prev_timestep: str = "peer") -> None:
        config = arguments(locals())
        check_choice("timestep_spacing", timestep_spacing, SPACINGS)
        self._setup(config, diffusers_table(config), prediction_type, *limits(config), variance_type, prev_timestep)

    def _setup(self, config: dict, table: Table, prediction_type: str, clip: tuple[float, float] | None,
               threshold: tuple[float, float] | None, variance_type: str, prev_timestep: str) -> None:
        check_choice("variance_type", variance_type, _MONAI_VARIANCES if self.monai else _VARIANCES)
        check_choice("prev_timestep", prev_timestep, PREV_TIMESTEP)
        super().__init__(config, table, prediction_type, clip, threshold)
        self.variance_type, self.prediction_type, self.clip_sample = variance_type, prediction_type, clip is not None
        self.custom_timesteps = False

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """num_inference_steps spaced by timestep_spacing, or a custom decreasing list."""
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        grid = None if timesteps is not None else spaced(self.config.timestep_spacing, self.num_train_timesteps,
                                                         num_inference_steps, self.config.steps_offset)
        self._set_list(self._integer_list(grid, timesteps), torch.long, device)
        self.custom_timesteps = timesteps is not None

    def _previous(self, t: int, index: int | None) -> int:
        if self.monai and self.config.prev_timestep == "peer":
            return t - 1
        if index is None:
            raise ValueError(f"timestep {t} is not among the scheduler's timesteps; call set_timesteps first")
        return self._list[index + 1] if index + 1 < len(self._list) else -1

    def _split(self, model_output: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A learned-variance model's output halves (prediction, variance), as both peers split it."""
        if model_output.shape[1] == sample.shape[1] * 2 and self.variance_type in ("learned", "learned_range"):
            out, predicted = torch.split(model_output, sample.shape[1], dim=1)
            return out, predicted
        return model_output, None

    def _std(self, posterior: float, beta: float, predicted: torch.Tensor | None) -> float | torch.Tensor:
        """The noise's standard deviation: a number, or per element for a learned variance."""
        kind, small = self.variance_type, max(posterior, 1e-20)
        if predicted is None:
            if kind.startswith("learned") and not self.monai:
                raise ValueError(f"variance_type {kind!r} needs a model output with twice the sample's channels")
            if kind.startswith("fixed_large"):
                return math.sqrt(beta)
            return math.sqrt(small if kind.startswith("fixed") else posterior)  # MONAI's learned types fall back
        if kind == "learned":
            return predicted**0.5
        frac = (predicted + 1) / 2
        if self.monai:  # MONAI interpolates the variances, diffusers their logarithms
            return (frac * beta + (1 - frac) * posterior) ** 0.5
        return torch.exp(0.5 * (frac * math.log(beta) + (1 - frac) * math.log(small)))

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | Generator | None = None, return_dict: bool = True) -> SchedulerOutput:
        """One ancestral step to the previous timestep; noise whenever t > 0, as both peers add it."""
        t, index = self._advance(timestep)
        t = int(t)
        if (done := self._past_the_end(t, sample)) is not None:
            return done
        abar, abar_prev = self.schedule.alpha_bar(t), self.schedule.alpha_bar(self._previous(t, index))
        beta = 1.0 - abar / abar_prev
        posterior = (1.0 - abar_prev) / (1.0 - abar) * beta
        out, predicted = self._split(model_output, sample)
        inputs, x0c = self._x0_inputs(sample, out.to(sample.dtype), math.sqrt(abar), math.sqrt(1.0 - abar))
        coeffs = [math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar)]
        x0w = math.sqrt(abar_prev) * beta / (1.0 - abar)
        if t <= 0:
            return self._update(inputs, coeffs, x0c, x0w)
        std = self._std(posterior, beta, predicted)
        if isinstance(std, float):
            return self._update(inputs, coeffs, x0c, x0w, std, generator)
        noise = self._noise(sample, generator, None, as_tensor=True) * std.to(sample.dtype)
        return self._update([*inputs, noise], [*coeffs, *[0.0] * (len(inputs) - 1), 1.0], x0c, x0w)


class MonaiDDPMScheduler(DDPMScheduler):
    """MONAI's DDPMScheduler (monai.networks.schedulers): same arguments, timesteps, update and noise.

    prev_timestep: "peer" (the default) steps from t with abar[t - 1] and beta[t], as MONAI does,
    which is DDPM's posterior only when every training step runs; "list" steps to the next entry of
    the timestep list with beta_t = 1 - abar_t / abar_prev, which is right for any step count.
    """

    monai = True

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta",
                 variance_type: str = "fixed_small", clip_sample: bool = True, prediction_type: str = "epsilon",
                 clip_sample_min: float = -1.0, clip_sample_max: float = 1.0, prev_timestep: str = "peer",
                 **schedule_args: float) -> None:
        config = arguments(locals())
        table = Table(monai_betas(schedule, num_train_timesteps, schedule_args))
        clip = (clip_sample_min, clip_sample_max) if clip_sample else None
        self._setup(config, table, prediction_type, clip, None, variance_type, prev_timestep)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """MONAI's spacing: linspace(T - 1, 0, n) in float32, rounded."""
        T = self.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= T:
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}] (the training steps), "
                             f"got {num_inference_steps!r}")
        self._set_list(torch.linspace(T - 1, 0, num_inference_steps).round().long().tolist(), torch.long, device)
