"""Image enhancement with an unconditional prior: denoising (the reverse process started at the
timestep whose noise level matches the image's), super-resolution (the low-resolution k-space kept,
the high frequencies generated under data consistency) and inpainting (RePaint, Lugmayr et al. 2022,
with resampling). Images are magnitudes in [0, 1]; results come as the mean and std of samples."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mridpm.dpm.discrete import Denoised
from mridpm.mri.fft import fft2c, ifft2c
from mridpm.nets.priors import Prior
from mridpm.ops.step import fused_step
from mridpm.random import Generator
from mridpm.tasks._common import (
    as_prior,
    check_images,
    check_memory,
    check_unit_images,
    data_range,
    ddim,
    ddim_step,
    from_unit,
    noise_to,
    timesteps_from,
    to_unit,
)


@dataclass
class Enhanced:
    """mean and std over the samples (N, C, H, W) in [0, 1], and the samples (S, N, C, H, W)."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: torch.Tensor


def _result(draws: torch.Tensor, n: int, p: Prior) -> Enhanced:
    d = to_unit(draws, p).clamp(0, 1).reshape(-1, n, *draws.shape[1:]).cpu()
    return Enhanced(d.mean(0), d.std(0) if d.shape[0] > 1 else torch.zeros_like(d[0]), d)


