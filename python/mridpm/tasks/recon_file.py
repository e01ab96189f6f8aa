"""`mridpm reconstruct`: a fastMRI file slice by slice with a diffusion prior, resumable (finished
slices are kept until the end), written as HDF5, NIfTI and a PNG of the middle slice; every input
and option is checked before the first write, and the outputs appear together or not at all."""

from __future__ import annotations

import json
import math
import numbers
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from mridpm.data.fastmri import read_maps
from mridpm.mri.classical import cg_sense, zero_filled
from mridpm.mri.masks import acs_square, check_line_options, check_mask_kind, file_mask
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import estimate_noise_std
from mridpm.tasks.recon_figures import file_figure
from mridpm.tasks.recon_padding import padded_size, unet_factor
from mridpm.tasks.recon_scale import image_scale
from mridpm.tasks.reconstruction import METHODS, check_schedule_options, check_values, reconstruct_prior

PRIOR_METHODS = tuple(m for m in METHODS if m != "kspace")  # what an unconditional 2D prior runs
NAMES = ("mean", "std", "zero_filled", "cg")  # the magnitude volumes kept per slice
WARM_STARTS = ("zero_filled", "cg")


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


def reconstruct_file(path: str | os.PathLike, out: str | os.PathLike, *, method: str = "dds",
                     accel: float | None = None, center: float | None = None, mask_kind: str = "lines",
                     samples: int = 4, steps: int | None = None, seed: int = 0, prior: str = "brain64c",
                     noise_std: float | None = None, maps: str | os.PathLike | torch.Tensor | None = None,
                     progress: bool = True, overwrite: bool = False, **options: Any) -> dict[str, Path]:
    """Reconstructs every slice of a fastMRI file and writes out (HDF5: reconstruction, uncertainty,
    zero_filled, cg_sense magnitudes), NIfTI volumes of the reconstruction and uncertainty, and a PNG of
    the middle slice, all four or none; existing outputs are replaced only with overwrite, an input
    never. Any image size (the prior runs zero-padded, recon_padding). The mask (masks.file_mask): made
    for accel as mask_kind 'lines', 'poisson' or 'random' (2D), else the file's own (lines or 2D),
    else the k-space locations that hold data; unmeasured k-space is never taken as measured zeros.
    Coil maps: a (slices, coils, H, W) tensor or an HDF5 file's 'maps' dataset, else ESPIRiT from the
    fully sampled center. Finished slices are kept in out.parts/ until the end, so an interrupted run
    resumes where it stopped. noise_std None estimates the noise per slice from the measured samples
    of the outermost k-space rows (0 makes the result reproduce y). options go to reconstruct()
    (warm_start, t_start, the method's own)."""
    from tqdm.auto import tqdm

    from mridpm.data._atomic import all_or_none
    from mridpm.data.fastmri import read_fastmri
    from mridpm.data.paths import check_outputs
    from mridpm.mri.espirit import center_maps, check_calibration
    from mridpm.nets.priors import load_prior

    paths = output_paths(out)
    check_options(method, samples, steps, seed, noise_std, options)
    check_line_options(accel, center)
    check_mask_kind(mask_kind, accel)
    inputs = [path, *([maps] if isinstance(maps, (str, os.PathLike)) else [])]
    check_outputs(paths.values(), inputs, overwrite=overwrite)
    out = paths["hdf5"]
    vol = read_fastmri(path)
    check_volume(vol, path, method)
    kspace = vol.kspace if vol.multicoil else vol.kspace[:, None]
    mask = file_mask(kspace, vol.mask, accel, center, seed, mask_kind)
    p = load_prior(prior)
    size = tuple(kspace.shape[-2:])
    check_size(p, size)
    check_schedule_options(p.schedule, steps, options.get("warm_start"), options.get("t_start"))
    n = kspace.shape[0]
    check_memory(p, samples, n if method == "tv3d" else 1, kspace.shape[1],
                 padded_size(size, unet_factor(p.model)), method)
    acs = acs_square(mask, size)
    given = read_maps(maps, kspace, vol.multicoil)
    if vol.multicoil and given is None:
        check_calibration(acs)
    parts = out.with_name(out.name + ".parts")
    settings = {"input": str(Path(path).resolve()), "method": method, "accel": accel, "center": center,
                "mask_kind": mask_kind, "samples": samples, "steps": steps, "seed": seed, "prior": str(prior),
                "noise_std": noise_std, "maps": None if maps is None else "given",
                **{k: str(v) for k, v in options.items()}}
    check_parts(parts, settings)  # the last check: nothing is written before here
    done: dict[int, dict[str, torch.Tensor]] = {}
    chunks = [list(range(n))] if method == "tv3d" else [[s] for s in range(n)]  # tv3d: the volume at once
    for chunk in tqdm(chunks, desc="slices", disable=not progress or len(chunks) == 1):
        files = [parts / f"slice-{s:04d}.safetensors" for s in chunk]
        found = [load_part(f, size) for f in files]
        if all(d is not None for d in found):
            done.update(zip(chunk, found, strict=True))  # type: ignore[arg-type]
            continue
        m = mask[chunk[0] : chunk[-1] + 1] if mask.shape[0] > 1 else mask  # per-slice 2D masks
        y = kspace[chunk[0] : chunk[-1] + 1] * m
        if vol.multicoil:
            smaps = given[chunk[0] : chunk[-1] + 1] if given is not None else center_maps(y, acs)
            op: Sense | SingleCoil = Sense(smaps, m)
        else:
            op, y = SingleCoil(m[:, 0]), y[:, 0]
        sigma = estimate_noise_std(y, op.mask.mask) if noise_std is None else noise_std  # type: ignore[union-attr]
        cg = cg_sense(y, op, iters=10).abs()  # the baseline, and (estimate_scale) the prior's scale
        r = reconstruct_prior(y, op, p, method=method, samples=samples, steps=steps, noise_std=sigma,
                              scale=image_scale(cg), generator=Generator(seed + chunk[0]), **options)
        images = (r.mean.abs(), r.std, zero_filled(y, op).abs(), cg)
        for i, (s, f) in enumerate(zip(chunk, files, strict=True)):
            done[s] = {k: v[i].contiguous() for k, v in zip(NAMES, images, strict=True)}
            save_part(parts, settings, f, done[s])
    vols = {k: torch.stack([done[s][k] for s in range(n)]) for k in NAMES}
    with all_or_none():
        written = _write_outputs(out, vols, vol.target, settings)
    shutil.rmtree(parts, ignore_errors=True)
    return written


