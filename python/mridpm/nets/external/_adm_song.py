"""EDM's SongUNet (DDPM++ / NCSN++ in NVlabs/edm training/networks.py), unconditional, with the same
computation and state-dict key names as the original."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mridpm.nets.external._adm_edm import Conv2d, FourierEmbedding, GroupNorm, Linear, UNetBlock, positional_embedding


class SongUNet(nn.Module):
    """EDM's SongUNet F(x, c_noise): positional (DDPM++) or Fourier (NCSN++) noise embedding, standard,
    skip or residual encoder, standard or skip decoder."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, model_channels: int = 128,
                 channel_mult: Sequence[int] = (1, 2, 2, 2), channel_mult_emb: int = 4, num_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,), embedding_type: str = "positional",
                 channel_mult_noise: int = 1, encoder_type: str = "standard", decoder_type: str = "standard",
                 resample_filter: Sequence[int] = (1, 1)) -> None:
        super().__init__()
        if embedding_type not in ("fourier", "positional") or encoder_type not in ("standard", "skip", "residual") \
                or decoder_type not in ("standard", "skip"):
            raise ValueError(f"unknown SongUNet option: {embedding_type=}, {encoder_type=}, {decoder_type=}")
        emb, noise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        kw = {"emb_channels": emb, "num_heads": 1, "skip_scale": math.sqrt(0.5), "eps": 1e-6,
              "resample_filter": resample_filter, "resample_proj": True, "adaptive_scale": False}
        self.noise_channels, self.fourier = noise, embedding_type == "fourier"
        if self.fourier:
            self.map_noise = FourierEmbedding(noise)
        self.map_layer0 = Linear(noise, emb)
        self.map_layer1 = Linear(emb, emb)
        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **kw)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True, fused_resample=True,
                                                                   resample_filter=resample_filter)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **kw)
        skips = [b.out_channels for name, b in self.enc.items() if "aux" not in name]
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **kw)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **kw)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **kw)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **kw)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor) -> torch.Tensor:
        emb = self.map_noise(noise_labels) if self.fourier else \
            positional_embedding(noise_labels, self.noise_channels, endpoint=True)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # swap sin/cos
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips, aux = [], x
        for name, block in self.enc.items():
            if "aux_down" in name:
                aux = block(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + block(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + block(aux)) / math.sqrt(2)
            else:
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)
        out: torch.Tensor | None = None
        tmp = x
        for name, block in self.dec.items():
            if "aux_up" in name:
                out = block(out)
            elif "aux_norm" in name:
                tmp = block(x)
            elif "aux_conv" in name:
                tmp = block(F.silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
        assert out is not None
        return out
