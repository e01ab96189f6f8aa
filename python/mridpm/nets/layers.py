"""Building blocks shared by the UNet and the autoencoder, for 2D and 3D: convolutions by
dimension, GroupNorm, time embeddings, residual blocks, attention over spatial tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from mridpm.ops.attention import attention


def conv(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    """A 'same'-padded convolution in 2 or 3 dimensions."""
    cls = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2)


def zero(module: nn.Module) -> nn.Module:
    """Zero-initialised parameters: a residual branch that starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def norm(channels: int, groups: int) -> nn.GroupNorm:
    g = math.gcd(groups, channels)
    return nn.GroupNorm(g, channels)


def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style embedding of (batch,) times or noise levels: cos and sin at geometric frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of (batch,) inputs (score SDE's NCSN++ for continuous noise levels): fixed."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.randn(dim // 2, generator=torch.Generator().manual_seed(0)) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = 2 * math.pi * t.float()[:, None] * self.freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv; the embedding as a per-channel scale and shift; GroupNorm, SiLU, dropout, conv."""

    def __init__(self, dims: int, cin: int, cout: int, emb_dim: int, groups: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), conv(dims, cin, cout)
        self.emb = nn.Linear(emb_dim, 2 * cout) if emb_dim > 0 else None
        self.norm2, self.drop, self.conv2 = norm(cout, groups), nn.Dropout(dropout), zero(conv(dims, cout, cout))
        self.skip = conv(dims, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None and emb is not None:
            params = self.emb(nn.functional.silu(emb))
            scale, shift = params.reshape(params.shape[0], -1, *([1] * (x.dim() - 2))).chunk(2, 1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(nn.functional.silu(h)))




class AttentionBlock(nn.Module):
    """Self-attention over all spatial tokens of a 2D or 3D feature map, then (with context_dim)
    cross-attention to context vectors; each a residual branch that starts at zero."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 8, context_dim: int = 0) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero(nn.Linear(channels, channels))
        self.cross = None
        if context_dim > 0:
            self.cross_norm = nn.LayerNorm(channels)
            self.cross_q = nn.Linear(channels, channels)
            self.cross_kv = nn.Linear(context_dim, 2 * channels)
            self.cross = zero(nn.Linear(channels, channels))

    def _heads(self, t: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(batch, tokens, parts * channels) -> parts views (batch, tokens, heads, head_dim), no copies."""
        b, n, c = t.shape
        return t.reshape(b, n, parts, self.heads, c // (parts * self.heads)).unbind(2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, c = x.shape[:2]
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (batch, tokens, channels)
        out = attention(*self._heads(self.qkv(tokens), 3)).reshape(b, -1, c)
        h = x.reshape(b, c, -1).transpose(1, 2) + self.proj(out)
        if self.cross is not None:
            if context is None:
                raise ValueError("this block cross-attends: pass context (batch, tokens, dim) or (batch, dim)")
            ctx = context[:, None] if context.dim() == 2 else context
            (cq,) = self._heads(self.cross_q(self.cross_norm(h)), 1)
            ck, cv = self._heads(self.cross_kv(ctx), 2)
            h = h + self.cross(attention(cq, ck, cv).reshape(b, -1, c))
        return h.transpose(1, 2).reshape(x.shape)
