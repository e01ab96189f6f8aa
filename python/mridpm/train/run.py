"""`mridpm train CONFIG`: a TOML (or YAML) file with [model], [data] and [train] tables.

    [model]                     # UNetConfig fields
    channels = 32
    channel_mult = [1, 2, 2]
    [data]
    source = "phantom"          # MNI152 slices: contrast, size, slices (z range), flip
    contrast = "T1"
    size = [64, 64]
    z = [50, 120]               # the training slice range (evaluation slices lie outside it)
    holdout_every = 0           # n > 0: slices with (z - z0) % n == n // 2 are held out too
    complex = false             # true: complex slices with random smooth phases, 2 channels (re, im)
    copies = 1                  # complex: draws of tissue jitter and phase per slice
    # source = "fastmri"; path = "dir" reads reconstruction_rss targets from fastMRI files
    # source = "heads": n complex synthetic head slices of size [H, W] cropped to patch x patch (seed)
    # conditional models (phantom source): what is generated and what it is conditioned on, each a
    # contrast (T1, T2, PD), "labels" (background/CSF/GM/WM one-hot) or, as a condition, "previous"
    # (the target slice_step mm below, for slice-by-slice volumes)
    target = "labels"
    condition = ["T1"]
    # task = "registration": a DiffuseMorph model and its joint loss (mridpm.tasks.registration);
    # task = "classification": a diffusion autoencoder classifier (mridpm.tasks.classification)
    [train]                     # TrainConfig fields
    steps = 2000
    out_dir = "runs/brain64"
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from mridpm.nets.unet import UNet, UNetConfig
from mridpm.train.checkpoint import checkpoint_name, checkpoint_names
from mridpm.train.model_config import model_config
from mridpm.train.trainer import (
    TrainConfig,
    TrainState,
    check_device,
    check_train_config,
    init_distributed,
    train,
)


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parses a TOML or YAML run configuration."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no configuration file at {p}")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ImportError("YAML configurations need pyyaml; or write the file as TOML") from None
        cfg = yaml.safe_load(text) or {}
    else:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        cfg = tomllib.loads(text)
    unknown = set(cfg) - {"model", "data", "train"}
    if unknown:
        raise ValueError(f"{p}: unknown sections {sorted(unknown)}; use [model], [data] and [train]")
    return cfg


def _fields(cls: type, table: dict[str, Any], where: str) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(table) - names
    if unknown:
        raise ValueError(f"[{where}]: unknown keys {sorted(unknown)}; known: {sorted(names)}")
    return table


def load_task_model(run: str | os.PathLike, cls: type, what: str, config_file: str,
                    device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model, its [train] table) of the latest checkpoint of a `mridpm train config_file` run of the task
    `what`: cls(model config) with the EMA weights, eval mode, float32, on device, model.data the [data]
    table it was trained with; one-line errors for a missing run, another class, or weights that do not fit."""
    from mridpm.train.checkpoint import read_checkpoint, state_mismatch

    if not Path(run).is_dir():
        raise FileNotFoundError(f"no {what} model at {run}: give a run directory of `mridpm train {config_file}`")
    found = read_checkpoint(run, keys=("model",), groups=("ema",))
    if found is None or found.meta["model"].get("class") != cls.__name__:
        raise ValueError(f"{run} holds no {cls.__name__} checkpoint")
    model = cls(model_config(found.meta["model"]["config"], f"{found.path} model"))
    if (problem := state_mismatch(model.state_dict(), found.tensors["ema"])) is not None:
        raise ValueError(f"{found.path}: the weights do not fit the model: {problem}")
    model.load_state_dict(found.tensors["ema"])
    train_cfg = found.meta.get("config", {})
    model.data = dict(train_cfg.get("extra", {}).get("data", {}))
    return model.to(device).eval().float(), train_cfg


