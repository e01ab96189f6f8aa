"""Continuous-time samplers: reverse-SDE Euler-Maruyama and the probability-flow ODE."""

from __future__ import annotations

import math

import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import Callback, Model, call_model, check_continuous, final_denoise, steps_of
from mridpm.dpm.schedules import ContinuousSchedule, time_grid
from mridpm.ops import fused_step
from mridpm.random import Generator


def sample_euler_maruyama(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 1000,
                          generator: Generator | None = None, callback: Callback | None = None,
                          progress: bool = False, prediction: str = "score", t_end: float = 1e-3,
                          denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Reverse-time SDE dx = [f x - g^2 score] dt + g dW_bar by Euler-Maruyama, from t = 1 to t_end,
    then (by default) one denoising step at t_end."""
    check_continuous(schedule, prediction)
    ts = time_grid(steps, t_end)
    for i, t in steps_of(ts[:-1], progress, "euler-maruyama"):
        dt = t - ts[i + 1]
        f, g2 = schedule.sde(t)
        sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
        out = call_model(model, x, t, False, model_kwargs)
        x = fused_step([x, out], [1.0 - f * dt + g2 * dt * sa, g2 * dt * sb], math.sqrt(g2 * dt), generator=generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return final_denoise(model, x, schedule, ts[-1], prediction, model_kwargs) if denoise else x


def _ode_slope(schedule: ContinuousSchedule, prediction: str, t: float) -> tuple[float, float]:
    """(a, b) with dx/dt = a x + b output on the probability-flow ODE dx = [f x - g^2 score / 2] dt."""
    f, g2 = schedule.sde(t)
    sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
    return f - 0.5 * g2 * sa, -0.5 * g2 * sb


def sample_ode(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 100,
               generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
               prediction: str = "score", method: str = "heun", t_end: float = 1e-3, denoise: bool = True,
               model_kwargs: dict | None = None) -> torch.Tensor:
    """Probability-flow ODE from t = 1 to t_end with fixed Euler or Heun steps (deterministic;
    generator is unused and accepted for the shared signature)."""
    check_continuous(schedule, prediction)
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    ts = time_grid(steps, t_end)
    for i, t in steps_of(ts[:-1], progress, f"ode-{method}"):
        dt = t - ts[i + 1]
        a1, b1 = _ode_slope(schedule, prediction, t)
        out = call_model(model, x, t, False, model_kwargs)
        euler = fused_step([x, out], [1.0 - dt * a1, -dt * b1])
        if method == "heun":
            a2, b2 = _ode_slope(schedule, prediction, ts[i + 1])
            out2 = call_model(model, euler, ts[i + 1], False, model_kwargs)
            euler = fused_step([x, out, euler, out2], [1.0 - 0.5 * dt * a1, -0.5 * dt * b1, -0.5 * dt * a2,
                                                       -0.5 * dt * b2])
        x = euler
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return final_denoise(model, x, schedule, ts[-1], prediction, model_kwargs) if denoise else x
