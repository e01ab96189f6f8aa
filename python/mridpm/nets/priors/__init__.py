"""Priors shipped inside the package (weights, config and the command that made them), loaded
with no network: `load_prior("brain64")` gives the model, its schedule and how it was trained."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.unet import UNet, UNetConfig


@dataclass
class Prior:
    """A trained denoiser with what a sampler needs to use it (samplers should clip x0 to
    info["data_range"], the range of the training images)."""

    model: UNet
    schedule: DiscreteSchedule
    prediction: str
    info: dict[str, Any]


def _dir() -> Path:
    return Path(str(resources.files("mridpm.nets.priors")))


def available() -> list[str]:
    """Names of the bundled priors."""
    return sorted(p.stem for p in _dir().glob("*.safetensors"))


def load_prior(name: str | os.PathLike = "brain64", device: str | torch.device = "cpu") -> Prior:
    """The bundled prior `name`, or the latest checkpoint of a `mridpm train` run directory, in eval
    mode (its EMA weights, in float32)."""
    from safetensors.torch import load_file

    if Path(name).is_dir():
        return _from_run(Path(name), device)
    d = _dir()
    weights, meta_path = d / f"{name}.safetensors", d / f"{name}.json"
    if not weights.is_file() or not meta_path.is_file():
        raise ValueError(f"no bundled prior {name!r}; available: {available()}")
    info = json.loads(meta_path.read_text())
    if hashlib.sha256(weights.read_bytes()).hexdigest() != info["sha256"]:
        raise ValueError(f"the weights of prior {name!r} do not match their recorded SHA-256")
    return _prior(info, load_file(str(weights)), device)


def _prior(info: dict[str, Any], weights: dict[str, torch.Tensor], device: str | torch.device) -> Prior:
    model = UNet(UNetConfig.from_dict(info["model"]))
    model.load_state_dict({k: v.float() for k, v in weights.items()})
    schedule = DiscreteSchedule.from_name(info["schedule"], info["num_train_timesteps"])
    return Prior(model.to(device).eval(), schedule, info["prediction"], info)


def _run_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(EMA weights, prior description) of a run's latest checkpoint."""
    from mridpm.train.checkpoint import load_checkpoint

    found = load_checkpoint(run_dir)
    if found is None:
        raise ValueError(f"no checkpoint in {run_dir}")
    groups, meta = found
    cfg = meta["config"]
    size = cfg.get("extra", {}).get("data", {}).get("size")
    if size is None:
        raise ValueError(f"the run in {run_dir} does not record its image size ([data] size)")
    info = {"model": meta["model"]["config"], "image_size": list(size), "data_range": [-1.0, 1.0],
            "schedule": cfg["schedule"], "prediction": cfg["prediction"],
            "num_train_timesteps": cfg["num_train_timesteps"], "step": meta["step"], "train": cfg}
    return groups["ema"], info


def _from_run(run_dir: Path, device: str | torch.device) -> Prior:
    weights, info = _run_checkpoint(run_dir)
    return _prior(info, weights, device)


def export(run_dir: str | os.PathLike, name: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Writes the EMA weights of a run's latest checkpoint (float16) and its description next to this
    module (or to out_dir): what load_prior reads."""
    from safetensors.torch import save_file

    from mridpm.data._atomic import atomic_path

    ema, info = _run_checkpoint(Path(run_dir))
    target = Path(out_dir) if out_dir is not None else _dir()
    weights = target / f"{name}.safetensors"
    with atomic_path(weights, ".safetensors") as tmp:
        save_file({k: v.half() if v.is_floating_point() else v for k, v in ema.items()}, str(tmp))
    info["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    with atomic_path(target / f"{name}.json", ".json") as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return weights
