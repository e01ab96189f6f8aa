"""MONAI bundles: a DiffusionModelUNet (monai.networks.nets, or MONAI Generative's of the same name)
from configs/inference.json (or .yaml) and models/model.pt (a state dict read with weights_only=True)
or a safetensors file, with its DDPM / DDIM / PNDM scheduler mapped to a DiscreteSchedule.

The config is read as data only: "@name" references to plain values are followed, "$" expressions are
never evaluated (a needed value given by one is refused: pass it as an option). Latent bundles (with
an AutoencoderKL) load with latent=True as a prior over the scaled latents, for generation (decode);
reconstruct_prior takes image-space priors only, so a latent bundle is refused without latent=True."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.nets.external import check_and_load
from mridpm.nets.external._hub import (
    ComplexChannels,
    expand_batch,
    monai_schedule,
    read_weights,
    record,
)
from mridpm.nets.priors import Prior
from mridpm.train.checkpoint import read_json_object

CONFIGS = ("inference.json", "inference.yaml", "inference.yml")
NETWORK_KEYS = ("network_def", "network", "diffusion_def")
SCHEDULER_KEYS = ("noise_scheduler", "scheduler")
AUTOENCODER_KEYS = ("autoencoder_def", "autoencoder")
# MONAI Generative argument names -> MONAI core's; use_checkpointing / flash attention only change speed
RENAMES = {"num_channels": "channels", "use_checkpointing": "use_checkpoint"}
SPEED_ONLY = ("use_flash_attention", "use_checkpoint")
NOTES = ("MONAI DiffusionModelUNet: x in [-1, 1], (real, imaginary) as its 2 channels or, for 1 channel, run "
         "separately; network(x, timesteps) is the scheduler's prediction_type")


def read_config(path: Path) -> dict[str, Any]:
    """A bundle's configs/inference.json (or .yaml) as plain data (json / yaml.safe_load, nothing run)."""
    files = [path] if path.is_file() else [path / "configs" / n for n in CONFIGS] + [path / n for n in CONFIGS]
    for file in files:
        if not file.is_file():
            continue
        if file.suffix == ".json":
            return read_json_object(file, "bundle config")
        import yaml

        try:
            data = yaml.safe_load(file.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"cannot read the bundle config {file}: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ValueError(f"the bundle config {file} is not a mapping")
        return data
    raise ValueError(f"{path} has no bundle config (configs/inference.json or .yaml)")


def resolve(value: Any, config: dict[str, Any], where: str, depth: int = 0) -> Any:
    """value with every "@name" / "@a#b" reference replaced by the plain value it names; a "$" expression
    or a "%" macro is refused (never evaluated)."""
    if depth > 20:
        raise ValueError(f"the bundle config's references at {where} run in a cycle")
    if isinstance(value, dict):
        return {k: resolve(v, config, f"{where}#{k}", depth) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, config, f"{where}#{i}", depth) for i, v in enumerate(value)]
    if not isinstance(value, str) or value[:1] not in ("@", "$", "%"):
        return value
    if value[0] != "@":
        raise ValueError(f"the bundle config gives {where} as the expression {value!r}, which mridpm does not "
                         "evaluate; pass the value as an option")
    target: Any = config
    for part in value[1:].split("#"):
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            raise ValueError(f"the bundle config's {where} refers to {value!r}, which it does not define")
    return resolve(target, config, value[1:], depth + 1)


def _section(config: dict[str, Any], keys: tuple[str, ...], given: Any) -> dict[str, Any] | None:
    """The options of a component: given (a dict) or the first of keys in the config, references resolved."""
    if given is not None:
        return dict(given)
    for key in keys:
        if isinstance(config.get(key), dict):
            return resolve(config[key], config, key)
    return None


def _kwargs(section: dict[str, Any], kind: str, source: str) -> dict[str, Any]:
    """Constructor arguments of a MONAI network section (its "_target_" must name `kind`)."""
    target = str(section.get("_target_", kind))
    if target.rsplit(".", 1)[-1] != kind:
        raise ValueError(f"{source}: the network is {target!r}; this format takes a MONAI {kind}")
    kwargs = {RENAMES.get(k, k): v for k, v in section.items() if not k.startswith("_")}
    return {k: v for k, v in kwargs.items() if k not in SPEED_ONLY}


