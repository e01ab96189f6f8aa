"""Posterior samplers for undersampled k-space with a diffusion prior on complex images.

Each sampler takes the problem (measurements y, a Sense or SingleCoil operator with its mask, the
measurement noise std per real and imaginary part), a denoiser on complex images (`ComplexDenoiser`)
and a discrete VP schedule, and returns posterior samples (batch, *spatial). All of them run the
reverse process on the host-side float64 coefficients of `mridpm.dpm` with one fused step per update
and the fused data-consistency kernels of `mridpm.mri.dc`; none disables autograd (DPS needs it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mridpm.dpm import parameterization as param
from mridpm.dpm._common import ModelRun, discrete_timesteps, steps_of
from mridpm.dpm.discrete import ddim_coeffs
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.dpm.sde import langevin_step
from mridpm.mri.dc import _blended, conjugate_gradient
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.nets.unet import channels_to_complex, complex_to_channels
from mridpm.ops import fused_step, randn
from mridpm.random import Generator


class ComplexDenoiser:
    """A network on real channels (batch, 2, *spatial) (real, imaginary) seen as a model on complex
    images (batch, *spatial): the form every sampler here calls, model(x, t, **model_kwargs)."""

    def __init__(self, model: Callable[..., torch.Tensor], prediction: str = "eps",
                 clip: tuple[float, float] | None = None) -> None:
        self.model, self.prediction, self.clip = model, param.check_prediction(prediction), clip

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        out = self.model(complex_to_channels(x.unsqueeze(1)), t, **kwargs)
        return channels_to_complex(out)[:, 0]


@dataclass(frozen=True)
class Problem:
    """y = A x + n: measured k-space, its operator (0/1 mask on it) and the noise std per real part."""

    y: torch.Tensor
    op: Sense | SingleCoil
    noise_std: float = 0.0

    def project(self, x: torch.Tensor, lam: float, y_scale: float = 1.0) -> torch.Tensor:
        """S^H F^H [lam M (y_scale y) + (1 - lam M) F S x]: the hard (lam = 1) or soft projection."""
        return _blended(x, self.y, self.op, lam, 1.0, y_scale)

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        """A^H (y - A x), fused."""
        return _blended(x, self.y, self.op, 1.0, 0.0)

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


def _noise(x: torch.Tensor, generator: Generator | None) -> torch.Tensor:
    return randn(tuple(x.shape), generator=generator, dtype=x.dtype, device=x.device)


def noised_projection(problem: Problem, x: torch.Tensor, lam: float, alpha: float, sigma: float,
                      generator: Generator | None) -> torch.Tensor:
    """Projection of x_t onto the measurement noised to time t, y_t = alpha y + sigma A z (Song et al.
    2022), computed as P(x_t - sigma z, alpha y) + sigma z: the same when S^H S = I, one projection."""
    if sigma == 0.0:
        return problem.project(x, lam, alpha)
    z = _noise(x, generator)
    x = problem.project(fused_step([x, z], [1.0, -sigma]), lam, alpha)
    return fused_step([x, z], [1.0, sigma])


def start(schedule: DiscreteSchedule, ts: list[int], shape: Sequence[int], like: torch.Tensor,
          generator: Generator | None, init: torch.Tensor | None) -> torch.Tensor:
    """x_T: pure noise, or (warm start, come-closer-diffuse-faster) init noised to the first timestep."""
    z = randn(tuple(shape), generator=generator, dtype=like.dtype, device=like.device)
    if init is None:
        return z
    if tuple(init.shape) != tuple(shape):
        raise ValueError(f"the warm-start image must have shape {tuple(shape)}, got {tuple(init.shape)}")
    a, s = schedule.alpha_sigma(ts[0])
    return fused_step([init.to(like.dtype), z], [a, s])


@dataclass
class Options:
    """What every sampler shares: the timesteps, eta of the DDIM updates, x0 clipping, the warm
    start (init image and the timestep to start from) and the model's keyword arguments."""

    steps: int = 100
    eta: float = 1.0
    clip: tuple[float, float] | None = None
    init: torch.Tensor | None = None
    t_start: int | None = None
    model_kwargs: dict | None = None
    progress: bool = False

    def timesteps(self, schedule: DiscreteSchedule) -> list[int]:
        ts = discrete_timesteps(schedule, None, self.steps, "leading", 0)
        if self.t_start is not None:
            ts = [t for t in ts if t <= self.t_start] or ts[-1:]
        elif self.init is not None:
            raise ValueError("a warm start (init) needs t_start, the timestep to start from")
        return ts


