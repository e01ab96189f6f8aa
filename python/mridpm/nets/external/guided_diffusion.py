"""Checkpoints of openai/guided-diffusion's ADM UNet, as DDS (HJ-harry/DDS) trained it on complex
fastMRI knee images: a plain `torch.save(model.state_dict())`, VP eps-prediction on linear betas, and
(learn_sigma) a variance head whose output channels are dropped here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.external import check_and_load, merge_options, read_state_dict, strip_prefix
from mridpm.nets.external._adm_unet import UNetModel

# DDS configs/vp/fastmri_knee_320_complex.yml (model: and diffusion:), keys as create_model takes them;
# attention_resolutions are resolutions (image_size // rate), channel_mult "" means create_model's default.
DEFAULTS: dict[str, Any] = {
    "image_size": 320, "in_channels": 2, "num_channels": 256, "num_res_blocks": 1, "channel_mult": "",
    "learn_sigma": True, "class_cond": False, "attention_resolutions": "16", "num_heads": 4,
    "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True, "resblock_updown": True,
    "use_new_attention_order": False, "dropout": 0.0, "conv_resample": True,
    "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_diffusion_timesteps": 1000,
    "p99": 1.0, "data_range": [-1.0, 1.0],
}
# keys of DDS's yml that create_model ignores (out_channels follows learn_sigma there too)
_IGNORED = ("type", "var_type", "resamp_with_conv", "use_fp16", "use_checkpoint", "out_channels")
_DEFAULT_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 320: (1, 1, 2, 2, 4, 4),
                 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
NOTES = ("complex image as 2 channels (real, imaginary), magnitude scaled to peak 1 as DDS/score-MRI "
         "preprocess fastMRI (p99 taken as 1); eps on linear betas; variance channels dropped")


def _csv(value: Any) -> tuple[float, ...]:
    """A "1,2,4" string or a sequence as a tuple of numbers."""
    if isinstance(value, str):
        return tuple(float(v) for v in value.split(",") if v.strip())
    return tuple(float(v) for v in value)


def model_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """UNetModel's arguments from create_model-style options (DDS's yml keys), as create_model maps them."""
    size = int(cfg["image_size"])
    mult = _csv(cfg["channel_mult"]) or _DEFAULT_MULT.get(size)
    if not mult:
        raise ValueError(f"guided-diffusion has no default channel_mult for image_size {size}: pass channel_mult")
    in_ch = int(cfg["in_channels"])
    return {"image_size": size, "in_channels": in_ch, "model_channels": int(cfg["num_channels"]),
            "out_channels": 2 * in_ch if cfg["learn_sigma"] else in_ch, "num_res_blocks": int(cfg["num_res_blocks"]),
            "attention_resolutions": tuple(size // int(r) for r in _csv(cfg["attention_resolutions"])),
            "channel_mult": tuple(int(m) if float(m).is_integer() else m for m in mult),
            "conv_resample": bool(cfg["conv_resample"]), "num_classes": 1000 if cfg["class_cond"] else None,
            "num_heads": int(cfg["num_heads"]), "num_head_channels": int(cfg["num_head_channels"]),
            "num_heads_upsample": int(cfg["num_heads_upsample"]),
            "use_scale_shift_norm": bool(cfg["use_scale_shift_norm"]), "resblock_updown": bool(cfg["resblock_updown"]),
            "use_new_attention_order": bool(cfg["use_new_attention_order"])}


class EpsModel(nn.Module):
    """net(x, t) keeping its first `channels` output channels (eps; the rest is a learned variance)."""

    def __init__(self, net: nn.Module, channels: int) -> None:
        super().__init__()
        self.net, self.channels = net, channels

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return self.net(x, t, **kwargs)[:, :self.channels]


def load(path: Path, device: str | torch.device = "cpu", **options: Any) -> Any:
    """The guided-diffusion UNet in `path` (a state dict, maybe under "ema"/"model"/"state_dict") as
    an eps Prior; options override DEFAULTS (DDS's fastMRI knee 320 complex model)."""
    from mridpm.nets.priors import Prior

    cfg = merge_options({**DEFAULTS, **dict.fromkeys(_IGNORED)}, options, "guided-diffusion")
    kwargs = model_kwargs(cfg)
    if cfg["class_cond"]:
        raise ValueError("class-conditional guided-diffusion models are not supported as priors")
    if kwargs["in_channels"] != 2:
        raise ValueError(f"in_channels must be 2 (real, imaginary) for an MRI prior, got {kwargs['in_channels']}")
    state = strip_prefix(read_state_dict(path, ("ema", "model", "state_dict")))
    with torch.device("meta"):  # the weights come from the file
        net = UNetModel(**kwargs)
    check_and_load(net, state, str(path), "guided-diffusion")
    try:
        schedule = DiscreteSchedule.from_name(cfg["beta_schedule"], int(cfg["num_diffusion_timesteps"]),
                                              beta_start=float(cfg["beta_start"]), beta_end=float(cfg["beta_end"]))
    except (TypeError, ValueError) as err:
        raise ValueError(f"guided-diffusion schedule: {err}") from None
    size = kwargs["image_size"]
    info = {"format": "guided-diffusion", "image_size": [size, size], "data_range": list(cfg["data_range"]),
            "p99": float(cfg["p99"]), "size_multiple": 2 ** (len(kwargs["channel_mult"]) - 1),
            "source": str(path), "schedule_kind": "vp", "notes": NOTES,
            "config": {k: v for k, v in cfg.items() if k not in _IGNORED}}
    model = EpsModel(net, kwargs["in_channels"]).to(device=device, dtype=torch.float32).eval()
    return Prior(model, schedule, "eps", info)
