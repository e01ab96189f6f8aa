"""The slices of a file's reconstruction, shared by `mridpm reconstruct FILE` and by whole datasets
(recon_dataset): a chunk of slices computed (or its finished parts loaded) and kept as parts, and a
file assembled from its parts into the outputs once every slice is finished."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mridpm.mri.classical import cg_sense, zero_filled
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import estimate_noise_std
from mridpm.tasks.recon_parts import NAMES, load_part, save_part, write_outputs
from mridpm.tasks.recon_scale import image_scale
from mridpm.tasks.reconstruction import reconstruct_prior  # looked up at each call: tests patch it here


@dataclass
class FileJob:
    """One fastMRI file read and checked for a run (recon_file.open_file): k-space (slices, coils, H,
    W), its mask, the calibration size, given coil maps, the target, the run's settings and the
    reconstruct() options; done holds the slices finished so far in this process."""

    path: Path
    out: Path
    kspace: torch.Tensor
    mask: torch.Tensor
    acs: Any
    maps: torch.Tensor | None
    multicoil: bool
    target: torch.Tensor | None
    settings: dict[str, Any]
    options: dict[str, Any]
    done: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    seconds: float = 0.0  # spent computing slices in this process

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    @property
    def slices(self) -> int:
        return int(self.kspace.shape[0])


def file_chunks(slices: int, method: str, batch: int) -> list[list[int]]:
    """The slices of a file in the groups that run through the sampler together: consecutive runs of
    batch (tv3d: the whole volume, as its TV couples the slices). The groups, and so every result,
    depend only on the file, the method and batch, never on how many processes share the work."""
    if method == "tv3d":
        return [list(range(slices))]
    return [list(range(s, min(s + batch, slices))) for s in range(0, slices, batch)]


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device the sampler runs on: the one asked for, else the GPU of this process's LOCAL_RANK
    (torchrun) when CUDA is available, else the CPU."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def part_file(job: FileJob, s: int) -> Path:
    """Where slice s of the job is kept once finished."""
    return job.parts / f"slice-{s:04d}.safetensors"


def _prepare(job: FileJob, lo: int, hi: int) -> dict[str, Any]:
    """Slices lo..hi-1 as one problem on the CPU: measured k-space, coil maps (given or ESPIRiT),
    mask, noise std (given or estimated), the CG-SENSE baseline and the prior's image scale."""
    m = job.mask[lo:hi] if job.mask.shape[0] > 1 else job.mask  # per-slice 2D masks
    y = job.kspace[lo:hi] * m
    smaps = None
    if job.multicoil:
        smaps = job.maps[lo:hi] if job.maps is not None else _center_maps(y, job.acs)
        op: Sense | SingleCoil = Sense(smaps, m)
    else:
        op, y = SingleCoil(m[:, 0]), y[:, 0]
    noise_std = job.settings["noise_std"]
    sigma = estimate_noise_std(y, op.mask.mask) if noise_std is None else noise_std  # type: ignore[union-attr]
    cg = cg_sense(y, op, iters=10).abs()  # the baseline, and (estimate_scale) the prior's scale
    return {"y": y, "maps": smaps, "mask": m, "sigma": sigma, "cg": cg, "scale": image_scale(cg),
            "zero_filled": zero_filled(y, op).abs()}


def _center_maps(y: torch.Tensor, acs: Any) -> torch.Tensor:
    from mridpm.mri.espirit import center_maps

    return center_maps(y, acs)


def _operator(multicoil: bool, maps: torch.Tensor | None, mask: torch.Tensor, device: torch.device
              ) -> Sense | SingleCoil:
    return Sense(maps.to(device), mask.to(device)) if multicoil else SingleCoil(mask[:, 0].to(device))  # type: ignore[union-attr]


def compute_chunk(job: FileJob, chunk: list[int], prior: Any, device: torch.device) -> bool:
    """Puts the slices of chunk into job.done, loaded from their parts when all are finished, else
    computed and kept as parts (those already kept are not rewritten); True when computed. One slice
    (or tv3d's volume) runs exactly as it always has, seeded seed + its first slice. A batch of slices
    runs as one sampler call: each slice's k-space divided by its own image scale, one generator
    (seed + the batch's first slice) and the mean of their scaled noise levels, as the sampler takes
    one noise level and draws one stream for the batch; so its noise differs from the same slices run
    one by one (the baselines do not) while staying the same for any number of processes."""
    size = tuple(job.kspace.shape[-2:])
    found = {s: load_part(part_file(job, s), size) for s in chunk}
    if all(d is not None for d in found.values()):
        job.done.update(found)  # type: ignore[arg-type]
        return False
    tic = time.perf_counter()
    groups = [chunk] if job.settings["method"] == "tv3d" else [[s] for s in chunk]
    preps = [_prepare(job, g[0], g[-1] + 1) for g in groups]
    run = {k: job.settings[k] for k in ("method", "samples", "steps")}
    if len(preps) == 1:
        p = preps[0]
        y, maps, m, sigma, scale, scales = p["y"], p["maps"], p["mask"], p["sigma"], p["scale"], None
    else:
        scales = torch.tensor([p["scale"] for p in preps], dtype=torch.float32)
        y = torch.cat([p["y"] / p["scale"] for p in preps])
        maps = torch.cat([p["maps"] for p in preps]) if job.multicoil else None
        m = job.mask[chunk[0] : chunk[-1] + 1] if job.mask.shape[0] > 1 else job.mask
        sigma, scale = sum(p["sigma"] / p["scale"] for p in preps) / len(preps), 1.0
    op = _operator(job.multicoil, maps, m, device)
    r = reconstruct_prior(y.to(device), op, prior, noise_std=sigma, scale=scale,
                             generator=Generator(job.settings["seed"] + chunk[0]), **run, **job.options)
    mean, std = r.mean.abs().cpu(), r.std.cpu()
    if scales is not None:
        mean, std = mean * scales[:, None, None], std * scales[:, None, None]
    images = dict(zip(NAMES, (mean, std, torch.cat([p["zero_filled"] for p in preps]),
                                 torch.cat([p["cg"] for p in preps])), strict=True))
    for i, s in enumerate(chunk):
        job.done[s] = {k: v[i].contiguous() for k, v in images.items()}
        if found[s] is None:
            save_part(job.parts, job.settings, part_file(job, s), job.done[s])
        else:
            job.done[s] = found[s]  # type: ignore[assignment]
    job.seconds += time.perf_counter() - tic
    return True


def finished(job: FileJob) -> bool:
    """Whether every slice of the job has a part file (written by any process)."""
    return all(part_file(job, s).is_file() for s in range(job.slices))


def assemble(job: FileJob, prior: Any, device: torch.device, batch: int) -> dict[str, Path]:
    """Writes the job's outputs from its finished slices (loaded from the parts, any missing or
    damaged one computed again), all together, then removes out.parts; {kind: path}."""
    from mridpm.data._atomic import all_or_none

    for chunk in file_chunks(job.slices, job.settings["method"], batch):
        if not all(s in job.done for s in chunk):
            compute_chunk(job, chunk, prior, device)
    vols = {k: torch.stack([job.done[s][k] for s in range(job.slices)]) for k in NAMES}
    with all_or_none():
        written = write_outputs(job.out, vols, job.target, job.settings)
    shutil.rmtree(job.parts, ignore_errors=True)
    return written
