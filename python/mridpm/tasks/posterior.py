"""Posterior samplers for undersampled k-space with a diffusion prior on complex images.

Every sampler has the shape of mridpm.dpm's samplers,

    sample_x(model, x, schedule, *, problem, steps, timesteps, generator, callback, progress, **options) -> x

x the starting sample at the first timestep (pure noise, or a warm start noised there: `start`),
problem the measurements y with their Sense or SingleCoil operator (0/1 mask) and noise std, model a
denoiser on complex images (`ComplexDenoiser`), schedule a discrete VP schedule. Each calls
callback({"x", "i", "t", "denoised"}) once per timestep. Updates are mridpm.dpm's (float64 host-side
coefficients, one fused step; the DDIM ones through dpm.ddim_update), data consistency the fused
kernels of mridpm.mri.consistency. None disables autograd (DPS differentiates through the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import Callback, Model, ModelRun, discrete_timesteps, steps_of
from mridpm.dpm.discrete import DIRECTIONS, ddim_coeffs, ddim_update
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.dpm.sde import langevin_step
from mridpm.mri import consistency
from mridpm.mri.dc import conjugate_gradient
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.nets.unet import channels_to_complex, complex_to_channels
from mridpm.ops.step import fused_step, randn
from mridpm.random import Generator


class ComplexDenoiser:
    """A network on real channels (batch, 2, *spatial) (real, imaginary) seen as a model on complex
    images (batch, *spatial): the form every sampler here calls, model(x, t, **model_kwargs)."""

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        out = self.model(complex_to_channels(x.unsqueeze(1)), t, **kwargs)
        return channels_to_complex(out)[:, 0]


class CountingModel:
    """model, counting its calls in `calls` (how many network evaluations a run took)."""

    def __init__(self, model: Model) -> None:
        self.model, self.calls = model, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, t, **kwargs)


@dataclass(frozen=True)
class Problem:
    """y = A x + n: measured k-space, its operator (0/1 mask on it) and the noise std per real part."""

    y: torch.Tensor
    op: Sense | SingleCoil
    noise_std: float = 0.0

    def project(self, x: torch.Tensor, lam: float, y_scale: float = 1.0) -> torch.Tensor:
        """S^H F^H [lam M (y_scale y) + (1 - lam M) F S x]: the hard (lam = 1) or soft projection."""
        return consistency.project(x, self.y, self.op, lam, y_scale)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """A^H (y - A x), fused."""
        return consistency.gradient(x, self.y, self.op)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        return self.op.normal(x)

    def consistent(self, x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
        """The nearest image to x that reproduces y: x + A^+ (y - A x). The hard projection for one
        coil; for SENSE, CG on A^H A d = A^H (y - A x) from d = 0 (its minimum-norm solution), repeated
        once on the new residual (iterative refinement: float32 CG stalls near 1e-4 relative)."""
        if isinstance(self.op, SingleCoil):
            return self.project(x, 1.0)
        for _ in range(2):
            x = x + conjugate_gradient(self.op.N, self.gradient(x), iters=iters, tol=tol)
        return x


def timesteps(schedule: DiscreteSchedule, steps: int, t_start: int | None = None) -> list[int]:
    """The timesteps of a run of `steps` (leading spacing), those from t_start down for a warm start."""
    ts = discrete_timesteps(schedule, None, steps, "leading", 0)
    return ts if t_start is None else [t for t in ts if t <= t_start] or ts[-1:]


def start(schedule: DiscreteSchedule, t: int, shape: Sequence[int], like: torch.Tensor,
          generator: Generator | None, init: torch.Tensor | None = None) -> torch.Tensor:
    """The starting sample at timestep t: pure noise, or (warm start, come-closer-diffuse-faster) init
    noised to t; dtype and device those of `like`."""
    z = randn(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)
    if init is None:
        return z
    if tuple(init.shape) != tuple(shape):
        raise ValueError(f"the warm-start image must have shape {tuple(shape)}, got {tuple(init.shape)}")
    a, s = schedule.alpha_sigma(t)
    return fused_step([init.to(like.dtype), z], [a, s])


def noised_projection(problem: Problem, x: torch.Tensor, lam: float, alpha: float, sigma: float,
                      generator: Generator | None) -> torch.Tensor:
    """Projection of x_t onto the measurement noised to time t, y_t = alpha y + sigma A z (Song et al.
    2022), computed as P(x_t - sigma z, alpha y) + sigma z: the same when S^H S = I, one projection."""
    if sigma == 0.0:
        return problem.project(x, lam, alpha)
    z = randn(tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device)
    x = problem.project(fused_step([x, z], [1.0, -sigma]), lam, alpha)
    return fused_step([x, z], [1.0, sigma])


def _setup(model: Model, schedule: DiscreteSchedule, steps: int, ts: Sequence[int] | None,
           model_kwargs: dict | None, prediction: str) -> tuple[list[int], ModelRun]:
    """The run's timesteps (checked) and its model runner."""
    param.check_prediction(prediction)
    return discrete_timesteps(schedule, ts, steps, "leading", 0), ModelRun(model, model_kwargs, discrete=True)


