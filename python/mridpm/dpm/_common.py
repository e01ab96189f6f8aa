"""Shared pieces of the samplers. Every sampler has one signature,

    sample_x(model, x, schedule, *, steps, generator, callback, progress, **options)

Every step computes its coefficients in float64 on the host and calls the fused step once,
so the loop never synchronises with the device. model(x, t, **model_kwargs) returns the
prediction named by `prediction` (eps, x0, v or score); t is a (batch,) tensor of training
steps (long) for discrete schedules and of times (float32) for continuous ones. There is
no no_grad here: the caller decides (DPS differentiates through the model).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from mridpm import _capture
from mridpm.dpm import parameterization as param
from mridpm.dpm.schedules import ContinuousSchedule, DiscreteSchedule
from mridpm.ops.step import fused_step

Model = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def steps_of(values: Sequence[Any], progress: bool, desc: str) -> Iterable[tuple[int, Any]]:
    """enumerate(values) behind a progress bar when asked."""
    return enumerate(tqdm(values, desc=desc, disable=not progress, leave=False))


class ModelRun:
    """Calls model(x, t, **model_kwargs) for a sampler, with t a (batch,) tensor, checks the output's
    shape, and watches for NaN or Inf on the device (no synchronisation) until finish()."""

    def __init__(self, model: Model, model_kwargs: dict | None, discrete: bool) -> None:
        self.model, self.kwargs, self.discrete = model, model_kwargs or {}, discrete
        self.times: list[float | int] = []
        self.first_bad: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, t: float | int) -> torch.Tensor:
        tt = torch.full((x.shape[0],), t, dtype=torch.long if self.discrete else torch.float32, device=x.device)
        out = self.model(x, tt, **self.kwargs)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"the model must return a tensor of the sample's shape {tuple(x.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        bad = ~torch.isfinite(out.detach()).all()
        index = torch.full((), len(self.times), dtype=torch.long, device=out.device)  # no copy: capturable
        self.first_bad = torch.where(bad, index, -1) if self.first_bad is None else \
            torch.where((self.first_bad < 0) & bad, index, self.first_bad)
        self.times.append(t)
        return out.to(x.dtype)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """x, once the run is known to have seen only finite model outputs (one synchronisation; while
        a CUDA graph is recorded, the check runs after each replay instead)."""
        if self.first_bad is not None and not _capture.defer(self._check):
            self._check()
        return x

    def _check(self) -> None:
        i = int(self.first_bad)  # type: ignore[arg-type]
        if i >= 0:
            raise ValueError(f"the model returned NaN or Inf at call {i} of {len(self.times)} (t = {self.times[i]})")


def discrete_timesteps(schedule: object, timesteps: Sequence[int] | None, steps: int, spacing: str,
                        offset: int) -> list[int]:
    """The given timesteps, checked, or the schedule's for steps and spacing."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"this sampler needs a DiscreteSchedule, got {type(schedule).__name__}")
    ts = [int(t) for t in timesteps] if timesteps is not None else schedule.timesteps(steps, spacing, offset)
    if not ts or any(b >= a for a, b in itertools.pairwise(ts)) or ts[-1] < 0 \
            or ts[0] >= schedule.num_train_timesteps:
        raise ValueError(f"timesteps must strictly decrease within [0, {schedule.num_train_timesteps - 1}], got {ts}")
    return ts


def check_continuous(schedule: object, prediction: str) -> None:
    if not hasattr(schedule, "sde"):
        raise TypeError(f"this sampler needs a continuous schedule (VP, sub-VP, VE), got {type(schedule).__name__}")
    param.check_prediction(prediction)


def final_denoise(run: ModelRun, x: torch.Tensor, schedule: ContinuousSchedule, t: float,
                  prediction: str) -> torch.Tensor:
    """The final Tweedie step: E[x0 | x_t] from one model call, no noise."""
    alpha, sigma = schedule.alpha_sigma(t)
    out = run(x, t)
    return fused_step([x, out], list(param.x0_coeffs(prediction, alpha, sigma)))