def check_options(method: str, samples: int, steps: int | None, seed: int, noise_std: float | None,
                  options: dict[str, Any]) -> None:
    """Refuses, before anything is read or written, a method the prior cannot run, samples or steps
    below 1, a non-integer seed, a negative or non-finite noise_std, a warm start other than
    'zero_filled' or 'cg', and one without t_start or a t_start without one (its range is checked
    against the prior's schedule once that is loaded)."""
    if method not in PRIOR_METHODS:
        raise ValueError(f"method must be one of {PRIOR_METHODS} with an unconditional prior, got {method!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer (None: the method's default), got {steps!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if noise_std is not None and (isinstance(noise_std, bool) or not isinstance(noise_std, numbers.Real)
                                  or not math.isfinite(noise_std) or noise_std < 0):
        raise ValueError(f"noise_std must be finite and >= 0, got {noise_std!r}")
    warm, t_start = options.get("warm_start"), options.get("t_start")
    if warm is not None and (not isinstance(warm, str) or warm not in WARM_STARTS):
        raise ValueError(f"a file's warm_start must be one of {WARM_STARTS}, got {warm!r}")
    if (warm is None) != (t_start is None):
        raise ValueError("warm_start and t_start go together: the warm start is noised to timestep t_start "
                         f"(got warm_start {warm!r}, t_start {t_start!r})")


