"""Training the diffusion autoencoder classifier (`mridpm train` with [data] task = "classification"):
labelled MNI152 slices, normal or with simulated atrophy (mridpm.data.atrophy), and the joint loss:
the decoder's diffusion MSE given the encoder's latent plus a supervised contrastive term on the
latents (Khosla et al. 2020), which pulls same-class latents together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mridpm.dpm.losses import diffusion_loss
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.diffae import DiffAE
from mridpm.nets.unet import UNetConfig

DATA_KEYS = ("copies", "strength", "deform", "noise", "jitter", "flip", "seed")


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """The supervised contrastive loss of unit-norm latents z (N, D) with labels (N,): the mean over
    anchors with a positive of -mean log p(positive | anchor), p a softmax of cosine / temperature over
    the other samples; 0 when no anchor has a positive."""
    sim = z @ z.T / temperature
    self_mask = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
    log_p = sim.masked_fill(self_mask, float("-inf")).log_softmax(1).masked_fill(self_mask, 0.0)
    pos = (labels[:, None] == labels[None]) & ~self_mask
    count = pos.sum(1)
    keep = count > 0
    if not bool(keep.any()):
        return z.sum() * 0
    return -((log_p * pos).sum(1)[keep] / count[keep]).mean()


@dataclass
class JointLoss:
    """The DiffAE's training loss on a batch x0 (B, 2, H, W): channel 0 the image in [0, 1], channel 1
    its label everywhere; loss = diffusion MSE of the decoder given the image's latent + contrastive_weight
    * supcon_loss(latents, labels, temperature)."""

    schedule: DiscreteSchedule
    contrastive_weight: float = 1.0
    temperature: float = 0.1

    def __call__(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        image, labels = x0[:, :1], x0[:, 1, 0, 0].round().long()
        latents = []

        def eps_model(x_t: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            eps, z = net(x_t, steps, image=image)
            latents.append(z)
            return eps

        loss = diffusion_loss(eps_model, image * 2 - 1, self.schedule, t=t, noise=noise[:, :1])  # type: ignore[arg-type]
        return loss + self.contrastive_weight * supcon_loss(latents[0], labels, self.temperature)


def classification_data(data: dict[str, Any], zs: list[int], seed: int | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, H, W), labels (N,)) of the [data] table at slices zs (mridpm.data.atrophy
    atrophy_slices with its copies, strength, deform, noise, jitter, flip and seed; seed overrides)."""
    from mridpm.data.atrophy import atrophy_slices

    if unknown := set(data) - {"task", "source", "contrast", "size", "z", "holdout_every", *DATA_KEYS}:
        raise ValueError(f"[data]: unknown keys {sorted(unknown)} for task = 'classification'")
    if data.get("source", "phantom") != "phantom" or data.get("contrast", "T1") != "T1":
        raise ValueError("classification trains on T1 phantom slices: [data] source = 'phantom', contrast = 'T1'")
    kw = {k: data[k] for k in DATA_KEYS if k in data}
    if "strength" in kw:
        kw["strength"] = tuple(kw["strength"])
    kw["seed"] = int(kw.get("seed", 0)) if seed is None else seed
    return atrophy_slices(zs, tuple(data.get("size", [64, 64])), **kw)  # type: ignore[arg-type]


def labelled_tensor(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W): the images with their labels as a constant second channel (what JointLoss reads)."""
    return torch.cat([images, labels.float()[:, None, None, None].expand_as(images)], 1)


def classification_training(model_cfg: UNetConfig, data: dict[str, Any], zs: list[int], train_cfg: Any
                            ) -> tuple[DiffAE, torch.Tensor, JointLoss]:
    """(model, training data at zs, loss) of a `mridpm train` configuration with [data] task =
    "classification"; [train.extra] may set contrastive_weight and temperature (JointLoss)."""
    from mridpm.train.trainer import check_real

    c = train_cfg
    if c.sample_every or c.prediction != "eps" or c.cond_dropout or c.noise != "gaussian":
        raise ValueError("classification trains with [train] prediction = 'eps', gaussian noise, no cond_dropout "
                         "and sample_every = 0")
    extra = {k: v for k, v in train_cfg.extra.items() if k != "data"}
    if unknown := set(extra) - {"contrastive_weight", "temperature"}:
        raise ValueError(f"[train.extra]: unknown keys {sorted(unknown)}; known: contrastive_weight, temperature")
    check_real("[train.extra]", "contrastive_weight", extra.get("contrastive_weight", 1.0), 0.0)
    check_real("[train.extra]", "temperature", extra.get("temperature", 0.1), 0.0, open_low=True)
    loss = JointLoss(DiscreteSchedule.from_name(train_cfg.schedule, train_cfg.num_train_timesteps), **extra)
    return DiffAE(model_cfg), labelled_tensor(*classification_data(data, zs)), loss
