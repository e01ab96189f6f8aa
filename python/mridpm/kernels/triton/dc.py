"""Triton data-consistency kernels (expand, blend, combine; see csrc/dc.h) on float32 views of
complex64 data: element e's real part sits at 2 e, its imaginary part at 2 e + 1. Each program takes one
tile of one row (a flat axis-0 grid, see _grid.py); offsets are int64."""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from mridpm.kernels.triton._grid import flat_grid, row_and_tile

_BLOCK = 1024


@triton.jit
def _sign(i, shape, strides, SIGN: tl.constexpr):
    """(-1) to the sum of the spatial indices of flat index i (the FFT shifts as a checkerboard) when
    SIGN, else 1; shape and strides: the spatial sizes and their row-major strides, any number of them.
    In int32: run() refuses a spatial size of 2**31 or more elements."""
    if SIGN:
        j = i.to(tl.int32)
        parity = tl.zeros(i.shape, tl.int32)
        for d in tl.static_range(len(shape)):
            parity += (j // strides[d]) % shape[d]
        return 1.0 - 2.0 * (parity % 2).to(tl.float32)
    return tl.full(i.shape, 1.0, tl.float32)


@triton.jit
def _expand_kernel(x_ptr, s_ptr, o_ptr, C, N, shape, strides, maps_shared, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    row, tile = row_and_tile(tl.cdiv(N, BLOCK))  # row: b * C + c
    i = tile * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    b, c = row // C, row % C
    s_row = tl.where(maps_shared == 1, c, row) * N
    sr = tl.load(s_ptr + 2 * (s_row + i), mask=ok, other=0.0)
    si = tl.load(s_ptr + 2 * (s_row + i) + 1, mask=ok, other=0.0)
    xr = tl.load(x_ptr + 2 * (b * N + i), mask=ok, other=0.0)
    xi = tl.load(x_ptr + 2 * (b * N + i) + 1, mask=ok, other=0.0)
    g = _sign(i, shape, strides, SIGN)
    tl.store(o_ptr + 2 * (row * N + i), g * (sr * xr - si * xi), mask=ok)
    tl.store(o_ptr + 2 * (row * N + i) + 1, g * (sr * xi + si * xr), mask=ok)


@triton.jit
def _blend_kernel(k_ptr, y_ptr, m_ptr, o_ptr, C, N, shape, strides, mask_b, mask_c, keep, lam, ysign,
                  SIGN: tl.constexpr, BLOCK: tl.constexpr):
    row, tile = row_and_tile(tl.cdiv(N, BLOCK))
    i = tile * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    b, c = row // C, row % C
    m_row = (tl.where(mask_b == 1, 0, b) * mask_c + tl.where(mask_c == 1, 0, c)) * N
    t = lam * tl.load(m_ptr + m_row + i, mask=ok, other=0.0)
    gy = ysign * _sign(i, shape, strides, SIGN)
    e = 2 * (row * N + i)
    kr, ki = tl.load(k_ptr + e, mask=ok, other=0.0), tl.load(k_ptr + e + 1, mask=ok, other=0.0)
    yr, yi = tl.load(y_ptr + e, mask=ok, other=0.0), tl.load(y_ptr + e + 1, mask=ok, other=0.0)
    tl.store(o_ptr + e, keep * kr + t * (gy * yr - kr), mask=ok)
    tl.store(o_ptr + e + 1, keep * ki + t * (gy * yi - ki), mask=ok)


@triton.jit
def _combine_kernel(k_ptr, s_ptr, o_ptr, C, N, shape, strides, maps_shared, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    b, tile = row_and_tile(tl.cdiv(N, BLOCK))
    i = tile * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    s_row = tl.where(maps_shared == 1, 0, b) * C  # int64, so (row + c) * N cannot overflow
    re = tl.zeros((BLOCK,), tl.float32)
    im = tl.zeros((BLOCK,), tl.float32)
    for c in range(C):
        es, ek = 2 * ((s_row + c) * N + i), 2 * ((b * C + c) * N + i)
        sr, si = tl.load(s_ptr + es, mask=ok, other=0.0), tl.load(s_ptr + es + 1, mask=ok, other=0.0)
        kr, ki = tl.load(k_ptr + ek, mask=ok, other=0.0), tl.load(k_ptr + ek + 1, mask=ok, other=0.0)
        re = re + (sr * kr + si * ki)
        im = im + (sr * ki - si * kr)
    g = _sign(i, shape, strides, SIGN)
    tl.store(o_ptr + 2 * (b * N + i), g * re, mask=ok)
    tl.store(o_ptr + 2 * (b * N + i) + 1, g * im, mask=ok)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def grid(op: str, sizes: dict) -> tuple[int]:
    """The launch grid of op: one program per tile of each (batch, coil) row, or of each batch row for
    "combine"."""
    rows = sizes["batch"] * (1 if op == "combine" else sizes["coils"])
    return flat_grid(rows, sizes["n"], _BLOCK)


def _spatial(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The spatial sizes and their row-major strides, for the sign's split of a flat index."""
    if math.prod(shape) >= 2**31:
        raise ValueError(f"spatial size {shape} has 2**31 or more elements; the Triton DC kernels index one in int32")
    return tuple(shape), tuple(math.prod(shape[d + 1:]) for d in range(len(shape)))


def run(op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, out: torch.Tensor, sizes: dict,
        keep: float, lam: float, ysign: float, sign: bool) -> None:
    """Launches one kernel; tensors contiguous complex64 (mask float32), sizes as in ops/dc.py; the spatial
    shape is out's after (batch, coils), or after batch for "combine"."""
    C, N = sizes["coils"], sizes["n"]
    shape, strides = _spatial(tuple(out.shape[1 if op == "combine" else 2:]))
    g = grid(op, sizes)
    shared = int(sizes["maps_batch"] == 1)  # an int: interpreters before triton 3.8 mistype bool arguments
    if op == "expand":
        _expand_kernel[g](_f(a), _f(b), _f(out), C, N, shape, strides, shared, SIGN=sign, BLOCK=_BLOCK)
    elif op == "blend":
        _blend_kernel[g](_f(a), _f(b), mask, _f(out), C, N, shape, strides, sizes["mask_batch"], sizes["mask_coils"],
                         keep, lam, ysign, SIGN=sign, BLOCK=_BLOCK)
    else:
        _combine_kernel[g](_f(a), _f(b), _f(out), C, N, shape, strides, shared, SIGN=sign, BLOCK=_BLOCK)
