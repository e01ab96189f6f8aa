"""A diffusion autoencoder (Preechakul et al. 2022; for classification, Ijishakin et al. 2023): a small
convolutional semantic encoder maps an image to a unit-norm latent z, and a UNet decoder denoises given
z, added to its time embedding so that every residual block's GroupNorm scale and shift depends on it
(mridpm.train.classification trains it, mridpm.tasks.classification classifies and explains with it).
The encoder alone, with a linear head, is the CNN baseline's network."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from mridpm.nets.unet import UNet, UNetConfig


class Encoder(nn.Module):
    """encoder(image (N, 1, H, W) in [0, 1]) -> (N, dim): strided 3x3 convolutions of width `channels`,
    doubling after the first, GroupNorm and SiLU, global average pooling and a linear map."""

    def __init__(self, dim: int, channels: int = 16, levels: int = 4, groups: int = 8) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for level in range(levels):
            cout = channels * min(2**level, 4)
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.SiLU()]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(cin, dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image * 2 - 1))


class DiffAE(nn.Module):
    """model(x_t, t, image=None, latent=None) -> (eps, latent): the decoder's eps at x_t (N, 1, H, W) given
    the latent (N, latent_dim), or the encoder's latent of image (N, 1, H, W) in [0, 1]. config is the
    decoder UNet's (in_channels 1, no other conditioning); config.extra may set latent_dim (32),
    encoder_channels (16) and encoder_levels (4). data: the [data] table it was trained with."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.in_channels != 1 or config.cond_channels or config.num_classes or config.context_dim \
                or config.out_channels not in (None, 1) or config.dims != 2:
            raise ValueError("a DiffAE decoder is a 2D UNet with in_channels = 1, one output channel and no "
                             "cond_channels, num_classes or context_dim (the latent is its condition)")
        self.config, self.data = config, {}
        extra = config.extra
        self.latent_dim = int(extra.get("latent_dim", 32))
        self.encoder = Encoder(self.latent_dim, int(extra.get("encoder_channels", 16)),
                               int(extra.get("encoder_levels", 4)), config.groups)
        self.decoder = UNet(config)
        self.latent_emb = nn.Linear(self.latent_dim, 4 * config.channels)
        self._shift: torch.Tensor | None = None
        self.decoder.time_mlp.register_forward_hook(lambda _, __, out: out + self._shift)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """The unit-norm latents (N, latent_dim) of images (N, 1, H, W) in [0, 1]."""
        return F.normalize(self.encoder(image), dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, image: torch.Tensor | None = None,
                latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if (image is None) == (latent is None):
            raise ValueError("give the DiffAE an image to encode or a latent, one of them")
        z = self.encode(image) if latent is None else latent
        if z.shape != (x_t.shape[0], self.latent_dim):
            raise ValueError(f"latents must be (batch, {self.latent_dim}), got {tuple(z.shape)}")
        self._shift = self.latent_emb(z.to(x_t.dtype))
        try:
            return self.decoder(x_t, t), z
        finally:
            self._shift = None
