"""Checkpoints that are never half-written and never pickled: tensors in safetensors, everything
else in JSON (with the tensor file's SHA-256), each written to a temporary file and renamed;
`latest.json` is replaced last, so a crash at any point leaves the previous checkpoint intact."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from mridpm.data._atomic import atomic_path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, payload: dict) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as (tensors by name, JSON-able rest)."""
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for idx, entry in state["state"].items():
        rest["state"][str(idx)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                rest["state"][str(idx)][key] = value
    return tensors, rest


def unflatten_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(directory: str | os.PathLike, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Writes step-<step>.safetensors (groups of tensors, e.g. model / ema / optim, as 'group/name') and
    step-<step>.json (meta plus the tensor file's hash), then points latest.json at them and removes
    all but the newest `keep` checkpoints."""
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    flat = {f"{group}/{key}": t.detach().cpu().contiguous() for group, items in tensors.items()
            for key, t in items.items()}
    with atomic_path(d / f"{name}.safetensors", ".safetensors") as tmp:
        save_file(flat, str(tmp))
    digest = _sha256(d / f"{name}.safetensors")
    _write_json(d / f"{name}.json", {**meta, "step": step, "tensors": f"{name}.safetensors", "sha256": digest})
    _write_json(d / "latest.json", {"step": step, "name": name})
    done = sorted(p.stem for p in d.glob("step-*.json"))
    for old in done[:-keep] if keep > 0 else []:
        for suffix in (".safetensors", ".json"):
            (d / f"{old}{suffix}").unlink(missing_ok=True)
    return d / f"{name}.json"


def load_checkpoint(directory: str | os.PathLike, name: str | None = None
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]] | None:
    """(tensors by group, meta) of the latest checkpoint (or the named one), None when there is none.
    A checkpoint whose tensor file is missing, truncated or altered raises ValueError."""
    from safetensors.torch import load_file

    d = Path(directory)
    if name is None:
        if not (d / "latest.json").is_file():
            return None
        try:
            name = json.loads((d / "latest.json").read_text())["name"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ValueError(f"{d / 'latest.json'} is corrupt: {err}") from None
    meta_path = d / f"{name}.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"checkpoint {meta_path} is missing or corrupt: {err}") from None
    tensor_path = d / meta["tensors"]
    if not tensor_path.is_file() or _sha256(tensor_path) != meta["sha256"]:
        older = sorted(p.stem for p in d.glob("step-*.json") if p.stem != name)
        raise ValueError(f"checkpoint {tensor_path} is missing or does not match its recorded SHA-256; refusing it "
                         f"(older checkpoints kept: {older or 'none'}; load one by name)")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(tensor_path)).items():
        group, sub = key.split("/", 1)
        groups.setdefault(group, {})[sub] = value
    return groups, meta
