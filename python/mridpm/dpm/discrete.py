"""Discrete-time samplers: DDPM ancestral sampling, DDIM and its inversion (one fused step each)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import Callback, Model, ModelRun, discrete_timesteps, steps_of
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.ops.step import fused_step
from mridpm.random import Generator

Denoised = Callable[[torch.Tensor, int], torch.Tensor]  # (clean estimate x0, timestep t) -> replacement x0
DIRECTIONS = ("model", "x0")


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
    ts = discrete_timesteps(schedule, None, steps or getattr(schedule, "num_train_timesteps", 0), spacing, offset)
    run = ModelRun(model, model_kwargs, discrete=True)
    for i, t in steps_of(ts, progress, "ddpm"):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        abar = schedule.alpha_bar(t)
        c_xt, x0w, var = ddpm_coeffs(abar, schedule.alpha_bar(t_prev), variance)
        out = run(x, t)
        x, x0 = fused_step([x, out], [c_xt, 0.0], math.sqrt(var) if t_prev >= 0 else None, generator=generator,
                           x0_coeffs=param.x0_coeffs(prediction, math.sqrt(abar), math.sqrt(1.0 - abar)),
                           x0_weight=x0w, clamp=clip, threshold=threshold, return_x0=True)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
    return run.finish(x)


def ddpm_coeffs(abar: float, abar_prev: float, variance: str) -> tuple[float, float, float]:
    """DDPM's posterior q(x_prev | x_t, x0): the x_t and x0 weights of its mean and the variance
    ("beta_tilde" posterior or "beta"), with beta_t = 1 - abar_t / abar_prev for skipped steps."""
    beta = 1.0 - abar / abar_prev
    var = beta if variance == "beta" else beta * (1.0 - abar_prev) / (1.0 - abar)
    return math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar), math.sqrt(abar_prev) * beta / (1.0 - abar), var


def ddim_coeffs(prediction: str, abar: float, abar_to: float, eta: float) -> tuple[list[float], float, tuple, float]:
    """[x, out] coefficients of the direction term, the noise std, the x0 coefficients and weight."""
    a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
    std = eta * math.sqrt((1.0 - abar_to) / (1.0 - abar) * (1.0 - abar / abar_to)) if abar_to > abar else 0.0
    direction = math.sqrt(max(1.0 - abar_to - std * std, 0.0))
    ea, eb = param.eps_coeffs(prediction, a, s)
    return [direction * ea, direction * eb], std, param.x0_coeffs(prediction, a, s), math.sqrt(abar_to)


def ddim_update(x: torch.Tensor, out: torch.Tensor, abar: float, abar_to: float, *, prediction: str = "eps",
                eta: float = 0.0, generator: Generator | None = None, clip: tuple[float, float] | None = None,
                threshold: tuple[float, float] | None = None,
                denoised: Callable[[torch.Tensor], torch.Tensor] | None = None,
                direction: str = "model") -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM update of x (at abar) to abar_to given the model output: (x_to, the clean estimate x0).
    x_to = sqrt(abar_to) x0 + d eps + std z, x0 clipped or thresholded. denoised(x0) may replace the
    clean estimate (data consistency, CG refinement, k-space consistency); eps is the model's
    (direction "model") or re-derived from the final x0, eps = (x - sqrt(abar) x0) / sqrt(1 - abar)
    (direction "x0"). Without a hook and with the model's eps it is one fused step."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    coeffs, std, x0c, x0w = ddim_coeffs(prediction, abar, abar_to, eta)
    noise = std if std > 0 else None
    if denoised is None and direction == "model":
        return fused_step([x, out], coeffs, noise, generator=generator, x0_coeffs=x0c, x0_weight=x0w, clamp=clip,
                          threshold=threshold, return_x0=True)
    x0 = fused_step([x, out], [0.0, 0.0], x0_coeffs=x0c, x0_weight=1.0, clamp=clip, threshold=threshold)
    if denoised is not None:
        x0 = denoised(x0)
    if direction == "model":
        return fused_step([x, out, x0], [*coeffs, x0w], noise, generator=generator), x0
    a, s = math.sqrt(abar), math.sqrt(1.0 - abar)
    d = math.sqrt(max(1.0 - abar_to - std * std, 0.0))
    return fused_step([x, x0], [d / s, x0w - d * a / s], noise, generator=generator), x0


def sample_ddim(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, steps: int = 50,
                generator: Generator | None = None, callback: Callback | None = None, progress: bool = False,
                prediction: str = "eps", eta: float = 0.0, clip: tuple[float, float] | None = None,
                threshold: tuple[float, float] | None = None, spacing: str = "leading", offset: int = 0,
                timesteps: Sequence[int] | None = None, final_alpha_one: bool = True,
                model_kwargs: dict | None = None, denoised: Denoised | None = None,
                direction: str = "model") -> torch.Tensor:
    """DDIM (Song et al. 2021) over any decreasing step subsequence; eta = 0 is deterministic,
    eta = 1 matches DDPM's posterior variance. denoised(x0, t) may replace each step's clean
    estimate and direction chooses the eps of the update (see ddim_update)."""
    if not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    param.check_prediction(prediction)
    ts = discrete_timesteps(schedule, timesteps, steps, spacing, offset)
    run = ModelRun(model, model_kwargs, discrete=True)
    final = 1.0 if final_alpha_one else schedule.alpha_bar(0)
    for i, t in steps_of(ts, progress, "ddim"):
        abar_to = schedule.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else final
        hook = None if denoised is None else lambda x0, t=t: denoised(x0, t)  # type: ignore[misc]
        x, x0 = ddim_update(x, run(x, t), schedule.alpha_bar(t), abar_to, prediction=prediction, eta=eta,
                            generator=generator, clip=clip, threshold=threshold, denoised=hook, direction=direction)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
    return run.finish(x)


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
    ts = discrete_timesteps(schedule, timesteps, steps, spacing, offset)
    run = ModelRun(model, model_kwargs, discrete=True)
    up = ts[::-1]
    for i, t in steps_of(up, progress, "ddim-inversion"):
        abar_from = schedule.alpha_bar(up[i - 1]) if i > 0 else 1.0
        abar = schedule.alpha_bar(t)
        a_from, s_from = math.sqrt(abar_from), math.sqrt(1.0 - abar_from)
        a_to, s_to = math.sqrt(abar), math.sqrt(1.0 - abar)
        ea, eb = param.eps_coeffs(prediction, a_to, s_to)
        k = s_to - a_to * s_from / a_from  # x_to = (a_to / a_from) x + k eps
        out = run(x, t)
        y = fused_step([x, out], [a_to / a_from + k * ea, k * eb])
        for _ in range(iterations - 1):
            y = fused_step([x, y, run(y, t)], [a_to / a_from, k * ea, k * eb])
        x = y
        if callback is not None:
            callback({"x": x, "i": i, "t": t})
    return run.finish(x)


def analytic_dpm_gamma(model: Model, x0: torch.Tensor, schedule: DiscreteSchedule, timesteps: Sequence[int], *,
                       prediction: str = "eps", generator: Generator | None = None,
                       model_kwargs: dict | None = None) -> dict[int, float]:
    """Monte-Carlo estimate of Gamma_t = E ||eps_model(x_t, t)||^2 / d over data samples x0 at each
    timestep: the statistic Analytic-DPM's optimal variance needs (Bao et al. 2022)."""
    param.check_prediction(prediction)
    run = ModelRun(model, model_kwargs, discrete=True)
    gamma = {}
    for t in discrete_timesteps(schedule, timesteps, 0, "leading", 0):
        a, s = schedule.alpha_sigma(t)
        x_t = fused_step([x0], [a], s, generator=generator)
        eps = fused_step([x_t, run(x_t, t)], list(param.eps_coeffs(prediction, a, s)))
        gamma[t] = float(torch.view_as_real(eps).square().mean() if eps.is_complex() else eps.float().square().mean())
    run.finish(x0)
    return gamma


