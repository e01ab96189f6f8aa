"""MRI reconstruction by diffusion posterior sampling: one entry point over every method, several
posterior samples per call (their mean is the reconstruction, their pixelwise standard deviation the
uncertainty), warm starts, the per-coil root-sum-of-squares variant and 3D volumes with a total-variation
prior along the slices."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.mri.classical import _soft, cg_sense, zero_filled
from mridpm.mri.coils import rss
from mridpm.mri.dc import all_finite, conjugate_gradient
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.nets.speed import Speed, check_speed, fast_model
from mridpm.random import Generator
from mridpm.tasks import posterior as ps
from mridpm.tasks.recon_padding import fit_model, size_multiple
from mridpm.tasks.recon_scale import estimate_scale, image_scales
from mridpm.tasks.recon_scale import image_scale as image_scale  # re-exported: the scale of an image made

METHODS = ("projection", "langevin", "pc", "pc-rss", "dps", "dds", "kspace", "tv3d")
DEFAULT_STEPS = {"projection": 100, "langevin": 100, "pc": 100, "pc-rss": 100, "dps": 200, "dds": 50,
                 "kspace": 100, "tv3d": 50}


@dataclass
class Reconstruction:
    """mean and std over the posterior samples (samples, batch, *spatial); complex images, or
    magnitudes for the per-coil root-sum-of-squares method; evaluations counts model calls."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: torch.Tensor
    evaluations: int
    seconds: float


_MAX_ENERGY = 1e36  # float32 overflows at 3.4e38: CG's inner products of k-space this energetic stay 300x below


def check_values(y: torch.Tensor, what: str = "y (the measured k-space)") -> None:
    """Refuses k-space with NaN or Inf, and finite k-space so large that its sum of squares overflows
    float32 arithmetic (said as such: a scale problem, fixed by rescaling, not a damaged file)."""
    if not all_finite(y):
        raise ValueError(f"{what} contains NaN or Inf")
    peak = float(y.abs().amax()) if y.numel() else 0.0
    if peak > 0 and peak * peak * float(torch.view_as_real(y / peak).square().sum()) > _MAX_ENERGY:
        raise ValueError(f"{what} has values up to {peak:.3g}, which overflow float32 arithmetic; rescale the "
                         "data (e.g. divide it by its peak)")


def _check_devices(y: torch.Tensor, op: Sense | SingleCoil) -> None:
    """Refuses meta tensors (a shape without data) and operands on another device than y."""
    named = [("y", y), ("the operator's mask", op.mask.mask)]  # type: ignore[union-attr]
    if isinstance(op, Sense):
        named.append(("the coil maps", op.maps))
    for name, t in named:
        if t.is_meta:
            raise ValueError(f"{name} is a meta tensor (a shape without data); pass real data")
        if t.device != y.device:
            raise ValueError(f"y is on {y.device} but {name} on {t.device}; move them to one device")


def check_problem(y: torch.Tensor, op: Sense | SingleCoil, noise_std: float = 0.0) -> ps.Problem:
    """The checked problem: complex finite k-space of the operator's shape with data on one device, a
    0/1 mask that samples something, measurements that are neither empty nor all zero nor too large."""
    if not isinstance(op, (Sense, SingleCoil)):
        raise TypeError(f"op must be a Sense or SingleCoil operator, got {type(op).__name__}")
    if not isinstance(y, torch.Tensor) or not y.is_complex():
        raise TypeError("y (the measured k-space) must be a complex tensor")
    if op.mask is None or not op.mask.binary:
        raise ValueError("posterior sampling needs a 0/1 sampling mask on the operator")
    _check_devices(y, op)
    ndim = op.ndim
    if isinstance(op, Sense):
        maps = op.maps
        if y.dim() != ndim + 2 or y.shape[1] != maps.shape[1] or tuple(y.shape[2:]) != tuple(maps.shape[2:]) \
                or maps.shape[0] not in (1, y.shape[0]):
            raise ValueError(f"y of shape {tuple(y.shape)} does not match coil maps of shape {tuple(maps.shape)} "
                             f"(expected (batch, {maps.shape[1]}, {', '.join(map(str, maps.shape[2:]))}))")
    elif y.dim() != ndim + 1:
        raise ValueError(f"single-coil y must be (batch, *spatial) with {ndim} spatial dimensions, "
                         f"got {tuple(y.shape)}")
    if y.numel() == 0:
        raise ValueError(f"y (the measured k-space) is empty: shape {tuple(y.shape)}")
    try:
        torch.broadcast_shapes(op.mask.mask.shape, y.shape)
    except RuntimeError:
        raise ValueError(f"the mask of shape {tuple(op.mask.mask.shape)} does not fit k-space of shape "
                         f"{tuple(y.shape)}") from None
    check_values(y)
    if not bool((y != 0).any()):
        raise ValueError("y (the measured k-space) is all zeros")
    if not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std}")
    return ps.Problem(y, op, float(noise_std))


