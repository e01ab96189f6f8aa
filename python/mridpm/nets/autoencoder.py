"""A KL-regularised autoencoder for latent diffusion (Rombach et al. 2022), 2D or 3D: an encoder to
a Gaussian posterior over latents, a decoder back, and the latent scale factor that brings
latents to unit variance for the diffusion model."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from mridpm.nets.layers import ResBlock, conv, norm


@dataclass
class AutoencoderConfig:
    dims: int = 2
    in_channels: int = 1
    latent_channels: int = 4
    channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)  # len - 1 downsamplings by 2
    num_res_blocks: int = 1
    groups: int = 8
    scale_factor: float = 1.0  # latents are multiplied by this before diffusion (1 / their std)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AutoencoderConfig:
        d = dict(d)
        d["channel_mult"] = tuple(d.get("channel_mult", (1, 2, 2)))
        return cls(**d)


class KLAutoencoder(nn.Module):
    """encode(x) -> (mean, logvar); sample(mean, logvar, generator); decode(z); loss(x) for training."""

    def __init__(self, config: AutoencoderConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        cfg = config or AutoencoderConfig(**kwargs)  # type: ignore[arg-type]
        self.config = cfg
        d, ch = cfg.dims, cfg.channels
        enc: list[nn.Module] = [conv(d, cfg.in_channels, ch)]
        cur = ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                enc.append(ResBlock(d, cur, ch * mult, 0, cfg.groups))
                cur = ch * mult
            if level < len(cfg.channel_mult) - 1:
                enc.append(conv(d, cur, cur, 3, stride=2))
        enc += [norm(cur, cfg.groups), nn.SiLU(), conv(d, cur, 2 * cfg.latent_channels)]
        self.encoder = nn.ModuleList(enc)
        dec: list[nn.Module] = [conv(d, cfg.latent_channels, cur)]
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks):
                dec.append(ResBlock(d, cur, ch * mult, 0, cfg.groups))
                cur = ch * mult
            if level > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), conv(d, cur, cur)]
        dec += [norm(cur, cfg.groups), nn.SiLU(), conv(d, cur, cfg.in_channels)]
        self.decoder = nn.ModuleList(dec)

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.config.channel_mult) - 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean and log-variance, (batch, latent_channels, *spatial / downsampling)."""
        if any(n % self.downsampling for n in x.shape[2:]):
            raise ValueError(f"spatial sizes {tuple(x.shape[2:])} must be divisible by {self.downsampling}")
        h = x
        for layer in self.encoder:
            h = layer(h)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.decoder:
            h = layer(h)
        return h

    def to_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The scaled posterior mean: what latent diffusion models."""
        return self.encode(x)[0] * self.config.scale_factor

    def from_latent(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z / self.config.scale_factor)

    def loss(self, x: torch.Tensor, kl_weight: float = 1e-6, generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 reconstruction + kl_weight * KL(q(z | x) || N(0, I)) per element, and its parts (detached,
        still on the device: reading them is the caller's choice of when to synchronise)."""
        mean, logvar = self.encode(x)
        recon = self.decode(self.sample(mean, logvar, generator))
        rec = (recon - x).abs().mean()
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()
        return rec + kl_weight * kl, {"reconstruction": rec.detach(), "kl": kl.detach()}