def sample_analytic_dpm(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, steps: int = 50,
                        generator: Generator | None = None, callback: Callback | None = None,
                        progress: bool = False, prediction: str = "eps", gamma: dict[int, float],
                        eta: float = 1.0, clip: tuple[float, float] | None = None, spacing: str = "leading",
                        offset: int = 0, model_kwargs: dict | None = None) -> torch.Tensor:
    """Analytic-DPM: the generalized DDIM mean with noise lambda^2 = eta^2 * (DDPM's posterior
    variance) and the optimal reverse variance
        lambda^2 + (sqrt(bbar_t / alpha_t) - sqrt(bbar_prev - lambda^2))^2 (1 - Gamma_t),
    with Gamma_t from analytic_dpm_gamma for every timestep of the run (clipped to [0, 1])."""
    if not math.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got {eta}")
    param.check_prediction(prediction)
    ts = discrete_timesteps(schedule, None, steps, spacing, offset)
    missing = [t for t in ts if t not in gamma]
    if missing:
        raise ValueError(f"gamma has no estimate for timesteps {missing}; run analytic_dpm_gamma on them")
    run = ModelRun(model, model_kwargs, discrete=True)
    for i, t in steps_of(ts, progress, "analytic-dpm"):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        abar, abar_prev = schedule.alpha_bar(t), schedule.alpha_bar(t_prev)
        bbar, bbar_prev, alpha_t = 1.0 - abar, 1.0 - abar_prev, abar / abar_prev
        lam2 = eta * eta * bbar_prev / bbar * (1.0 - alpha_t)
        gap = math.sqrt(bbar / alpha_t) - math.sqrt(bbar_prev - lam2)
        var = lam2 + gap * gap * min(max(1.0 - gamma[t], 0.0), 1.0)
        a, s = math.sqrt(abar), math.sqrt(bbar)
        ea, eb = param.eps_coeffs(prediction, a, s)
        direction = math.sqrt(bbar_prev - lam2)
        out = run(x, t)
        x, x0 = fused_step([x, out], [direction * ea, direction * eb], math.sqrt(var) if t_prev >= 0 else None,
                           generator=generator, x0_coeffs=param.x0_coeffs(prediction, a, s),
                           x0_weight=math.sqrt(abar_prev), clamp=clip, return_x0=True)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "denoised": x0})
    return run.finish(x)
