"""The ADM UNet of openai/guided-diffusion (guided_diffusion/unet.py `UNetModel`, 2D), written again
with the same computation and the same state-dict key names, so its checkpoints (and DDS's) load as
saved: time_embed, input_blocks, middle_block, output_blocks, out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32 (the original's `normalization`)."""

    def __init__(self, channels: int) -> None:
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of (possibly fractional) timesteps t (batch,) -> (batch, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb


class Upsample(nn.Module):
    """Nearest 2x upsampling, then a 3x3 conv when use_conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if hasattr(self, "conv") else x


class Downsample(nn.Module):
    """A stride-2 3x3 conv (use_conv) or 2x2 average pooling, named `op` as in the original."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv \
            else nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding (scale-shift norm or addition), optionally
    resampling (up / down) between its first norm and conv."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, use_conv: bool = False,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False) -> None:
        super().__init__()
        out = out_channels or channels
        self.use_scale_shift_norm, self.updown = use_scale_shift_norm, up or down
        self.in_layers = nn.Sequential(GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out, 3, padding=1))
        resample: type[nn.Module] = Upsample if up else Downsample
        self.h_upd = resample(channels, False) if self.updown else nn.Identity()
        self.x_upd = resample(channels, False) if self.updown else nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out if use_scale_shift_norm else out))
        self.out_layers = nn.Sequential(GroupNorm32(out), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out, out, 3, padding=1))
        self.skip_connection: nn.Module = (nn.Identity() if out == channels else
                                           nn.Conv2d(channels, out, 3 if use_conv else 1, padding=int(use_conv)))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[2](self.h_upd(self.in_layers[:2](x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[1:](self.out_layers[0](h) * (1 + scale) + shift)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over all positions: qkv and proj_out are 1x1 Conv1d; heads split before q/k/v
    (legacy order) unless new_order."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1, new_order: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads if num_head_channels == -1 else channels // num_head_channels
        self.new_order = new_order
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        n, length = self.num_heads, qkv.shape[-1]
        ch = c // n
        if self.new_order:
            q, k, v = (z.reshape(b * n, ch, length) for z in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b * n, 3 * ch, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        w = torch.einsum("bct,bcs->bts", q * scale, k * scale)
        w = torch.softmax(w.float(), dim=-1).type(w.dtype)
        h = torch.einsum("bts,bcs->bct", w, v).reshape(b, -1, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    """Layers applied in turn, ResBlocks also given the time embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    """guided-diffusion's UNetModel (dims=2, no gradient checkpointing, float32); attention_resolutions
    are downsampling rates (image_size // resolution, as create_model computes them)."""

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions: Sequence[int], dropout: float = 0.0,
                 channel_mult: Sequence[float] = (1, 2, 4, 8), conv_resample: bool = True,
                 num_classes: int | None = None, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, resblock_updown: bool = False,
                 use_new_attention_order: bool = False) -> None:
        super().__init__()
        del dropout  # inference only: dropout is the identity in eval mode
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.image_size, self.model_channels, self.num_classes = image_size, model_channels, num_classes
        self.channel_mult = tuple(channel_mult)
        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(cin: int, cout: int, **kw: bool) -> ResBlock:
            return ResBlock(cin, emb_dim, cout, use_scale_shift_norm=use_scale_shift_norm, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(GroupNorm32(ch), nn.SiLU(), nn.Conv2d(input_ch, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if self.num_classes is not None:
            if y is None:
                raise ValueError("this model is class-conditional: pass the labels y")
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
