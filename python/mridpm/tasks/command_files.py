"""The files of the task commands: NIfTI slices in (scaled to peak 1), NIfTI outputs and the PNG
figure beside them (shared by mridpm.tasks.commands and mridpm.tasks.commands_analysis)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_slices(path: str) -> tuple[Any, float, Any]:
    """(slices (S, 1, H, W) scaled to peak 1, the peak, affine) of a real NIfTI image (H, W[, S])."""
    from mridpm.data.nifti import read_nifti

    vol, affine = read_nifti(path)
    if vol.is_complex() or vol.dim() not in (2, 3):
        raise ValueError(f"{path}: expected a real (H, W) or (H, W, S) image, got {tuple(vol.shape)} {vol.dtype}")
    vol = vol if vol.dim() == 3 else vol[..., None]
    if not bool(vol.isfinite().all()):
        raise ValueError(f"{path}: the image contains NaN or Inf")
    peak = float(vol.abs().max())
    if not peak > 0:
        raise ValueError(f"{path}: the image is empty or all zero")
    return (vol.permute(2, 0, 1)[:, None] / peak).float(), peak, affine


def nifti_path(out: str, suffix: str = "", ext: str | None = None) -> Path:
    """out with suffix before its .nii or .nii.gz extension (or with extension ext instead)."""
    p = Path(out)
    gz = p.name.endswith(".nii.gz")
    stem = p.name[: -len(".nii.gz")] if gz else p.stem
    return p.with_name(stem + suffix + (ext or (".nii.gz" if gz else ".nii")))


def png_path(out: str) -> Path:
    """The PNG figure next to the NIfTI output out."""
    return nifti_path(out, ext=".png")


def write_slices(out: str, slices: Any, affine: Any = None, suffix: str = "") -> Path:
    """Writes (S, H, W) slices as a NIfTI (H, W, S) at out (with suffix before the extension)."""
    from mridpm.data.nifti import write_nifti

    return write_nifti(nifti_path(out, suffix), slices.permute(1, 2, 0).contiguous(), affine)


def figure(out: str, panels: list[tuple[str, Any]]) -> Path:
    """Writes the titled panels as the PNG next to out."""
    from mridpm.figures import write_panels

    return write_panels(png_path(out), [(t, img.float()) for t, img in panels])
