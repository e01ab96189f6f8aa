"""Triton data-consistency kernels (expand, blend, combine; see csrc/dc.h) on float32 views of
complex64 data: element e's real part sits at 2 e, its imaginary part at 2 e + 1."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024


@triton.jit
def _sign(i, H, W, SIGN: tl.constexpr):
    if SIGN:
        parity = (i % W + (i // W) % H + i // (W * H)) % 2
        return 1.0 - 2.0 * parity.to(tl.float32)
    return tl.full(i.shape, 1.0, tl.float32)


@triton.jit
def _expand_kernel(x_ptr, s_ptr, o_ptr, C, N, H, W, maps_shared, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # b * C + c
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    b, c = row // C, row % C
    s_row = tl.where(maps_shared, c, row) * N
    sr = tl.load(s_ptr + 2 * (s_row + i), mask=ok, other=0.0)
    si = tl.load(s_ptr + 2 * (s_row + i) + 1, mask=ok, other=0.0)
    xr = tl.load(x_ptr + 2 * (b * N + i), mask=ok, other=0.0)
    xi = tl.load(x_ptr + 2 * (b * N + i) + 1, mask=ok, other=0.0)
    g = _sign(i, H, W, SIGN)
    tl.store(o_ptr + 2 * (row * N + i), g * (sr * xr - si * xi), mask=ok)
    tl.store(o_ptr + 2 * (row * N + i) + 1, g * (sr * xi + si * xr), mask=ok)


@triton.jit
def _blend_kernel(k_ptr, y_ptr, m_ptr, o_ptr, C, N, H, W, mask_b, mask_c, keep, lam, ysign, SIGN: tl.constexpr,
                  BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    b, c = row // C, row % C
    m_row = (tl.where(mask_b == 1, 0, b) * mask_c + tl.where(mask_c == 1, 0, c)) * N
    t = lam * tl.load(m_ptr + m_row + i, mask=ok, other=0.0)
    gy = ysign * _sign(i, H, W, SIGN)
    e = 2 * (row * N + i)
    kr, ki = tl.load(k_ptr + e, mask=ok, other=0.0), tl.load(k_ptr + e + 1, mask=ok, other=0.0)
    yr, yi = tl.load(y_ptr + e, mask=ok, other=0.0), tl.load(y_ptr + e + 1, mask=ok, other=0.0)
    tl.store(o_ptr + e, keep * kr + t * (gy * yr - kr), mask=ok)
    tl.store(o_ptr + e + 1, keep * ki + t * (gy * yi - ki), mask=ok)


@triton.jit
def _combine_kernel(k_ptr, s_ptr, o_ptr, C, N, H, W, maps_shared, SIGN: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    i = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = i < N
    s_base = tl.where(maps_shared, 0, b) * C * N
    re = tl.zeros((BLOCK,), tl.float32)
    im = tl.zeros((BLOCK,), tl.float32)
    for c in range(C):
        es, ek = 2 * (s_base + c * N + i), 2 * ((b * C + c) * N + i)
        sr, si = tl.load(s_ptr + es, mask=ok, other=0.0), tl.load(s_ptr + es + 1, mask=ok, other=0.0)
        kr, ki = tl.load(k_ptr + ek, mask=ok, other=0.0), tl.load(k_ptr + ek + 1, mask=ok, other=0.0)
        re = re + (sr * kr + si * ki)
        im = im + (sr * ki - si * kr)
    g = _sign(i, H, W, SIGN)
    tl.store(o_ptr + 2 * (b * N + i), g * re, mask=ok)
    tl.store(o_ptr + 2 * (b * N + i) + 1, g * im, mask=ok)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def run(op: str, a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None, out: torch.Tensor, sizes: dict,
        keep: float, lam: float, ysign: float, sign: bool) -> None:
    """Launches one kernel; tensors contiguous complex64 (mask float32), sizes as in ops/dc.py."""
    B, C, N, H, W = sizes["batch"], sizes["coils"], sizes["n"], sizes["h"], sizes["w"]
    if op == "expand":
        _expand_kernel[(B * C, triton.cdiv(N, _BLOCK))](_f(a), _f(b), _f(out), C, N, H, W, sizes["maps_batch"] == 1,
                                                          SIGN=sign, BLOCK=_BLOCK)
    elif op == "blend":
        _blend_kernel[(B * C, triton.cdiv(N, _BLOCK))](_f(a), _f(b), mask, _f(out), C, N, H, W, sizes["mask_batch"],
                                                         sizes["mask_coils"], keep, lam, ysign, SIGN=sign, BLOCK=_BLOCK)
    else:
        _combine_kernel[(B, triton.cdiv(N, _BLOCK))](_f(a), _f(b), _f(out), C, N, H, W, sizes["maps_batch"] == 1,
                                                     SIGN=sign, BLOCK=_BLOCK)
