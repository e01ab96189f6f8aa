"""The fused sampler step in plain PyTorch, the ground truth of every backend:

    x0  = m * clamp(sum_k a_k v_k, lo, hi)                   (optional x0 branch)
    out = sum_k c_k v_k + w * x0 + s * z,   z ~ N(0, 1) by Philox at (seed, offset)

with K = 1..4 inputs v_k as (batch, inner) rows and per-sample coefficients: each row of the
params table holds c[K], a[K], w, lo, hi, m, s (csrc/step.h has the same layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mridpm.ops._contract import CLAMP, HAS_X0, NOISE
from mridpm.ops.philox import philox_randn


def step_reference(rows: Sequence[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
                   rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step in plain PyTorch, float32 arithmetic, on (batch, inner) rows; returns (out, x0).
    rng: an optional int64 (seed, base offset) device tensor read at run time (CUDA graph replays)."""
    K = len(rows)
    v = [r.float() for r in rows]
    p = params.float()
    col = [p[:, j : j + 1] for j in range(p.shape[1])]
    w, lo, hi, m, s = col[2 * K :]
    out = col[0] * v[0]
    for k in range(1, K):
        out = out + col[k] * v[k]
    x0 = None
    if flags & HAS_X0:
        x0 = col[K] * v[0]
        for k in range(1, K):
            x0 = x0 + col[K + k] * v[k]
        if flags & CLAMP:
            x0 = torch.clamp(x0, lo, hi)
        x0 = m * x0
        out = out + w * x0
    if flags & NOISE:
        out = out + s * philox_randn(seed, offset, tuple(out.shape), out.device, rng)
    dtype = rows[0].dtype
    return out.to(dtype), (None if x0 is None else x0.to(dtype))
