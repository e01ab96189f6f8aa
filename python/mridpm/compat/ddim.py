"""Drop-in DDIM schedulers: diffusers' DDIMScheduler and MONAI's DDIMScheduler, rule for rule.

Both peers step from t to t - T // n (n the number of inference steps), not to the next entry of
their own timestep list. With leading spacing and n dividing T the two agree; with linspace or
trailing spacing, or n not dividing T, t - T // n leaves the list and the step skips the wrong
amount of noise (see PITFALLS). We follow the peer by default, so a swapped scheduler gives the
same images; prev_timestep="list" takes the next entry of the list instead, which is DDIM as the
paper defines it for any timestep subsequence.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mridpm.compat._base import PREV_TIMESTEP, Scheduler, SchedulerOutput, arguments, check_choice, limits
from mridpm.compat._tables import SPACINGS, Table, diffusers_table, monai_betas, spaced
from mridpm.dpm import parameterization as param
from mridpm.random import Generator


class DDIMScheduler(Scheduler):
    """diffusers' DDIMScheduler: same arguments, timesteps, update and noise draws.

    prev_timestep: "peer" (the default) steps to t - T // n as diffusers does; "list" steps to the
    next entry of the timestep list (right for every spacing and step count, but not diffusers'
    images where the two differ). A custom `timesteps` list (which diffusers' DDIM does not take)
    always steps along the list. Where eta > 1 makes 1 - abar_prev - std^2 negative, diffusers
    returns NaN; we take that direction term as 0.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0001, beta_end: float = 0.02,
                 beta_schedule: str = "linear", trained_betas: Any = None, clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 thresholding: bool = False, dynamic_thresholding_ratio: float = 0.995,
                 clip_sample_range: float = 1.0, sample_max_value: float = 1.0,
                 timestep_spacing: str = "leading", rescale_betas_zero_snr: bool = False,
                 prev_timestep: str = "peer") -> None:
        config = arguments(locals())
        check_choice("timestep_spacing", timestep_spacing, SPACINGS)
        self._setup(config, diffusers_table(config), prediction_type, *limits(config), set_alpha_to_one, prev_timestep)

    def _setup(self, config: dict, table: Table, prediction_type: str, clip: tuple[float, float] | None,
               threshold: tuple[float, float] | None, set_alpha_to_one: bool, prev_timestep: str) -> None:
        check_choice("prev_timestep", prev_timestep, PREV_TIMESTEP)
        super().__init__(config, table, prediction_type, clip, threshold)
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else table.alpha_bar(0)
        self.prediction_type, self.clip_sample = prediction_type, clip is not None
        self._stride: int | None = None  # T // n of the last set_timesteps(n); None for a custom list

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      timesteps: list[int] | None = None) -> None:
        """num_inference_steps spaced by timestep_spacing, or a custom decreasing list."""
        grid = self._spaced(num_inference_steps) if timesteps is None else None
        self._set_list(self._integer_list(grid, timesteps), torch.long, device)
        self._stride = None
        if timesteps is None:
            self.num_inference_steps = num_inference_steps  # the peers keep n even where the grid has n + 1
            self._stride = self.num_train_timesteps // num_inference_steps  # type: ignore[operator]

    def _spaced(self, n: int | None) -> list[float]:
        return list(spaced(self.config.timestep_spacing, self.num_train_timesteps, n, self.config.steps_offset))

    def _previous(self, t: int, index: int | None) -> int:
        if self._stride is not None and self.config.prev_timestep == "peer":
            return t - self._stride
        if index is None:
            raise ValueError(f"timestep {t} is not among the scheduler's timesteps; call set_timesteps first")
        return self._list[index + 1] if index + 1 < len(self._list) else -1

    def _abar_prev(self, t_prev: int) -> float:
        return self.schedule.alpha_bar(t_prev) if t_prev >= 0 else self.final_alpha_cumprod

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True) -> SchedulerOutput:
        """One DDIM step to the previous timestep (see prev_timestep); noise std eta * sigma_t."""
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0, got {eta}")
        if eta > 0 and variance_noise is not None and generator is not None:
            raise ValueError("pass generator or variance_noise, not both")
        t, index = self._advance(timestep)
        t = int(t)
        if (done := self._past_the_end(t, sample)) is not None:
            return done
        abar, abar_prev = self.schedule.alpha_bar(t), self._abar_prev(self._previous(t, index))
        a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
        std = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev))
        direction = math.sqrt(max(1.0 - abar_prev - std * std, 0.0))
        inputs, x0c = self._x0_inputs(sample, model_output.to(sample.dtype), a, s)
        ea, eb = param.eps_coeffs(self.prediction, a, s)
        coeffs, x0w = [direction * ea, direction * eb], math.sqrt(abar_prev)
        if use_clipped_model_output:  # eps re-derived from the limited x0, as in GLIDE
            coeffs, x0w = [direction / s], x0w - direction * a / s
        return self._update(inputs, coeffs, x0c, x0w, std, generator, variance_noise, draw=eta > 0)