def _report(callback: Callback | None, x: torch.Tensor, i: int, t: int, denoised: torch.Tensor) -> None:
    """The step's callback, as every mridpm sampler makes it."""
    if callback is not None:
        callback({"x": x, "i": i, "t": t, "denoised": denoised})


def _abar_to(schedule: DiscreteSchedule, ts: list[int], i: int) -> float:
    return schedule.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else 1.0


def sample_projection(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, problem: Problem,
                      steps: int = 100, timesteps: Sequence[int] | None = None, generator: Generator | None = None,
                      callback: Callback | None = None, progress: bool = False, prediction: str = "eps",
                      eta: float = 1.0, clip: tuple[float, float] | None = None, model_kwargs: dict | None = None,
                      lam: float = 1.0, corrector_steps: int = 0, snr: float = 0.16) -> torch.Tensor:
    """Reverse diffusion with data consistency (Song et al. 2022; score-MRI of Chung & Ye 2022 with
    corrector_steps > 0): before every DDIM predictor step, and after every Langevin corrector step,
    x_t is projected (weight lam) onto the measurement noised to time t."""
    ts, run = _setup(model, schedule, steps, timesteps, model_kwargs, prediction)
    for i, t in steps_of(ts, progress, "projection"):
        a, s = schedule.alpha_sigma(t)
        x = noised_projection(problem, x, lam, a, s, generator)
        x, x0 = ddim_update(x, run(x, t), a * a, _abar_to(schedule, ts, i), prediction=prediction, eta=eta,
                            generator=generator, clip=clip)
        if i + 1 < len(ts):
            t_next = ts[i + 1]
            a, s = schedule.alpha_sigma(t_next)
            sa, sb = param.score_coeffs(prediction, a, s)
            for _ in range(corrector_steps):
                x = langevin_step(x, fused_step([x, run(x, t_next)], [sa, sb]), snr, 1.0, generator)
                x = noised_projection(problem, x, lam, a, s, generator)
        _report(callback, x, i, t, x0)
    return run.finish(x)


