"""Data consistency: hard projection onto measured k-space, the likelihood gradient, and batched
conjugate gradient on the normal equations. Inputs are checked here, once per call."""

from __future__ import annotations

import math

import torch

from mridpm.mri import consistency
from mridpm.mri.operators import LinearOperator, Sense, SingleCoil, no_meta


def all_finite(t: torch.Tensor) -> bool:
    """True when no element is NaN or Inf: one float32 sum (NaN and Inf propagate), confirmed
    element by element only when the sum is not finite (a float32 overflow of huge values)."""
    real = torch.view_as_real(t) if t.is_complex() else t
    return math.isfinite(float(real.sum())) or bool(torch.isfinite(real).all())


def _check_measurements(op: LinearOperator, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(op, (Sense, SingleCoil)):
        raise TypeError(f"op must be a Sense or SingleCoil operator, got {type(op).__name__}")
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.is_complex():
            raise TypeError(f"{name} must be a complex tensor")
        no_meta(name, t)
    if x.device != y.device:
        raise ValueError(f"x is on {x.device} but y on {y.device}")
    _check_image(op, x)
    if not all_finite(y):
        raise ValueError("y (the measured k-space) contains NaN or Inf")
    expected = (x.shape[0], op.maps.shape[1], *x.shape[1:]) if isinstance(op, Sense) else tuple(x.shape)
    if tuple(y.shape) != expected:
        raise ValueError(f"y must have shape {expected} for images of shape {tuple(x.shape)}, got {tuple(y.shape)}")


def _check_image(op: Sense | SingleCoil, x: torch.Tensor) -> None:
    """x is a batch of images the operator takes: (batch, *spatial), spatial and batch matching maps and mask."""
    ndim = op.ndim
    if x.dim() != ndim + 1:
        raise ValueError(f"x must be (batch, *spatial) with {ndim} spatial dimensions, got shape {tuple(x.shape)}")
    batch = x.shape[0]
    if isinstance(op, Sense):
        maps = op.maps
        if tuple(x.shape[1:]) != tuple(maps.shape[2:]) or maps.shape[0] not in (1, batch):
            lead = "batch" if maps.shape[0] == 1 else str(maps.shape[0])
            raise ValueError(f"x of shape {tuple(x.shape)} does not match coil maps of shape {tuple(maps.shape)} "
                             f"(expected ({lead}, {', '.join(map(str, maps.shape[2:]))}))")
    if op.mask is not None:  # the mask against k-space (batch, coils, *spatial), one coil axis for SingleCoil
        m = op.mask.mask
        m = m.unsqueeze(-ndim - 1) if isinstance(op, SingleCoil) and m.dim() > ndim else m
        k = (batch, op.maps.shape[1] if isinstance(op, Sense) else 1, *x.shape[1:])
        try:
            fits = torch.broadcast_shapes(m.shape, k) == k
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(f"the operator's mask of shape {tuple(op.mask.mask.shape)} does not fit images of "
                             f"shape {tuple(x.shape)}")


def project(x: torch.Tensor, y: torch.Tensor, op: Sense | SingleCoil, lam: float = 1.0) -> torch.Tensor:
    """x* = S^H F^-1 [lam M y + (1 - lam) M F S x + (1 - M) F S x] (Song et al. 2022): replaces the
    measured part of x's k-space by y (lam = 1) or moves it towards y; M must be 0/1 here, and for
    multi-coil data the maps should satisfy sum_c |S_c|^2 = 1 where the object is."""
    _check_measurements(op, x, y)
    if not 0.0 <= lam <= 1.0 or not math.isfinite(lam):
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    if op.mask is None:
        raise ValueError("projection needs a sampling mask on the operator")
    if not op.mask.binary:
        raise ValueError("projection needs a 0/1 mask (weights are for the gradient and CG)")
    return consistency.project(x, y, op, lam)


def gradient(x: torch.Tensor, y: torch.Tensor, op: Sense | SingleCoil) -> torch.Tensor:
    """A^H (y - A x): the direction that increases the Gaussian log-likelihood of y (times sigma^2)."""
    _check_measurements(op, x, y)
    if op.mask is not None and op.mask.binary:
        return consistency.gradient(x, y, op)  # M (y - M k) = M (y - k) for 0/1 masks
    return op.adjoint(y - op.forward(x))


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample <a, b> = sum conj(a) b over all but the batch dimension, real part (Hermitian operators)."""
    return torch.real((a.conj() * b).reshape(a.shape[0], math.prod(a.shape[1:])).sum(dim=1))


def conjugate_gradient(normal: LinearOperator, b: torch.Tensor, *, mu: float = 0.0, x0: torch.Tensor | None = None,
                       iters: int = 10, tol: float = 0.0) -> torch.Tensor:
    """Solves (normal + mu I) x = b per sample (normal Hermitian positive semi-definite, e.g. A.N), with
    complex inner products r^H r. A sample stops updating, for good, once its residual falls under
    tol * |b| or to rounding level (4 eps |b|), or its curvature p^H (N + mu) p vanishes against the
    largest seen (4 eps of it): where N is a projection (one coil, fully sampled lines) CG is done
    after a step or two, and dividing by the rounding noise that is left would blow the solution up.
    No host synchronisation unless tol > 0 (then once per iteration, to stop early)."""
    if not isinstance(b, torch.Tensor) or not b.is_complex():
        raise TypeError("b must be a complex tensor")
    no_meta("b", b)
    if b.dim() < 1:
        raise ValueError("b must have a leading batch dimension, got a 0-d tensor")
    if x0 is not None:
        if not isinstance(x0, torch.Tensor) or not x0.is_complex():
            got = x0.dtype if isinstance(x0, torch.Tensor) else type(x0).__name__
            raise TypeError(f"x0 must be a complex tensor, got {got}")
        no_meta("x0", x0)
        if x0.shape != b.shape or x0.device != b.device:
            raise ValueError(f"x0 must have b's shape {tuple(b.shape)} on {b.device}, got {tuple(x0.shape)} on "
                             f"{x0.device}")
    if not math.isfinite(mu) or mu < 0:
        raise ValueError(f"mu must be finite and >= 0, got {mu}")
    if not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative integer, got {iters!r}")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be finite and >= 0, got {tol}")
    shape = (-1,) + (1,) * (b.dim() - 1)
    eps = 4.0 * torch.finfo(b.real.dtype).eps
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - (normal(x) + mu * x) if x0 is not None else b.clone()
    p = r.clone()
    rr = _dot(r, r)
    stop = max(tol * tol, eps * eps) * _dot(b, b)
    active = rr > stop
    curvature = torch.zeros_like(rr)  # the largest Rayleigh quotient p^H (N + mu) p / p^H p seen: the scale
    for _ in range(iters):
        q = normal(p) + mu * p
        pq, pp = _dot(p, q), _dot(p, p)
        curvature = torch.maximum(curvature, torch.where(pp > 0, pq / torch.where(pp > 0, pp, 1.0), 0.0))
        active = active & (rr > stop) & (pq > eps * curvature * pp)
        alpha = torch.where(active, rr / torch.where(active, pq, 1.0), 0.0)
        x = x + alpha.reshape(shape) * p
        r = r - alpha.reshape(shape) * q
        rr_new = _dot(r, r)
        beta = torch.where(active, rr_new / torch.where(active, rr, 1.0), 0.0)
        p = r + beta.reshape(shape) * p
        rr = rr_new
        if tol > 0 and not bool((active & (rr > stop)).any()):
            break
    return x
