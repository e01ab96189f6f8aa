"""`mridpm reconstruct DATA/ --out OUT/`: every fastMRI file of a dataset, in one process or split
over the processes of torchrun (any number of nodes), resumable after any process is killed.

Splitting: every process builds the same global list of work units (each file's slices grouped by
recon_slices.file_chunks, files in input order) and takes a contiguous block of it, balanced by slice
count. A unit's result depends only on its file, its slices and the settings (seed + first slice),
so any number of processes gives the same outputs as one. Finished slices are kept as per-slice
parts (OUT/<stem>.h5.parts/), written atomically; a rerun skips them, so each process resumes where
it stopped. Assembly: after its last unit of a file, a process that finds every part of that file
present claims it by creating OUT/<stem>.h5.parts/assemble.claim exclusively (O_CREAT | O_EXCL) and
writes the file's outputs; the last process to finish a file always finds all its parts, and the
exclusive create lets exactly one of several such processes write. Claims left by a killed run are
removed by rank 0 before a barrier at the start, while no process is working yet."""

from __future__ import annotations

import glob
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from mridpm.tasks import recon_file as rf
from mridpm.tasks import recon_slices as rs
from mridpm.tasks.recon_parts import output_paths

CLAIM = "assemble.claim"
SUFFIXES = (".h5", ".hdf5")
_FILE_KEYS = ("method", "accel", "center", "mask_kind", "samples", "steps", "seed", "noise_std")  # not options
SUMMARY = ({"file": "file", "slices": "slices", "computed": "computed", "seconds": "seconds", "psnr": "PSNR (dB)",
            "ssim": "SSIM", "nmse": "NMSE"},
           {"seconds": "{:.1f}", "psnr": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.4f}"})


def expand_inputs(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """The input files: a directory gives its *.h5 and *.hdf5 files sorted, a pattern its sorted
    matches, a file itself; an empty directory, a pattern matching nothing, a missing path and a file
    named twice are refused."""
    files: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
            if not found:
                raise ValueError(f"the directory {p} holds no .h5 files")
        elif p.exists():
            found = [p]
        elif glob.has_magic(str(spec)):
            found = sorted(Path(f) for f in glob.glob(str(spec)) if Path(f).is_file())
            if not found:
                raise ValueError(f"no files match {spec}")
        else:
            raise ValueError(f"no such file or directory: {p}")
        files += found
    seen: dict[str, Path] = {}
    for f in files:
        if os.path.realpath(f) in seen:
            raise ValueError(f"the input {f} is named twice")
        seen[os.path.realpath(f)] = f
    return files


def output_files(files: Sequence[Path], out_dir: str | os.PathLike) -> list[Path]:
    """OUT/<stem>.h5 of every input; refuses an --out that is an existing file or ends in .h5 (several
    inputs write a directory) and two inputs of one stem."""
    d = Path(out_dir)
    if d.exists() and not d.is_dir():
        raise ValueError(f"--out {d} is an existing file; name a directory to reconstruct several files into")
    if d.suffix.lower() in SUFFIXES:
        raise ValueError(f"--out {d} names an HDF5 file; several inputs are written into a directory")
    outs: dict[str, Path] = {}
    for f in files:
        name = f.name[: -len(f.suffix)] + ".h5" if f.suffix.lower() in SUFFIXES else f.name + ".h5"
        if name in outs:
            raise ValueError(f"{outs[name]} and {f} would both be written to {d / name}; rename one")
        outs[name] = f
    return [d / n for n in outs]


def slice_count(path: Path) -> int:
    """The number of slices of a fastMRI file, read from its header only (one-line errors for a file
    that is no HDF5 file or holds no k-space)."""
    from mridpm.data.fastmri import _h5py, _reading, h5_dataset

    h5py = _h5py()

    def count(f: Any) -> int:
        ks = h5_dataset(h5py, f, "kspace", path)
        if ks is None or ks.ndim not in (3, 4):
            raise ValueError(f"{path} has no (slices, [coils,] H, W) 'kspace' dataset; not a fastMRI file")
        return int(ks.shape[0])

    return _reading(h5py, path, count)


def is_finished(out: Path, settings: dict[str, Any]) -> bool:
    """Whether out and its companions exist and out was written by a run of these settings."""
    import h5py

    if not all(p.is_file() for p in output_paths(out).values()):
        return False
    try:
        with h5py.File(out, "r") as f:
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    except (OSError, KeyError, RuntimeError):
        return False
    return attrs == {k: "" if v is None else v for k, v in settings.items()}


def plan(counts: Sequence[int], method: str, batch: int, world: int) -> list[list[tuple[int, list[int]]]]:
    """Each rank's work units (file index, slices): the global list cut into world contiguous blocks
    balanced by slice count (a unit goes to the rank its middle slice falls in)."""
    units = [(i, c) for i, n in enumerate(counts) for c in rs.file_chunks(n, method, batch)]
    total = max(sum(len(c) for _, c in units), 1)
    ranks: list[list[tuple[int, list[int]]]] = [[] for _ in range(world)]
    start = 0
    for i, c in units:
        ranks[min(world - 1, (2 * start + len(c)) * world // (2 * total))].append((i, c))
        start += len(c)
    return ranks


def reconstruct_dataset(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *, batch: int = 1,
                        prior: str = "brain64c", prior_format: str | None = None, prior_config: str | None = None,
                        progress: bool = True, overwrite: bool = False, device: str | torch.device | None = None,
                        single_out: str | os.PathLike | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Reconstructs every input file (expand_inputs) into out/<stem>.h5 (or single_out, for one file
    run under torchrun) as recon_file.reconstruct_file does, split over torchrun's processes (module
    docstring); outputs a run of the same settings finished are kept, others replaced only with
    overwrite. prior_config: the format's options (recon_file.read_prior_config). kwargs:
    reconstruct_file's (method, accel, samples, seed, ...). The summary rows (file, slices, computed in
    this run, seconds, PSNR/SSIM/NMSE against the file's target) on rank 0, [] on the others."""
    from mridpm.data.paths import check_outputs
    from mridpm.train.trainer import init_distributed

    options = {k: kwargs.pop(k) for k in list(kwargs) if k not in _FILE_KEYS}
    args = {"method": "dds", "accel": None, "center": None, "mask_kind": "lines", "samples": 4, "steps": None,
            "seed": 0, "noise_std": None, **kwargs}
    rf.check_options(args["method"], args["samples"], args["steps"], args["seed"], args["noise_std"], options)
    rf.check_batch(batch)
    rf.check_line_options(args["accel"], args["center"])
    rf.check_mask_kind(args["mask_kind"], args["accel"])
    config = rf.read_prior_config(prior_config, prior_format)
    files = expand_inputs(inputs)
    outs = [Path(single_out)] if single_out is not None and len(files) == 1 else output_files(files, out)
    settings = [rf.file_settings(f, **args, prior=prior, maps=None, batch=batch, prior_format=prior_format,
                                 options=options, prior_config=config) for f in files]
    counts = [slice_count(f) for f in files]
    todo = [not is_finished(o, s) for o, s in zip(outs, settings, strict=True)]
    check_outputs([p for o, t in zip(outs, todo, strict=True) if t for p in output_paths(o).values()], files,
                  overwrite=overwrite)
    for o, s in zip(outs, settings, strict=True):
        rf.check_parts(o.with_name(o.name + ".parts"), s)
    dev = rs.pick_device(device)
    p = rf.open_prior(prior, prior_format, dev, config)  # its errors too come before anything is touched
    rank, world = init_distributed()
    group = _group(world)
    if rank == 0:  # what a killed run left: nobody is assembling before the barrier below
        for o, t in zip(outs, todo, strict=True):
            parts = o.with_name(o.name + ".parts")
            if t:
                (parts / CLAIM).unlink(missing_ok=True)
            elif parts.is_dir():  # killed after writing the outputs, before removing the parts
                shutil.rmtree(parts, ignore_errors=True)
    _barrier(group)
    mine = plan([n if t else 0 for n, t in zip(counts, todo, strict=True)], args["method"], batch, world)[rank]
    stats = _run_units(mine, files, outs, settings, options, p, dev, batch, rank, progress)
    print(f"mridpm reconstruct: rank {rank} computed {sum(s[0] for s in stats.values())} slices, reused "
          f"{sum(s[1] for s in stats.values())}", file=sys.stderr, flush=True)
    gathered = _gather(stats, group, rank, world)
    if rank != 0:
        return []
    return [_row(f, o, n, gathered.get(i)) for i, (f, o, n) in enumerate(zip(files, outs, counts, strict=True))]


def _run_units(mine: list[tuple[int, list[int]]], files: list[Path], outs: list[Path], settings: list[dict],
               options: dict[str, Any], prior: Any, device: torch.device, batch: int, rank: int,
               progress: bool) -> dict[int, list[float]]:
    """Computes this rank's units and assembles each file it finishes last; {file: [computed slices,
    reused slices, seconds]}."""
    from tqdm.auto import tqdm

    stats: dict[int, list[float]] = {}
    last = {i: k for k, (i, _) in enumerate(mine)}
    job = None
    bar = tqdm(total=sum(len(c) for _, c in mine), desc=f"rank {rank}",
               position=int(os.environ.get("LOCAL_RANK", rank)), disable=not progress,
               unit="slice")
    for k, (i, chunk) in enumerate(mine):
        if job is None or job.path != files[i]:
            job = rf.open_file(files[i], outs[i], prior, settings[i], options, batch=batch)
        computed = rs.compute_chunk(job, chunk, prior, device)
        st = stats.setdefault(i, [0, 0, 0.0])
        st[0 if computed else 1] += len(chunk)
        bar.update(len(chunk))
        if last[i] == k:
            st[2] = job.seconds
            if rs.finished(job) and _claim(job.parts):
                rs.assemble(job, prior, device, batch)
    bar.close()
    return stats


def _claim(parts: Path) -> bool:
    """Whether this process won the right to assemble the file of parts (an exclusive create)."""
    try:
        os.close(os.open(parts / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def _group(world: int) -> Any:
    """A gloo group without the default 30-minute timeout for the barrier and the final gather (ranks
    may finish hours apart on a large dataset); None in one process."""
    if world == 1:
        return None
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=timedelta(days=7))


def _barrier(group: Any) -> None:
    if group is not None:
        import torch.distributed as dist

        dist.barrier(group=group)


def _gather(stats: dict[int, list[float]], group: Any, rank: int, world: int) -> dict[int, list[float]]:
    """Every rank's stats summed per file on rank 0."""
    if group is None:
        return stats
    import torch.distributed as dist

    everyone: list[Any] = [None] * world if rank == 0 else []
    dist.gather_object(stats, everyone if rank == 0 else None, dst=0, group=group)
    total: dict[int, list[float]] = {}
    for st in everyone:
        for i, v in st.items():
            total[i] = [a + b for a, b in zip(total.get(i, [0, 0, 0.0]), v, strict=True)]
    return total


def _row(path: Path, out: Path, slices: int, stats: list[float] | None) -> dict[str, Any]:
    """The summary line of a file: slices computed in this run and their seconds (summed over the
    ranks), and metrics when the file has a target of the reconstruction's slices."""
    import h5py

    from mridpm.data.fastmri import _h5py, _reading, h5_dataset
    from mridpm.mri.metrics import nmse, psnr, ssim
    from mridpm.tasks.recon_figures import center_crop

    computed, _, seconds = stats if stats is not None else (0, 0, 0.0)
    row: dict[str, Any] = {"file": path.name, "slices": slices, "computed": int(computed), "seconds": seconds}
    with h5py.File(out, "r") as f:
        recon = torch.from_numpy(f["reconstruction"][()])

    def target(f: Any) -> torch.Tensor | None:
        for name in ("reconstruction_rss", "reconstruction_esc"):
            t = h5_dataset(_h5py(), f, name, path)
            if t is not None:
                return torch.from_numpy(t[()]).float()
        return None

    t = _reading(_h5py(), path, target)
    if t is not None and t.dim() == 3 and t.shape[0] == recon.shape[0] and t.shape[1] <= recon.shape[1] \
            and t.shape[2] <= recon.shape[2]:
        pred = center_crop(recon, tuple(t.shape[-2:]))
        row |= {"psnr": psnr(t, pred), "ssim": ssim(t, pred), "nmse": nmse(t, pred)}
    return row