def check_volume(vol: Any, path: str | os.PathLike, method: str) -> None:
    """Refuses a file the run would fail on midway: k-space that is non-finite, too large for float32
    or all zero, single-coil data for pc-rss, one slice for tv3d, and a target (the figure's
    reference) of the wrong shape or with NaN or Inf."""
    k = vol.kspace
    check_values(k, f"the k-space of {path}")
    if not bool((k != 0).any()):
        raise ValueError(f"{path}: the k-space is all zeros")
    if not vol.multicoil and method == "pc-rss":
        raise ValueError("pc-rss needs multi-coil data")
    if method == "tv3d" and k.shape[0] < 2:
        raise ValueError(f"tv3d (TV along the slices) needs >= 2 slices, {path} has {k.shape[0]}; use dds")
    t = vol.target
    if t is None:
        return
    if t.dim() != 3 or t.shape[0] != k.shape[0]:
        raise ValueError(f"{path}: the target must be (slices, h, w) with {k.shape[0]} slices, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{path}: the target image (reconstruction_rss/_esc) contains NaN or Inf")


def memory_bytes(config: Any, samples: int, slices: int, coils: int, size: tuple[int, ...], method: str) -> int:
    """The memory of reconstructing `slices` slices at once: the UNet pass (an upper bound, see
    _memory.unet_bytes) on every sample's image (pc-rss: every coil's; DPS counted twice, as it keeps
    the activations for its gradient), and per sample the repeated k-space and coil maps with three
    coil-sized temporaries of the operator (5 coil images per slice) and ten complex images (sample,
    noise, Tweedie estimate, model output, CG vectors, result)."""
    from mridpm._memory import unet_bytes

    images = slices * (coils if method == "pc-rss" else 1)
    pixels = math.prod(int(n) for n in size)
    unet = unet_bytes(config, samples * images, size) * (2 if method == "dps" else 1)
    return unet + samples * 8 * pixels * (5 * slices * coils + 10 * images)


def check_memory(prior: Any, samples: int, slices: int, coils: int, size: tuple[int, ...], method: str) -> None:
    """Refuses (with the estimate) a --samples whose reconstruction needs more than the free memory."""
    from mridpm._memory import require

    device = next(prior.model.parameters()).device
    require(memory_bytes(prior.model.config, samples, slices, coils, size, method),
            f"reconstructing with --samples {samples}", device)


def check_parts(parts: Path, settings: dict[str, Any]) -> None:
    """Refuses an out.parts that is no directory, holds slices without settings, has a corrupt
    settings.json or one of another run (its slices would be mixed into this one)."""
    if not parts.exists() and not parts.is_symlink():
        return
    if not parts.is_dir():
        raise ValueError(f"{parts}, where finished slices are kept, is not a directory; remove it")
    meta = parts / "settings.json"
    if not meta.is_file():
        if any(parts.glob("slice-*")):
            raise ValueError(f"{parts} holds slices but no settings.json to match them to this run; delete {parts}")
        return
    try:
        saved = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{meta} is corrupt ({err}); delete the directory {parts} to compute its slices "
                         "again") from None
    if saved != settings:
        raise ValueError(f"{parts} holds slices of a run with other settings; delete it or repeat those settings")


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


def check_size(prior: Any, size: tuple[int, ...]) -> None:
    """Warns when the images differ from the prior's training size (any size runs: the prior sees
    them zero-padded to the sides its UNet takes, recon_padding)."""
    if list(size) != list(prior.info["image_size"]):
        warnings.warn(f"the prior was trained on {prior.info['image_size']} images, not {list(size)}: train one "
                      "on your data (mridpm train) for a faithful prior", stacklevel=3)


def _write_outputs(out: Path, vols: dict[str, torch.Tensor], target: torch.Tensor | None,
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
