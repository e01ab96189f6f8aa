"""Samplers: one function per DPM family with one signature,

    sample_x(model, x, schedule, *, steps, generator, callback, progress, **options)

Every step computes its coefficients in float64 on the host and calls the fused step once,
so the loop never synchronises with the device. model(x, t, **model_kwargs) returns the
prediction named by `prediction` (eps, x0, v or score); t is a (batch,) tensor of training
steps (long) for discrete schedules and of times (float32) for continuous ones. There is
no no_grad here: the caller decides (DPS differentiates through the model).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from mridpm.dpm import parameterization as param
from mridpm.dpm.schedules import ContinuousSchedule, DiscreteSchedule, time_grid
from mridpm.ops import fused_step
from mridpm.random import Generator

Model = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def _steps(values: Sequence[Any], progress: bool, desc: str) -> Iterable[tuple[int, Any]]:
    return enumerate(tqdm(values, desc=desc, disable=not progress, leave=False))


def _call(model: Model, x: torch.Tensor, t: float | int, discrete: bool, model_kwargs: dict | None) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, dtype=torch.long if discrete else torch.float32, device=x.device)
    out = model(x, tt, **(model_kwargs or {}))
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        raise ValueError(f"the model must return a tensor of the sample's shape {tuple(x.shape)}, got "
                         f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out.to(x.dtype)


def _discrete_timesteps(schedule: object, timesteps: Sequence[int] | None, steps: int, spacing: str,
                        offset: int) -> list[int]:
    """The given timesteps, checked, or the schedule's for steps and spacing."""
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"this sampler needs a DiscreteSchedule, got {type(schedule).__name__}")
    ts = [int(t) for t in timesteps] if timesteps is not None else schedule.timesteps(steps, spacing, offset)
    if not ts or any(b >= a for a, b in itertools.pairwise(ts)) or ts[-1] < 0 \
            or ts[0] >= schedule.num_train_timesteps:
        raise ValueError(f"timesteps must strictly decrease within [0, {schedule.num_train_timesteps - 1}], got {ts}")
    return ts


def sample_ddpm(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, steps: int | None = None,
                generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
                prediction: str = "eps", variance: str = "beta_tilde", clip: tuple[float, float] | None = None,
                threshold: tuple[float, float] | None = None, spacing: str = "leading", offset: int = 0,
                model_kwargs: dict | None = None) -> torch.Tensor:
    """DDPM ancestral sampling (Ho et al. 2020). With skipped steps beta_t = 1 - abar_t / abar_prev;
    variance "beta_tilde" (posterior) or "beta" (the upper bound)."""
    if variance not in ("beta_tilde", "beta"):
        raise ValueError(f"variance must be 'beta_tilde' or 'beta', got {variance!r}")
    param.check_prediction(prediction)
    ts = _discrete_timesteps(schedule, None, steps or getattr(schedule, "num_train_timesteps", 0), spacing, offset)
    for i, t in _steps(ts, progress, "ddpm"):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        abar, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        beta = 1.0 - abar / abar_prev
        var = beta if variance == "beta" else beta * (1.0 - abar_prev) / (1.0 - abar)
        std = math.sqrt(var) if t_prev >= 0 else None
        out = _call(model, x, t, True, model_kwargs)
        x, x0 = fused_step(
            [x, out], [math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar), 0.0], std, generator=generator,
            x0_coeffs=param.x0_coeffs(prediction, math.sqrt(abar), math.sqrt(1.0 - abar)),
            x0_weight=math.sqrt(abar_prev) * beta / (1.0 - abar), clamp=clip, threshold=threshold, return_x0=True)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
    return x


def _ddim_coeffs(prediction: str, abar: float, abar_to: float, eta: float) -> tuple[list[float], float, tuple, float]:
    """[x, out] coefficients of the direction term, the noise std, the x0 coefficients and weight."""
    a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
    std = eta * math.sqrt((1.0 - abar_to) / (1.0 - abar) * (1.0 - abar / abar_to)) if abar_to > abar else 0.0
    direction = math.sqrt(max(1.0 - abar_to - std * std, 0.0))
    ea, eb = param.eps_coeffs(prediction, a, s)
    return [direction * ea, direction * eb], std, param.x0_coeffs(prediction, a, s), math.sqrt(abar_to)


