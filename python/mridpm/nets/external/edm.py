"""Checkpoints of EDM networks (NVlabs/edm's EDMPrecond around DhariwalUNet or SongUNet, as
InverseBench trained them on complex fastMRI): a denoiser D(x, sigma) on the sigma scale, run here on
the discrete VP schedule of log-spaced sigmas through SigmaPrior (exact conversion)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.nets.external import check_and_load, merge_options, read_state_dict, strip_prefix
from mridpm.nets.external._adm_edm import DhariwalUNet
from mridpm.nets.external.convert import SigmaPrior, discrete_from_sigmas

# InverseBench configs/pretrain/mri-{knee,brain}-mvue.yaml (EDMPrecond, DhariwalUNet), EDM's sigma range
DEFAULTS: dict[str, Any] = {
    "img_resolution": 320, "img_channels": 2, "model_type": "DhariwalUNet", "model_channels": 128,
    "channel_mult": [1, 1, 1, 2, 2], "channel_mult_emb": 4, "num_blocks": 1, "attn_resolutions": [16],
    "sigma_data": 0.5, "sigma_min": 0.002, "sigma_max": 80.0, "num_sigmas": 1000,
    "p99": 1.0, "data_range": [-1e9, 1e9],
}
# SongUNet's own arguments, with EDM's defaults (DDPM++)
SONG_DEFAULTS: dict[str, Any] = {"embedding_type": "positional", "channel_mult_noise": 1, "encoder_type": "standard",
                                 "decoder_type": "standard", "resample_filter": [1, 1]}
_IGNORED = ("dropout", "label_dim", "use_fp16", "augment_dim", "label_dropout")
_NET_KEYS = ("model_channels", "channel_mult", "channel_mult_emb", "num_blocks", "attn_resolutions")
NOTES = ("complex image as 2 channels (real, imaginary) divided by the 99th percentile of its magnitude "
         "(InverseBench's fastMRI MVUE scaling); EDM preconditioning (sigma_data {sd}), denoiser D(x, sigma) "
         "on {n} log-spaced sigmas in [{lo}, {hi}]")


class EDMPrecond(nn.Module):
    """EDM's preconditioning D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma) / 4), registered as
    `model` so EDMPrecond's state dict keys (model.*) load as saved."""

    def __init__(self, model: nn.Module, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.model, self.sigma_data = model, sigma_data

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        del index  # SigmaPrior's step index: the network sees sigma only
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1, 1, 1, 1)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data / (sigma**2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma**2).sqrt()
        return c_skip * x + c_out * self.model(c_in * x, (sigma.log() / 4).flatten()).to(torch.float32)


def build_network(cfg: dict[str, Any]) -> nn.Module:
    """The unconditional DhariwalUNet or SongUNet cfg describes (EDM's argument names)."""
    common = {"img_resolution": int(cfg["img_resolution"]), "in_channels": int(cfg["img_channels"]),
              "out_channels": int(cfg["img_channels"]), **{k: cfg[k] for k in _NET_KEYS}}
    if cfg["model_type"] == "DhariwalUNet":
        return DhariwalUNet(**common)
    if cfg["model_type"] == "SongUNet":
        from mridpm.nets.external._adm_song import SongUNet

        return SongUNet(**common, **{k: cfg[k] for k in SONG_DEFAULTS})
    raise ValueError(f"edm model_type must be 'DhariwalUNet' or 'SongUNet', got {cfg['model_type']!r}")


def edm_sigmas(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """n log-spaced sigmas from sigma_min to sigma_max (float64), the discrete grid the prior runs on."""
    if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)) or n < 2:
        raise ValueError(f"edm needs 0 < sigma_min < sigma_max < inf and num_sigmas >= 2, got "
                         f"{sigma_min}, {sigma_max}, {n}")
    return torch.logspace(math.log10(sigma_min), math.log10(sigma_max), n, dtype=torch.float64)


def load(path: Path, device: str | torch.device = "cpu", **options: Any) -> Any:
    """The EDMPrecond state dict in `path` (maybe under "ema" or "net", as InverseBench saves it; the
    inner network's own state dict also loads) as a Prior; options override DEFAULTS."""
    from mridpm.nets.priors import Prior

    cfg = merge_options({**DEFAULTS, **SONG_DEFAULTS, **dict.fromkeys(_IGNORED)}, options, "edm")
    if int(cfg["img_channels"]) != 2:
        raise ValueError(f"img_channels must be 2 (real, imaginary) for an MRI prior, got {cfg['img_channels']}")
    if cfg["label_dim"] or cfg["augment_dim"]:
        raise ValueError("class-conditional or augmentation-conditioned EDM networks are not supported as priors")
    sigmas = edm_sigmas(float(cfg["sigma_min"]), float(cfg["sigma_max"]), int(cfg["num_sigmas"]))
    state = strip_prefix(read_state_dict(path, ("ema", "net")))
    if state and not any(k.startswith("model.") for k in state):
        state = {f"model.{k}": v for k, v in state.items()}
    with torch.device("meta"):  # the weights come from the file
        precond = EDMPrecond(build_network(cfg), float(cfg["sigma_data"]))
    check_and_load(precond, state, str(path), "edm")
    size = int(cfg["img_resolution"])
    notes = NOTES.format(sd=cfg["sigma_data"], n=len(sigmas), lo=cfg["sigma_min"], hi=cfg["sigma_max"])
    info = {"format": "edm", "image_size": [size, size], "data_range": list(cfg["data_range"]),
            "p99": float(cfg["p99"]), "size_multiple": 2 ** (len(cfg["channel_mult"]) - 1), "source": str(path),
            "schedule_kind": "edm", "sigmas": [float(cfg["sigma_min"]), float(cfg["sigma_max"]), len(sigmas)],
            "notes": notes, "config": {k: v for k, v in cfg.items() if k not in _IGNORED}}
    model = SigmaPrior(precond.float(), sigmas, "x0").to(device).eval()  # sigmas stay float64
    return Prior(model, discrete_from_sigmas(sigmas), "eps", info)
