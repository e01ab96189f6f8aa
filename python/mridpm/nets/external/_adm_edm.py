"""The networks of NVlabs/edm (training/networks.py; InverseBench's models/unets.py is the same code):
DhariwalUNet (ADM) and SongUNet (DDPM++ / NCSN++), written again with the same computation and the
same state-dict key names (enc / dec ModuleDicts named by resolution, resample_filter buffers)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class Linear(nn.Module):
    """x @ weight.T + bias, weight (out, in)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        return x + self.bias.to(x.dtype) if self.bias is not None else x


class Conv2d(nn.Module):
    """A kernel x kernel conv (none when kernel is 0) with FIR up/downsampling by resample_filter,
    fused with the conv (fused_resample) or done before it."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter: Sequence[int] = (1, 1), fused_resample: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.up, self.down = in_channels, out_channels, up, down
        self.fused_resample = fused_resample
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.empty(out_channels)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        self.register_buffer("resample_filter", (f.ger(f) / f.sum().square())[None, None] if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b, f = self.weight, self.bias, self.resample_filter
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, (f * 4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2,
                                   padding=max(f_pad - w_pad, 0))
            x = F.conv2d(x, w, padding=max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (f * 4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x + b.reshape(1, -1, 1, 1) if b is not None else x


class GroupNorm(nn.Module):
    """Group norm with min(32, channels // 4) groups."""

    def __init__(self, num_channels: int, num_groups: int = 32, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_groups, self.eps = min(num_groups, num_channels // 4), eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class UNetBlock(nn.Module):
    """EDM's residual block (optional up/down, adaptive scale or additive embedding) with optional
    multi-head self-attention after it."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, num_heads: int | None = None, channels_per_head: int = 64,
                 skip_scale: float = 1.0, eps: float = 1e-5, resample_filter: Sequence[int] = (1, 1),
                 resample_proj: bool = False, adaptive_scale: bool = True) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.skip_scale, self.adaptive_scale = skip_scale, adaptive_scale
        heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.num_heads = heads if attention else 0
        rs = {"up": up, "down": down, "resample_filter": resample_filter}
        self.norm0 = GroupNorm(in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, 3, **rs)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, 3)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel, **rs)
        if self.num_heads:
            self.norm2 = GroupNorm(out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1)
            self.proj = Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[..., None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = F.silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = F.silu(self.norm1(x + params))
        x = (self.conv1(x) + (self.skip(orig) if self.skip is not None else orig)) * self.skip_scale
        if self.num_heads:
            n = self.num_heads
            q, k, v = self.qkv(self.norm2(x)).reshape(x.shape[0] * n, x.shape[1] // n, 3, -1).unbind(2)
            w = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(k.shape[1])).softmax(dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", w, v)
            x = (self.proj(a.reshape(*x.shape)) + x) * self.skip_scale
        return x


def positional_embedding(x: torch.Tensor, channels: int, endpoint: bool = False,
                         max_positions: int = 10000) -> torch.Tensor:
    """EDM's PositionalEmbedding: [cos, sin] of x times (1/max_positions)^(i / (channels/2 - endpoint))."""
    freqs = torch.arange(channels // 2, dtype=torch.float32, device=x.device) / (channels // 2 - int(endpoint))
    x = x.ger(((1 / max_positions) ** freqs).to(x.dtype))
    return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise level (NCSN++), frequencies in the buffer `freqs`."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.empty(num_channels // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.ger((2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class DhariwalUNet(nn.Module):
    """EDM's ADM network F(x, c_noise) (unconditional: label_dim and augment_dim 0)."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, model_channels: int = 192,
                 channel_mult: Sequence[int] = (1, 2, 3, 4), channel_mult_emb: int = 4, num_blocks: int = 3,
                 attn_resolutions: Sequence[int] = (32, 16, 8)) -> None:
        super().__init__()
        self.model_channels, emb = model_channels, model_channels * channel_mult_emb
        self.map_layer0 = Linear(model_channels, emb)
        self.map_layer1 = Linear(emb, emb)
        self.enc = nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, emb, down=True)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=res in attn_resolutions)
        skips = [b.out_channels for b in self.enc.values()]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, emb, attention=True)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, emb)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, emb, up=True)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, emb, attention=res in attn_resolutions)
        self.out_norm = GroupNorm(cout)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = positional_embedding(noise_labels, self.model_channels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips = []
        for block in self.enc.values():
            x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
            skips.append(x)
        for block in self.dec.values():
            if x.shape[1] != block.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
