"""Continuous-time samplers: reverse-SDE Euler-Maruyama, predictor-corrector, annealed Langevin
(SMLD) and the probability-flow ODE."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import Callback, Model, ModelRun, check_continuous, final_denoise, steps_of
from mridpm.dpm.ode_solvers import dopri5
from mridpm.dpm.schedules import ContinuousSchedule, VESchedule, time_grid
from mridpm.ops.step import fused_step, randn
from mridpm.random import Generator


def _em_step(run: ModelRun, x: torch.Tensor, schedule: ContinuousSchedule, t: float, dt: float, prediction: str,
             generator: Generator | None) -> torch.Tensor:
    """x_{t-dt} = x - [f x - g^2 score] dt + g sqrt(dt) z: one reverse-SDE Euler-Maruyama step."""
    f, g2 = schedule.sde(t)
    sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
    out = run(x, t)
    return fused_step([x, out], [1.0 - f * dt + g2 * dt * sa, g2 * dt * sb], math.sqrt(g2 * dt), generator=generator)


def sample_euler_maruyama(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 1000,
                          generator: Generator | None = None, callback: Callback | None = None,
                          progress: bool = False, prediction: str = "score", t_end: float = 1e-3,
                          denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Reverse-time SDE dx = [f x - g^2 score] dt + g dW_bar by Euler-Maruyama, from t = 1 to t_end,
    then (by default) one denoising step at t_end."""
    check_continuous(schedule, prediction)
    run = ModelRun(model, model_kwargs, discrete=False)
    ts = time_grid(steps, t_end)
    for i, t in steps_of(ts[:-1], progress, "euler-maruyama"):
        x = _em_step(run, x, schedule, t, t - ts[i + 1], prediction, generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return run.finish(final_denoise(run, x, schedule, ts[-1], prediction) if denoise else x)


def langevin_step(x: torch.Tensor, score: torch.Tensor, snr: float, alpha: float,
                  generator: Generator | None) -> torch.Tensor:
    """One Langevin corrector step whose size makes the noise-to-score norm ratio equal snr
    (Song et al. 2021, Algorithm 4): eps = 2 alpha (snr |z| / |score|)^2, batch-averaged norms,
    computed on the device (no synchronisation)."""
    z = randn(tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device)
    dims = tuple(range(1, x.dim()))
    ratio = torch.linalg.vector_norm(z, dim=dims).mean() / torch.linalg.vector_norm(score, dim=dims).mean()
    # a vanishing or non-finite score gives no correction (a bad model output is reported at the end)
    step = torch.nan_to_num((2.0 * alpha) * (snr * ratio) ** 2, nan=0.0, posinf=0.0)
    return fused_step([x, score, z], [1.0, step, (2.0 * step).sqrt()])


def sample_pc(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 1000,
              generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
              prediction: str = "score", snr: float = 0.16, corrector_steps: int = 1, t_end: float = 1e-3,
              denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Predictor-corrector (Song et al. 2021): at each time, corrector_steps Langevin steps at
    target signal-to-noise ratio snr, then one Euler-Maruyama predictor step."""
    check_continuous(schedule, prediction)
    if not snr > 0 or not math.isfinite(snr) or corrector_steps < 0:
        raise ValueError(f"need snr > 0 and corrector_steps >= 0, got {snr}, {corrector_steps}")
    run = ModelRun(model, model_kwargs, discrete=False)
    ts = time_grid(steps, t_end)
    worst = min((_corrector_alpha(schedule, t, t - u), t) for t, u in itertools.pairwise(ts))
    if corrector_steps and worst[0] <= 0:
        raise ValueError(f"{steps} steps are too few for the corrector: its alpha = 1 - beta(t) dt is {worst[0]:.3g} "
                         f"at t = {worst[1]:.3g} (it must be > 0); use more steps")
    for i, t in steps_of(ts[:-1], progress, "predictor-corrector"):
        dt = t - ts[i + 1]
        sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
        alpha = _corrector_alpha(schedule, t, dt)
        for _ in range(corrector_steps):
            score = fused_step([x, run(x, t)], [sa, sb])
            x = langevin_step(x, score, snr, alpha, generator)
        x = _em_step(run, x, schedule, t, dt, prediction, generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return run.finish(final_denoise(run, x, schedule, ts[-1], prediction) if denoise else x)


def _corrector_alpha(schedule: ContinuousSchedule, t: float, dt: float) -> float:
    """The Langevin corrector's alpha: 1 - beta(t) dt for VP and sub-VP, 1 for VE."""
    return 1.0 + 2.0 * schedule.sde(t)[0] * dt


def sample_smld(model: Model, x: torch.Tensor, schedule: VESchedule, *, steps: int = 10,
                generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
                prediction: str = "score", steps_each: int = 100, step_lr: float = 2e-5, denoise: bool = True,
                model_kwargs: dict | None = None) -> torch.Tensor:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019): `steps` noise levels from sigma_max
    to sigma_min (geometric), steps_each Langevin steps of size step_lr * sigma_i^2 / sigma_min^2
    at each, then (by default) the denoising step x + sigma_min^2 score (Tweedie)."""
    if not isinstance(schedule, VESchedule):
        raise TypeError(f"SMLD needs a VESchedule, got {type(schedule).__name__}")
    param.check_prediction(prediction)
    if not step_lr > 0 or not math.isfinite(step_lr) or steps_each < 1:
        raise ValueError(f"need step_lr > 0 and steps_each >= 1, got {step_lr}, {steps_each}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps (noise levels) must be a positive integer, got {steps!r}")
    levels = [float(t) for t in np.linspace(1.0, 0.0, steps)]  # t = 0 is sigma_min
    run = ModelRun(model, model_kwargs, discrete=False)
    sigma_last = schedule.alpha_sigma(levels[-1])[1]
    for i, t in steps_of(levels, progress, "annealed-langevin"):
        alpha, sigma = schedule.alpha_sigma(t)
        size = step_lr * (sigma / sigma_last) ** 2
        sa, sb = param.score_coeffs(prediction, alpha, sigma)
        for _ in range(steps_each):
            out = run(x, t)
            x = fused_step([x, out], [1.0 + 0.5 * size * sa, 0.5 * size * sb], math.sqrt(size), generator=generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "sigma": sigma})
    return run.finish(final_denoise(run, x, schedule, levels[-1], prediction) if denoise else x)


def ode_drift(schedule: ContinuousSchedule, prediction: str, t: float) -> tuple[float, float]:
    """(a, b) with dx/dt = a x + b output on the probability-flow ODE dx = [f x - g^2 score / 2] dt."""
    f, g2 = schedule.sde(t)
    sa, sb = param.score_coeffs(prediction, *schedule.alpha_sigma(t))
    return f - 0.5 * g2 * sa, -0.5 * g2 * sb


def sample_ode(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 100,
               generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
               prediction: str = "score", method: str = "heun", t_end: float = 1e-3, denoise: bool = True,
               rtol: float = 1e-5, atol: float = 1e-5, model_kwargs: dict | None = None) -> torch.Tensor:
    """Probability-flow ODE from t = 1 to t_end: fixed Euler or Heun steps, or adaptive Dormand-Prince
    ("rk45", to rtol / atol; steps is then unused). Deterministic: generator is unused."""
    check_continuous(schedule, prediction)
    if method not in ("euler", "heun", "rk45"):
        raise ValueError(f"method must be 'euler', 'heun' or 'rk45', got {method!r}")
    run = ModelRun(model, model_kwargs, discrete=False)
    if method == "rk45":
        def drift(t: float, state: list[torch.Tensor]) -> list[torch.Tensor]:
            a, b = ode_drift(schedule, prediction, t)
            return [fused_step([state[0], run(state[0], t)], [a, b])]

        (x,), nfe = dopri5(drift, [x], 1.0, t_end, rtol=rtol, atol=atol)
        if callback is not None:
            callback({"x": x, "i": 0, "t": t_end, "nfe": nfe})
        return run.finish(final_denoise(run, x, schedule, t_end, prediction) if denoise else x)
    ts = time_grid(steps, t_end)
    for i, t in steps_of(ts[:-1], progress, f"ode-{method}"):
        dt = t - ts[i + 1]
        a1, b1 = ode_drift(schedule, prediction, t)
        out = run(x, t)
        euler = fused_step([x, out], [1.0 - dt * a1, -dt * b1])
        if method == "heun":
            a2, b2 = ode_drift(schedule, prediction, ts[i + 1])
            out2 = run(euler, ts[i + 1])
            euler = fused_step([x, out, euler, out2], [1.0 - 0.5 * dt * a1, -0.5 * dt * b1, -0.5 * dt * a2,
                                                       -0.5 * dt * b2])
        x = euler
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return run.finish(final_denoise(run, x, schedule, ts[-1], prediction) if denoise else x)
