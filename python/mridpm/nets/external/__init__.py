"""Priors from checkpoints in the layout of the repository they came from (score_sde, NCSNv2,
guided-diffusion, EDM, MONAI, diffusers): `load_external(path, format)` returns the same Prior card as
a bundled prior. Each format lives in its own module, imported only when asked for."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from mridpm.nets.priors import Prior

FORMATS = ("score-sde", "ncsnv2", "guided-diffusion", "edm", "monai", "diffusers")
_MODULES = {"score-sde": "score_sde", "ncsnv2": "ncsnv2", "guided-diffusion": "guided_diffusion", "edm": "edm",
            "monai": "monai_bundle", "diffusers": "diffusers_folder"}
_INFO_KEYS = ("format", "image_size", "data_range", "p99", "size_multiple", "source", "schedule_kind", "notes")


def load_external(path: str | os.PathLike, format: str, device: str | torch.device = "cpu",
                  **options: Any) -> Prior:
    """The prior in checkpoint `path` (file or folder) saved by the repository `format` names, in eval
    mode on device; options are the format's own (e.g. model kwargs) and override its defaults."""
    if format not in FORMATS:
        raise ValueError(f"unknown prior format {format!r}; formats: {', '.join(FORMATS)}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"no checkpoint at {os.fspath(path)!r} (format {format!r})")
    module = importlib.import_module(f"{__name__}.{_MODULES[format]}")
    prior = module.load(p, device, **options)
    missing = [k for k in _INFO_KEYS if k not in prior.info]
    if missing:
        raise ValueError(f"the {format} loader returned a prior whose info lacks {missing}")
    return prior


def read_checkpoint(path: Path) -> Any:
    """torch.load(path, weights_only=True): tensors and plain containers only, no code unpickled;
    failures as a one-line ValueError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types; the user needs one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path} is not a weights-only torch checkpoint: {first}") from None


def read_state_dict(path: Path, keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save'd or safetensors checkpoint, read without unpickling code; when the
    file holds a dict of dicts, the first of `keys` present (e.g. "ema", "model") is taken."""
    if path.suffix == ".pkl":
        raise ValueError(f"{path}: pickles are not loaded (they run code); export the weights with "
                         "torch.save(net.state_dict(), 'net.pt')")
    if path.suffix == ".safetensors":
        from mridpm.train.checkpoint import read_safetensors

        return read_safetensors(path)
    obj = read_checkpoint(path)
    for key in keys:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors"
                         + (f" (nor one under {list(keys)})" if keys else ""))
    return {str(k): v for k, v in obj.items()}


def strip_prefix(state: dict[str, torch.Tensor], prefixes: tuple[str, ...] = ("module.",)) -> dict[str, torch.Tensor]:
    """state with a prefix every key shares (DataParallel's "module.") removed."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def check_and_load(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str, fmt: str) -> None:
    """Loads state into model (which may live on the meta device: its tensors are then the file's, no
    initialisation spent), or one-line ValueError naming the first key that does not fit."""
    from mridpm.train.checkpoint import state_mismatch

    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if (problem := state_mismatch(model.state_dict(), state)) is not None:
        raise ValueError(f"{source} is not a {fmt!r} checkpoint of this configuration: {problem}")
    model.load_state_dict(state, assign=True)


def merge_options(defaults: dict[str, Any], options: dict[str, Any], fmt: str) -> dict[str, Any]:
    """defaults updated by options, where options["config"] may be a dict, a JSON object string or a
    .json file of the same keys (given keys win over it); unknown keys are a one-line ValueError."""
    import json

    options = dict(options)
    config = options.pop("config", None) or {}
    if isinstance(config, (str, os.PathLike)):
        try:
            text = Path(config).read_text() if str(config).endswith(".json") else str(config)
            config = json.loads(text)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{fmt} config {str(config)[:80]!r} is not a readable JSON object: {err}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{fmt} config must be a dict or a JSON object, got {type(config).__name__}")
    merged = {**defaults, **config, **options}
    unknown = sorted(set(merged) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {fmt} options {unknown}; known: {sorted(defaults)}")
    return merged
