"""Triton fused sampler step: one program per tile of one sample (a flat axis-0 grid, offsets in
int64), noise from tl.randn."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mridpm.kernels.triton._grid import flat_grid, row_and_tile
from mridpm.ops import _contract

_BLOCK = 1024
_NAN = tl.PropagateNan.ALL
# Triton 3.4 first splits tl.randn's 64-bit counter into the two 32-bit words the other backends use
# (3.3 runs a 64-bit Philox on it): an older one would draw noise no other backend reproduces.
NOISE_MIN_TRITON = (3, 4)


# A generator's (seed, offset) changes every call: typed 64-bit and never specialized on (1, multiple of
# 16, 32 or 64 bits), so one compiled kernel serves every draw instead of a recompile as the offset grows.
NO_SPECIALIZE = ("seed", "offset")


@triton.jit(do_not_specialize=NO_SPECIALIZE)
def _step_kernel(out_ptr, x0_ptr, p_ptr, ins, strides, s_out, s_x0, s_p, N, tiles_per_row, seed: tl.uint64,
                 offset: tl.int64, rng_ptr, K: tl.constexpr, HAS_X0: tl.constexpr, CLAMP: tl.constexpr,
                 WRITE_X0: tl.constexpr, NOISE: tl.constexpr, RNG: tl.constexpr, BLOCK: tl.constexpr):
    b, tile = row_and_tile(tiles_per_row)
    i = tile * BLOCK + tl.arange(0, BLOCK)
    mask = i < N
    row = p_ptr + b * s_p
    acc = tl.zeros((BLOCK,), tl.float32)
    x0 = tl.zeros((BLOCK,), tl.float32)
    for k in tl.static_range(K):
        v = tl.load(ins[k] + b * strides[k] + i, mask=mask, other=0.0).to(tl.float32)
        if k == 0:
            acc = tl.load(row) * v
            x0 = tl.load(row + K) * v
        else:
            acc = acc + tl.load(row + k) * v
            x0 = x0 + tl.load(row + K + k) * v
    if HAS_X0:
        if CLAMP:
            x0 = tl.maximum(x0, tl.load(row + 2 * K + 1), propagate_nan=_NAN)
            x0 = tl.minimum(x0, tl.load(row + 2 * K + 2), propagate_nan=_NAN)
        x0 = tl.load(row + 2 * K + 3) * x0
        acc = acc + tl.load(row + 2 * K) * x0
        if WRITE_X0:
            tl.store(x0_ptr + b * s_x0 + i, x0.to(x0_ptr.dtype.element_ty), mask=mask)
    if NOISE:
        if RNG:  # (seed, base offset) read at run time: what a CUDA graph replay draws follows the generator
            acc = acc + tl.load(row + 2 * K + 4) * tl.randn(tl.load(rng_ptr), tl.load(rng_ptr + 1) + offset + b * N + i)
        else:
            acc = acc + tl.load(row + 2 * K + 4) * tl.randn(seed, offset + b * N + i)
    tl.store(out_ptr + b * s_out + i, acc.to(out_ptr.dtype.element_ty), mask=mask)


def _check_noise_formula() -> None:
    """Refuses a Triton older than NOISE_MIN_TRITON, whose noise no other backend would reproduce."""
    if tuple(int(p) for p in triton.__version__.split(".")[:2]) < NOISE_MIN_TRITON:
        raise RuntimeError(f"triton {triton.__version__} draws other noise than mridpm's other backends; noise on "
                           f"backend 'triton' needs triton >= {'.'.join(map(str, NOISE_MIN_TRITON))}")


def step(rows: list[torch.Tensor], params: torch.Tensor, out: torch.Tensor, x0: torch.Tensor | None,
         seed: int, offset: int, flags: int, rng: torch.Tensor | None = None) -> None:
    """Launches the kernel on (batch, inner) views with unit inner stride; flags: ops/_contract.py's step
    flags; rng an optional int64 (seed, base offset) tensor that replaces seed and adds to offset when
    the kernel runs."""
    if flags & _contract.NOISE:
        _check_noise_formula()
    batch, inner = out.shape
    x0_arg = out if x0 is None else x0
    _step_kernel[flat_grid(batch, inner, _BLOCK)](
        out, x0_arg, params, tuple(rows), tuple(r.stride(0) for r in rows),
        out.stride(0), x0_arg.stride(0), params.stride(0) if params.shape[0] > 1 else 0,
        inner, triton.cdiv(inner, _BLOCK), seed, offset, params if rng is None else rng,
        K=len(rows), HAS_X0=bool(flags & _contract.HAS_X0), CLAMP=bool(flags & _contract.CLAMP),
        WRITE_X0=bool(flags & _contract.WRITE_X0), NOISE=bool(flags & _contract.NOISE), RNG=rng is not None,
        BLOCK=_BLOCK,
    )
