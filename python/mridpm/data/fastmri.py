"""fastMRI HDF5 files: kspace (slices, [coils,] H, W) complex64, reconstruction_rss / _esc targets,
the ISMRMRD XML header and the file attributes, read and written as fastMRI's own loaders expect."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mridpm.data._atomic import atomic_path

_NS = "http://www.ismrm.org/ISMRMRD"


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("fastMRI files need h5py: pip install 'mridpm[data]'") from None
    return h5py


@dataclass
class FastMRIVolume:
    """One fastMRI file: k-space, the target image (if any), the ISMRMRD header and attributes."""

    kspace: torch.Tensor
    target: torch.Tensor | None = None
    header: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    mask: torch.Tensor | None = None

    @property
    def multicoil(self) -> bool:
        return self.kspace.dim() == 4


def read_fastmri(path: str | os.PathLike, slices: slice | None = None) -> FastMRIVolume:
    """Reads a fastMRI file (optionally only some slices); clear errors for missing, corrupt or
    incomplete files."""
    h5py = _h5py()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no fastMRI file at {p}")
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise ValueError(f"{p} is not a readable HDF5 file: {err}") from None
    with f:
        if "kspace" not in f:
            raise ValueError(f"{p} has no 'kspace' dataset (found {sorted(f.keys())}); not a fastMRI file")
        ks = f["kspace"]
        if ks.ndim not in (3, 4) or not np.issubdtype(ks.dtype, np.complexfloating):
            raise ValueError(f"{p}: kspace must be complex (slices, [coils,] H, W), got {ks.dtype} {ks.shape}")
        sel = slices if slices is not None else slice(None)
        kspace = torch.from_numpy(np.ascontiguousarray(ks[sel]).astype(np.complex64))
        target = None
        for name in ("reconstruction_rss", "reconstruction_esc"):
            if name in f:
                target = torch.from_numpy(np.ascontiguousarray(f[name][sel]).astype(np.float32))
                break
        header = f["ismrmrd_header"][()] if "ismrmrd_header" in f else b""
        mask = torch.from_numpy(np.asarray(f["mask"][()]).astype(np.float32)) if "mask" in f else None
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    return FastMRIVolume(kspace, target, header.decode() if isinstance(header, bytes) else str(header), attrs, mask)


def write_fastmri(path: str | os.PathLike, kspace: torch.Tensor, target: torch.Tensor | None = None,
                  header: str | None = None, attrs: dict[str, Any] | None = None,
                  mask: torch.Tensor | None = None) -> Path:
    """Writes a fastMRI file atomically. kspace (slices, [coils,] H, W) complex; target (slices, h, w)
    goes to reconstruction_rss (multi-coil) or reconstruction_esc; a header is made when none is given."""
    h5py = _h5py()
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.dim() not in (3, 4):
        raise ValueError("kspace must be a complex (slices, [coils,] H, W) tensor")
    multicoil = kspace.dim() == 4
    if target is not None and (target.dim() != 3 or target.shape[0] != kspace.shape[0] or target.is_complex()):
        raise ValueError(f"target must be real (slices, h, w) with {kspace.shape[0]} slices, got {tuple(target.shape)}")
    h, w = kspace.shape[-2:]
    header = header or ismrmrd_header((h, w), tuple(target.shape[-2:]) if target is not None else (h, w))
    attrs = dict(attrs or {})
    attrs.setdefault("acquisition", "SIMULATED")
    attrs.setdefault("patient_id", Path(path).stem)
    if target is not None:
        attrs.setdefault("max", float(target.max()))
        attrs.setdefault("norm", float(target.norm()))
    with atomic_path(path, ".h5") as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("kspace", data=kspace.detach().cpu().to(torch.complex64).numpy())
        if target is not None:
            name = "reconstruction_rss" if multicoil else "reconstruction_esc"
            f.create_dataset(name, data=target.detach().cpu().to(torch.float32).numpy())
        f.create_dataset("ismrmrd_header", data=np.bytes_(header.encode()))
        if mask is not None:
            f.create_dataset("mask", data=mask.detach().cpu().to(torch.float32).numpy().reshape(-1))
        for k, v in attrs.items():
            f.attrs[k] = v
    return Path(path)


def ismrmrd_header(encoded: tuple[int, int], recon: tuple[int, int], fov_mm: tuple[float, float] = (220.0, 220.0),
                   slice_mm: float = 5.0) -> str:
    """A minimal ISMRMRD header with the fields fastMRI's SliceDataset reads: encoded and recon matrix
    sizes and fields of view, and the phase-encoding limits (center, maximum)."""
    h, w = encoded
    rh, rw = recon

    def space(tag: str, mx: int, my: int) -> str:
        return (f"<{tag}><matrixSize><x>{mx}</x><y>{my}</y><z>1</z></matrixSize><fieldOfView_mm><x>{fov_mm[0]}</x>"
                f"<y>{fov_mm[1]}</y><z>{slice_mm}</z></fieldOfView_mm></{tag}>")

    return (f'<?xml version="1.0" encoding="utf-8"?><ismrmrdHeader xmlns="{_NS}"><encoding>'
            f"{space('encodedSpace', h, w)}{space('reconSpace', rh, rw)}"
            f"<encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>{w - 1}</maximum>"
            f"<center>{w // 2}</center></kspace_encoding_step_1></encodingLimits>"
            f"<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")


def header_sizes(header: str) -> dict[str, Any]:
    """The sizes fastMRI reads from a header: encoded and recon (x, y), the phase-encoding limits."""
    root = ET.fromstring(header)
    ns = {"i": _NS}

    def num(path: str) -> float:
        node = root.find(path, ns)
        if node is None or node.text is None:
            raise ValueError(f"ISMRMRD header lacks {path}")
        return float(node.text)

    enc = "i:encoding/i:encodedSpace/i:matrixSize"
    rec = "i:encoding/i:reconSpace/i:matrixSize"
    lim = "i:encoding/i:encodingLimits/i:kspace_encoding_step_1"
    return {"encoded": (int(num(f"{enc}/i:x")), int(num(f"{enc}/i:y"))),
            "recon": (int(num(f"{rec}/i:x")), int(num(f"{rec}/i:y"))),
            "center": int(num(f"{lim}/i:center")), "maximum": int(num(f"{lim}/i:maximum"))}
