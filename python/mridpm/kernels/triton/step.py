"""Triton fused sampler step: one program per tile of one sample, noise from tl.randn."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mridpm.ops import _contract

_BLOCK = 1024
_NAN = tl.PropagateNan.ALL


@triton.jit
def _step_kernel(out_ptr, x0_ptr, p_ptr, ins, strides, s_out, s_x0, s_p, N, tiles_per_row, seed, offset, rng_ptr,
                 K: tl.constexpr, HAS_X0: tl.constexpr, CLAMP: tl.constexpr, WRITE_X0: tl.constexpr,
                 NOISE: tl.constexpr, RNG: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = (pid // tiles_per_row).to(tl.int64)
    i = (pid % tiles_per_row) * BLOCK + tl.arange(0, BLOCK)
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


def step(rows: list[torch.Tensor], params: torch.Tensor, out: torch.Tensor, x0: torch.Tensor | None,
         seed: int, offset: int, flags: int, rng: torch.Tensor | None = None) -> None:
    """Launches the kernel on (batch, inner) views with unit inner stride; flags: ops/_contract.py's step
    flags; rng an optional int64 (seed, base offset) tensor that replaces seed and adds to offset when
    the kernel runs."""
    batch, inner = out.shape
    tiles_per_row = triton.cdiv(inner, _BLOCK)
    x0_arg = out if x0 is None else x0
    _step_kernel[(batch * tiles_per_row,)](
        out, x0_arg, params, tuple(rows), tuple(r.stride(0) for r in rows),
        out.stride(0), x0_arg.stride(0), params.stride(0) if params.shape[0] > 1 else 0,
        inner, tiles_per_row, seed, offset, params if rng is None else rng,
        K=len(rows), HAS_X0=bool(flags & _contract.HAS_X0), CLAMP=bool(flags & _contract.CLAMP),
        WRITE_X0=bool(flags & _contract.WRITE_X0), NOISE=bool(flags & _contract.NOISE), RNG=rng is not None,
        BLOCK=_BLOCK,
    )