def phantom_slices(data: dict[str, Any], heldout: bool = False) -> list[int]:
    """The z positions of the [data] table's training slices (or of its held-out ones)."""
    lo, hi = data.get("z", [50, 120])
    every = int(data.get("holdout_every", 0))
    out = [z for z in range(lo, hi) if every > 0 and (z - lo) % every == every // 2]
    return out if heldout else [z for z in range(lo, hi) if z not in out]


def complex_slices(magnitude: torch.Tensor, seed: int) -> torch.Tensor:
    """Complex slices (N, H, W): each magnitude slice scaled to peak 1 with a random smooth phase."""
    import numpy as np

    from mridpm.data.phantom import smooth_phase

    rng = np.random.default_rng(seed)
    mag = magnitude / magnitude.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    phase = torch.stack([smooth_phase(tuple(mag.shape[-2:]), rng) for _ in range(mag.shape[0])])
    return torch.polar(mag.float(), phase.float())


def _channels(name: str, zs: list[int], size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) in [-1, 1] of MNI152 slices zs: a contrast (C = 1) or the tissue labels (C = 4)."""
    from mridpm.data.phantom import CONTRASTS, brain_slices, one_hot, tissue_labels

    if name == "labels":
        return one_hot(tissue_labels(zs, size))
    if name not in CONTRASTS:
        raise ValueError(f"unknown image kind {name!r}; use one of {sorted(CONTRASTS)} or 'labels'")
    return brain_slices(name, zs, size)[:, None] * 2 - 1


def conditional_data(data: dict[str, Any], zs: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, conditions) of a conditional [data] table (target, condition) at slices zs."""
    size = tuple(data.get("size", [64, 64]))
    names = data.get("condition", [])
    if isinstance(names, str) or not names:
        raise ValueError(f"[data] condition must be a non-empty list, got {names!r}")
    target = data.get("target", data.get("contrast", "T1"))
    step = int(data.get("slice_step", 2))
    x = _channels(target, zs, size)  # type: ignore[arg-type]
    parts = [_channels(target if n == "previous" else n, [z - step for z in zs] if n == "previous" else zs, size)  # type: ignore[arg-type]
             for n in names]
    return x, torch.cat(parts, 1)


def training_data(data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(images (N, C, H, W), conditions (N, C', H, W) or None) from the [data] table."""
    if "condition" not in data:
        return training_images(data), None
    if data.get("source", "phantom") != "phantom":
        raise ValueError("conditional training data ([data] condition) come from the phantom source")
    x, c = conditional_data(data, phantom_slices(data))
    if data.get("flip", True):
        x, c = torch.cat([x, x.flip(-1)]), torch.cat([c, c.flip(-1)])
    return x, c


def training_images(data: dict[str, Any]) -> torch.Tensor:
    """(N, C, H, W) training images in [-1, 1] from the [data] table: magnitude (C = 1, background -1)
    or, with complex = true or source = "heads", real and imaginary parts (C = 2, background 0; heads: the
    magnitude's 99th percentile 1, clipped at 1.5)."""
    source = data.get("source", "phantom")
    if source == "phantom":
        from mridpm.data.phantom import brain_slices

        size = tuple(data.get("size", [64, 64]))
        zs = phantom_slices(data)
        if data.get("complex", False):
            mags = [brain_slices(data.get("contrast", "T1"), zs, size, jitter=float(data.get("jitter", 0.05)),  # type: ignore[arg-type]
                                 seed=c) for c in range(int(data.get("copies", 1)))]
            mags = torch.cat(mags + [m.flip(-1) for m in mags]) if data.get("flip", True) else torch.cat(mags)
            x = complex_slices(mags, int(data.get("seed", 0)))
            return torch.view_as_real(x).permute(0, 3, 1, 2).contiguous()
        imgs = brain_slices(data.get("contrast", "T1"), zs, size)  # type: ignore[arg-type]
        if data.get("flip", True):
            imgs = torch.cat([imgs, imgs.flip(-1)])
    elif source == "heads":  # synthetic complex heads, random patch crops (mridpm.data.heads)
        from mridpm.data.heads import training_patches

        return training_patches(data)
    elif source == "fastmri":
        from mridpm.data.fastmri import read_fastmri

        files = sorted(Path(data["path"]).glob("*.h5"))
        if not files:
            raise ValueError(f"no .h5 files in {data['path']}")
        vols = [read_fastmri(f).target for f in files]
        if any(v is None for v in vols):
            raise ValueError("fastMRI files without a reconstruction target cannot train an image prior")
        imgs = torch.cat([v / v.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12) for v in vols])  # type: ignore[misc]
    else:
        raise ValueError(f"unknown data source {source!r}; use 'phantom', 'heads' or 'fastmri'")
    return (imgs[:, None] * 2 - 1).float()


def run(path: str | os.PathLike, overrides: dict[str, Any] | None = None, device: str | None = None,
        progress: bool = True, resume_from: str | os.PathLike | None = None,
        init: str | os.PathLike | None = None) -> TrainState:
    """Trains the UNet the configuration describes (under torchrun: data-parallel), continuing its run
    directory's latest checkpoint or resume_from (a checkpoint name like step-00000400 or the path of its
    .json); a new run starts from init's weights (a prior load_prior reads) at its step when given. Every
    setting is checked before anything is written."""
    cfg = load_config(path)
    model_cfg = model_config(cfg.get("model", {}))
    train_cfg = TrainConfig(**{**_fields(TrainConfig, cfg.get("train", {}), "train"), **(overrides or {})})
    train_cfg = dataclasses.replace(train_cfg, extra={**train_cfg.extra, "data": cfg.get("data", {})})
    check_train_config(train_cfg)
    dev = check_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if resume_from is not None:  # the cheap checks now, not after the data are built
        name = checkpoint_name(train_cfg.out_dir, resume_from)
        if name not in checkpoint_names(train_cfg.out_dir):
            raise FileNotFoundError(f"no checkpoint {name} in {train_cfg.out_dir}; "
                                    f"there: {checkpoint_names(train_cfg.out_dir) or 'none'}")
    task = cfg.get("data", {}).get("task")
    start = None
    if init is not None:
        if task is not None:
            raise ValueError(f"--init starts a prior's UNet; a [data] task = {task!r} model has its own networks")
        start, train_cfg = init_weights(init, model_cfg, train_cfg)
    rank, _ = init_distributed()
    torch.manual_seed(train_cfg.seed)
    if task is not None:  # a task model (DiffuseMorph, DiffAE) with its own data and joint loss
        if task == "registration":
            from mridpm.train.registration import registration_training as task_training
        elif task == "classification":
            from mridpm.train.classification import classification_training as task_training
        else:
            raise ValueError(f"[data] task must be 'registration' or 'classification', got {task!r}")
        model, images, loss_fn = task_training(model_cfg, cfg["data"], phantom_slices(cfg["data"]), train_cfg)  # type: ignore[operator]
        return train(model, images, train_cfg, device=dev, progress=progress and rank == 0, resume_from=resume_from,
                     loss_fn=loss_fn)
    images, cond = training_data(cfg.get("data", {}))
    if cond is not None and cond.shape[1] != model_cfg.cond_channels:
        raise ValueError(f"[data] condition gives {cond.shape[1]} channels; "
                         f"set [model] cond_channels = {cond.shape[1]}")
    if images.shape[1] != model_cfg.in_channels:
        raise ValueError(f"[data] gives {images.shape[1]}-channel images; set [model] in_channels = {images.shape[1]}")
    factor = 2 ** (len(model_cfg.channel_mult) - 1)
    if any(n % factor for n in images.shape[2:]):
        raise ValueError(f"[data] size {list(images.shape[2:])} must be divisible by {factor} for the "
                         f"{len(model_cfg.channel_mult)} levels of [model] channel_mult")
    return train(UNet(model_cfg), images, train_cfg, cond=cond, device=dev, progress=progress and rank == 0,
                 resume_from=resume_from, init=start)


def init_weights(source: str | os.PathLike, model_cfg: UNetConfig, train_cfg: TrainConfig
                 ) -> tuple[tuple[dict[str, torch.Tensor], int] | None, TrainConfig]:
    """The (weights, step) a new run starts from: the EMA weights and step of the prior `source` (bundled
    name, run directory or exported .json), which must have the run's [model]; None when the run directory already holds
    checkpoints (they are continued). The train config records the source in extra["init"]."""
    from mridpm.nets.priors import load_prior

    prior = load_prior(source)
    if prior.model.config != model_cfg:
        raise ValueError(f"--init {os.fspath(source)!r}: its [model] differs from the configuration's")
    if checkpoint_names(train_cfg.out_dir):
        return None, train_cfg
    step = int(prior.info.get("step", 0))
    record = {"source": os.fspath(source), "sha256": prior.info.get("sha256"), "step": step,
              "previous": prior.info.get("train", {}).get("extra", {}).get("init")}
    train_cfg = dataclasses.replace(train_cfg, extra={**train_cfg.extra, "init": record})
    return ({k: v.detach().clone() for k, v in prior.model.state_dict().items()}, step), train_cfg
