"""NCSN++ (score_sde_pytorch models/ncsnpp.py) for continuous VE SDEs: one flat ModuleList
`all_modules` in the original order (so the original state-dict keys), Gaussian Fourier features of
log sigma, BigGAN residual blocks, FIR resampling, optional input/output pyramids; the output is
divided by sigma when scale_by_sigma. Attention runs where the config places it at the training size
(the original tests the runtime width, which only differs off the training size, where it breaks)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mridpm.nets.external import _ncsnpp_layers as L  # noqa: N812


@dataclass(frozen=True)
class NCSNppConfig:
    """The config.model / config.data fields NCSN++ reads (defaults: score-MRI's fastMRI knee 320)."""

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    image_size: int = 320
    num_channels: int = 1
    centered: bool = False
    scale_by_sigma: bool = True
    nonlinearity: str = "swish"
    conditional: bool = True
    fir: bool = True
    fir_kernel: tuple[float, ...] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resamp_with_conv: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"

    def check(self) -> None:
        """One-line ValueError for a config this port does not cover."""
        allowed = {"progressive": ("none", "output_skip", "residual"),
                   "progressive_input": ("none", "input_skip", "residual"),
                   "progressive_combine": ("sum", "cat"), "resblock_type": ("biggan",),
                   "embedding_type": ("fourier",)}
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise ValueError(f"NCSN++ {name} must be one of {values} here, got {getattr(self, name)!r}")
        if self.nf < 4 or not self.ch_mult or self.num_res_blocks < 1 or self.num_channels < 1:
            raise ValueError("NCSN++ needs nf >= 4, a non-empty ch_mult, num_res_blocks >= 1, num_channels >= 1")


class NCSNpp(nn.Module):
    """score_sde's NCSNpp: forward(x, sigma) -> the score (the output / sigma with scale_by_sigma)."""

    def __init__(self, cfg: NCSNppConfig) -> None:
        super().__init__()
        cfg.check()
        self.cfg, self.act = cfg, L.get_act(cfg.nonlinearity)
        nf, n_levels, ch = cfg.nf, len(cfg.ch_mult), cfg.num_channels
        res = [cfg.image_size // (2**i) for i in range(n_levels)]
        self.attn = [r in cfg.attn_resolutions for r in res]
        block = dict(act=self.act, fir=cfg.fir, fir_kernel=cfg.fir_kernel, skip_rescale=cfg.skip_rescale,
                     temb_dim=nf * 4 if cfg.conditional else None)
        fir = dict(fir=cfg.fir, fir_kernel=cfg.fir_kernel)
        combine = cfg.progressive_combine

        def res_block(in_ch: int, out_ch: int | None = None, **kw: bool) -> nn.Module:
            return L.ResnetBlockBigGANpp(in_ch=in_ch, out_ch=out_ch, **block, **kw)  # type: ignore[arg-type]

        m: list[nn.Module] = [L.GaussianFourierProjection(nf)]
        if cfg.conditional:
            m += [nn.Linear(2 * nf, nf * 4), nn.Linear(nf * 4, nf * 4)]
        if cfg.progressive == "output_skip":
            self.pyramid_upsample = L.Resample(ch, None, up=True, with_conv=False, **fir)  # type: ignore[arg-type]
        if cfg.progressive_input == "input_skip":
            self.pyramid_downsample = L.Resample(ch, None, up=False, with_conv=False, **fir)  # type: ignore[arg-type]
        m.append(L.conv3x3(ch, nf))
        hs_c, in_ch, pyr_in = [nf], nf, ch
        for lvl in range(n_levels):
            for _ in range(cfg.num_res_blocks):
                out_ch = nf * cfg.ch_mult[lvl]
                m.append(res_block(in_ch, out_ch))
                in_ch = out_ch
                if self.attn[lvl]:
                    m.append(L.AttnBlockpp(in_ch, cfg.skip_rescale))
                hs_c.append(in_ch)
            if lvl != n_levels - 1:
                m.append(res_block(in_ch, down=True))
                if cfg.progressive_input == "input_skip":
                    m.append(L.Combine(pyr_in, in_ch, combine))
                    in_ch *= 2 if combine == "cat" else 1
                elif cfg.progressive_input == "residual":
                    m.append(L.Resample(pyr_in, in_ch, up=False, with_conv=True, **fir))  # type: ignore[arg-type]
                    pyr_in = in_ch
                hs_c.append(in_ch)
        in_ch = hs_c[-1]
        m += [res_block(in_ch), L.AttnBlockpp(in_ch, cfg.skip_rescale), res_block(in_ch)]
        pyr_ch = 0
        for lvl in reversed(range(n_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                out_ch = nf * cfg.ch_mult[lvl]
                m.append(res_block(in_ch + hs_c.pop(), out_ch))
                in_ch = out_ch
            if self.attn[lvl]:
                m.append(L.AttnBlockpp(in_ch, cfg.skip_rescale))
            if cfg.progressive != "none":
                if lvl == n_levels - 1 or cfg.progressive == "output_skip":
                    out = ch if cfg.progressive == "output_skip" else in_ch
                    m += [L.group_norm(in_ch), L.conv3x3(in_ch, out)]
                    pyr_ch = out
                else:
                    m.append(L.Resample(pyr_ch, in_ch, up=True, with_conv=True, **fir))  # type: ignore[arg-type]
                    pyr_ch = in_ch
            if lvl != 0:
                m.append(res_block(in_ch, up=True))
        if cfg.progressive != "output_skip":
            m += [L.group_norm(in_ch), L.conv3x3(in_ch, ch)]
        self.all_modules = nn.ModuleList(m)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """The score at noise level sigma (batch,); index (SigmaPrior passes it) is unused: NCSN++ sees sigma."""
        cfg, mods, act = self.cfg, iter(self.all_modules), self.act
        temb = next(mods)(torch.log(sigma))
        if cfg.conditional:
            temb = next(mods)(temb)
            temb = next(mods)(act(temb))
        else:
            temb = None
        h_in = x if cfg.centered else 2 * x - 1.0
        pyramid_in = h_in
        hs = [next(mods)(h_in)]
        n_levels = len(cfg.ch_mult)
        for lvl in range(n_levels):
            for _ in range(cfg.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn[lvl]:
                    h = next(mods)(h)
                hs.append(h)
            if lvl != n_levels - 1:
                h = next(mods)(hs[-1], temb)
                if cfg.progressive_input == "input_skip":
                    pyramid_in = self.pyramid_downsample(pyramid_in)
                    h = next(mods)(pyramid_in, h)
                elif cfg.progressive_input == "residual":
                    pyramid_in = self._join(next(mods)(pyramid_in), h)
                    h = pyramid_in
                hs.append(h)
        h = hs[-1]
        h = next(mods)(h, temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        pyramid = None
        for lvl in reversed(range(n_levels)):
            for _ in range(cfg.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn[lvl]:
                h = next(mods)(h)
            if cfg.progressive != "none":
                if lvl == n_levels - 1:
                    pyramid = self._head(mods, h)
                elif cfg.progressive == "output_skip":
                    pyramid = self.pyramid_upsample(pyramid)
                    pyramid = pyramid + self._head(mods, h)
                else:
                    pyramid = self._join(next(mods)(pyramid), h)
                    h = pyramid
            if lvl != 0:
                h = next(mods)(h, temb)
        if cfg.progressive == "output_skip":
            assert pyramid is not None
            h = pyramid
        else:
            h = self._head(mods, h)
        if next(mods, None) is not None:
            raise RuntimeError("NCSN++ forward left modules unused (a bug in this port)")
        if cfg.scale_by_sigma:
            h = h / sigma.reshape(x.shape[0], *([1] * (x.dim() - 1)))
        return h

    def _head(self, mods: Iterator[nn.Module], h: torch.Tensor) -> torch.Tensor:
        """conv(act(GroupNorm(h))) with the next two modules (the output heads)."""
        norm, conv = next(mods), next(mods)
        return conv(self.act(norm(h)))

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a + b, divided by sqrt 2 with skip_rescale (the residual pyramids)."""
        return (a + b) / math.sqrt(2.0) if self.cfg.skip_rescale else a + b
