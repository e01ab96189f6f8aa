"""fastMRI HDF5 files: kspace (slices, [coils,] H, W) complex64, reconstruction_rss / _esc targets,
the ISMRMRD XML header and the file attributes, read and written as fastMRI's own loaders expect."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from mridpm.data._atomic import atomic_path

T = TypeVar("T")

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
    incomplete files, so a damaged file is named instead of surfacing as an h5py traceback."""
    h5py = _h5py()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no fastMRI file at {p}")
    return _reading(h5py, p, lambda f: _read_volume(h5py, f, p, slice(None) if slices is None else slices))


def _reading(h5py: Any, p: Path, read: Callable[[Any], T]) -> T:
    """read(the open HDF5 file p), h5py's errors for unreadable, damaged or truncated files as one line."""
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise ValueError(f"{p} is not a readable HDF5 file: {err}") from None
    try:
        with f:
            return read(f)
    except (OSError, KeyError, RuntimeError) as err:  # h5py's errors for damaged metadata or data
        raise ValueError(f"{p} is a corrupt HDF5 file (damaged or truncated): {str(err).strip(chr(39))}") from None


def h5_dataset(h5py: Any, f: Any, name: str, p: Path) -> Any:
    """f[name] when it is a dataset, None when absent; refuses a group (or other object) of that name."""
    if name not in f:
        return None
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{p}: '{name}' is an HDF5 {type(obj).__name__.lower()}, not a dataset")
    return obj


def _read_volume(h5py: Any, f: Any, p: Path, sel: slice) -> FastMRIVolume:
    """The volume of an open fastMRI file: k-space, real target, header, mask and attributes."""
    ks = h5_dataset(h5py, f, "kspace", p)
    if ks is None:
        raise ValueError(f"{p} has no 'kspace' dataset (found {sorted(str(k) for k in f.keys())}); "
                         "not a fastMRI file")
    if ks.ndim not in (3, 4) or not np.issubdtype(ks.dtype, np.complexfloating):
        raise ValueError(f"{p}: kspace must be complex (slices, [coils,] H, W), got {ks.dtype} {ks.shape}")
    kspace = torch.from_numpy(np.ascontiguousarray(ks[sel]).astype(np.complex64))
    target = None
    for name in ("reconstruction_rss", "reconstruction_esc"):
        t = h5_dataset(h5py, f, name, p)
        if t is not None:
            if not np.issubdtype(t.dtype, np.floating) and not np.issubdtype(t.dtype, np.integer):
                raise ValueError(f"{p}: the target {name} must hold real magnitudes, got {t.dtype}")
            target = torch.from_numpy(np.ascontiguousarray(t[sel]).astype(np.float32))
            break
    h = h5_dataset(h5py, f, "ismrmrd_header", p)
    header = h[()] if h is not None else b""
    m = h5_dataset(h5py, f, "mask", p)
    mask = torch.from_numpy(np.asarray(m[()]).astype(np.float32)) if m is not None else None
    attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
    text = header.decode(errors="replace") if isinstance(header, bytes) else str(header)
    return FastMRIVolume(kspace, target, text, attrs, mask)


def read_maps(maps: str | os.PathLike | torch.Tensor | None, kspace: torch.Tensor, multicoil: bool
              ) -> torch.Tensor | None:
    """Coil maps (slices, coils, H, W) from a tensor or an HDF5 file's 'maps' dataset, checked against
    the k-space (slices, coils, H, W) and refused when a slice's maps are all zero (they would make
    every image zero and the run fail midway); (coils, H, W) maps serve every slice."""
    if maps is None:
        return None
    if not multicoil:
        raise ValueError("coil maps were given for single-coil k-space")
    if not isinstance(maps, torch.Tensor):
        maps = _read_maps_file(Path(maps))
    if not maps.is_complex():
        raise ValueError(f"coil maps must be complex, got {maps.dtype}")
    if maps.dim() == 3:
        maps = maps.unsqueeze(0).expand(kspace.shape[0], *maps.shape)
    if tuple(maps.shape) != tuple(kspace.shape):
        raise ValueError(f"coil maps of shape {tuple(maps.shape)} do not match the k-space (slices, coils, H, W) "
                         f"= {tuple(kspace.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise ValueError("the coil maps contain NaN or Inf")
    empty = [s for s in range(maps.shape[0]) if not bool((maps[s] != 0).any())]
    if len(empty) == maps.shape[0]:
        raise ValueError("the coil maps are all zero (their sum of squares is zero at every pixel); give "
                         "sensitivity maps or leave out --maps to estimate them by ESPIRiT")
    if empty:
        raise ValueError(f"the coil maps of slice(s) {empty[:5]} are all zero; give sensitivity maps for every "
                         "slice or leave out --maps")
    return maps.to(torch.complex64)


def _read_maps_file(path: Path) -> torch.Tensor:
    """The 'maps' dataset of an HDF5 file, with clear errors for a missing, corrupt or misshapen file."""
    h5py = _h5py()

    def read(f: Any) -> torch.Tensor:
        d = h5_dataset(h5py, f, "maps", path)
        if d is None:
            raise ValueError(f"{path} has no 'maps' dataset (found {sorted(str(k) for k in f.keys())})")
        return torch.from_numpy(d[()])

    try:
        return _reading(h5py, path, read)
    except TypeError as err:  # a dtype numpy cannot hold (e.g. a compound type)
        raise ValueError(f"{path}: 'maps' has an unreadable type: {err}") from None


def write_fastmri(path: str | os.PathLike, kspace: torch.Tensor, target: torch.Tensor | None = None,
                  header: str | None = None, attrs: dict[str, Any] | None = None,
                  mask: torch.Tensor | None = None) -> Path:
    """Writes a fastMRI file atomically. kspace (slices, [coils,] H, W) complex; target (slices, h, w)
    goes to reconstruction_rss (multi-coil) or reconstruction_esc; a header is made when none is given;
    a line mask is stored as fastMRI's (W,), a 2D one as (H, W) or (slices, H, W)."""
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
            f.create_dataset("mask", data=_mask_to_store(mask))
        for k, v in attrs.items():
            f.attrs[k] = v
    return Path(path)


def _mask_to_store(mask: torch.Tensor) -> np.ndarray:
    """A mask as stored: lines (ones but along the last axis) as fastMRI's (W,), a 2D mask with its
    coil axis of one and leading ones dropped ((slices, 1, H, W) -> (slices, H, W), (1, 1, H, W) -> (H, W))."""
    m = mask.detach().cpu().to(torch.float32)
    if all(n == 1 for n in m.shape[:-1]):
        return m.numpy().reshape(-1)
    if m.dim() == 4 and m.shape[1] == 1:
        m = m[:, 0]
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    return m.numpy()


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
