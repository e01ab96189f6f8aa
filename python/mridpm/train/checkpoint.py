"""Checkpoints that are never half-written and never pickled: tensors in safetensors, everything
else in JSON (with the tensor file's SHA-256), each written to a temporary file and renamed;
`latest.json` is replaced last, so a crash at any point leaves the previous checkpoint intact.
Loading checks everything it reads and refuses files outside the run directory; pruning removes
only older step-NNNNNNNN checkpoints, the names this module writes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mridpm.data._atomic import atomic_path

if TYPE_CHECKING:
    from mridpm.train.ema import EMA

_NAME = re.compile(r"step-(\d{8,})")
_CORE_KEYS = ("step", "tensors", "sha256")


@dataclass
class Checkpoint:
    """A loaded checkpoint: its JSON path, tensors by group and meta."""

    path: Path
    tensors: dict[str, dict[str, torch.Tensor]]
    meta: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, payload: dict) -> None:
    with atomic_path(path, ".json") as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def is_plain_file_name(name: object) -> bool:
    """Whether name is one file name (no directory part, no '..'): the only names loaded from a directory."""
    return (isinstance(name, str) and name not in ("", ".") and ".." not in name and "/" not in name
            and "\\" not in name and os.sep not in name and not Path(name).is_absolute())


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
    """The inverse of flatten_optimizer: an optimizer state_dict."""
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in rest["state"].items()}
    for name, value in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def read_json_object(path: Path, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object in path with every one of keys; ValueError naming `what`, the file and the
    problem (unreadable, not an object, a key missing) in one line."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{what} {path} is missing or not readable JSON: {_first_line(err)}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} is corrupt: expected a JSON object, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise ValueError(f"{what} {path} is corrupt: it has no {key!r} entry")
    return obj


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str | None:
    """None when given has exactly expected's keys and shapes, else one line naming the first difference."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    if shapes:
        k = shapes[0]
        first = f"{k!r} has shape {tuple(given[k].shape)} in the file but {tuple(expected[k].shape)} in the model"
    elif missing:
        first = f"{missing[0]!r} (shape {tuple(expected[missing[0]].shape)} in the model) is missing from the file"
    else:
        first = f"{unexpected[0]!r} (shape {tuple(given[unexpected[0]].shape)} in the file) is not in the model"
    return f"{first} ({len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} mismatched shapes)"


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; ValueError (not a parser error) when it cannot be read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path} is not a readable safetensors file: {_first_line(err)}") from None


def checkpoint_names(directory: str | os.PathLike) -> list[str]:
    """Names (step-NNNNNNNN) of the checkpoint JSON files in directory, oldest first."""
    d = Path(directory)
    names = [p.stem for p in d.glob("step-*.json") if _NAME.fullmatch(p.stem)] if d.is_dir() else []
    return sorted(names, key=lambda n: int(n[5:]))


def checkpoint_name(directory: str | os.PathLike, ref: str | os.PathLike) -> str:
    """The checkpoint name a reference gives: 'step-00000400', 'step-00000400.json' or a path to that
    .json inside directory; refuses anything else."""
    d, text = Path(directory), os.fspath(ref)
    if "/" in text or "\\" in text or os.sep in text:
        p = Path(text)
        if p.resolve().parent != d.resolve():
            raise ValueError(f"checkpoint {text}: refusing to load files outside the run directory {d}")
        text = p.name
    name = text[:-5] if text.endswith(".json") else text
    if not is_plain_file_name(name):
        raise ValueError(f"checkpoint {text!r}: refusing to load files outside the run directory {d}")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{text!r} is not a checkpoint name; give one like step-00000400 (in {d}: "
                         f"{checkpoint_names(d) or 'none'})")
    return name


