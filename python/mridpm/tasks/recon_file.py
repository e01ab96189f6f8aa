"""`mridpm reconstruct`: a fastMRI file slice by slice with a diffusion prior, resumable (finished
slices are kept until the end), written as HDF5, NIfTI and a PNG of the middle slice; every input
and option is checked before the first write, and the outputs appear together or not at all."""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from mridpm.data.fastmri import read_maps
from mridpm.mri.masks import acs_square, check_line_options, check_mask_kind, file_mask
from mridpm.tasks.recon_padding import padded_size, size_multiple
from mridpm.tasks.recon_parts import output_paths
from mridpm.tasks.reconstruction import METHODS, check_schedule_options, check_values

PRIOR_METHODS = tuple(m for m in METHODS if m != "kspace")  # what an unconditional 2D prior runs
WARM_STARTS = ("zero_filled", "cg")
# loaders taking keyword options, not a config= merged over defaults: what a JSON object can give them
KEYWORD_FORMATS = {"monai": ("network", "scheduler", "weights", "p99", "image_size", "latent", "autoencoder",
                             "autoencoder_weights", "scale_factor"), "diffusers": ("scheduler", "p99", "variant")}


def reconstruct_file(path: str | os.PathLike, out: str | os.PathLike, *, method: str = "dds",
                     accel: float | None = None, center: float | None = None, mask_kind: str = "lines",
                     samples: int = 4, steps: int | None = None, seed: int = 0, prior: str = "brain64c",
                     noise_std: float | None = None, maps: str | os.PathLike | torch.Tensor | None = None,
                     progress: bool = True, overwrite: bool = False, batch: int = 1, prior_format: str | None = None,
                     prior_config: str | None = None, device: str | torch.device | None = None,
                     **options: Any) -> dict[str, Path]:
    """Reconstructs every slice of a fastMRI file and writes out (HDF5: reconstruction, uncertainty,
    zero_filled, cg_sense magnitudes), NIfTI volumes of the reconstruction and uncertainty, and a PNG of
    the middle slice, all four or none; existing outputs are replaced only with overwrite, an input
    never. Any image size (the prior runs zero-padded, recon_padding). The mask (masks.file_mask): made
    for accel as mask_kind 'lines', 'poisson' or 'random' (2D), else the file's own (lines or 2D),
    else the k-space locations that hold data; unmeasured k-space is never taken as measured zeros.
    Coil maps: a (slices, coils, H, W) tensor or an HDF5 file's 'maps' dataset, else ESPIRiT from the
    fully sampled center. Finished slices are kept in out.parts/ until the end, so an interrupted run
    resumes where it stopped. noise_std None estimates the noise per slice from the measured samples
    of the outermost k-space rows (0 makes the result reproduce y). batch slices share one sampler run
    (recon_slices.compute_chunk), on device (default: recon_slices.pick_device); prior_format loads
    prior through load_prior(format=), with prior_config (a JSON object or .json file, read_prior_config)
    as the format's options. options go to reconstruct() (warm_start, t_start, the method's own) and
    reconstruct_prior() (speed: a mridpm.nets.speed.Speed, how the network runs)."""
    from tqdm.auto import tqdm

    from mridpm.data.paths import check_outputs
    from mridpm.tasks.recon_slices import assemble, compute_chunk, file_chunks, pick_device

    paths = output_paths(out)
    check_options(method, samples, steps, seed, noise_std, options)
    check_batch(batch)
    check_line_options(accel, center)
    check_mask_kind(mask_kind, accel)
    config = read_prior_config(prior_config, prior_format)
    inputs = [path, *([maps] if isinstance(maps, (str, os.PathLike)) else [])]
    check_outputs(paths.values(), inputs, overwrite=overwrite)
    dev = pick_device(device)
    p = open_prior(prior, prior_format, dev, config)
    settings = file_settings(path, method=method, accel=accel, center=center, mask_kind=mask_kind, samples=samples,
                             steps=steps, seed=seed, prior=prior, noise_std=noise_std, maps=maps, batch=batch,
                             prior_format=prior_format, prior_config=config, options=options)
    job = open_file(path, paths["hdf5"], p, settings, options, maps=maps, batch=batch)
    chunks = file_chunks(job.slices, method, batch)
    for chunk in tqdm(chunks, desc="slices", disable=not progress or len(chunks) == 1):
        compute_chunk(job, chunk, p, dev)
    return assemble(job, p, dev, batch)


