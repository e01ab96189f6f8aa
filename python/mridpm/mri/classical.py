"""Classical reconstructions, the baselines a DPM reconstruction must beat: zero-filled, CG-SENSE,
and L1-wavelet regularised (FISTA with an orthonormal Haar wavelet, whose prox is exact)."""

from __future__ import annotations

import math

import torch

from mridpm.mri.dc import _check_measurements, conjugate_gradient
from mridpm.mri.espirit import resize_center
from mridpm.mri.operators import Sense, SingleCoil


def zero_filled(y: torch.Tensor, op: Sense | SingleCoil) -> torch.Tensor:
    """A^H y: the adjoint of the measurements (coil-combined with the maps for SENSE)."""
    return op.adjoint(y)


def cg_sense(y: torch.Tensor, op: Sense | SingleCoil, *, mu: float = 0.0, iters: int = 20,
             tol: float = 0.0) -> torch.Tensor:
    """Least squares (Tikhonov mu) by conjugate gradient on (A^H A + mu I) x = A^H y (Pruessmann 2001)."""
    return conjugate_gradient(op.N, op.adjoint(y), mu=mu, iters=iters, tol=tol)


def haar(x: torch.Tensor, levels: int) -> torch.Tensor:
    """Orthonormal 2D Haar transform of the last two dimensions (sizes divisible by 2^levels), in place
    layout: the coarse band keeps the top-left corner at each level."""
    out = x.clone()
    h, w = x.shape[-2:]
    for _ in range(levels):
        band = out[..., :h, :w]
        a, b = band[..., 0::2, :], band[..., 1::2, :]
        rows = torch.cat(((a + b) / math.sqrt(2), (a - b) / math.sqrt(2)), dim=-2)
        a, b = rows[..., 0::2], rows[..., 1::2]
        out[..., :h, :w] = torch.cat(((a + b) / math.sqrt(2), (a - b) / math.sqrt(2)), dim=-1)
        h, w = h // 2, w // 2
    return out


def ihaar(c: torch.Tensor, levels: int) -> torch.Tensor:
    """Inverse of haar."""
    out = c.clone()
    H, W = c.shape[-2:]
    for level in reversed(range(levels)):
        h, w = H >> level, W >> level
        band = out[..., :h, :w]
        lo, hi = band[..., : w // 2], band[..., w // 2 :]
        cols = torch.empty_like(band)
        cols[..., 0::2], cols[..., 1::2] = (lo + hi) / math.sqrt(2), (lo - hi) / math.sqrt(2)
        lo, hi = cols[..., : h // 2, :], cols[..., h // 2 :, :]
        rows = torch.empty_like(band)
        rows[..., 0::2, :], rows[..., 1::2, :] = (lo + hi) / math.sqrt(2), (lo - hi) / math.sqrt(2)
        out[..., :h, :w] = rows
    return out


def _soft(c: torch.Tensor, t: float) -> torch.Tensor:
    """Complex soft-thresholding: shrinks magnitudes by t, keeps phases."""
    mag = c.abs()
    return c * torch.clamp(1 - t / torch.clamp(mag, min=1e-30), min=0.0)


def l1_wavelet(y: torch.Tensor, op: Sense | SingleCoil, lam: float, *, iters: int = 50, levels: int = 3,
               step: float | None = None) -> torch.Tensor:
    """argmin_x 0.5 ||A x - y||^2 + lam ||W x||_1 by FISTA (Beck & Teboulle 2009), W the orthonormal Haar
    transform (the coarsest band is not penalised); step 1 / ||A^H A|| (estimated by power iteration
    when not given). Any image size: W acts on the image zero-padded (centered) to sides divisible by
    2^levels, the data term on the operator's own size, and the result is cropped back."""
    x0 = op.adjoint(y)
    _check_measurements(op, x0, y)
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    size = tuple(x0.shape[-2:])
    big = tuple(-(-n // (1 << levels)) * (1 << levels) for n in size)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return x if big == size else resize_center(x, big)

    def crop(x: torch.Tensor) -> torch.Tensor:
        return x if big == size else resize_center(x, size)

    if step is None:
        step = 1.0 / _max_eig(op, x0)
    coarse = (..., slice(0, big[0] >> levels), slice(0, big[1] >> levels))
    x = z = pad(x0)
    t = 1.0
    for _ in range(iters):
        g = z - step * pad(op.adjoint(op.forward(crop(z)) - y))
        c = haar(g, levels)
        kept = c[coarse].clone()
        c = _soft(c, step * lam)
        c[coarse] = kept
        x_new = ihaar(c, levels)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return crop(x)


def _max_eig(op: Sense | SingleCoil, like: torch.Tensor, iters: int = 30) -> float:
    """The largest eigenvalue of A^H A by power iteration (one number for the whole batch)."""
    gen = torch.Generator(device=like.device).manual_seed(0)
    v = torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=gen)
    v = v / v.norm()
    eig = 1.0
    for _ in range(iters):
        u = op.normal(v)
        eig = float(u.norm())
        v = u / eig
    return eig
