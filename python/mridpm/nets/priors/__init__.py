"""Priors shipped inside the package (weights, config and the command that made them), loaded
with no network: `load_prior("brain64")` gives the model, its schedule and how it was trained."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.unet import UNet


@dataclass
class Prior:
    """A trained denoiser with what a sampler needs to use it (samplers should clip x0 to
    info["data_range"], the range of the training images). model(x, t) is an mridpm UNet for bundled and
    trained priors, any module or callable for external ones (mridpm.nets.external)."""

    model: nn.Module | Callable[..., torch.Tensor]
    schedule: DiscreteSchedule
    prediction: str
    info: dict[str, Any]


def _dir() -> Path:
    return Path(str(resources.files("mridpm.nets.priors")))


def available() -> list[str]:
    """Names of the bundled priors."""
    return sorted(p.stem for p in _dir().glob("*.safetensors"))


_INFO_KEYS = ("model", "image_size", "data_range", "schedule", "prediction", "num_train_timesteps", "sha256")


def load_prior(name: str | os.PathLike = "brain64", device: str | torch.device = "cpu",
               format: str | None = None, **options: Any) -> Prior:
    """The bundled prior `name`, an exported prior (the path of its .json, weights beside it) or the
    latest checkpoint of a `mridpm train` run directory, in eval mode (EMA weights, float32); with
    `format` (one of mridpm.nets.external.FORMATS), the checkpoint `name` saved by that repository,
    options going to its loader. ValueError with one line when anything does not check out."""
    from mridpm.train.checkpoint import is_plain_file_name, read_safetensors

    if format is not None:
        from mridpm.nets.external import load_external

        return load_external(name, format, device, **options)
    if options:
        raise ValueError(f"options {sorted(options)} apply only to external checkpoints (format=...)")
    if Path(name).is_dir():
        return _from_run(Path(name), device)
    if os.fspath(name).endswith(".json") and Path(name).is_file():  # an exported prior on disk
        meta_path = Path(name)
        d, name = meta_path.parent, meta_path.stem
    elif not is_plain_file_name(os.fspath(name)):
        raise ValueError(f"{os.fspath(name)!r} is neither a training run directory, an exported prior's .json "
                         f"nor a bundled prior; available: {available()}")
    else:
        d = _dir()
        meta_path = d / f"{name}.json"
        if not meta_path.is_file():
            raise ValueError(f"no bundled prior {name!r}; available: {available()}")
    info = _read_info(meta_path)
    weights_name = info.get("weights", f"{name}.safetensors")
    if not is_plain_file_name(weights_name):
        raise ValueError(f"{meta_path} names weights {weights_name!r}: refusing to load files outside the prior "
                         f"directory {d}")
    weights = d / weights_name
    if not weights.is_file():
        raise ValueError(f"the weights of prior {name!r} ({weights}) are missing")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError(f"the weights of prior {name!r} do not match their recorded SHA-256")
    return _prior(info, read_safetensors(weights), device, str(meta_path))


def _read_info(meta_path: Path) -> dict[str, Any]:
    """A prior's description, checked for the entries loading needs."""
    from mridpm.train.checkpoint import read_json_object

    return read_json_object(meta_path, "prior description", _INFO_KEYS)


def _prior(info: dict[str, Any], weights: dict[str, torch.Tensor], device: str | torch.device, source: str) -> Prior:
    """The eval-mode prior info describes, with weights that must fit its model exactly."""
    from mridpm.train.checkpoint import state_mismatch
    from mridpm.train.model_config import model_config

    model = UNet(model_config(info["model"], f"{source} model"))
    weights = {k: v.float() for k, v in weights.items()}
    if (problem := state_mismatch(model.state_dict(), weights)) is not None:
        raise ValueError(f"the weights of {source} do not fit its model config: {problem}")
    model.load_state_dict(weights)
    try:
        schedule = DiscreteSchedule.from_name(info["schedule"], info["num_train_timesteps"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: {err}") from None
    if info["prediction"] not in ("eps", "x0", "v"):
        raise ValueError(f"{source}: prediction must be 'eps', 'x0' or 'v', got {info['prediction']!r}")
    check_sampler_options(info.get("sampler_options", {}), source)
    return Prior(model.to(device).eval(), schedule, info["prediction"], info)


def check_sampler_options(options: Any, source: str) -> None:
    """A card's sampler_options must be {method name: {option: value}}: one-line ValueError otherwise."""
    if not (isinstance(options, dict) and all(isinstance(v, dict) for v in options.values())):
        raise ValueError(f"{source}: sampler_options must map method names to objects of options")


def _run_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(EMA weights, prior description, checkpoint path) of a run's latest checkpoint."""
    from mridpm.train.checkpoint import read_checkpoint

    found = read_checkpoint(run_dir, keys=("config", "model"), groups=("ema",))
    if found is None:
        raise ValueError(f"no checkpoint in {run_dir}")
    meta, where = found.meta, str(found.path)
    cfg, model = meta["config"], meta["model"]
    if not isinstance(cfg, dict) or not isinstance(model, dict) or not isinstance(model.get("config"), dict):
        raise ValueError(f"checkpoint {where} is corrupt: 'config' and 'model' must be objects, with model.config")
    for key in ("schedule", "prediction", "num_train_timesteps"):
        if key not in cfg:
            raise ValueError(f"checkpoint {where} is corrupt: its 'config' has no {key!r} entry")
    extra = cfg.get("extra")
    data = extra.get("data") if isinstance(extra, dict) else None
    size = data.get("size") if isinstance(data, dict) else None
    if size is None:
        raise ValueError(f"the run in {run_dir} does not record its image size ([data] size)")
    info = {"model": model["config"], "image_size": list(size), "data_range": [-1.0, 1.0],
            "schedule": cfg["schedule"], "prediction": cfg["prediction"],
            "num_train_timesteps": cfg["num_train_timesteps"], "step": meta["step"], "train": cfg}
    return found.tensors["ema"], info, where


def _from_run(run_dir: Path, device: str | torch.device) -> Prior:
    weights, info, where = _run_checkpoint(run_dir)
    return _prior(info, weights, device, where)


def export(run_dir: str | os.PathLike, name: str, out_dir: str | os.PathLike | None = None,
           sampler_options: dict[str, dict[str, Any]] | None = None) -> Path:
    """Writes the EMA weights of a run's latest checkpoint (float16) and its description next to this
    module (or to out_dir): what load_prior reads. sampler_options {method: {option: value}}, recorded
    in the card, are the reconstruction options tuned for this prior (reconstruct_prior's defaults)."""
    from safetensors.torch import save_file

    from mridpm.data._atomic import atomic_path

    if sampler_options is not None:  # refused before anything is written
        check_sampler_options(sampler_options, "export")
    ema, info, _ = _run_checkpoint(Path(run_dir))
    target = Path(out_dir) if out_dir is not None else _dir()
    weights = target / f"{name}.safetensors"
    with atomic_path(weights, ".safetensors") as tmp:
        save_file({k: v.half() if v.is_floating_point() else v for k, v in ema.items()}, str(tmp))
    if sampler_options:
        info["sampler_options"] = sampler_options
    info["weights"], info["sha256"] = weights.name, hashlib.sha256(weights.read_bytes()).hexdigest()
    with atomic_path(target / f"{name}.json", ".json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return weights
