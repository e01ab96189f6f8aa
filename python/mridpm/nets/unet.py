"""A UNet denoiser for 2D and 3D images (Ho et al. 2020; Dhariwal & Nichol 2021): residual blocks
with GroupNorm and a time embedding, attention at chosen levels, and three conditioning paths:
images or masks concatenated as channels, class labels (with a null class for classifier-free
guidance), and context vectors through cross-attention. Complex images go in as two channels."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from mridpm.nets.layers import AttentionBlock, FourierEmbedding, ResBlock, conv, norm, sinusoidal


@dataclass
class UNetConfig:
    """Everything that defines a UNet; stored next to its weights."""

    dims: int = 2
    in_channels: int = 1
    out_channels: int | None = None
    channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (2,)
    heads: int = 4
    groups: int = 8
    dropout: float = 0.0
    embedding: str = "sinusoidal"  # or "fourier" (continuous noise levels)
    time_scale: float = 1.0  # t is multiplied by this before the embedding (1000 for t in [0, 1])
    cond_channels: int = 0
    num_classes: int = 0
    context_dim: int = 0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        d = dict(d)
        for key in ("channel_mult", "attention_levels"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d)


class UNet(nn.Module):
    """model(x, t, cond=None, class_labels=None, context=None) -> prediction shaped like x (out_channels).

    x: (batch, in_channels, *spatial) with spatial sizes divisible by 2^(levels - 1); t: (batch,) or a
    scalar; cond: (batch, cond_channels, *spatial); class_labels: (batch,) ints in [0, num_classes],
    num_classes being the null class; context: (batch, context_dim) or (batch, tokens, context_dim)."""

    def __init__(self, config: UNetConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        cfg = config or UNetConfig(**kwargs)  # type: ignore[arg-type]
        if cfg.dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {cfg.dims}")
        if cfg.embedding not in ("sinusoidal", "fourier"):
            raise ValueError(f"embedding must be 'sinusoidal' or 'fourier', got {cfg.embedding!r}")
        self.config = cfg
        ch, d = cfg.channels, cfg.dims
        emb = 4 * ch
        self.fourier = FourierEmbedding(ch) if cfg.embedding == "fourier" else None
        self.time_mlp = nn.Sequential(nn.Linear(ch, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_emb = nn.Embedding(cfg.num_classes + 1, emb) if cfg.num_classes > 0 else None
        self.inp = conv(d, cfg.in_channels + cfg.cond_channels, ch)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, cur = [ch], ch
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                blocks.append(self._block(cur, ch * mult, level))
                cur = ch * mult
                skips.append(cur)
            self.down.append(blocks)
            self.downsample.append(conv(d, cur, cur, 3, stride=2) if level < levels - 1 else nn.Identity())
            if level < levels - 1:
                skips.append(cur)
        self.mid = nn.ModuleList([self._block(cur, cur, levels - 1, attend=True),
                                  ResBlock(d, cur, cur, emb, cfg.groups)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(self._block(cur + skips.pop(), ch * mult, level))
                cur = ch * mult
            self.up.append(blocks)
            self.upsample.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv(d, cur, cur))
                                 if level > 0 else nn.Identity())
        self.out = nn.Sequential(norm(cur, cfg.groups), nn.SiLU(), conv(d, cur, cfg.out_channels or cfg.in_channels))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def _block(self, cin: int, cout: int, level: int, attend: bool = False) -> nn.ModuleList:
        cfg = self.config
        parts = nn.ModuleList([ResBlock(cfg.dims, cin, cout, 4 * cfg.channels, cfg.groups, cfg.dropout)])
        if attend or level in cfg.attention_levels:
            parts.append(AttentionBlock(cout, cfg.heads, cfg.groups, cfg.context_dim))
        return parts

    def _embed(self, t: torch.Tensor, x: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).float() * self.config.time_scale
        if t.numel() == 1:
            t = t.expand(x.shape[0])
        if t.numel() != x.shape[0]:
            raise ValueError(f"t must be a scalar or hold one value per sample ({x.shape[0]}), got {t.numel()}")
        base = self.fourier(t) if self.fourier is not None else sinusoidal(t, self.config.channels)
        emb = self.time_mlp(base)
        if self.class_emb is not None:
            if class_labels is None:  # unconditional: the null class
                class_labels = torch.full((x.shape[0],), self.config.num_classes, device=x.device)
            emb = emb + self.class_emb(class_labels.long())
        elif class_labels is not None:
            raise ValueError("this UNet has no class embedding (num_classes = 0)")
        return emb

    @staticmethod
    def _run(parts: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = parts[0](h, emb)
        for extra in parts[1:]:
            h = extra(h, context)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor | None = None,
                class_labels: torch.Tensor | None = None, context: torch.Tensor | None = None) -> torch.Tensor:
        cfg = self.config
        if x.dim() != cfg.dims + 2 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"x must be (batch, {cfg.in_channels}, *{cfg.dims} spatial), got {tuple(x.shape)}")
        factor = 2 ** (len(cfg.channel_mult) - 1)
        if any(n % factor for n in x.shape[2:]):
            raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be divisible by {factor}")
        if (cond is None) != (cfg.cond_channels == 0) or (cond is not None and cond.shape[1] != cfg.cond_channels):
            raise ValueError(f"this UNet takes {cfg.cond_channels} conditioning channels, got "
                             f"{None if cond is None else tuple(cond.shape)}")
        emb = self._embed(t, x, class_labels)  # type: ignore[arg-type]
        h = self.inp(x if cond is None else torch.cat([x, cond.to(x.dtype)], dim=1))
        skips = [h]
        for blocks, down in zip(self.down, self.downsample, strict=True):
            for parts in blocks:
                h = self._run(parts, h, emb, context)
                skips.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                skips.append(h)
        h = self._run(self.mid[0], h, emb, context)
        h = self.mid[1](h, emb)
        for blocks, up in zip(self.up, self.upsample, strict=True):
            for parts in blocks:
                h = self._run(parts, torch.cat([h, skips.pop()], dim=1), emb, context)
            h = up(h)
        return self.out(h)


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, *spatial) complex -> (batch, 2C, *spatial) real: real parts, then imaginary parts."""
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """The inverse of complex_to_channels."""
    c = x.shape[1] // 2
    return torch.complex(x[:, :c].float(), x[:, c:].float())