def _abar_to(schedule: DiscreteSchedule, ts: list[int], i: int) -> float:
    return schedule.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else 1.0


def sample_projection(model: Callable[..., torch.Tensor], problem: Problem, schedule: DiscreteSchedule,
                      shape: Sequence[int], *, opts: Options, generator: Generator | None = None,
                      lam: float = 1.0, corrector_steps: int = 0, snr: float = 0.16,
                      prediction: str = "eps") -> tuple[torch.Tensor, int]:
    """Reverse diffusion with data consistency (Song et al. 2022; score-MRI of Chung & Ye 2022 with
    corrector_steps > 0): before every predictor step, and after every Langevin corrector step,
    x_t is projected (weight lam) onto the measurement noised to time t. Returns (x, model calls)."""
    ts = opts.timesteps(schedule)
    run = ModelRun(model, opts.model_kwargs, discrete=True)
    x = start(schedule, ts, shape, problem.y, generator, opts.init)
    for i, t in steps_of(ts, opts.progress, "projection"):
        a, s = schedule.alpha_sigma(t)
        x = noised_projection(problem, x, lam, a, s, generator)
        coeffs, std, x0c, x0w = ddim_coeffs(prediction, a * a, _abar_to(schedule, ts, i), opts.eta)
        x = fused_step([x, run(x, t)], coeffs, std if std > 0 else None, generator=generator, x0_coeffs=x0c,
                       x0_weight=x0w, clamp=opts.clip)
        if i + 1 < len(ts):
            t_next = ts[i + 1]
            a, s = schedule.alpha_sigma(t_next)
            sa, sb = param.score_coeffs(prediction, a, s)
            for _ in range(corrector_steps):
                x = langevin_step(x, fused_step([x, run(x, t_next)], [sa, sb]), snr, 1.0, generator)
                x = noised_projection(problem, x, lam, a, s, generator)
    return run.finish(x), len(run.times)


def sample_langevin(model: Callable[..., torch.Tensor], problem: Problem, schedule: DiscreteSchedule,
                    shape: Sequence[int], *, opts: Options, generator: Generator | None = None,
                    langevin_steps: int = 3, step_size: float = 0.5, prediction: str = "eps"
                    ) -> tuple[torch.Tensor, int]:
    """Annealed Langevin posterior sampling (Jalal et al. 2021) over the schedule's noise levels,
    in the variance-exploding variable v = x_t / alpha_t (noise level g = sigma_t / alpha_t):
        v += e (score(v) + A^H (y - A v) / (noise_std^2 + g^2)) + sqrt(2 e) z,  e = step_size (noise_std^2 + g^2).
    The score comes from the VP model: score(v) = -eps(alpha_t v, t) / g."""
    if not step_size > 0 or not math.isfinite(step_size) or langevin_steps < 1:
        raise ValueError(f"need step_size > 0 and langevin_steps >= 1, got {step_size}, {langevin_steps}")
    ts = opts.timesteps(schedule)
    run = ModelRun(model, opts.model_kwargs, discrete=True)
    x = start(schedule, ts, shape, problem.y, generator, opts.init)
    v = fused_step([x], [1.0 / schedule.alpha_sigma(ts[0])[0]])
    for _, t in steps_of(ts, opts.progress, "langevin"):
        a, s = schedule.alpha_sigma(t)
        g = s / a
        var = problem.noise_std ** 2 + g * g
        e = step_size * var
        ea, eb = param.eps_coeffs(prediction, a, s)
        for _ in range(langevin_steps):
            out = run(fused_step([v], [a]), t)
            # e * score = -(e / g) (ea * a v + eb * out)
            v = fused_step([v, out, problem.gradient(v)], [1.0 - e / g * ea * a, -e / g * eb, e / var],
                           math.sqrt(2.0 * e), generator=generator)
    return run.finish(v), len(run.times)