def check_schedule_options(schedule: DiscreteSchedule, steps: int | None, warm_start: object,
                           t_start: int | None) -> None:
    """Refuses steps < 1 (0 would silently run the default), a t_start outside the schedule, a warm
    start without t_start and a t_start without a warm start (pure noise at t_start is no sampler)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer (None: the method's default), got {steps!r}")
    if warm_start is not None and t_start is None:
        raise ValueError("a warm start (init) needs t_start, the timestep to start from")
    if t_start is None:
        return
    if warm_start is None:
        raise ValueError("t_start needs a warm start ('zero_filled', 'cg' or an image) to noise to that timestep")
    n = schedule.num_train_timesteps
    if isinstance(t_start, bool) or not isinstance(t_start, int) or not 0 <= t_start < n:
        raise ValueError(f"t_start must be an integer timestep in [0, {n - 1}], got {t_start!r}")


def _repeat(problem: ps.Problem, n: int) -> ps.Problem:
    """The problem for n samples of each measurement, stacked sample-major along the batch."""
    if n == 1:
        return problem
    op, y = problem.op, problem.y
    mask = op.mask.mask  # type: ignore[union-attr]
    rep = (n,) + (1,) * (mask.dim() - 1)
    mask = mask.repeat(rep) if mask.dim() == y.dim() and mask.shape[0] > 1 else mask
    if isinstance(op, Sense):
        maps = op.maps if op.maps.shape[0] == 1 else op.maps.repeat((n,) + (1,) * (op.maps.dim() - 1))
        op = Sense(maps, mask, op.ndim)
    else:
        op = SingleCoil(mask, op.ndim)
    return ps.Problem(y.repeat((n,) + (1,) * (y.dim() - 1)), op, problem.noise_std)


def per_coil(problem: ps.Problem) -> ps.Problem:
    """Each coil as its own single-coil problem (batch * coils, *spatial), for the RSS variant."""
    op, y = problem.op, problem.y
    if not isinstance(op, Sense):
        raise TypeError("the per-coil (pc-rss) method needs multi-coil data and a Sense operator")
    mask = op.mask.mask  # type: ignore[union-attr]
    if mask.dim() == y.dim():
        mask = mask.expand(mask.shape[0], y.shape[1], *mask.shape[2:])
        mask = mask.reshape(-1, *mask.shape[2:]) if mask.shape[0] > 1 else mask[:, 0]
    return ps.Problem(y.reshape(-1, *y.shape[2:]), SingleCoil(mask, op.ndim), problem.noise_std)


def tv_admm(problem: ps.Problem, slices: int, rho: float, lam: float, cg_iters: int, gamma: float | None,
            admm_iters: int = 2) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """The DiffusionMBIR refinement of a stack of Tweedie estimates x0 (samples * slices, H, W):
    admm_iters ADMM iterations on 0.5 ||y - A x||^2 + gamma/2 ||x - x0||^2 + lam ||D_z x||_1 (D_z the
    difference along the slices) started at x = x0, z = soft(D_z x0), u = 0; x by cg_iters CG steps on
    (A^H A + rho D^T D + gamma I) from the current x; gamma None takes DDS's noise-aware weight
    for the step (the second argument of the returned function). The split variables start afresh at every call:
    carried over from earlier (noisier) estimates, as the paper does, they pulled later estimates back
    towards them and the loop diverged on the brain prior."""
    b = problem.op.adjoint(problem.y)

    def vol(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, slices, *x.shape[1:])

    def d(x: torch.Tensor) -> torch.Tensor:
        return x[:, 1:] - x[:, :-1]

    def dt(w: torch.Tensor) -> torch.Tensor:
        pad = torch.zeros_like(w[:, :1])
        return torch.cat([pad, w], 1) - torch.cat([w, pad], 1)

    def solve(x0: torch.Tensor, mu: float) -> torch.Tensor:
        w = mu if gamma is None else gamma

        def normal(x: torch.Tensor) -> torch.Tensor:
            return vol(problem.normal(x.reshape(-1, *x.shape[2:]))) + rho * dt(d(x)) + w * x

        x = v0 = vol(x0)
        z = _soft(d(v0), lam / rho)
        u = torch.zeros_like(z)
        for _ in range(admm_iters):
            rhs = vol(b) + rho * dt(z - u) + w * v0
            x = conjugate_gradient(normal, rhs, x0=x, iters=cg_iters)  # type: ignore[arg-type]
            dx = d(x)
            z = _soft(dx + u, lam / rho)
            u = u + dx - z
        return x.reshape(x0.shape)

    return solve


def reconstruct(y: torch.Tensor, op: Sense | SingleCoil, model: Callable[..., torch.Tensor],
                schedule: DiscreteSchedule, *, method: str = "dds", samples: int = 1, steps: int | None = None,
                noise_std: float = 0.0, prediction: str = "eps", clip: tuple[float, float] | None = None,
                eta: float | None = None, warm_start: str | torch.Tensor | None = None, t_start: int | None = None,
                final_dc: bool | None = None, generator: Generator | None = None, progress: bool = False,
                model_kwargs: dict | None = None, coil_scale: bool = False, **options: Any) -> Reconstruction:
    """Posterior samples of x given y = A x + n under the diffusion prior `model` (called on complex
    images, see posterior.ComplexDenoiser). method: one of METHODS; options go to the method
    (lam, corrector_steps, snr, langevin_steps, step_size, zeta, cg_iters, gamma, data_var, direction,
    rho, tv, admm_iters). warm_start
    "zero_filled", "cg" or an image starts the reverse process at t_start from that image. final_dc
    (default: when noise_std is 0) ends with the nearest image that reproduces y. coil_scale (pc-rss):
    each coil's k-space is divided by image_scales of its zero-filled image and the result multiplied
    back, so that every coil image has the range of the images the prior was trained on."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    check_schedule_options(schedule, steps, warm_start, t_start)
    tic = time.perf_counter()
    problem = check_problem(y, op, noise_std)
    scales = None
    if method == "pc-rss":
        problem = per_coil(problem)
        if coil_scale:
            scales = image_scales(zero_filled(problem.y, problem.op))
            problem = ps.Problem(problem.y / scales[:, None, None], problem.op, problem.noise_std)
    init = _warm_start(problem, warm_start)
    problem = _repeat(problem, samples)
    ts = ps.timesteps(schedule, steps or DEFAULT_STEPS[method], t_start)
    shape = (problem.y.shape[0], *problem.y.shape[-op.ndim:])
    counted = ps.CountingModel(model)
    common: dict[str, Any] = {"problem": problem, "timesteps": ts, "generator": generator, "progress": progress,
                              "prediction": prediction, "model_kwargs": model_kwargs}
    ddim = {"eta": 1.0 if eta is None else eta, "clip": clip}
    with torch.no_grad():  # the fused DC kernels record no gradients; DPS turns them on for its own step
        x = ps.start(schedule, ts[0], shape, problem.y, generator,
                     None if init is None else init.repeat((samples,) + (1,) * (init.dim() - 1)))
        if method in ("projection", "pc", "pc-rss"):
            options.setdefault("corrector_steps", 0 if method == "projection" else 1)
            x = ps.sample_projection(counted, x, schedule, **common, **ddim, **options)
        elif method == "langevin":
            x = ps.sample_langevin(counted, x, schedule, **common, **options)
        elif method == "dps":
            x = ps.sample_dps(counted, x, schedule, **common, **ddim, **options)
        elif method == "kspace":  # x0 of the unmeasured k-space is not clipped to the image range
            x = ps.sample_kspace(counted, x, schedule, **common, eta=ddim["eta"], **options)
        else:
            solve = None
            if method == "tv3d":
                rho, tv = float(options.pop("rho", 0.5)), float(options.pop("tv", 0.01))
                solve = tv_admm(problem, y.shape[0], rho, tv, options.pop("cg_iters", 5), options.pop("gamma", None),
                                options.pop("admm_iters", 2))
            x = ps.sample_dds(counted, x, schedule, solve=solve, **common, **ddim, **options)
    if final_dc if final_dc is not None else noise_std == 0.0:
        x = problem.consistent(x)
    x = x.reshape(samples, -1, *x.shape[1:])
    if scales is not None:
        x = x * scales[:, None, None]
    if method == "pc-rss":
        x = rss(x.reshape(samples, y.shape[0], y.shape[1], *x.shape[2:]), dim=2)
    std = x.std(dim=0) if samples > 1 else torch.zeros(x.shape[1:], dtype=x.real.dtype, device=x.device)
    return Reconstruction(x.mean(dim=0), std, x, counted.calls, time.perf_counter() - tic)


