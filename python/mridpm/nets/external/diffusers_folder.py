"""diffusers priors: a pipeline folder (model_index.json, unet/, scheduler/) or a bare model folder
(config.json + diffusion_pytorch_model.safetensors) written by save_pretrained, with a UNet2DModel or
UNet2DConditionModel built by diffusers itself and its scheduler config mapped to a DiscreteSchedule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.nets.external import check_and_load
from mridpm.nets.external._hub import (
    ComplexChannels,
    diffusers_schedule,
    expand_batch,
    read_weights,
    record,
)
from mridpm.nets.priors import Prior
from mridpm.train.checkpoint import read_json_object

CLASSES = ("UNet2DModel", "UNet2DConditionModel")
WEIGHTS = "diffusion_pytorch_model"
NOTES = ("diffusers UNet: x in [-1, 1], (real, imaginary) as its 2 channels or, for 1 channel, run "
         "separately; unet(x, t).sample is the scheduler's prediction_type")


class _Call(nn.Module):
    """unet(x, t, **fixed).sample as a plain function of (x, t): fixed holds encoder_hidden_states for a
    UNet2DConditionModel, expanded to the batch."""

    def __init__(self, unet: nn.Module, cond: torch.Tensor | None) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("cond", cond, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.cond is None:
            return self.unet(x, t).sample
        return self.unet(x, t, encoder_hidden_states=expand_batch(self.cond, x.shape[0])).sample


def _folders(path: Path, scheduler: Any) -> tuple[Path, dict[str, Any]]:
    """(model folder, scheduler config) of a pipeline or bare model folder; scheduler (a config dict, a
    scheduler folder or its JSON file) overrides the one found beside the model."""
    if (path / "model_index.json").is_file():
        model_dir, found = path / "unet", path / "scheduler"
    elif (path / "config.json").is_file():
        model_dir, found = path, path.parent / "scheduler"
    else:
        raise ValueError(f"{path} is neither a diffusers pipeline folder (model_index.json) nor a model folder "
                         "(config.json)")
    if isinstance(scheduler, dict):
        return model_dir, scheduler
    where = Path(scheduler) if scheduler is not None else found
    config = where / "scheduler_config.json" if where.is_dir() else where
    if not config.is_file():
        if scheduler is None and (model_dir / "scheduler_config.json").is_file():
            config = model_dir / "scheduler_config.json"
        else:
            raise ValueError(f"no scheduler config for {path} (looked for {config}); pass scheduler= a config "
                             "dict or a scheduler folder")
    return model_dir, read_json_object(config, "scheduler config")


def _weights_file(model_dir: Path, variant: str | None) -> Path:
    """The model's safetensors file (or sharded index), or a .bin read with weights_only=True."""
    stem = WEIGHTS if variant is None else f"{WEIGHTS}.{variant}"
    for name in (f"{stem}.safetensors", f"{stem}.safetensors.index.json", f"{stem}.bin"):
        if (model_dir / name).is_file():
            return model_dir / name
    raise ValueError(f"no weights in {model_dir}: expected {stem}.safetensors")


def _state(file: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weights file, a sharded index reading each of its safetensors shards."""
    if not file.name.endswith(".index.json"):
        return read_weights(file)
    shards = read_json_object(file, "weights index").get("weight_map", {})
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(shards.values())):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise ValueError(f"{file} names a shard {shard!r} that is not a safetensors file beside it")
        state.update(read_weights(file.parent / shard))
    return state


def _build(config: dict[str, Any], source: Path) -> nn.Module:
    """The diffusers network config.json describes (UNet2DModel or UNet2DConditionModel), random weights."""
    import diffusers

    name = config.get("_class_name")
    if name not in CLASSES:
        raise ValueError(f"{source}: the model is a {name!r}; mridpm takes one of {CLASSES}")
    if config.get("time_embedding_type") == "fourier":
        raise ValueError(f"{source}: a Fourier time embedding takes sigmas (a variance-exploding score model); load "
                         "it with format='score-sde'")
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ValueError(f"{source}: class-conditional networks are not supported (they need class labels)")
    try:
        return getattr(diffusers, name).from_config(config)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: diffusers cannot build this {name}: {str(err).splitlines()[0]}") from None


def load(path: Path, device: str | torch.device = "cpu", *, scheduler: Any = None, cond: torch.Tensor | None = None,
         p99: float = 1.0, variant: str | None = None, **options: Any) -> Prior:
    """A diffusers pipeline or model folder as a Prior. scheduler: a config dict or folder (default: the
    pipeline's, or a scheduler/ folder beside the model); cond: encoder_hidden_states (1 or batch, seq,
    cross_attention_dim) for a UNet2DConditionModel; p99: the training images' 99th-percentile magnitude."""
    if options:
        raise ValueError(f"unknown options for format 'diffusers': {sorted(options)}")
    path = Path(path)
    model_dir, sched_config = _folders(path, scheduler)
    config_path = model_dir / "config.json"
    config = read_json_object(config_path, "model config")
    unet = _build(config, config_path)
    conditional = config["_class_name"] == "UNet2DConditionModel"
    if conditional and cond is None:
        raise ValueError(f"{path}: a UNet2DConditionModel needs its encoder_hidden_states: pass cond= a tensor "
                         f"(1, seq, {config.get('cross_attention_dim')}); reconstruction has no prompt to give it")
    if cond is not None and not conditional:
        raise ValueError(f"{path}: cond was given but the UNet2DModel takes no conditioning")
    file = _weights_file(model_dir, variant)
    state = _state(file)
    fix = getattr(unet, "_fix_state_dict_keys_on_load", None)  # diffusers' own renames of old attention keys
    if fix is not None:
        state = fix(dict(state)) or state
    check_and_load(unet, state, str(file), "diffusers")
    schedule, prediction = diffusers_schedule(sched_config, str(path))
    out_channels = config.get("out_channels", config.get("in_channels"))
    learned = str(sched_config.get("variance_type", "")).startswith("learned")
    if out_channels == 2 * config["in_channels"] and not learned:
        raise ValueError(f"{path}: the network returns twice its input channels but the scheduler's variance_type "
                         f"{sched_config.get('variance_type')!r} is not learned")
    call = _Call(unet, None if cond is None else torch.as_tensor(cond, dtype=torch.float32))
    model = ComplexChannels(call, config["in_channels"], out_channels, str(path))
    blocks = config.get("block_out_channels", (64,))
    info = record("diffusers", path, config.get("sample_size") or 64, 2 ** (len(blocks) - 1), p99, NOTES,
                  model_class=config["_class_name"], scheduler=sched_config.get("_class_name"),
                  variance_type=sched_config.get("variance_type"), config=dict(config))
    return Prior(model.float().to(device).eval(), schedule, prediction, info)
