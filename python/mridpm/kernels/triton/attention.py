"""Triton flash attention (Dao 2023's forward and backward) on (batch, tokens, heads, head_dim)
tensors read through their strides, so q, k, v can be views of one (batch, tokens, 3, heads,
head_dim) projection with no permute copies. Memory is linear in the tokens: the forward keeps
one log-sum-exp per query, the backward recomputes the probabilities block by block."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _fwd_kernel(Q, K, V, O, L, sq, sk, sv, so, NQ, NK, H, scale, D_REAL,
                D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, F32: tl.constexpr):
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    dmask = offs_d < D_REAL
    qmask = (offs_m < NQ)[:, None] & dmask[None, :]
    q = tl.load(Q + b * sq[0] + h * sq[2] + offs_m[:, None] * sq[1] + offs_d[None, :], mask=qmask, other=0.0)
    if F32:
        q = q.to(tl.float32)
    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    for start in range(0, NK, BN):
        offs_n = start + tl.arange(0, BN)
        nmask = offs_n < NK
        kt = tl.load(K + b * sk[0] + h * sk[2] + offs_n[None, :] * sk[1] + offs_d[:, None],
                     mask=nmask[None, :] & dmask[:, None], other=0.0)
        v = tl.load(V + b * sv[0] + h * sv[2] + offs_n[:, None] * sv[1] + offs_d[None, :],
                    mask=nmask[:, None] & dmask[None, :], other=0.0)
        if F32:
            kt, v = kt.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, kt, input_precision="ieee") * scale
        s = tl.where(nmask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp(s - m_new[:, None])
        alpha = tl.exp(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(O + b * so[0] + h * so[2] + offs_m[:, None] * so[1] + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=qmask)
    tl.store(L + bh * NQ + offs_m, m_i + tl.log(l_i), mask=offs_m < NQ)


@triton.jit
def _bwd_kv_kernel(Q, K, V, DO, L, DELTA, DK, DV, sq, sk, sv, sdo, sdk, sdv, NQ, NK, H, scale, D_REAL,
                   D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pid_n, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    dmask = offs_d < D_REAL
    kvmask = (offs_n < NK)[:, None] & dmask[None, :]
    k = tl.load(K + b * sk[0] + h * sk[2] + offs_n[:, None] * sk[1] + offs_d[None, :], mask=kvmask, other=0.0)
    v = tl.load(V + b * sv[0] + h * sv[2] + offs_n[:, None] * sv[1] + offs_d[None, :], mask=kvmask, other=0.0)
    k, v = k.to(tl.float32), v.to(tl.float32)
    dk = tl.zeros((BN, D), tl.float32)
    dv = tl.zeros((BN, D), tl.float32)
    for start in range(0, NQ, BM):
        offs_m = start + tl.arange(0, BM)
        mmask = offs_m < NQ
        qm = mmask[:, None] & dmask[None, :]
        q = tl.load(Q + b * sq[0] + h * sq[2] + offs_m[:, None] * sq[1] + offs_d[None, :], mask=qm, other=0.0)
        do = tl.load(DO + b * sdo[0] + h * sdo[2] + offs_m[:, None] * sdo[1] + offs_d[None, :], mask=qm, other=0.0)
        q, do = q.to(tl.float32), do.to(tl.float32)
        lse = tl.load(L + bh * NQ + offs_m, mask=mmask, other=0.0)
        delta = tl.load(DELTA + bh * NQ + offs_m, mask=mmask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        p = tl.where(mmask[:, None] & (offs_n < NK)[None, :], tl.exp(s - lse[:, None]), 0.0)
        dv += tl.dot(tl.trans(p), do, input_precision="ieee")
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds), q, input_precision="ieee") * scale
    tl.store(DK + b * sdk[0] + h * sdk[2] + offs_n[:, None] * sdk[1] + offs_d[None, :], dk.to(DK.dtype.element_ty),
             mask=kvmask)
    tl.store(DV + b * sdv[0] + h * sdv[2] + offs_n[:, None] * sdv[1] + offs_d[None, :], dv.to(DV.dtype.element_ty),
             mask=kvmask)


@triton.jit
def _bwd_q_kernel(Q, K, V, DO, L, DELTA, DQ, sq, sk, sv, sdo, sdq, NQ, NK, H, scale, D_REAL,
                  D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pid_m, bh = tl.program_id(0), tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_d = tl.arange(0, D)
    dmask = offs_d < D_REAL
    mmask = offs_m < NQ
    qm = mmask[:, None] & dmask[None, :]
    q = tl.load(Q + b * sq[0] + h * sq[2] + offs_m[:, None] * sq[1] + offs_d[None, :], mask=qm, other=0.0)
    do = tl.load(DO + b * sdo[0] + h * sdo[2] + offs_m[:, None] * sdo[1] + offs_d[None, :], mask=qm, other=0.0)
    q, do = q.to(tl.float32), do.to(tl.float32)
    lse = tl.load(L + bh * NQ + offs_m, mask=mmask, other=0.0)
    delta = tl.load(DELTA + bh * NQ + offs_m, mask=mmask, other=0.0)
    dq = tl.zeros((BM, D), tl.float32)
    for start in range(0, NK, BN):
        offs_n = start + tl.arange(0, BN)
        nmask = offs_n < NK
        kvm = nmask[:, None] & dmask[None, :]
        k = tl.load(K + b * sk[0] + h * sk[2] + offs_n[:, None] * sk[1] + offs_d[None, :], mask=kvm, other=0.0)
        v = tl.load(V + b * sv[0] + h * sv[2] + offs_n[:, None] * sv[1] + offs_d[None, :], mask=kvm, other=0.0)
        k, v = k.to(tl.float32), v.to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        p = tl.where(mmask[:, None] & nmask[None, :], tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds, k, input_precision="ieee") * scale
    tl.store(DQ + b * sdq[0] + h * sdq[2] + offs_m[:, None] * sdq[1] + offs_d[None, :], dq.to(DQ.dtype.element_ty),
             mask=qm)


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
    _fwd_kernel[(triton.cdiv(NQ, BM), B * H)](q, k, v, out, lse, q.stride(), k.stride(), v.stride(), out.stride(),
                                              NQ, NK, H, scale, Dr, D=D, BM=BM, BN=BN, F32=f32)
    return out, lse


def backward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
             dout: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv), each shaped and typed like its input."""
    B, NQ, H, Dr = q.shape
    NK = k.shape[1]
    delta = (dout.float() * out.float()).sum(-1).permute(0, 2, 1).reshape(B * H, NQ).contiguous()
    dq, dk, dv = (torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    D, BM, BN = _blocks(Dr)
    _bwd_kv_kernel[(triton.cdiv(NK, BN), B * H)](q, k, v, dout, lse, delta, dk, dv, q.stride(), k.stride(),
                                                 v.stride(), dout.stride(), dk.stride(), dv.stride(), NQ, NK, H,
                                                 scale, Dr, D=D, BM=BM, BN=BN)
    _bwd_q_kernel[(triton.cdiv(NQ, BM), B * H)](q, k, v, dout, lse, delta, dq, q.stride(), k.stride(), v.stride(),
                                                dout.stride(), dq.stride(), NQ, NK, H, scale, Dr, D=D, BM=BM, BN=BN)
    return dq, dk, dv