def reconstruct_prior(y: torch.Tensor, op: Sense | SingleCoil, prior: Any, *, method: str = "dds",
                      noise_std: float = 0.0, scale: float | None = None, speed: Speed | None = None,
                      **kwargs: Any) -> Reconstruction:
    """reconstruct() with a prior from mridpm.nets.priors.load_prior (bundled, trained or external):
    its two-channel network as a complex model (run zero-padded to the sides it takes: info
    "size_multiple", else its UNet's, recon_padding), x0 clipped to its data range, and y divided by
    estimate_scale / info["p99"] (or by scale) so that the image has the range the prior was trained
    on; the result is scaled back. The prior card's sampler_options for the method (tuned for it) are
    the defaults of kwargs. speed: how the network runs (mridpm.nets.speed; DPS refuses inference_mode
    and cuda_graph)."""
    check_speed(speed, method == "dps", method)
    check_problem(y, op, noise_std)
    s = estimate_scale(y, op) / float(prior.info.get("p99", 1.0)) if scale is None else float(scale)
    network = fast_model(prior.model, speed, differentiable=method == "dps")
    model = fit_model(ps.ComplexDenoiser(network), tuple(y.shape[-2:]), size_multiple(prior))
    kwargs = {"coil_scale": method == "pc-rss", **prior.info.get("sampler_options", {}).get(method, {}), **kwargs}
    r = reconstruct(y / s, op, model, prior.schedule, method=method, noise_std=noise_std / s,
                    prediction=prior.prediction, clip=tuple(prior.info["data_range"]), **kwargs)
    return Reconstruction(r.mean * s, r.std * s, r.samples * s, r.evaluations, r.seconds)