def open_prior(prior: str | os.PathLike, prior_format: str | None, device: torch.device,
               config: dict[str, Any] | None = None) -> Any:
    """load_prior(prior) on device, through format= only when a checkpoint format is named, with the
    format's options `config` (read_prior_config's object) when given."""
    from mridpm.nets.priors import load_prior

    if prior_format is None:
        return load_prior(prior, device)
    if config is None:
        return load_prior(prior, device, format=prior_format)
    if prior_format in KEYWORD_FORMATS:  # loaders of keyword options: the object's keys are those
        return load_prior(prior, device, format=prior_format, **config)
    return load_prior(prior, device, format=prior_format, config=config)  # merged over the format's defaults


def read_prior_config(prior_config: str | os.PathLike | None, prior_format: str | None) -> dict[str, Any] | None:
    """The options of prior_format's loader in prior_config, a JSON object or a file holding one (None:
    none given); refused without a format, as bad JSON, a missing file, or (monai, diffusers: loaders
    of keyword options) a key that is none of KEYWORD_FORMATS'. Other formats' unknown keys are refused
    when the prior is loaded, against the format's defaults."""
    from mridpm.train.checkpoint import read_json_object

    if prior_config is None:
        return None
    if prior_format is None:
        raise ValueError("--prior-config gives the options of a checkpoint format: use it with --prior-format")
    text = os.fspath(prior_config).strip()
    if text.startswith("{"):
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"--prior-config is not a valid JSON object: {err}") from None
    elif not Path(text).expanduser().is_file():
        raise ValueError(f"--prior-config {text!r} is neither a JSON object nor an existing .json file")
    else:
        config = read_json_object(Path(text).expanduser(), "--prior-config")
    if not isinstance(config, dict):
        raise ValueError(f"--prior-config must be a JSON object, got {type(config).__name__}")
    allowed = KEYWORD_FORMATS.get(prior_format)
    unknown = sorted(set(config) - set(allowed)) if allowed is not None else []
    if unknown:
        raise ValueError(f"unknown {prior_format} options {unknown} in --prior-config; known: {list(allowed)}")
    return config


def check_batch(batch: int) -> None:
    """Refuses a --batch that is not a positive integer."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")


def file_settings(path: str | os.PathLike, *, method: str, accel: float | None, center: float | None,
                  mask_kind: str, samples: int, steps: int | None, seed: int, prior: str | os.PathLike,
                  noise_std: float | None, maps: object, batch: int, prior_format: str | None,
                  options: dict[str, Any], prior_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What decides a file's result: kept in out.parts/settings.json and as the output's HDF5
    attributes, so finished slices or files of other settings are never mixed in (batch, prior_format
    and prior_config, read_prior_config's object as sorted JSON so that an edited file counts, only
    when they differ from the default, so the single-file form's stay as they were; of a speed only its
    autocast, the one flag that changes the numbers)."""
    return {"input": str(Path(path).resolve()), "method": method, "accel": accel, "center": center,
            "mask_kind": mask_kind, "samples": samples, "steps": steps, "seed": seed, "prior": str(prior),
            "noise_std": noise_std, "maps": None if maps is None else "given",
            **({"batch": batch} if batch > 1 else {}), **({"prior_format": prior_format} if prior_format else {}),
            **({"prior_config": json.dumps(prior_config, sort_keys=True)} if prior_config is not None else {}),
            **{k: str(v) for k, v in options.items() if k != "speed"}, **_precision(options.get("speed"))}


