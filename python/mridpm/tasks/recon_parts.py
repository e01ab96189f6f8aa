"""The files of a reconstruction run: the outputs --out names (HDF5, NIfTI, PNG) and the finished
slices kept in out.parts until a file is assembled, shared by recon_file, recon_slices and
recon_dataset (a leaf module: it imports none of them)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from mridpm.tasks.recon_figures import file_figure

NAMES = ("mean", "std", "zero_filled", "cg")  # the magnitude volumes kept per slice


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """Every file written for --out (the HDF5 file, and next to it the NIfTI volumes and the PNG), so
    that one list is checked before the work and written after it; --out must end in .h5 or .hdf5."""
    h5 = Path(out)
    if h5.suffix.lower() not in (".h5", ".hdf5") or not h5.stem:
        raise ValueError(f"--out must name an HDF5 file ending in .h5 (the NIfTI and PNG files are written next to "
                         f"it), got {h5}")
    stem = h5.name[: -len(h5.suffix)]
    return {"hdf5": h5, "nifti": h5.with_name(stem + ".nii.gz"),
            "nifti_uncertainty": h5.with_name(stem + "_uncertainty.nii.gz"), "png": h5.with_name(stem + ".png")}


def load_part(f: Path, size: tuple[int, ...]) -> dict[str, torch.Tensor] | None:
    """A finished slice from out.parts, or None when it is missing, unreadable (truncated, corrupt)
    or not a finished slice of this size: that slice is computed again instead of failing the resume."""
    from safetensors.torch import load_file

    if not f.is_file():
        return None
    try:
        d = {k: v.clone() for k, v in load_file(str(f)).items()}  # not views of a file that may change
    except Exception as err:  # safetensors raises its own error type for damaged files
        warnings.warn(f"{f} is unreadable ({err}); computing that slice again", stacklevel=2)
        return None
    if set(d) != set(NAMES) or any(tuple(v.shape) != size or v.dtype != torch.float32
                                   or not bool(torch.isfinite(v).all()) for v in d.values()):
        warnings.warn(f"{f} does not hold a finished slice of this run; computing that slice again", stacklevel=2)
        return None
    return d


def save_part(parts: Path, settings: dict[str, Any], f: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Keeps a finished slice in out.parts, writing the settings first when the directory is new (so
    a run that fails before its first slice leaves no out.parts behind)."""
    from safetensors.torch import save_file

    from mridpm.data._atomic import atomic_path

    meta = parts / "settings.json"
    if not meta.is_file():
        parts.mkdir(parents=True, exist_ok=True)
        with atomic_path(meta, ".json") as tmp:
            tmp.write_text(json.dumps(settings))
    with atomic_path(f, ".safetensors") as tmp:
        save_file(tensors, str(tmp))


def write_outputs(out: Path, vols: dict[str, torch.Tensor], target: torch.Tensor | None,
                   settings: dict[str, Any]) -> dict[str, Path]:
    """The HDF5 file of the magnitude volumes with the settings as attributes, NIfTI volumes of the
    reconstruction and its uncertainty, and the PNG of the middle slice, at output_paths(out); inside
    all_or_none() they appear together. {kind: path}."""
    import h5py

    from mridpm.data._atomic import atomic_path
    from mridpm.data.nifti import write_nifti

    paths = output_paths(out)
    with atomic_path(paths["hdf5"], ".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, name in (("mean", "reconstruction"), ("std", "uncertainty"), ("zero_filled", "zero_filled"),
                          ("cg", "cg_sense")):
            f.create_dataset(name, data=vols[key].numpy())
        for k, v in settings.items():
            f.attrs[k] = "" if v is None else v
    write_nifti(paths["nifti"], vols["mean"].permute(2, 1, 0))
    write_nifti(paths["nifti_uncertainty"], vols["std"].permute(2, 1, 0))
    file_figure(paths["png"], vols, target, settings["method"])
    return paths