class MonaiDDIMScheduler(DDIMScheduler):
    """MONAI's DDIMScheduler (monai.networks.schedulers): same arguments, timesteps, update and noise.

    prev_timestep: "peer" (the default) steps to t - T // n as MONAI does; "list" steps to the next
    entry of the timestep list. reversed_step is MONAI's inversion step, to t + T // n.
    """

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta", clip_sample: bool = True,
                 set_alpha_to_one: bool = True, steps_offset: int = 0, prediction_type: str = "epsilon",
                 clip_sample_min: float = -1.0, clip_sample_max: float = 1.0, prev_timestep: str = "peer",
                 **schedule_args: float) -> None:
        config = arguments(locals())
        table = Table(monai_betas(schedule, num_train_timesteps, schedule_args))
        clip = (clip_sample_min, clip_sample_max) if clip_sample else None
        self._setup(config, table, prediction_type, clip, None, set_alpha_to_one, prev_timestep)
        self.steps_offset = steps_offset
        self.set_timesteps(num_train_timesteps)

    def _spaced(self, n: int | None) -> list[float]:
        """MONAI's spacing: linspace(T - 1 - steps_offset, 0, n) in float32, rounded, plus steps_offset."""
        T, offset = self.num_train_timesteps, self.config.steps_offset
        if not isinstance(n, int) or not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be an integer in [1, {T}] (the training steps), got {n!r}")
        if not 0 <= offset < T:
            raise ValueError(f"steps_offset {offset} must lie in [0, {T})")
        return (torch.linspace(T - 1 - offset, 0, n).round().long() + offset).tolist()

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:  # type: ignore[override]
        """MONAI's spacing (see _spaced)."""
        super().set_timesteps(num_inference_steps, device)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, eta: float = 0.0,  # type: ignore[override]
             generator: torch.Generator | Generator | None = None) -> SchedulerOutput:
        """One DDIM step as MONAI takes it (no thresholding, no clipped model output)."""
        return super().step(model_output, timestep, sample, eta=eta, generator=generator)

    def reversed_step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor) -> SchedulerOutput:
        """MONAI's deterministic inversion step from t to t + T // n (its next noisier timestep)."""
        t = int(self._advance(timestep)[0])
        self._step_index = None
        t_next = t + self.num_train_timesteps // self.num_inference_steps  # type: ignore[operator]
        if t_next >= self.num_train_timesteps:
            raise ValueError(f"reversed_step from timestep {t} runs past the last training step")
        abar, abar_next = self.schedule.alpha_bar(t), self._abar_prev(t_next)
        a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
        inputs, x0c = self._x0_inputs(sample, model_output.to(sample.dtype), a, s)
        ea, eb = param.eps_coeffs(self.prediction, a, s)
        direction = math.sqrt(1.0 - abar_next)
        return self._update(inputs, [direction * ea, direction * eb], x0c, math.sqrt(abar_next))