def save_checkpoint(directory: str | os.PathLike, step: int, tensors: dict[str, dict[str, torch.Tensor]],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Writes step-<step>.safetensors (groups of tensors, e.g. model / ema / optim, as 'group/name') and
    step-<step>.json (meta plus the tensor file's hash), then points latest.json at them and removes
    older checkpoints but the newest `keep` (0: none); newer ones and other files are never touched."""
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
    if keep > 0:
        stems = {p.name.rsplit(".", 1)[0] for suffix in ("json", "safetensors") for p in d.glob(f"step-*.{suffix}")}
        older = sorted((int(m.group(1)), s) for s in stems if (m := _NAME.fullmatch(s)) and int(m.group(1)) <= step)
        for _, old in older[:-keep]:
            for suffix in (".json", ".safetensors"):  # the JSON first: never a JSON without its tensors
                (d / f"{old}{suffix}").unlink(missing_ok=True)
    return d / f"{name}.json"


def _latest_name(d: Path) -> str:
    latest = d / "latest.json"
    try:
        entry = json.loads(latest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{latest} is corrupt: {_first_line(err)}") from None
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ValueError(f"{latest} is corrupt: expected an object with a string 'name', got {entry!r:.80}")
    if not is_plain_file_name(entry["name"]) or not _NAME.fullmatch(entry["name"]):
        raise ValueError(f"{latest} names {entry['name']!r}: refusing to load files outside the run directory")
    return entry["name"]


def _read(d: Path, name: str, keys: tuple[str, ...], groups: tuple[str, ...]) -> Checkpoint:
    """The checkpoint `name` of d, every part checked; ValueError with a one-line reason when it is not valid."""
    meta_path = d / f"{name}.json"
    meta = read_json_object(meta_path, "checkpoint", (*_CORE_KEYS, *keys))
    if isinstance(meta["step"], bool) or not isinstance(meta["step"], int) or not isinstance(meta["sha256"], str):
        raise ValueError(f"checkpoint {meta_path} is corrupt: 'step' must be an integer and 'sha256' a string")
    if not is_plain_file_name(meta["tensors"]):
        raise ValueError(f"checkpoint {meta_path} names tensors {meta['tensors']!r}: refusing to load files "
                         f"outside the run directory")
    tensor_path = d / meta["tensors"]
    if not tensor_path.is_file() or _sha256(tensor_path) != meta["sha256"]:
        older = [n for n in checkpoint_names(d) if n != name]
        raise ValueError(f"checkpoint {tensor_path} is missing or does not match its recorded SHA-256; refusing it "
                         f"(other checkpoints kept: {older or 'none'}; resume from one by name with "
                         f"resume_from / mridpm train --resume-from)")
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in read_safetensors(tensor_path).items():
        group, sep, sub = key.partition("/")
        if not sep:
            raise ValueError(f"checkpoint {tensor_path} is corrupt: tensor {key!r} has no 'group/' prefix")
        tensors.setdefault(group, {})[sub] = value
    for group in groups:
        if group not in tensors:
            raise ValueError(f"checkpoint {tensor_path} is corrupt: it holds no {group!r} tensors")
    return Checkpoint(meta_path, tensors, meta)


def read_checkpoint(directory: str | os.PathLike, name: str | os.PathLike | None = None, *,
                    keys: tuple[str, ...] = (), groups: tuple[str, ...] = ()) -> Checkpoint | None:
    """The checkpoint latest.json points at (or the named one), None when the directory holds none.
    Without latest.json: the newest valid checkpoint, with a warning, or ValueError when none is valid.
    keys and groups: the meta entries and tensor groups a valid checkpoint must have."""
    d = Path(directory)
    if name is not None:
        name = checkpoint_name(d, name)
        if not (d / f"{name}.json").is_file():
            raise FileNotFoundError(f"no checkpoint {name} in {d}; there: {checkpoint_names(d) or 'none'}")
        return _read(d, name, keys, groups)
    if (d / "latest.json").exists():
        return _read(d, _latest_name(d), keys, groups)
    names = checkpoint_names(d)
    reasons = []
    for candidate in reversed(names):
        try:
            found = _read(d, candidate, keys, groups)
        except ValueError as err:
            reasons.append(str(err))
            continue
        warnings.warn(f"{d / 'latest.json'} is missing; using the newest valid checkpoint {candidate}", stacklevel=2)
        return found
    if names:
        raise ValueError(f"{d} holds checkpoints but no latest.json and none of them is valid; refusing to start "
                         f"over and overwrite them: {' | '.join(reasons)}")
    return None


def load_checkpoint(directory: str | os.PathLike, name: str | os.PathLike | None = None, *,
                    keys: tuple[str, ...] = (), groups: tuple[str, ...] = ()
                    ) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]] | None:
    """(tensors by group, meta) of read_checkpoint's checkpoint, None when there is none. A checkpoint
    whose JSON or tensor file is missing, truncated or altered raises ValueError."""
    found = read_checkpoint(directory, name, keys=keys, groups=groups)
    return None if found is None else (found.tensors, found.meta)


def resume_checkpoint(out_dir: str | os.PathLike, resume: bool, resume_from: str | os.PathLike | None
                      ) -> Checkpoint | None:
    """The checkpoint a run continues from: resume_from, else latest (or the newest valid one); never a
    fresh start over a directory that holds checkpoints."""
    keys, groups = ("config", "optim"), ("model", "ema")
    if resume_from is not None:
        if not resume:
            raise ValueError("resume_from needs resume=True")
        return read_checkpoint(out_dir, resume_from, keys=keys, groups=groups)
    if not resume:
        if names := checkpoint_names(out_dir):
            raise ValueError(f"{out_dir} already holds checkpoints (newest {names[-1]}); resume from them or "
                             f"choose another out_dir instead of overwriting them")
        return None
    return read_checkpoint(out_dir, keys=keys, groups=groups)


def restore_training(found: Checkpoint, model: torch.nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> int:
    """Loads a checkpoint into model, EMA and optimizer, refusing (one line) one that does not fit; its step."""
    expected = model.state_dict()
    for group in ("model", "ema"):
        if (problem := state_mismatch(expected, found.tensors[group])) is not None:
            raise ValueError(f"checkpoint {found.path} ({group} weights) does not fit the model: {problem}")
    model.load_state_dict(found.tensors["model"])
    ema.load_state_dict(found.tensors["ema"])
    try:
        opt.load_state_dict(unflatten_optimizer(found.tensors.get("optim", {}), found.meta["optim"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        raise ValueError(f"checkpoint {found.path}: its optimizer state does not fit ({err!r:.200})") from None
    return int(found.meta["step"])
