"""`mridpm reconstruct`: a fastMRI file slice by slice with a diffusion prior, resumable (finished
slices are kept until the end), written as HDF5, NIfTI and a PNG of the middle slice."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from mridpm.mri.classical import cg_sense, zero_filled
from mridpm.mri.masks import acs_lines, file_mask
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import estimate_noise_std
from mridpm.tasks.recon_figures import file_figure
from mridpm.tasks.reconstruction import METHODS, image_scale, reconstruct_prior

PRIOR_METHODS = tuple(m for m in METHODS if m != "kspace")  # what an unconditional 2D prior runs


def reconstruct_file(path: str | os.PathLike, out: str | os.PathLike, *, method: str = "dds",
                     accel: float | None = None, center: float | None = None, samples: int = 4,
                     steps: int | None = None, seed: int = 0, prior: str = "brain64c",
                     noise_std: float | None = None, maps: str | os.PathLike | torch.Tensor | None = None,
                     progress: bool = True, **options: Any) -> dict[str, Path]:
    """Reconstructs every slice of a fastMRI file and writes out (HDF5: reconstruction, uncertainty,
    zero_filled, cg_sense magnitudes), NIfTI volumes of the reconstruction and uncertainty, and a PNG of
    the middle slice. Coil maps: a (slices, coils, H, W) tensor or an HDF5 file's 'maps' dataset, else
    ESPIRiT from the center lines. Finished slices are kept in out.parts/ until the end, so an
    interrupted run resumes where it stopped. noise_std None estimates the noise per slice from the
    outermost k-space rows (0 makes the result reproduce y). options go to reconstruct() (warm_start,
    t_start, the method's own)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from mridpm.data._atomic import atomic_path
    from mridpm.data.fastmri import read_fastmri
    from mridpm.mri.espirit import espirit_maps
    from mridpm.nets.priors import load_prior

    if method not in PRIOR_METHODS:
        raise ValueError(f"method must be one of {PRIOR_METHODS} with an unconditional prior, got {method!r}")
    vol = read_fastmri(path)
    if not bool((vol.kspace != 0).any()):
        raise ValueError(f"{path}: the k-space is all zeros")
    kspace = vol.kspace if vol.multicoil else vol.kspace[:, None]
    mask = file_mask(kspace, vol.mask, accel, center, seed)
    if not vol.multicoil and method == "pc-rss":
        raise ValueError("pc-rss needs multi-coil data")
    p = load_prior(prior)
    check_size(p, tuple(kspace.shape[-2:]))
    acs = acs_lines(mask)
    given = read_maps(maps, kspace, vol.multicoil)
    if vol.multicoil and given is None and acs < 8:
        raise ValueError(f"only {acs} fully sampled center lines: ESPIRiT needs at least 8 (raise --center)")
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    settings = {"input": str(Path(path).resolve()), "method": method, "accel": accel, "center": center,
                "samples": samples, "steps": steps, "seed": seed, "prior": str(prior), "noise_std": noise_std,
                "maps": None if maps is None else "given", **{k: str(v) for k, v in options.items()}}
    parts.mkdir(parents=True, exist_ok=True)
    meta = parts / "settings.json"
    if meta.is_file() and json.loads(meta.read_text()) != settings:
        raise ValueError(f"{parts} holds slices of a run with other settings; delete it or repeat those settings")
    meta.write_text(json.dumps(settings))
    names = ("mean", "std", "zero_filled", "cg")
    n = kspace.shape[0]
    chunks = [list(range(n))] if method == "tv3d" else [[s] for s in range(n)]  # tv3d: the volume at once
    for chunk in tqdm(chunks, desc="slices", disable=not progress or len(chunks) == 1):
        done = [parts / f"slice-{s:04d}.safetensors" for s in chunk]
        if all(f.is_file() for f in done):
            continue
        y = kspace[chunk[0] : chunk[-1] + 1] * mask
        if vol.multicoil:
            smaps = given[chunk[0] : chunk[-1] + 1] if given is not None else espirit_maps(
                y, calib_width=min(24, acs), kernel_width=min(6, acs // 2))
            op: Sense | SingleCoil = Sense(smaps, mask)
        else:
            op, y = SingleCoil(mask[0]), y[:, 0]
        sigma = estimate_noise_std(y, mask) if noise_std is None else noise_std
        cg = cg_sense(y, op, iters=10).abs()  # the baseline, and (estimate_scale) the prior's scale
        r = reconstruct_prior(y, op, p, method=method, samples=samples, steps=steps, noise_std=sigma,
                              scale=image_scale(cg), generator=Generator(seed + chunk[0]), **options)
        images = (r.mean.abs(), r.std, zero_filled(y, op).abs(), cg)
        for i, f in enumerate(done):
            with atomic_path(f, ".safetensors") as tmp:
                save_file({k: v[i].contiguous() for k, v in zip(names, images, strict=True)}, str(tmp))
    stack = [load_file(str(parts / f"slice-{s:04d}.safetensors")) for s in range(n)]
    vols = {k: torch.stack([d[k] for d in stack]) for k in names}
    written = _write_outputs(out, vols, vol.target, settings)
    for f in parts.iterdir():
        f.unlink()
    parts.rmdir()
    return written


def read_maps(maps: str | os.PathLike | torch.Tensor | None, kspace: torch.Tensor, multicoil: bool
              ) -> torch.Tensor | None:
    """Coil maps (slices, coils, H, W) from a tensor or an HDF5 file's 'maps' dataset, checked against
    the k-space (slices, coils, H, W); (coils, H, W) maps serve every slice."""
    if maps is None:
        return None
    if not multicoil:
        raise ValueError("coil maps were given for single-coil k-space")
    if not isinstance(maps, torch.Tensor):
        import h5py

        try:
            with h5py.File(maps, "r") as f:
                if "maps" not in f:
                    raise ValueError(f"{maps} has no 'maps' dataset (found {sorted(f.keys())})")
                maps = torch.from_numpy(f["maps"][()])
        except OSError as err:
            raise ValueError(f"{maps} is not a readable HDF5 file: {err}") from None
    if not maps.is_complex():
        raise ValueError(f"coil maps must be complex, got {maps.dtype}")
    if maps.dim() == 3:
        maps = maps.unsqueeze(0).expand(kspace.shape[0], *maps.shape)
    if tuple(maps.shape) != tuple(kspace.shape):
        raise ValueError(f"coil maps of shape {tuple(maps.shape)} do not match the k-space (slices, coils, H, W) "
                         f"= {tuple(kspace.shape)}")
    if not bool(torch.isfinite(torch.view_as_real(maps)).all()):
        raise ValueError("the coil maps contain NaN or Inf")
    return maps.to(torch.complex64)


def check_size(prior: Any, size: tuple[int, ...]) -> None:
    """Refuses images the prior's UNet cannot take (sides not divisible by its downsampling) and
    warns when they differ from its training size."""
    import warnings

    factor = 2 ** (len(prior.model.config.channel_mult) - 1)
    if any(n % factor for n in size):
        raise ValueError(f"images of size {size} do not fit the prior's UNet: each side must be divisible by "
                         f"{factor}")
    if list(size) != list(prior.info["image_size"]):
        warnings.warn(f"the prior was trained on {prior.info['image_size']} images, not {list(size)}: train one "
                      "on your data (mridpm train) for a faithful prior", stacklevel=3)


def _write_outputs(out: Path, vols: dict[str, torch.Tensor], target: torch.Tensor | None,
                   settings: dict[str, Any]) -> dict[str, Path]:
    """The HDF5 file of the magnitude volumes with the settings as attributes, NIfTI volumes of the
    reconstruction and its uncertainty, and the PNG of the middle slice; {kind: path}."""
    import h5py

    from mridpm.data._atomic import atomic_path
    from mridpm.data.nifti import write_nifti

    with atomic_path(out, ".h5") as tmp, h5py.File(tmp, "w") as f:
        for key, name in (("mean", "reconstruction"), ("std", "uncertainty"), ("zero_filled", "zero_filled"),
                          ("cg", "cg_sense")):
            f.create_dataset(name, data=vols[key].numpy())
        for k, v in settings.items():
            f.attrs[k] = "" if v is None else v
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    nii = out.with_name(stem + ".nii.gz")
    nii_std = out.with_name(stem + "_uncertainty.nii.gz")
    write_nifti(nii, vols["mean"].permute(2, 1, 0))
    write_nifti(nii_std, vols["std"].permute(2, 1, 0))
    png = file_figure(out.with_name(stem + ".png"), vols, target, settings["method"])
    return {"hdf5": out, "nifti": nii, "nifti_uncertainty": nii_std, "png": png}