def _warm_start(problem: ps.Problem, warm_start: str | torch.Tensor | None) -> torch.Tensor | None:
    """The starting image of a warm start: made from y, or a given (batch, *spatial) finite image on
    y's device (checked here, before the samples are stacked, so its shape is named as given)."""
    if warm_start is None:
        return None
    if isinstance(warm_start, torch.Tensor):
        y = problem.y
        want = (y.shape[0], *y.shape[-problem.op.ndim:])
        if not (warm_start.is_complex() or warm_start.is_floating_point()):
            raise ValueError(f"the warm-start image must be a complex or real image, got {warm_start.dtype}")
        if tuple(warm_start.shape) != want:
            raise ValueError(f"the warm-start image must have shape {want} (batch, *spatial), "
                             f"got {tuple(warm_start.shape)}")
        if warm_start.is_meta or warm_start.device != y.device:
            raise ValueError(f"the warm-start image must hold data on {y.device}, got a tensor on {warm_start.device}")
        if not all_finite(warm_start):
            raise ValueError("the warm-start image contains NaN or Inf")
        return warm_start.to(y.dtype)
    if warm_start == "zero_filled":
        return zero_filled(problem.y, problem.op)
    if warm_start == "cg":
        return cg_sense(problem.y, problem.op, iters=10)
    raise ValueError(f"warm_start must be 'zero_filled', 'cg', an image or None, got {warm_start!r}")
