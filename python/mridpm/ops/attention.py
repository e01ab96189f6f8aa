"""Softmax attention on (batch, tokens, heads, head_dim) tensors, the layout a token-major qkv
projection produces: q, k, v may be strided views of one (batch, tokens, 3, heads, head_dim)
tensor. Backends, named as for every op (mridpm.ops._backend): "ref" (the naive math in float32,
the ground truth), "cpu" and "cuda" (torch's scaled_dot_product_attention on CPU or CUDA tensors:
mridpm has no compiled attention of its own), "triton" (flash attention forward and backward,
memory linear in the tokens, the CUDA default). The Triton kernels are registered as custom ops
with autograd, so torch.compile keeps them in one graph."""

from __future__ import annotations

import math

import torch
from torch.nn.functional import scaled_dot_product_attention

from mridpm.ops import _launch
from mridpm.ops._backend import resolve

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per batch and head, in float32, returned in q's dtype."""
    s = torch.einsum("bnhd,bmhd->bhnm", q.float(), k.float()) * scale
    return torch.einsum("bhnm,bmhd->bnhd", torch.softmax(s, dim=-1), v.float()).to(q.dtype)


@torch.library.custom_op("mridpm::attention_fwd", mutates_args=())
def _attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    from mridpm.kernels.triton import attention as kernels

    return _launch.run_triton(kernels.forward, q.device, q, k, v, scale)


@_attention_fwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), q.new_empty((q.shape[0] * q.shape[2], q.shape[1]), dtype=torch.float32)


@torch.library.custom_op("mridpm::attention_bwd", mutates_args=())
def _attention_bwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                   dout: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from mridpm.kernels.triton import attention as kernels

    return _launch.run_triton(kernels.backward, q.device, q, k, v, out, lse, dout, scale)


@_attention_bwd.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, dout: torch.Tensor,
      scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup(ctx: object, inputs: tuple, output: tuple) -> None:
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)  # type: ignore[attr-defined]
    ctx.scale = scale  # type: ignore[attr-defined]


def _backward(ctx: object, dout: torch.Tensor, dlse: torch.Tensor) -> tuple:
    q, k, v, out, lse = ctx.saved_tensors  # type: ignore[attr-defined]
    dq, dk, dv = _attention_bwd(q, k, v, out, lse, dout.contiguous(), ctx.scale)  # type: ignore[attr-defined]
    return dq, dk, dv, None


_attention_fwd.register_autograd(_backward, setup_context=_setup)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scale: float | None = None,
              backend: str | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for (batch, tokens, heads, head_dim) tensors (k, v may have another
    token count); scale defaults to 1 / sqrt(head_dim). Returns (batch, q tokens, heads, head_dim)."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name} must be a (batch, tokens, heads, head_dim) tensor")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; use float32, float16 or bfloat16")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise ValueError("q, k and v must share dtype and device")
    b, _, h, d = q.shape
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != h or k.shape[3] != d:
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must match q {tuple(q.shape)} in batch, "
                         "heads and head_dim, and each other")
    if q.shape[1] == 0 or k.shape[1] == 0:
        raise ValueError("attention needs at least one query and one key token")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    name = resolve(backend, q.device, op="attention")
    if name == "ref":
        return attention_reference(q, k, v, scale)
    if name in ("cpu", "cuda"):  # torch's fused kernel for the device
        out = scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
        return out.transpose(1, 2)
    return _attention_fwd(q, k, v, scale)[0]


def axial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, spatial: tuple[int, ...], axis: int, *,
                    scale: float | None = None, backend: str | None = None) -> torch.Tensor:
    """Attention along one spatial axis only (e.g. across slices of a volume too large for full
    attention): tokens (batch, prod(spatial), heads, head_dim) laid out over `spatial`, each line
    along `axis` attending within itself."""
    b, n, h, d = q.shape
    if math.prod(spatial) != n or k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f"q, k, v must be (batch, {math.prod(spatial)}, heads, head_dim) for spatial {spatial}")
    axis = axis % len(spatial)
    order = [0, *[1 + i for i in range(len(spatial)) if i != axis], 1 + axis, len(spatial) + 1, len(spatial) + 2]

    def lines(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, *spatial, h, d).permute(order).reshape(-1, spatial[axis], h, d)

    out = attention(lines(q), lines(k), lines(v), scale=scale, backend=backend)
    rest = [spatial[i] for i in range(len(spatial)) if i != axis]
    inverse = [order.index(i) for i in range(len(order))]
    return out.reshape(b, *rest, spatial[axis], h, d).permute(inverse).reshape(b, n, h, d)