def _network(cls: type[nn.Module], kwargs: dict[str, Any], source: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(f"{source}: MONAI cannot build {cls.__name__}({kwargs}): {str(err).splitlines()[0]}") from None


def _weights(path: Path, given: Any, names: tuple[str, ...], what: str) -> Path:
    """The weights file: given, or the first of models/<name> that exists."""
    if given is not None:
        return Path(given)
    for name in names:
        if (path / "models" / name).is_file():
            return path / "models" / name
    raise ValueError(f"no {what} weights in {path / 'models'} (looked for {', '.join(names)}); pass the file")


class _Call(nn.Module):
    """network(x, timesteps, context) as a plain function of (x, t); context (cross-attention
    conditioning) is fixed, expanded to the batch."""

    def __init__(self, net: nn.Module, cond: torch.Tensor | None) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("cond", cond, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, timesteps=t, context=expand_batch(self.cond, x.shape[0]))


def load(path: Path, device: str | torch.device = "cpu", *, network: dict[str, Any] | None = None,
         scheduler: dict[str, Any] | None = None, weights: Any = None, cond: torch.Tensor | None = None,
         p99: float = 1.0, image_size: Any = None, latent: bool = False, autoencoder: dict[str, Any] | None = None,
         autoencoder_weights: Any = None, scale_factor: float | None = None) -> Prior:
    """A MONAI bundle directory as a Prior. network / scheduler / autoencoder: constructor options that
    replace the config's; weights: the model file (default models/model.safetensors or model.pt); cond:
    the cross-attention context of a with_conditioning network; latent=True loads a latent bundle (see
    the module's docstring) with its AutoencoderKL in info["autoencoder"] and info["scale_factor"]."""
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

    path = Path(path)
    config = read_config(path) if network is None or scheduler is None else {}
    net_section = _section(config, NETWORK_KEYS, network)
    sched = _section(config, SCHEDULER_KEYS, scheduler)
    if net_section is None or sched is None:
        missing = "network_def" if net_section is None else "noise_scheduler"
        raise ValueError(f"{path}: the bundle config has no {missing!r} section; pass it as an option")
    kwargs = _kwargs(net_section, "DiffusionModelUNet", str(path))
    if kwargs.get("spatial_dims") != 2:
        raise ValueError(f"{path}: the network is {kwargs.get('spatial_dims')}-dimensional; MR priors here are 2D")
    if kwargs.get("with_conditioning") and cond is None:
        raise ValueError(f"{path}: the network cross-attends to a context (with_conditioning); pass cond= a tensor "
                         f"(1, seq, {kwargs.get('cross_attention_dim')})")
    if kwargs.get("num_class_embeds") is not None:
        raise ValueError(f"{path}: class-conditional networks are not supported (they need class labels)")
    ae_section = _section(config, AUTOENCODER_KEYS, autoencoder)
    if ae_section is not None and not latent:
        raise ValueError(f"{path} is a latent diffusion bundle (it has an autoencoder): reconstruction takes "
                         "image-space priors only; load it with latent=True for generation")
    net = _network(DiffusionModelUNet, kwargs, str(path))
    file = _weights(path, weights, ("model.safetensors", "model.pt"), "diffusion model")
    check_and_load(net, read_weights(file), str(file), "MONAI")
    schedule, prediction = monai_schedule(sched, str(path))
    levels = len(kwargs.get("channels", (32, 64, 64, 64)))
    size = image_size if image_size is not None else 64  # bundles have no standard key for it
    call = _Call(net, None if cond is None else torch.as_tensor(cond, dtype=torch.float32))
    if not latent:
        model: nn.Module = ComplexChannels(call, kwargs["in_channels"], kwargs["out_channels"], str(path))
        info = record("monai", path, size, 2 ** (levels - 1), p99, NOTES,
                      network=kwargs, scheduler=sched)
        return Prior(model.float().to(device).eval(), schedule, prediction, info)
    if ae_section is None:
        raise ValueError(f"{path}: latent=True but the bundle has no autoencoder_def; pass autoencoder=")
    ae = _network(AutoencoderKL, _kwargs(ae_section, "AutoencoderKL", str(path)), str(path))
    ae_file = _weights(path, autoencoder_weights, ("model_autoencoder.safetensors", "model_autoencoder.pt"),
                       "autoencoder")
    check_and_load(ae, read_weights(ae_file), str(ae_file), "MONAI")
    factor = scale_factor if scale_factor is not None else resolve(config.get("scale_factor"), config, "scale_factor")
    if not isinstance(factor, (int, float)) or not factor > 0:
        raise ValueError(f"{path}: a latent bundle needs its scale_factor (a positive number); pass scale_factor=")
    info = record("monai", path, size, 2 ** (levels - 1), p99,
                  "MONAI latent diffusion: network(z, timesteps) on z = scale_factor * AutoencoderKL latents "
                  "(not clipped); decode(prior, z) gives images", network=kwargs, scheduler=sched, latent=True,
                  data_range=[-1e9, 1e9],
                  latent_channels=kwargs["in_channels"], scale_factor=float(factor),
                  autoencoder=ae.float().to(device).eval())
    return Prior(call.float().to(device).eval(), schedule, prediction, info)


def decode(prior: Prior, z: torch.Tensor) -> torch.Tensor:
    """Images from a latent prior's samples z: the autoencoder's decoder on z / scale_factor."""
    if not prior.info.get("latent"):
        raise ValueError("decode takes a latent prior (a MONAI bundle loaded with latent=True)")
    return prior.info["autoencoder"].decode_stage_2_outputs(z / prior.info["scale_factor"])