def sample_langevin(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, problem: Problem,
                    steps: int = 100, timesteps: Sequence[int] | None = None, generator: Generator | None = None,
                    callback: Callback | None = None, progress: bool = False, prediction: str = "eps",
                    model_kwargs: dict | None = None, langevin_steps: int = 3, step_size: float = 0.5
                    ) -> torch.Tensor:
    """Annealed Langevin posterior sampling (Jalal et al. 2021) over the schedule's noise levels,
    in the variance-exploding variable v = x_t / alpha_t (noise level g = sigma_t / alpha_t):
        v += e (score(v) + A^H (y - A v) / (noise_std^2 + g^2)) + sqrt(2 e) z,  e = step_size (noise_std^2 + g^2).
    The score comes from the VP model: score(v) = -eps(alpha_t v, t) / g. The callback's "x" is v, its
    "denoised" Tweedie's estimate from the level's last model call."""
    if not step_size > 0 or not math.isfinite(step_size) or langevin_steps < 1:
        raise ValueError(f"need step_size > 0 and langevin_steps >= 1, got {step_size}, {langevin_steps}")
    ts, run = _setup(model, schedule, steps, timesteps, model_kwargs, prediction)
    v = fused_step([x], [1.0 / schedule.alpha_sigma(ts[0])[0]])
    for i, t in steps_of(ts, progress, "langevin"):
        a, s = schedule.alpha_sigma(t)
        g = s / a
        var = problem.noise_std ** 2 + g * g
        e = step_size * var
        ea, eb = param.eps_coeffs(prediction, a, s)
        for _ in range(langevin_steps):
            v_in, out = v, run(fused_step([v], [a]), t)
            # e * score = -(e / g) (ea * a v + eb * out)
            v = fused_step([v, out, problem.gradient(v)], [1.0 - e / g * ea * a, -e / g * eb, e / var],
                           math.sqrt(2.0 * e), generator=generator)
        if callback is not None:  # Tweedie's estimate at the level's last model call
            xa, xb = param.x0_coeffs(prediction, a, s)
            _report(callback, v, i, t, fused_step([v_in, out], [xa * a, xb]))
    return run.finish(v)


def sample_dps(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, problem: Problem, steps: int = 200,
               timesteps: Sequence[int] | None = None, generator: Generator | None = None,
               callback: Callback | None = None, progress: bool = False, prediction: str = "eps", eta: float = 1.0,
               clip: tuple[float, float] | None = None, model_kwargs: dict | None = None, zeta: float = 1.0
               ) -> torch.Tensor:
    """Diffusion posterior sampling (Chung et al. 2023): after each DDIM/DDPM update, a step of size
    zeta along -grad_{x_t} ||y - A x0(x_t)||, x0 by Tweedie's formula, differentiated through the model
    (gradients on for that step whatever the caller's mode), in the same fused pass as the update."""
    if not math.isfinite(zeta) or zeta < 0:
        raise ValueError(f"zeta must be finite and >= 0, got {zeta}")
    ts, run = _setup(model, schedule, steps, timesteps, model_kwargs, prediction)
    batch_shape = (-1,) + (1,) * (x.dim() - 1)
    for i, t in steps_of(ts, progress, "dps"):
        coeffs, std, x0c, x0w = ddim_coeffs(prediction, schedule.alpha_bar(t), _abar_to(schedule, ts, i), eta)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = run(xg, t)
            x0 = x0c[0] * xg + x0c[1] * out
            r = problem.gradient(x0.detach())  # A^H (y - A x0)
            norm = torch.linalg.vector_norm(problem.op.forward(x0.detach()) - problem.y,
                                            dim=tuple(range(1, problem.y.dim()))).clamp_min(1e-12)
            (grad,) = torch.autograd.grad(x0, xg, grad_outputs=-r / norm.reshape(batch_shape))
        x, x0 = fused_step([x, out.detach(), grad], [*coeffs, -zeta], std if std > 0 else None, generator=generator,
                           x0_coeffs=[*x0c, 0.0], x0_weight=x0w, clamp=clip, return_x0=True)
        _report(callback, x, i, t, x0)
    return run.finish(x)