def sample_dps(model: Callable[..., torch.Tensor], problem: Problem, schedule: DiscreteSchedule,
               shape: Sequence[int], *, opts: Options, generator: Generator | None = None,
               zeta: float = 1.0, prediction: str = "eps") -> tuple[torch.Tensor, int]:
    """Diffusion posterior sampling (Chung et al. 2023): after each DDIM/DDPM update, a step of size
    zeta along -grad_{x_t} ||y - A x0(x_t)||, x0 by Tweedie's formula, differentiated through the model."""
    if not math.isfinite(zeta) or zeta < 0:
        raise ValueError(f"zeta must be finite and >= 0, got {zeta}")
    ts = opts.timesteps(schedule)
    run = ModelRun(model, opts.model_kwargs, discrete=True)
    x = start(schedule, ts, shape, problem.y, generator, opts.init)
    batch_shape = (-1,) + (1,) * (len(shape) - 1)
    for i, t in steps_of(ts, opts.progress, "dps"):
        coeffs, std, x0c, x0w = ddim_coeffs(prediction, schedule.alpha_bar(t), _abar_to(schedule, ts, i), opts.eta)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = run(xg, t)
            x0 = x0c[0] * xg + x0c[1] * out
            r = problem.gradient(x0.detach())  # A^H (y - A x0)
            norm = torch.linalg.vector_norm(problem.op.forward(x0.detach()) - problem.y,
                                            dim=tuple(range(1, problem.y.dim()))).clamp_min(1e-12)
            (grad,) = torch.autograd.grad(x0, xg, grad_outputs=-r / norm.reshape(batch_shape))
        x = fused_step([x, out.detach(), grad], [*coeffs, -zeta], std if std > 0 else None, generator=generator,
                       x0_coeffs=[*x0c, 0.0], x0_weight=x0w, clamp=opts.clip)
    return run.finish(x), len(run.times)