def sample_ddim(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, steps: int = 50,
                generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
                prediction: str = "eps", eta: float = 0.0, clip: tuple[float, float] | None = None,
                threshold: tuple[float, float] | None = None, spacing: str = "leading", offset: int = 0,
                timesteps: Sequence[int] | None = None, final_alpha_one: bool = True,
                model_kwargs: dict | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021) over any decreasing step subsequence; eta = 0 is deterministic,
    eta = 1 matches DDPM's posterior variance."""
    if not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    param.check_prediction(prediction)
    ts = _discrete_timesteps(schedule, timesteps, steps, spacing, offset)
    final = 1.0 if final_alpha_one else schedule.alpha_bar(0)
    for i, t in _steps(ts, progress, "ddim"):
        abar_to = schedule.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else final
        coeffs, std, x0c, x0w = _ddim_coeffs(prediction, schedule.alpha_bar(t), abar_to, eta)
        out = _call(model, x, t, True, model_kwargs)
        x, x0 = fused_step([x, out], coeffs, std if std > 0 else None, generator=generator, x0_coeffs=x0c,
                           x0_weight=x0w, clamp=clip, threshold=threshold, return_x0=True)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
    return x


def invert_ddim(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, steps: int = 50,
                callback: Callback | None = None, progress: bool = False, prediction: str = "eps",
                spacing: str = "leading", offset: int = 0, timesteps: Sequence[int] | None = None,
                iterations: int = 1, model_kwargs: dict | None = None) -> torch.Tensor:
    """Deterministic DDIM inversion: maps a clean sample to the noise that sample_ddim (eta = 0,
    same timesteps) maps back to it. Each step solves x_to = (a_to / a_from)(x - s_from eps(x_to))
    + s_to eps(x_to) by `iterations` fixed-point sweeps, the first from eps at the current x
    (iterations = 1 is the usual one-call inversion, whose error grows with the step size)."""
    param.check_prediction(prediction)
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    ts = _discrete_timesteps(schedule, timesteps, steps, spacing, offset)
    up = ts[::-1]
    for i, t in _steps(up, progress, "ddim-inversion"):
        abar_from = schedule.alpha_bar(up[i - 1]) if i > 0 else 1.0
        abar = schedule.alpha_bar(t)
        a_from, s_from = math.sqrt(abar_from), math.sqrt(1.0 - abar_from)
        a_to, s_to = math.sqrt(abar), math.sqrt(1.0 - abar)
        ea, eb = param.eps_coeffs(prediction, a_to, s_to)
        k = s_to - a_to * s_from / a_from  # x_to = (a_to / a_from) x + k eps
        out = _call(model, x, t, True, model_kwargs)
        y = fused_step([x, out], [a_to / a_from + k * ea, k * eb])
        for _ in range(iterations - 1):
            y = fused_step([x, y, _call(model, y, t, True, model_kwargs)], [a_to / a_from, k * ea, k * eb])
        x = y
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return x


def _check_continuous(schedule: object, prediction: str) -> None:
    if not hasattr(schedule, "sde"):
        raise TypeError(f"this sampler needs a continuous schedule (VP, sub-VP, VE), got {type(schedule).__name__}")
    param.check_prediction(prediction)


def _denoise(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, t: float, prediction: str,
             model_kwargs: dict | None) -> torch.Tensor:
    """The final Tweedie step: E[x0 | x_t] from one model call, no noise."""
    alpha, sigma = schedule.alpha_sigma(t)
    return fused_step([x, _call(model, x, t, False, model_kwargs)], list(param.x0_coeffs(prediction, alpha, sigma)))


def sample_euler_maruyama(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 1000,
                          generator: Generator | None = None, callback: Callback | None = None,
                          progress: bool = False, prediction: str = "score", t_end: float = 1e-3,
                          denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Reverse-time SDE dx = [f x - g^2 score] dt + g dW_bar by Euler-Maruyama, from t = 1 to t_end,
    then (by default) one denoising step at t_end."""
    _check_continuous(schedule, prediction)
    ts = time_grid(steps, t_end)
    for i, t in _steps(ts[:-1], progress, "euler-maruyama"):
        dt = t - ts[i + 1]
        f, g2 = schedule.sde(t)
        sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
        out = _call(model, x, t, False, model_kwargs)
        x = fused_step([x, out], [1.0 - f * dt + g2 * dt * sa, g2 * dt * sb], math.sqrt(g2 * dt), generator=generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return _denoise(model, x, schedule, ts[-1], prediction, model_kwargs) if denoise else x


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
    _check_continuous(schedule, prediction)
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    ts = time_grid(steps, t_end)
    for i, t in _steps(ts[:-1], progress, f"ode-{method}"):
        dt = t - ts[i + 1]
        a1, b1 = _ode_slope(schedule, prediction, t)
        out = _call(model, x, t, False, model_kwargs)
        euler = fused_step([x, out], [1.0 - dt * a1, -dt * b1])
        if method == "heun":
            a2, b2 = _ode_slope(schedule, prediction, ts[i + 1])
            out2 = _call(model, euler, ts[i + 1], False, model_kwargs)
            euler = fused_step([x, out, euler, out2], [1.0 - 0.5 * dt * a1, -0.5 * dt * b1, -0.5 * dt * a2,
                                                       -0.5 * dt * b2])
        x = euler
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return _denoise(model, x, schedule, ts[-1], prediction, model_kwargs) if denoise else x