def sample_dds(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, problem: Problem, steps: int = 50,
               timesteps: Sequence[int] | None = None, generator: Generator | None = None,
               callback: Callback | None = None, progress: bool = False, prediction: str = "eps", eta: float = 1.0,
               clip: tuple[float, float] | None = None, model_kwargs: dict | None = None, cg_iters: int = 5,
               gamma: float | None = None, data_var: float = 1.0, direction: str = "model",
               solve: Callable[[torch.Tensor, float], torch.Tensor] | None = None) -> torch.Tensor:
    """Decomposed diffusion sampling (Chung, Lee & Ye 2024): at each DDIM step the Tweedie estimate x0
    is refined by cg_iters conjugate-gradient steps on (A^H A + gamma I) x = A^H y + gamma x0 started
    at x0 (the hook of dpm.ddim_update). gamma None takes noise_std^2 / r_t^2 with r_t^2 = v g^2 / (v + g^2),
    g = sigma_t / alpha_t, the variance of x0 given x_t for data of variance v = data_var per real
    component: then the refined x0 is E[x0 | x_t, y] under that Gaussian approximation (gamma = 0, the
    paper's Krylov-subspace form, for noiseless data). direction "x0" takes the update's noise direction
    from the refined x0, eps = (x_t - alpha_t x0) / sigma_t (the DDPM step given x0; exact for Gaussian
    priors in the many-step limit), "model" keeps the network's eps as the paper does. solve(x0, gamma)
    replaces the refinement (the 3D sampler passes its ADMM)."""
    if not isinstance(cg_iters, int) or cg_iters < 0 or (gamma is not None and not (math.isfinite(gamma)
                                                                                   and gamma >= 0)) \
            or not (math.isfinite(data_var) and data_var > 0):
        raise ValueError(f"need cg_iters >= 0, gamma >= 0 and data_var > 0, got {cg_iters}, {gamma}, {data_var}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    ts, run = _setup(model, schedule, steps, timesteps, model_kwargs, prediction)
    b = problem.op.adjoint(problem.y)

    def refine(x0: torch.Tensor, mu: float) -> torch.Tensor:
        if solve is not None:
            return solve(x0, mu)
        rhs = b if mu == 0 else fused_step([b, x0], [1.0, mu])
        return conjugate_gradient(problem.op.N, rhs, mu=mu, x0=x0, iters=cg_iters)

    for i, t in steps_of(ts, progress, "dds"):
        a, s = schedule.alpha_sigma(t)
        g2 = (s / a) ** 2
        mu = problem.noise_std ** 2 * (data_var + g2) / (data_var * g2) if gamma is None else gamma
        x, x0 = ddim_update(x, run(x, t), a * a, _abar_to(schedule, ts, i), prediction=prediction, eta=eta,
                            generator=generator, clip=clip, denoised=lambda u, mu=mu: refine(u, mu),
                            direction=direction)
        _report(callback, x, i, t, x0)
    return run.finish(x)


def sample_kspace(model: Model, x: torch.Tensor, schedule: DiscreteSchedule, *, problem: Problem,
                  steps: int = 100, timesteps: Sequence[int] | None = None, generator: Generator | None = None,
                  callback: Callback | None = None, progress: bool = False, prediction: str = "eps",
                  eta: float = 1.0, model_kwargs: dict | None = None) -> torch.Tensor:
    """k-space diffusion (MC-DDPM, Xie & Li 2022): the reverse process runs on the unmeasured k-space
    only, in image form x_u = F^H (1 - M) k (x is projected there first), with the measured part kept;
    the model is conditional, called as model(x_u, t, cond=zero-filled image channels), and predicts the
    noise of x_u. The result is x_u + F^H M y; the callback sees x_u and its clean estimate. Single-coil
    operators with a 0/1 mask."""
    if not isinstance(problem.op, SingleCoil):
        raise TypeError("k-space diffusion runs on single-coil k-space: give a SingleCoil operator")
    zero_filled = problem.op.adjoint(problem.y)
    kwargs = {**(model_kwargs or {}), "cond": complex_to_channels(zero_filled.unsqueeze(1))}
    ts, run = _setup(model, schedule, steps, timesteps, kwargs, prediction)
    x = consistency.unmeasured(x, problem.op)
    for i, t in steps_of(ts, progress, "kspace"):
        x, x0 = ddim_update(x, run(x, t), schedule.alpha_bar(t), _abar_to(schedule, ts, i), prediction=prediction,
                            eta=eta, generator=generator)
        x = consistency.unmeasured(x, problem.op)
        _report(callback, x, i, t, x0)
    return run.finish(fused_step([x, zero_filled], [1.0, 1.0]))
