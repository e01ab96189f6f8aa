"""What the MONAI and diffusers loaders share: the peers' scheduler configs mapped to a DiscreteSchedule
through mridpm's drop-in schedulers (one mapping, theirs), JSON configs, and the
wrapper that runs a 1- or 2-channel network on mridpm's (real, imaginary) channels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.dpm.schedules import DiscreteSchedule

# old MONAI Generative names (beta_schedule="linear") -> MONAI core names (schedule="linear_beta"); only
# the two whose formulas are the same in both are mapped, any other old name is refused
_MONAI_OLD_NAMES = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta"}
_MONAI_SCHEDULE_ARGS = ("beta_start", "beta_end", "sig_range", "s")
MONAI_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "PNDMScheduler")
# diffusers schedulers whose training schedule is a beta schedule (their sampling options do not matter here)
DIFFUSERS_SCHEDULERS = (
    "DDPMScheduler", "DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "LMSDiscreteScheduler", "HeunDiscreteScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
    "DDPMParallelScheduler", "DDIMParallelScheduler", "LCMScheduler", "TCDScheduler")


def _discrete(scheduler: Any, source: str) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction) of a drop-in scheduler; a schedule with a zero-SNR end (beta = 1) is refused."""
    try:
        return DiscreteSchedule(scheduler.betas), scheduler.prediction
    except ValueError as err:
        raise ValueError(f"{source}: {err} (a zero-terminal-SNR schedule has no noisy start to sample from)") from None


def diffusers_schedule(config: dict[str, Any], source: str) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction "eps" | "v" | "x0") of a diffusers scheduler config (DDPM, DDIM, PNDM, Euler,
    DPM-Solver...: they share beta_schedule, beta_start/end, num_train_timesteps, trained_betas and
    prediction_type), computed by mridpm.compat.DDPMScheduler exactly as diffusers defines it."""
    from mridpm.compat import DDPMScheduler

    name = config.get("_class_name")
    if name is not None and name not in DIFFUSERS_SCHEDULERS:
        hint = "; load the checkpoint with format='score-sde'" if str(name).startswith("ScoreSde") else ""
        raise ValueError(f"{source}: {name} is not a scheduler of the DDPM family (a beta schedule); mridpm takes "
                         f"{', '.join(DIFFUSERS_SCHEDULERS[:3])}, ...{hint}")
    if config.get("use_flow_sigmas") or config.get("timestep_type") == "continuous":
        raise ValueError(f"{source}: the scheduler feeds the network flow or continuous (sigma) timesteps, not the "
                         "training steps of a beta schedule; such networks are not supported")
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "rescale_betas_zero_snr")
    try:
        scheduler = DDPMScheduler(**{k: config[k] for k in keys if config.get(k) is not None})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None
    return _discrete(scheduler, source)


def monai_schedule(config: dict[str, Any], source: str) -> tuple[DiscreteSchedule, str]:
    """(schedule, prediction) of a MONAI scheduler config (DDPM, DDIM or PNDM; MONAI core's
    schedule="linear_beta" | "scaled_linear_beta" | "sigmoid_beta" | "cosine" or MONAI Generative's
    beta_schedule="linear" | "scaled_linear"), computed by mridpm.compat.MonaiDDPMScheduler as MONAI defines it."""
    from mridpm.compat import MonaiDDPMScheduler

    target = str(config.get("_target_", "DDPMScheduler")).rsplit(".", 1)[-1]
    if target not in MONAI_SCHEDULERS:
        raise ValueError(f"{source}: the scheduler is {target!r}; mridpm takes MONAI's {', '.join(MONAI_SCHEDULERS)}")
    schedule = config.get("schedule")
    if schedule is None:
        old = config.get("beta_schedule", config.get("schedule_beta", "linear"))
        if old not in _MONAI_OLD_NAMES:
            raise ValueError(f"{source}: unknown beta_schedule {old!r}; choose one of {sorted(_MONAI_OLD_NAMES)}")
        schedule = _MONAI_OLD_NAMES[old]
    args = {k: config[k] for k in _MONAI_SCHEDULE_ARGS if k in config}
    if schedule == "cosine":  # MONAI's cosine takes only s; Generative configs carry unused beta_start/end
        args = {k: v for k, v in args.items() if k == "s"}
    try:
        scheduler = MonaiDDPMScheduler(num_train_timesteps=config.get("num_train_timesteps", 1000),
                                       schedule=schedule, prediction_type=config.get("prediction_type", "epsilon"),
                                       **args)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None
    return _discrete(scheduler, source)




def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors or weights-only torch file ({"state_dict" | "model": ...} unwrapped)."""
    from mridpm.nets.external import read_state_dict

    return read_state_dict(path, ("state_dict", "model", "network"))


class ComplexChannels(nn.Module):
    """net (x (batch, c, H, W), t (batch,)) -> (batch, c or 2c, H, W) as a model on mridpm's 2-channel
    (real, imaginary) images: c = 2 runs as it is; c = 1 runs the real and imaginary parts separately,
    stacked along the batch. A learned-variance head (2c outputs) is cut to its first c channels."""

    def __init__(self, net: Callable[..., torch.Tensor] | nn.Module, in_channels: int, out_channels: int,
                 source: str) -> None:
        super().__init__()
        if in_channels not in (1, 2):
            raise ValueError(f"{source}: the network takes {in_channels} channels; a complex MR prior must take "
                             "2 (real, imaginary) or 1 (real and imaginary parts run separately)")
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(f"{source}: the network returns {out_channels} channels for {in_channels} in")
        self.net, self.channels = net, in_channels

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).round().long().expand(x.shape[0])
        if self.channels == 2:
            return self.net(x, t, **kwargs)[:, :2]
        out = self.net(torch.cat([x[:, :1], x[:, 1:2]]), torch.cat([t, t]), **kwargs)[:, :1]
        return torch.cat(out.chunk(2), 1)


def expand_batch(cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """A conditioning tensor given once (leading 1) or per sample, expanded to the call's batch (which a
    1-channel network doubles: a per-sample tensor is then repeated)."""
    if cond is None or cond.shape[0] == batch:
        return cond
    if cond.shape[0] == 1:
        return cond.expand(batch, *cond.shape[1:])
    if batch % cond.shape[0] == 0:
        return cond.repeat(batch // cond.shape[0], *[1] * (cond.dim() - 1))
    raise ValueError(f"the conditioning tensor has batch {cond.shape[0]}, the images {batch}")


def record(fmt: str, source: Path, image_size: Any, size_multiple: int, p99: float, notes: str,
           **extra: Any) -> dict[str, Any]:
    """The info dict of a VP-native external prior (data range [-1, 1])."""
    size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(n) for n in image_size]
    return {"format": fmt, "image_size": size, "data_range": [-1.0, 1.0], "p99": float(p99),
            "size_multiple": int(size_multiple), "source": str(source), "schedule_kind": "vp", "notes": notes,
            **extra}
