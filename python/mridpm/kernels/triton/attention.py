"""Triton flash attention (Dao 2023's forward and backward) on (batch, tokens, heads, head_dim)
tensors read through their strides, so q, k, v can be views of one (batch, tokens, 3, heads,
head_dim) projection with no permute copies. Memory is linear in the tokens: the forward keeps
one log-sum-exp per query, the backward recomputes the probabilities block by block. Every stride is
used, head_dim's too; each program takes one row block of one (batch, head) on a flat axis-0 grid
(_grid.py: batch * heads can pass 65535, as in axial attention over a volume), offsets in int64."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mridpm.kernels.triton._grid import flat_grid, row_and_tile


@triton.jit
def _ptrs(X, s, b, h, rows, offs_d):
    """Addresses of the (rows, head_dim) tile of batch b (int64) and head h through all four strides s."""
    return X + b * s[0] + h * s[2] + rows.to(tl.int64)[:, None] * s[1] + offs_d[None, :] * s[3]


@triton.jit
def _load(X, s, b, h, rows, rmask, offs_d, dmask):
    """The (rows, head_dim) tile of batch b and head h, zero outside the masks."""
    return tl.load(_ptrs(X, s, b, h, rows, offs_d), mask=rmask[:, None] & dmask[None, :], other=0.0)


@triton.jit
def _store(X, s, b, h, rows, rmask, offs_d, dmask, value):
    tl.store(_ptrs(X, s, b, h, rows, offs_d), value.to(X.dtype.element_ty), mask=rmask[:, None] & dmask[None, :])


@triton.jit
def _head(H, N, BLOCK: tl.constexpr, D: tl.constexpr, D_REAL):
    """This program's batch, head and flat (batch, head) index (int64), its first row of N in blocks of
    BLOCK, and the head_dim lanes padded to D with their mask."""
    bh, tile = row_and_tile(tl.cdiv(N, BLOCK))
    offs_d = tl.arange(0, D)
    return bh // H, bh % H, bh, tile * BLOCK, offs_d, offs_d < D_REAL


@triton.jit
def _rows(start, BLOCK: tl.constexpr, N):
    """Token rows start .. start + BLOCK - 1 and the mask of those below N."""
    offs = start + tl.arange(0, BLOCK)
    return offs, offs < N


@triton.jit
def _load_f32(X, sx, Y, sy, b, h, rows, rmask, offs_d, dmask):
    """Two tiles of the same rows (k and v, or q and dO) in float32."""
    return (_load(X, sx, b, h, rows, rmask, offs_d, dmask).to(tl.float32),
            _load(Y, sy, b, h, rows, rmask, offs_d, dmask).to(tl.float32))


@triton.jit
def _row_stats(L, DELTA, bh, NQ, offs_m, mmask):
    """The forward's log-sum-exp and rowsum(dO * O) of the query rows offs_m."""
    return (tl.load(L + bh * NQ + offs_m, mask=mmask, other=0.0),
            tl.load(DELTA + bh * NQ + offs_m, mask=mmask, other=0.0))


