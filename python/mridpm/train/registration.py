"""Training DiffuseMorph (`mridpm train` with [data] task = "registration"): pairs of contrast draws
of MNI152 slices, each warped by its own random smooth field, and the joint loss: diffusion MSE plus
-LNCC(warp(moving, field), fixed) + smoothness of the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mridpm.dpm.losses import diffusion_loss
from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.diffusemorph import DiffuseMorph
from mridpm.nets.unet import UNetConfig
from mridpm.tasks import warps as W  # noqa: N812


@dataclass
class JointLoss:
    """DiffuseMorph's training loss on a batch of slices x0 (B, copies, *spatial) in [0, 1], each channel
    one draw of tissue contrasts: moving and fixed are two different draws, each warped by its own random
    field and given Gaussian noise; loss = diffusion MSE + reg_weight (-LNCC + smooth_weight smoothness)."""

    schedule: DiscreteSchedule
    reg_weight: float = 1.0
    smooth_weight: float = 1.0
    window: int = 9
    noise: float = 0.02

    def pair(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(moving, fixed) (B, 1, *spatial) from training slices, every draw from generator."""
        b, copies = x0.shape[:2]
        pick = torch.stack([torch.randperm(copies, generator=generator)[:2] for _ in range(b)]) if copies > 1 else \
            torch.zeros(b, 2, dtype=torch.long)
        out = []
        for k in range(2):
            img = x0[torch.arange(b), pick[:, k]][:, None]
            u = W.random_smooth_field(tuple(x0.shape[2:]), generator=generator, batch=b, **W.FIELD).to(x0.device)
            img = W.warp(img, u) + self.noise * torch.randn(img.shape, generator=generator).to(x0.device)
            out.append(img.clamp(0, 1))
        return out[0], out[1]

    def __call__(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        moving, fixed = self.pair(x0, generator)
        fields = []

        def eps_model(x_t: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
            eps, field = net(x_t, steps, moving, fixed)
            fields.append(field)
            return eps

        loss = diffusion_loss(eps_model, fixed * 2 - 1, self.schedule, t=t, noise=noise[:, :1])  # type: ignore[arg-type]
        field = fields[0]
        reg = -W.lncc(W.warp(moving, field), fixed, self.window) + self.smooth_weight * W.smoothness(field)
        return loss + self.reg_weight * reg


def registration_data(data: dict[str, Any], zs: list[int]) -> torch.Tensor:
    """(N, copies, H, W) training slices in [0, 1] of the [data] table at z positions zs (its training
    ones, train.run.phantom_slices) and their mirror images with flip, each channel one draw of tissue
    contrasts (jitter, seeds 0..copies-1)."""
    from mridpm.data.phantom import brain_slices

    size = tuple(data.get("size", [64, 64]))
    copies = [brain_slices(data.get("contrast", "T1"), zs, size, jitter=float(data.get("jitter", 0.1)), seed=s)  # type: ignore[arg-type]
              for s in range(int(data.get("copies", 4)))]
    x = torch.stack(copies, 1)
    return torch.cat([x, x.flip(-1)]) if data.get("flip", True) else x


def registration_training(model_cfg: UNetConfig, data: dict[str, Any], zs: list[int], train_cfg: Any
                          ) -> tuple[DiffuseMorph, torch.Tensor, JointLoss]:
    """(model, training slices at zs, loss) of a `mridpm train` configuration with [data] task =
    "registration"; [train.extra] may set reg_weight, smooth_weight and window (JointLoss)."""
    from mridpm.train.trainer import check_integer, check_real

    c = train_cfg
    if c.sample_every or c.prediction != "eps" or c.cond_dropout or c.noise != "gaussian":
        raise ValueError("registration trains with [train] prediction = 'eps', gaussian noise, no cond_dropout "
                         "and sample_every = 0")
    extra = {k: v for k, v in train_cfg.extra.items() if k != "data"}
    if unknown := set(extra) - {"reg_weight", "smooth_weight", "window"}:
        raise ValueError(f"[train.extra]: unknown keys {sorted(unknown)}; known: reg_weight, smooth_weight, window")
    for key in ("reg_weight", "smooth_weight"):
        check_real("[train.extra]", key, extra.get(key, 1.0), 0.0)
    check_integer("[train.extra]", "window", extra.get("window", 9), 3)
    loss = JointLoss(DiscreteSchedule.from_name(train_cfg.schedule, train_cfg.num_train_timesteps),
                     **extra)
    return DiffuseMorph(model_cfg), registration_data(data, zs), loss
