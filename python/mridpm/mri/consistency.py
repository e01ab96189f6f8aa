"""The fused data-consistency composition S^H F^H [keep k + lam M (y_scale y - k)], k = F S x, behind
named functions: the normal operator, the (soft) projection onto measured k-space, the likelihood
gradient A^H (y - A x) and the unmeasured part F^H (1 - M) F x.

Operators (mri.operators), the checked data-consistency calls (mri.dc) and the posterior samplers
all import from here; this module reads an operator only through its attributes (`ndim`, `mask` and,
for SENSE, `maps`), so it imports no operator module and no import cycle can pass through it.
Only what costs nothing per call is checked here (a mask on the operator, 0/1 as decided when it was
built; the kernels read a new mask's values once): the callers guarantee complex images and k-space y
of the operator's shape.
"""

from __future__ import annotations

from typing import Protocol

import torch

from mridpm.mri import fft as _fft
from mridpm.ops import dc as dc_ops


class _MaskLike(Protocol):
    mask: torch.Tensor
    binary: bool


class MaskedOperator(Protocol):
    """What the composition reads off a Sense or SingleCoil operator (Sense also has `maps`)."""

    ndim: int
    mask: _MaskLike | None


def normal(x: torch.Tensor, op: MaskedOperator) -> torch.Tensor:
    """A^H A x = S^H F^H M F S x (keep 0, lam -1, no y: M k)."""
    return _blend(x, None, op, -1.0, 0.0)


def project(x: torch.Tensor, y: torch.Tensor, op: MaskedOperator, lam: float = 1.0, y_scale: float = 1.0
            ) -> torch.Tensor:
    """S^H F^H [lam M (y_scale y) + (1 - lam M) F S x]: the measured part of x's k-space replaced by
    y_scale y (lam = 1) or moved towards it (Song et al. 2022)."""
    return _blend(x, y, op, lam, 1.0, y_scale)


def gradient(x: torch.Tensor, y: torch.Tensor, op: MaskedOperator) -> torch.Tensor:
    """A^H (y - A x) for a 0/1 mask: S^H F^H M (y - F S x)."""
    return _blend(x, y, op, 1.0, 0.0)


def unmeasured(x: torch.Tensor, op: MaskedOperator) -> torch.Tensor:
    """S^H F^H (1 - M) F S x: the part of x that the measurements do not see (F^H (1 - M) F x for one coil)."""
    return _blend(x, None, op, 1.0, 1.0)


def _blend(x: torch.Tensor, y: torch.Tensor | None, op: MaskedOperator, lam: float, keep: float,
           y_scale: float = 1.0) -> torch.Tensor:
    """S^H F^H [keep k + lam M (y_scale y - k)] with k = F S x, from the fused kernels: expand, FFT,
    blend, inverse FFT, combine; y None stands for zero k-space. Even sizes fold the FFT shifts into
    the kernels as checkerboard signs."""
    if op.mask is None:
        raise ValueError("data consistency needs a sampling mask on the operator")
    if not op.mask.binary:
        raise ValueError("the fused data consistency needs a 0/1 mask on the operator; for sampling weights use "
                         "op.adjoint(y - op(x))")
    maps: torch.Tensor | None = getattr(op, "maps", None)
    ndim = op.ndim
    spatial = tuple(x.shape[-ndim:])
    multi = maps is not None
    if maps is None:
        maps = torch.ones((1, 1, *spatial), dtype=x.dtype, device=x.device)
    if x.numel() == 0:  # an empty batch: nothing to transform (the FFTs refuse empty input)
        return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, maps.dtype))
    y_coils = y.unsqueeze(1) if y is not None and not multi else y  # single coil: one coil dimension
    mask = op.mask.mask
    if not multi and mask.dim() > ndim:  # a single-coil mask with a batch axis gets the coil axis too
        mask = mask.unsqueeze(-ndim - 1)
    if x.dtype != torch.complex64 or maps.dtype != torch.complex64:  # the kernels are complex64: plain ops
        k = _fft.fftnc(maps * x.unsqueeze(1), ndim)
        k = keep * k + (lam * mask.to(x.device)) * ((0.0 if y_coils is None else y_scale * y_coils) - k)
        return (maps.conj() * _fft.ifftnc(k, ndim)).sum(1)
    even = all(n % 2 == 0 for n in spatial)
    ysign = 0.0 if y is None else y_scale
    dims = tuple(range(-ndim, 0))
    if even:  # unshifted FFTs; the shifts become the kernels' signs (and a constant on y)
        k = torch.fft.fftn(dc_ops.coil_expand(x, maps, sign=True), dim=dims, norm="ortho")
        ysign *= _fft.checkerboard_constant(spatial)
    else:
        k = _fft.fftnc(dc_ops.coil_expand(x, maps), ndim)
    k = dc_ops.kspace_blend(k, k if y_coils is None else y_coils, mask, lam=lam, keep=keep, ysign=ysign, sign=even,
                            in_place=True)
    u = torch.fft.ifftn(k, dim=dims, norm="ortho") if even else _fft.ifftnc(k, ndim)
    return dc_ops.coil_combine(u, maps, sign=even)