@triton.jit
def _probs_and_ds(q, k, v, do, lse, delta, valid, scale):
    """The recomputed probabilities P of a (queries, keys) block and dS = P * (dO V^T - delta)."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    return p, p * (dp - delta[:, None])


@triton.jit
def _fwd_kernel(Q, K, V, O, L, sq, sk, sv, so, NQ, NK, H, scale, D_REAL,
                D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, F32: tl.constexpr):
    b, h, bh, start_m, offs_d, dmask = _head(H, NQ, BM, D, D_REAL)
    offs_m, mmask = _rows(start_m, BM, NQ)
    q = _load(Q, sq, b, h, offs_m, mmask, offs_d, dmask)
    if F32:
        q = q.to(tl.float32)
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    for start in range(0, NK, BN):
        offs_n, nmask = _rows(start, BN, NK)
        k = _load(K, sk, b, h, offs_n, nmask, offs_d, dmask)
        v = _load(V, sv, b, h, offs_n, nmask, offs_d, dmask)
        if F32:
            k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new
    _store(O, so, b, h, offs_m, mmask, offs_d, dmask, acc / l_i[:, None])
    tl.store(L + bh * NQ + offs_m, m_i + tl.log(l_i), mask=mmask)


@triton.jit
def _bwd_kv_kernel(Q, K, V, DO, L, DELTA, DK, DV, sq, sk, sv, sdo, sdk, sdv, NQ, NK, H, scale, D_REAL,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    b, h, bh, start_n, offs_d, dmask = _head(H, NK, BN, D, D_REAL)
    offs_n, nmask = _rows(start_n, BN, NK)
    k, v = _load_f32(K, sk, V, sv, b, h, offs_n, nmask, offs_d, dmask)
    dk = tl.zeros((BN, D), tl.float32)
    dv = tl.zeros((BN, D), tl.float32)
    for start in range(0, NQ, BM):
        offs_m, mmask = _rows(start, BM, NQ)
        q, do = _load_f32(Q, sq, DO, sdo, b, h, offs_m, mmask, offs_d, dmask)
        lse, delta = _row_stats(L, DELTA, bh, NQ, offs_m, mmask)
        p, ds = _probs_and_ds(q, k, v, do, lse, delta, mmask[:, None] & nmask[None, :], scale)
        dv += tl.dot(tl.trans(p), do, input_precision="ieee")
        dk += tl.dot(tl.trans(ds), q, input_precision="ieee") * scale
    _store(DK, sdk, b, h, offs_n, nmask, offs_d, dmask, dk)
    _store(DV, sdv, b, h, offs_n, nmask, offs_d, dmask, dv)


@triton.jit
def _bwd_q_kernel(Q, K, V, DO, L, DELTA, DQ, sq, sk, sv, sdo, sdq, NQ, NK, H, scale, D_REAL,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    b, h, bh, start_m, offs_d, dmask = _head(H, NQ, BM, D, D_REAL)
    offs_m, mmask = _rows(start_m, BM, NQ)
    q, do = _load_f32(Q, sq, DO, sdo, b, h, offs_m, mmask, offs_d, dmask)
    lse, delta = _row_stats(L, DELTA, bh, NQ, offs_m, mmask)
    dq = tl.zeros((BM, D), tl.float32)
    for start in range(0, NK, BN):
        offs_n, nmask = _rows(start, BN, NK)
        k, v = _load_f32(K, sk, V, sv, b, h, offs_n, nmask, offs_d, dmask)
        _, ds = _probs_and_ds(q, k, v, do, lse, delta, mmask[:, None] & nmask[None, :], scale)
        dq += tl.dot(ds, k, input_precision="ieee") * scale
    _store(DQ, sdq, b, h, offs_m, mmask, offs_d, dmask, dq)


def _blocks(d: int) -> tuple[int, int, int]:
    dp = max(16, triton.next_power_of_2(d))
    return dp, 64 if dp <= 64 else 32, 64 if dp <= 64 else 32


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out in q's layout (batch, tokens, heads, dim), log-sum-exp (batch * heads, tokens) float32)."""
    B, NQ, H, Dr = q.shape
    NK = k.shape[1]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty((B * H, NQ), dtype=torch.float32, device=q.device)
    D, BM, BN = _blocks(Dr)
    f32 = q.dtype == torch.float32 or q.device.type == "cpu"  # the interpreter has no half dots
    _fwd_kernel[flat_grid(B * H, NQ, BM)](q, k, v, out, lse, q.stride(), k.stride(), v.stride(), out.stride(), NQ,
                                          NK, H, scale, Dr, D=D, BM=BM, BN=BN, F32=f32)
    return out, lse


def backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
             dout: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), each shaped and typed like its input."""
    B, NQ, H, Dr = q.shape
    NK = k.shape[1]
    delta = (dout.float() * out.float()).sum(-1).permute(0, 2, 1).reshape(B * H, NQ).contiguous()
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    D, BM, BN = _blocks(Dr)
    _bwd_kv_kernel[flat_grid(B * H, NK, BN)](q, k, v, dout, lse, delta, dk, dv, q.stride(), k.stride(), v.stride(),
                                             dout.stride(), dk.stride(), dv.stride(), NQ, NK, H, scale, Dr, D=D,
                                             BM=BM, BN=BN)
    _bwd_q_kernel[flat_grid(B * H, NQ, BM)](q, k, v, dout, lse, delta, dq, q.stride(), k.stride(), v.stride(),
                                            dout.stride(), dq.stride(), NQ, NK, H, scale, Dr, D=D, BM=BM, BN=BN)
    return dq, dk, dv