def estimate_sigma(images: torch.Tensor) -> torch.Tensor:
    """Per-image noise std (N,) of (N, C, H, W) images from the finest diagonal Haar coefficients,
    median(|HH|) / 0.6745 (Donoho's estimator; white noise of std s gives HH of std s)."""
    x = images[..., : images.shape[-2] // 2 * 2, : images.shape[-1] // 2 * 2]
    hh = (x[..., ::2, ::2] - x[..., 1::2, ::2] - x[..., ::2, 1::2] + x[..., 1::2, 1::2]) / 2
    return hh.abs().flatten(1).median(1).values / 0.6745


def matching_timestep(prior: Prior, sigma: float) -> int:
    """The timestep t whose sqrt(1 - abar) / sqrt(abar) is closest to sigma (in the model's range)."""
    abar = prior.schedule.alphas_cumprod
    return int(((1 - abar).sqrt() / abar.sqrt() - sigma).abs().argmin())


@torch.no_grad()
def denoise(prior: Prior | str | os.PathLike, images: torch.Tensor, sigma: float | None = None, *,
            samples: int = 1, steps: int = 25, eta: float = 0.0, seed: int = 0, progress: bool = False) -> Enhanced:
    """Denoised images (N, C, H, W) in [0, 1] with additive Gaussian noise of std sigma (in image
    units; estimated when None): x_t = sqrt(abar_t) y is a sample of the forward process at the
    timestep t where sqrt(1 - abar_t) matches sqrt(abar_t) sigma, and DDIM runs from there."""
    p = as_prior(prior)
    y = check_images(check_unit_images(images, "images", p.model.config.dims), p)
    lo, hi = data_range(p)
    if sigma is None:
        sigma = float(estimate_sigma(y).mean())
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    t = matching_timestep(p, sigma * (hi - lo))
    device = next(p.model.parameters()).device
    x = from_unit(y, p).to(device).repeat(samples, 1, 1, 1) * math.sqrt(p.schedule.alpha_bar(t))
    out = ddim(p, x, timesteps_from(p.schedule, t, steps), eta=eta, generator=Generator(seed), progress=progress)
    return _result(out, y.shape[0], p)


def lowres_kspace(images: torch.Tensor, factor: int) -> torch.Tensor:
    """The central (H / factor, W / factor) k-space of images (N, C, H, W), what a low-resolution scan
    measures, scaled so its inverse FFT keeps the image's intensities."""
    h, w = images.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"factor {factor} must be a positive integer dividing the image size {h}x{w}")
    k = fft2c(images.to(torch.complex64))
    hl, wl = h // factor, w // factor
    return k[..., (h - hl) // 2:(h - hl) // 2 + hl, (w - wl) // 2:(w - wl) // 2 + wl] / factor


def zero_padded(low_k: torch.Tensor, factor: int) -> torch.Tensor:
    """The real image of low-resolution k-space zero-padded to factor times its size (sinc interpolation)."""
    return ifft2c(_pad(low_k, factor) * factor).real


def bicubic(low_k: torch.Tensor, factor: int) -> torch.Tensor:
    """The low-resolution image of low_k upsampled bicubically by factor, on the grid the k-space
    crop implies (low-resolution pixel i sits on high-resolution pixel factor * i)."""
    low = ifft2c(low_k).real.float()
    hl, wl = low.shape[-2:]
    ys = torch.arange(hl * factor, dtype=torch.float32) / factor / max(hl - 1, 1) * 2 - 1
    xs = torch.arange(wl * factor, dtype=torch.float32) / factor / max(wl - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1).expand(low.shape[0], -1, -1, -1)
    return torch.nn.functional.grid_sample(low, grid, mode="bicubic", padding_mode="border", align_corners=True)


def _pad(low_k: torch.Tensor, factor: int) -> torch.Tensor:
    hl, wl = low_k.shape[-2:]
    h, w = hl * factor, wl * factor
    out = torch.zeros((*low_k.shape[:-2], h, w), dtype=low_k.dtype)
    out[..., (h - hl) // 2:(h - hl) // 2 + hl, (w - wl) // 2:(w - wl) // 2 + wl] = low_k
    return out


def kspace_consistency(prior: Prior, y: torch.Tensor, mask: torch.Tensor) -> Denoised:
    """correct(x0, t): x0's k-space replaced by the measured y where mask is set, real part kept (the
    objects are real magnitudes), in the model's range."""

    def correct(x0: torch.Tensor, t: int) -> torch.Tensor:
        k = fft2c(to_unit(x0, prior).to(torch.complex64))
        k = torch.where(mask, y, k)
        return from_unit(ifft2c(k).real, prior)

    return correct


@torch.no_grad()
def super_resolve(prior: Prior | str | os.PathLike, low_k: torch.Tensor, factor: int, *, samples: int = 1,
                  steps: int = 50, eta: float = 0.0, seed: int = 0, progress: bool = False) -> Enhanced:
    """Images factor times the size of low-resolution k-space low_k (N, C, h, w) (see lowres_kspace):
    generated by the prior with the measured low frequencies imposed on every step's clean estimate."""
    p = as_prior(prior)
    if not isinstance(low_k, torch.Tensor) or not low_k.is_complex() or low_k.dim() != 4:
        raise ValueError(f"low_k must be complex (N, C, h, w) k-space, got {getattr(low_k, 'shape', type(low_k))}")
    if not bool(torch.isfinite(torch.view_as_real(low_k)).all()) or not bool((low_k != 0).any()):
        raise ValueError("low_k must be finite and not all zero")
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    check_memory(p, low_k.shape[0] * samples, tuple(n * factor for n in low_k.shape[-2:]))
    y = _pad(low_k, factor) * factor
    check_images(y.real, p, "the super-resolved images")
    device = next(p.model.parameters()).device
    mask = _pad(torch.ones(low_k.shape[-2:], dtype=torch.complex64), factor).real.bool()
    out = consistent_sample(p, y.to(device).repeat(samples, 1, 1, 1), mask.to(device), steps, Generator(seed),
                            eta=eta, progress=progress)
    return _result(out, low_k.shape[0], p)


def consistent_sample(prior: Prior, y: torch.Tensor, mask: torch.Tensor, steps: int, generator: Generator, *,
                      eta: float = 0.0, progress: bool = False) -> torch.Tensor:
    """Samples shaped like y (model range) by DDIM from pure noise, each step's clean estimate taking the
    measured k-space y where mask is set (kspace_consistency)."""
    x = noise_to(prior, torch.zeros(y.shape, device=y.device), prior.schedule.num_train_timesteps - 1,
                 generator=generator)
    return ddim(prior, x, prior.schedule.timesteps(steps, "trailing"), eta=eta, generator=generator,
                correct=kspace_consistency(prior, y, mask), progress=progress)


def repaint_schedule(steps: int, jump: int, resample: int) -> list[int]:
    """RePaint's walk over step indices steps-1 .. -1: down one at a time, and at every jump-th index
    back up `jump` indices, resample - 1 times (Lugmayr et al. 2022, Algorithm 1 with jumps)."""
    if steps < 1 or jump < 1 or resample < 1:
        raise ValueError(f"steps, jump and resample must be positive, got {steps}, {jump}, {resample}")
    jumps = {j: resample - 1 for j in range(0, steps - jump, jump)}
    t, walk = steps, [steps]
    while t >= 1:
        t -= 1
        walk.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(jump):
                t += 1
                walk.append(t)
    return [w - 1 for w in walk]


@torch.no_grad()
def inpaint(prior: Prior | str | os.PathLike, images: torch.Tensor, missing: torch.Tensor, *, samples: int = 1,
            steps: int = 50, jump: int = 5, resample: int = 5, seed: int = 0, progress: bool = False) -> Enhanced:
    """Images (N, C, H, W) in [0, 1] with the `missing` pixels (N, H, W) bool generated by RePaint: at
    every step the known pixels are the input noised to that step, the missing ones the model's
    (DDPM, eta = 1) step, and every jump-th step goes back up jump steps to harmonise, resample times."""
    p = as_prior(prior)
    x0 = check_images(check_unit_images(images, "images", p.model.config.dims), p)
    if missing.shape != (x0.shape[0], *x0.shape[2:]) or missing.dtype != torch.bool:
        raise ValueError(f"missing must be a bool mask {(x0.shape[0], *x0.shape[2:])}, got "
                         f"{tuple(missing.shape)} {missing.dtype}")
    if not bool(missing.any()) or bool(missing.all()):
        raise ValueError("missing must mark some pixels, not all (nothing to inpaint, or nothing known)")
    device = next(p.model.parameters()).device
    n = x0.shape[0]
    known = from_unit(x0, p).to(device).repeat(samples, 1, 1, 1)
    hole = missing[:, None].to(device).repeat(samples, 1, 1, 1)
    grid = [*p.schedule.timesteps(steps, "trailing"), -1]  # grid[i] the timestep of index steps - 1 - i
    at = {steps - 1 - i: t for i, t in enumerate(grid)}
    gen = Generator(seed)
    walk = repaint_schedule(steps, jump, resample)
    x = noise_to(p, torch.zeros_like(known), at[walk[0]], generator=gen)
    for last, cur in tqdm(list(itertools.pairwise(walk)), desc="repaint", disable=not progress,
                          leave=False):
        t_last, t_cur = at[last], at[cur]
        if cur < last:  # reverse: the model fills the hole, the known pixels come from the input
            x_unknown, _ = ddim_step(p, x, t_last, t_cur, eta=1.0, generator=gen)
            x_known = known if t_cur < 0 else noise_to(p, known, t_cur, generator=gen)
            x = torch.where(hole, x_unknown, x_known)
        else:  # forward: q(x_cur | x_last)
            ratio = p.schedule.alpha_bar(t_cur) / p.schedule.alpha_bar(t_last)
            x = fused_step([x], [math.sqrt(ratio)], math.sqrt(1 - ratio), generator=gen)
    return _result(x, n, p)