def sample_dds(model: Callable[..., torch.Tensor], problem: Problem, schedule: DiscreteSchedule,
               shape: Sequence[int], *, opts: Options, generator: Generator | None = None,
               cg_iters: int = 5, gamma: float | None = None, data_var: float = 1.0, direction: str = "model",
               prediction: str = "eps", solve: Callable[[torch.Tensor, float], torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, int]:
    """Decomposed diffusion sampling (Chung, Lee & Ye 2024): at each DDIM step the Tweedie estimate x0
    is refined by cg_iters conjugate-gradient steps on (A^H A + gamma I) x = A^H y + gamma x0 started
    at x0. gamma None takes noise_std^2 / r_t^2 with r_t^2 = v g^2 / (v + g^2), g = sigma_t / alpha_t,
    the variance of x0 given x_t for data of variance v = data_var per real component: then the refined
    x0 is E[x0 | x_t, y] under that Gaussian approximation (gamma = 0, the paper's Krylov-subspace form,
    for noiseless data). direction "x0" takes the update's noise direction from the refined x0,
    eps = (x_t - alpha_t x0) / sigma_t (the DDPM step given x0; exact for Gaussian priors in the
    many-step limit), "model" keeps the network's eps as the paper does. solve(x0, gamma) replaces
    the refinement (the 3D sampler passes its ADMM)."""
    if not isinstance(cg_iters, int) or cg_iters < 0 or (gamma is not None and not (math.isfinite(gamma)
                                                                                   and gamma >= 0)) \
            or not (math.isfinite(data_var) and data_var > 0):
        raise ValueError(f"need cg_iters >= 0, gamma >= 0 and data_var > 0, got {cg_iters}, {gamma}, {data_var}")
    if direction not in ("x0", "model"):
        raise ValueError(f"direction must be 'x0' or 'model', got {direction!r}")
    ts = opts.timesteps(schedule)
    run = ModelRun(model, opts.model_kwargs, discrete=True)
    x = start(schedule, ts, shape, problem.y, generator, opts.init)
    b = problem.op.adjoint(problem.y)
    for i, t in steps_of(ts, opts.progress, "dds"):
        a, s = schedule.alpha_sigma(t)
        coeffs, std, x0c, x0w = ddim_coeffs(prediction, a * a, _abar_to(schedule, ts, i), opts.eta)
        out = run(x, t)
        x0 = fused_step([x, out], [0.0, 0.0], x0_coeffs=x0c, x0_weight=1.0, clamp=opts.clip)
        g2 = (s / a) ** 2
        mu = problem.noise_std ** 2 * (data_var + g2) / (data_var * g2) if gamma is None else gamma
        if solve is not None:
            x0 = solve(x0, mu)
        else:
            rhs = b if mu == 0 else fused_step([b, x0], [1.0, mu])
            x0 = conjugate_gradient(problem.op.N, rhs, mu=mu, x0=x0, iters=cg_iters)
        if direction == "x0":  # eps = (x_t - a x0) / s: the DDPM/DDIM step given the refined x0
            d = math.sqrt(max(1.0 - _abar_to(schedule, ts, i) - std * std, 0.0))
            x = fused_step([x, x0], [d / s, x0w - d * a / s], std if std > 0 else None, generator=generator)
        else:
            x = fused_step([x, out, x0], [*coeffs, x0w], std if std > 0 else None, generator=generator)
    return run.finish(x), len(run.times)


def sample_kspace(model: Callable[..., torch.Tensor], problem: Problem, schedule: DiscreteSchedule,
                  shape: Sequence[int], *, opts: Options, generator: Generator | None = None,
                  prediction: str = "eps") -> tuple[torch.Tensor, int]:
    """k-space diffusion (MC-DDPM, Xie & Li 2022): the reverse process runs on the unmeasured k-space
    only, in image form x_u = F^H (1 - M) k, with the measured part kept; the model is conditional,
    called as model(x_u, t, cond=zero-filled image channels), and predicts the noise of x_u. The
    result is x_u + F^H M y. Single-coil operators with a 0/1 mask."""
    if not isinstance(problem.op, SingleCoil):
        raise TypeError("k-space diffusion runs on single-coil k-space: give a SingleCoil operator")
    ts = opts.timesteps(schedule)
    zero_filled = problem.op.adjoint(problem.y)
    kwargs = {**(opts.model_kwargs or {}), "cond": complex_to_channels(zero_filled.unsqueeze(1))}
    run = ModelRun(model, kwargs, discrete=True)

    def unmeasured(u: torch.Tensor) -> torch.Tensor:
        return _blended(u, None, problem.op, 1.0, 1.0)  # F^H (1 - M) F u

    x = unmeasured(start(schedule, ts, shape, problem.y, generator,
                         None if opts.init is None else unmeasured(opts.init)))
    for i, t in steps_of(ts, opts.progress, "kspace"):
        coeffs, std, x0c, x0w = ddim_coeffs(prediction, schedule.alpha_bar(t), _abar_to(schedule, ts, i), opts.eta)
        x = unmeasured(fused_step([x, run(x, t)], coeffs, std if std > 0 else None, generator=generator,
                                  x0_coeffs=x0c, x0_weight=x0w))
    return run.finish(fused_step([x, zero_filled], [1.0, 1.0])), len(run.times)
