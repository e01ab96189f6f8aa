"""DPM-Solver (Lu et al. 2022; singlestep, orders 1-3, noise prediction) and DPM-Solver++
(Lu et al. 2022b; multistep 2M and 3M, data prediction, with lower-order final steps).

Both integrate the probability-flow ODE exactly in its linear part, in log-SNR
lambda = log(alpha / sigma). Every update is a linear combination of the sample, model
outputs and earlier data predictions: one fused step each.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import (
    Callback,
    Model,
    ModelRun,
    check_continuous,
    discrete_timesteps,
    final_denoise,
    steps_of,
)
from mridpm.dpm.schedules import ContinuousSchedule, DiscreteSchedule, time_grid
from mridpm.ops.step import fused_step
from mridpm.random import Generator


def _log_snr(alpha: float, sigma: float) -> float:
    return math.inf if sigma == 0 else math.log(alpha / sigma)


def time_of_log_snr(schedule: ContinuousSchedule, lam: float, t_min: float = 1e-6) -> float:
    """The time t in [t_min, 1] where log(alpha / sigma) = lam (lambda decreases in t), by bisection."""
    lo, hi = t_min, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _log_snr(*schedule.alpha_sigma(mid)) > lam:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def continuous_grid(schedule: ContinuousSchedule, steps: int, t_end: float, skip: str) -> list[float]:
    """steps + 1 descending times, uniform in time or in log-SNR (DPM-Solver's choice)."""
    if skip == "time":
        return time_grid(steps, t_end)
    if skip != "logSNR":
        raise ValueError(f"skip must be 'time' or 'logSNR', got {skip!r}")
    lams = np.linspace(_log_snr(*schedule.alpha_sigma(1.0)), _log_snr(*schedule.alpha_sigma(t_end)), steps + 1)
    return [1.0, *(time_of_log_snr(schedule, float(v)) for v in lams[1:-1]), t_end]


def sample_dpm_solver(model: Model, x: torch.Tensor, schedule: ContinuousSchedule, *, steps: int = 20,
                      generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
                      prediction: str = "eps", order: int = 3, skip: str = "logSNR", t_end: float = 1e-3,
                      denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Singlestep DPM-Solver-1/2/3 from t = 1 to t_end: `steps` steps of `order` model calls each
    (r1 = 1/2 for order 2; r1 = 1/3, r2 = 2/3 for order 3). Deterministic; generator is unused."""
    check_continuous(schedule, prediction)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    ts = continuous_grid(schedule, steps, t_end, skip)
    run = ModelRun(model, model_kwargs, discrete=False)

    def eps_of(u: torch.Tensor, t: float) -> tuple[torch.Tensor, float, float]:
        """Model output at (u, t) and the (u, output) coefficients of eps."""
        return run(u, t), *param.eps_coeffs(prediction, *schedule.alpha_sigma(t))

    for i, s in steps_of(ts[:-1], progress, f"dpm-solver-{order}"):
        t = ts[i + 1]
        (a_s, sig_s), (a_t, sig_t) = schedule.alpha_sigma(s), schedule.alpha_sigma(t)
        lam_s = _log_snr(a_s, sig_s)
        h = _log_snr(a_t, sig_t) - lam_s
        out, ea, eb = eps_of(x, s)
        em = math.expm1(h)
        if order == 1:
            x = fused_step([x, out], [a_t / a_s - sig_t * em * ea, -sig_t * em * eb])
        elif order == 2:
            r1 = 0.5
            s1 = time_of_log_snr(schedule, lam_s + r1 * h)
            a1, sig1 = schedule.alpha_sigma(s1)
            c = sig1 * math.expm1(r1 * h)
            u = fused_step([x, out], [a1 / a_s - c * ea, -c * eb])
            o1, ea1, eb1 = eps_of(u, s1)
            cs, c1 = sig_t * em * (1 - 1 / (2 * r1)), sig_t * em / (2 * r1)
            x = fused_step([x, out, u, o1], [a_t / a_s - cs * ea, -cs * eb, -c1 * ea1, -c1 * eb1])
        else:
            r1, r2 = 1 / 3, 2 / 3
            s1, s2 = time_of_log_snr(schedule, lam_s + r1 * h), time_of_log_snr(schedule, lam_s + r2 * h)
            (a1, sig1), (a2, sig2) = schedule.alpha_sigma(s1), schedule.alpha_sigma(s2)
            c = sig1 * math.expm1(r1 * h)
            u1 = fused_step([x, out], [a1 / a_s - c * ea, -c * eb])
            o1, ea1, eb1 = eps_of(u1, s1)
            c2 = sig2 * math.expm1(r2 * h)
            k2 = sig2 * r2 / r1 * (math.expm1(r2 * h) / (r2 * h) - 1)
            # u2 = (a2/a_s) x - c2 eps_s - k2 (eps_1 - eps_s)
            u2 = fused_step([x, out, u1, o1], [a2 / a_s + (k2 - c2) * ea, (k2 - c2) * eb, -k2 * ea1, -k2 * eb1])
            o2, ea2, eb2 = eps_of(u2, s2)
            cs, k = sig_t * em, sig_t / r2 * (em / h - 1)
            # x_t = (a_t/a_s) x - cs eps_s - k (eps_2 - eps_s)
            x = fused_step([x, out, u2, o2], [a_t / a_s + (k - cs) * ea, (k - cs) * eb, -k * ea2, -k * eb2])
        if callback is not None:
            callback({"x": x, "i": i, "t": s})
    return run.finish(final_denoise(run, x, schedule, ts[-1], prediction) if denoise else x)


def _multistep_weights(order: int, h: float, prev_h: list[float], alpha_t: float) -> list[float]:
    """Weights of the data predictions m0 (newest), m1, m2 in DPM-Solver++(order)M's update."""
    em1 = -1.0 if math.isinf(h) else math.expm1(-h)  # e^{-h} - 1
    phi = -alpha_t * em1
    if order == 1:
        return [phi]
    r0 = prev_h[-1] / h
    d1_0 = np.array([1 / r0, -1 / r0, 0.0])
    if order == 2:
        return list(phi * np.array([1.0, 0.0, 0.0]) + 0.5 * phi * d1_0)[:2]
    r1 = prev_h[-2] / h
    d1_1 = np.array([0.0, 1 / r1, -1 / r1])
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    w = phi * np.array([1.0, 0.0, 0.0]) + alpha_t * (em1 / h + 1) * d1 - alpha_t * ((em1 + h) / h**2 - 0.5) * d2
    return [float(v) for v in w]


def multistep_order(order: int, earlier: int, i: int, n: int, lower_order_final: bool, sigma_t: float) -> int:
    """The order of step i of n: warm-up from the earlier predictions available, lower order in the
    last steps of short runs (diffusers' lower_order_final, n < 15), first order into sigma = 0."""
    k = min(order, earlier + 1)
    if lower_order_final and n < 15:
        k = min(k, n - i)
    return 1 if sigma_t == 0 else k


def multistep_update(x: torch.Tensor, out: torch.Tensor, history: list[torch.Tensor], prev_h: list[float],
                     order: int, prediction: str, coef_s: tuple[float, float], coef_t: tuple[float, float],
                     clip: tuple[float, float] | None, threshold: tuple[float, float] | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(order)M step from (alpha_s, sigma_s) to (alpha_t, sigma_t) given the model output at
    x and the earlier data predictions (newest first); returns (x_t, this step's data prediction)."""
    (a_s, sig_s), (a_t, sig_t) = coef_s, coef_t
    w = _multistep_weights(order, _log_snr(a_t, sig_t) - _log_snr(a_s, sig_s), prev_h, a_t)
    return fused_step([x, out, *history[: order - 1]], [sig_t / sig_s, 0.0, *w[1:]],
                      x0_coeffs=[*param.x0_coeffs(prediction, a_s, sig_s), *([0.0] * (order - 1))], x0_weight=w[0],
                      clamp=clip, threshold=threshold, return_x0=True)


def sample_dpmpp(model: Model, x: torch.Tensor, schedule: DiscreteSchedule | ContinuousSchedule, *,
                 steps: int = 20, generator: Generator | None = None, callback: Callback | None = None,
                 progress: bool = False, prediction: str = "eps", order: int = 2, lower_order_final: bool = True,
                 clip: tuple[float, float] | None = None, threshold: tuple[float, float] | None = None,
                 spacing: str = "linspace", offset: int = 0, skip: str = "logSNR", t_end: float = 1e-3,
                 denoise: bool = True, model_kwargs: dict | None = None) -> torch.Tensor:
    """Multistep DPM-Solver++(2M or 3M) on the data prediction, which clip or threshold may limit.
    The first steps warm up at lower order; with lower_order_final and fewer than 15 steps the
    last steps drop to lower order (diffusers' default), and a step to sigma = 0 is always first
    order. Discrete schedules end at the clean sample; continuous ones at t_end, then denoise."""
    param.check_prediction(prediction)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    discrete = isinstance(schedule, DiscreteSchedule)
    if discrete:
        times: list[float | int] = [*discrete_timesteps(schedule, None, steps, spacing, offset), -1]
    else:
        check_continuous(schedule, prediction)
        times = list(continuous_grid(schedule, steps, t_end, skip))
    run = ModelRun(model, model_kwargs, discrete=discrete)
    coef = [schedule.alpha_sigma(t) for t in times]
    lams = [_log_snr(a, s) for a, s in coef]
    n = len(times) - 1
    history: list[torch.Tensor] = []  # earlier data predictions, newest first
    hs: list[float] = []
    for i, t in steps_of(times[:-1], progress, f"dpm-solver++{order}m"):
        k = multistep_order(order, len(history), i, n, lower_order_final, coef[i + 1][1])
        x, m0 = multistep_update(x, run(x, t), history, hs, k, prediction, coef[i], coef[i + 1], clip, threshold)
        history = [m0, *history][:2]
        hs.append(lams[i + 1] - lams[i])
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": m0})
    if discrete or not denoise:
        return run.finish(x)
    return run.finish(final_denoise(run, x, schedule, times[-1], prediction))