def _precision(speed: Any) -> dict[str, str]:
    """The part of a Speed that changes the result: autocast (the other flags give the same numbers)."""
    return {"autocast": speed.autocast} if speed is not None and speed.autocast is not None else {}


def open_file(path: str | os.PathLike, out: Path, prior: Any, settings: dict[str, Any], options: dict[str, Any], *,
              maps: str | os.PathLike | torch.Tensor | None = None, batch: int = 1) -> Any:
    """The file read and checked for a run with settings and reconstruct() options (volume, mask,
    size, schedule options, memory of batch slices, calibration, out.parts), as a
    recon_slices.FileJob; nothing is written."""
    from mridpm.data.fastmri import read_fastmri
    from mridpm.mri.espirit import check_calibration
    from mridpm.tasks.recon_slices import FileJob

    method, seed = settings["method"], settings["seed"]
    vol = read_fastmri(path)
    check_volume(vol, path, method)
    kspace = vol.kspace if vol.multicoil else vol.kspace[:, None]
    mask = file_mask(kspace, vol.mask, settings["accel"], settings["center"], seed, settings["mask_kind"])
    size = tuple(kspace.shape[-2:])
    check_size(prior, size)
    check_schedule_options(prior.schedule, settings["steps"], options.get("warm_start"), options.get("t_start"))
    n = kspace.shape[0]
    check_memory(prior, settings["samples"], n if method == "tv3d" else min(batch, n), kspace.shape[1],
                 padded_size(size, size_multiple(prior)), method)
    acs = acs_square(mask, size)
    given = read_maps(maps, kspace, vol.multicoil)
    if vol.multicoil and given is None:
        check_calibration(acs)
    parts = out.with_name(out.name + ".parts")
    check_parts(parts, settings)  # the last check: nothing is written before here
    return FileJob(Path(path), out, kspace, mask, acs, given, vol.multicoil, vol.target, settings, options)


def check_options(method: str, samples: int, steps: int | None, seed: int, noise_std: float | None,
                  options: dict[str, Any]) -> None:
    """Refuses, before anything is read or written, a method the prior cannot run, samples or steps
    below 1, a non-integer seed, a negative or non-finite noise_std, a warm start other than
    'zero_filled' or 'cg', and one without t_start or a t_start without one (its range is checked
    against the prior's schedule once that is loaded), and a speed (options["speed"]) that is no
    mridpm.nets.speed.Speed or that the method cannot use."""
    from mridpm.nets.speed import check_speed

    check_speed(options.get("speed"), method == "dps", method)
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
    noise, Tweedie estimate, model output, CG vectors, result). An external network (config None) has no
    activation estimate: only its operator's tensors are counted."""
    from mridpm._memory import unet_bytes

    images = slices * (coils if method == "pc-rss" else 1)
    pixels = math.prod(int(n) for n in size)
    unet = 0 if config is None else unet_bytes(config, samples * images, size) * (2 if method == "dps" else 1)
    return unet + samples * 8 * pixels * (5 * slices * coils + 10 * images)


def check_memory(prior: Any, samples: int, slices: int, coils: int, size: tuple[int, ...], method: str) -> None:
    """Refuses (with the estimate) a --samples whose reconstruction needs more than the free memory."""
    from mridpm._memory import require
    from mridpm.nets.unet import UNet

    device = next(prior.model.parameters()).device
    config = prior.model.config if isinstance(prior.model, UNet) else None  # external networks: not estimated
    require(memory_bytes(config, samples, slices, coils, size, method),
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


def check_size(prior: Any, size: tuple[int, ...]) -> None:
    """Warns when the images differ from the prior's training size (any size runs: the prior sees
    them zero-padded to the sides its UNet takes, recon_padding)."""
    if list(size) != list(prior.info["image_size"]):
        warnings.warn(f"the prior was trained on {prior.info['image_size']} images, not {list(size)}: train one "
                      "on your data (mridpm train) for a faithful prior", stacklevel=3)
