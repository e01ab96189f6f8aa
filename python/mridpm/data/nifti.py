"""NIfTI volumes through nibabel, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mridpm.data._atomic import atomic_path


def _nib() -> Any:
    try:
        import nibabel
    except ImportError:
        raise ImportError("NIfTI files need nibabel: pip install 'mridpm[data]'") from None
    return nibabel


def read_nifti(path: str | os.PathLike) -> tuple[torch.Tensor, np.ndarray]:
    """(volume as a float32 or complex64 tensor, 4x4 affine)."""
    nib = _nib()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no NIfTI file at {p}")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except Exception as err:  # nibabel raises several types for corrupt files
        raise ValueError(f"{p} is not a readable NIfTI file: {err}") from None
    if data.dtype.names is not None or data.dtype.kind not in "biufc":
        raise ValueError(f"{p} holds {data.dtype} voxels (RGB or another compound type); give a grayscale image")
    dtype = np.complex64 if np.iscomplexobj(data) else np.float32
    return torch.from_numpy(np.ascontiguousarray(data.astype(dtype))), np.asarray(img.affine, dtype=np.float64)


def write_nifti(path: str | os.PathLike, volume: torch.Tensor, affine: np.ndarray | None = None) -> Path:
    """Writes a real or complex volume with an affine (identity by default), atomically."""
    nib = _nib()
    data = volume.detach().cpu().numpy()
    data = data.astype(np.complex64 if np.iscomplexobj(data) else np.float32)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64))
    suffix = ".nii.gz" if str(path).endswith(".gz") else ".nii"
    with atomic_path(path, suffix) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
