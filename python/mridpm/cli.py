"""The mridpm command. Every option is checked as it is parsed and every output path before any
work starts (exit 2 and one line when something is wrong); a command writes all its outputs at the
end, together, or none of them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mridpm import _args as a

if TYPE_CHECKING:
    from mridpm.nets.speed import Speed

DEFAULT_METHODS = "projection,langevin,pc,pc-rss,dps,dds"


def _parser() -> argparse.ArgumentParser:
    parser = a.Parser(prog="mridpm", description="Diffusion probabilistic models for MRI.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, built backends and visible devices")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")
    p = sub.add_parser("simulate", help="write simulated multi-coil brain or head volumes as fastMRI HDF5 files")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--source", choices=["brain", "heads"], default="brain",
                   help="brain: skull-stripped MNI152 slices; heads: held-out synthetic head slices (skull, scalp)")
    p.add_argument("--volumes", type=a.positive, default=4)
    p.add_argument("--contrast", choices=["T1", "T2", "PD"], default="T1")
    p.add_argument("--coils", type=a.positive, default=8)
    p.add_argument("--slices", type=a.positive, default=8, help="slices per volume (axial for brain)")
    p.add_argument("--size", type=a.integer(8), nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--noise", type=a.real(0), default=0.002, help="k-space noise std, relative to its maximum")
    _seed_and_overwrite(p)
    p = sub.add_parser("train", help="train a diffusion model from a TOML or YAML configuration")
    p.add_argument("config", help="the run configuration ([model], [data], [train])")
    p.add_argument("--steps", type=a.positive, help="override [train] steps")
    p.add_argument("--out-dir", help="override [train] out_dir")
    p.add_argument("--init", help="start a new run from this prior's weights and step (a bundled prior, a run "
                                  "directory or an exported prior's .json, with the same [model]): continue or "
                                  "fine-tune it")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume-from", help="resume from this checkpoint of the run (e.g. step-00000400) "
                                         "instead of the newest")
    p = sub.add_parser("sample", help="sample images from a bundled prior into a PNG grid")
    p.add_argument("--prior", default="brain64")
    p.add_argument("--n", type=a.positive, default=16, help="number of images")
    p.add_argument("--steps", type=a.positive, default=50, help="DDIM steps")
    p.add_argument("--out", required=True, help="PNG file")
    _seed_and_overwrite(p)
    p = sub.add_parser("reconstruct", help="reconstruct undersampled fastMRI k-space with a diffusion prior")
    p.add_argument("input", nargs="+", help="a fastMRI HDF5 file, or several: directories (their *.h5 files), "
                                            "glob patterns, files; split over the processes of torchrun")
    p.add_argument("--out", required=True, help="output HDF5 file for one input (NIfTI and PNG are written next to "
                                                "it), else a directory of <stem>.h5 files")
    p.add_argument("--batch", type=a.positive, default=1,
                   help="slices per sampler run (faster on a GPU; the noise differs from --batch 1)")
    p.add_argument("--method", default="dds",
                   choices=["projection", "langevin", "pc", "pc-rss", "dps", "dds", "tv3d"],
                   help="tv3d: the volume at once, DDS with TV along the slices")
    p.add_argument("--maps", help="HDF5 file with coil maps 'maps' (slices, coils, H, W) (default: ESPIRiT)")
    p.add_argument("--accel", type=a.real(1, open_lo=True),
                   help="undersample with a 1D random mask (default: the file's mask)")
    p.add_argument("--center", type=a.real(0, 1, open_lo=True),
                   help="center fraction (default 0.08 at 4x, 0.04 at 8x)")
    _mask_kind(p)
    p.add_argument("--samples", type=a.positive, default=4, help="posterior samples (mean and std)")
    p.add_argument("--steps", type=a.positive, help="sampler steps (default: the method's)")
    p.add_argument("--noise-std", type=a.real(0),
                   help="k-space noise std per real part (default: estimated from the outer k-space rows)")
    p.add_argument("--warm-start", choices=["zero_filled", "cg"],
                   help="start the reverse process at --t-start from this reconstruction, noised")
    p.add_argument("--t-start", type=a.integer(1), help="the timestep a warm start begins at (e.g. 400 of 1000)")
    p.add_argument("--prior", default="brain64c", help="a bundled prior or a training run directory")
    p.add_argument("--prior-format", help="--prior is a checkpoint in this repository's layout (load_prior format=)")
    p.add_argument("--prior-config", metavar="JSON_OR_FILE",
                   help="with --prior-format: the format's options (its architecture...): a JSON object or .json file")
    _speed_flags(p)
    _seed_and_overwrite(p)
    p = sub.add_parser("evaluate", help="every method against the baselines on held-out simulated slices")
    p.add_argument("--methods", help=f"comma-separated (default: {DEFAULT_METHODS}; with --kspace-cv: "
                                     "zero_filled,cg_sense,l1_wavelet,dds)")
    p.add_argument("--accels", type=_accels, default=(4.0, 8.0), help="comma-separated accelerations (> 1)")
    p.add_argument("--slices", type=a.positive, help="number of held-out slices (default: all)")
    p.add_argument("--samples", type=a.positive, default=1)
    p.add_argument("--prior", default="brain64c",
                   help="a bundled prior or a training run directory (a head prior is evaluated at full size on "
                        "held-out heads of each contrast and dipy's real T1 slice)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--kspace-cv", nargs="+", metavar="FILE",
                   help="instead: score the methods on these fastMRI files without a reference, by k-space "
                        "cross-validation (NMSE on held-back measured samples)")
    p.add_argument("--accel", type=a.real(1, open_lo=True), help="--kspace-cv: undersample the files first")
    p.add_argument("--center", type=a.real(0, 1, open_lo=True), help="--kspace-cv: center fraction with --accel")
    _mask_kind(p)
    p.add_argument("--fraction", type=a.real(0, 0.5, open_lo=True), default=0.1,
                   help="--kspace-cv: share of the measured samples held back")
    p.add_argument("--folds", type=a.positive, default=1, help="--kspace-cv: repeated splits, pooled")
    p.add_argument("--steps", type=a.positive, help="--kspace-cv: sampler steps of the prior methods")
    _seed_and_overwrite(p)
    p = sub.add_parser("demo", help="simulate, undersample 8x and reconstruct full-size head slices with the "
                                    "bundled prior")
    p.add_argument("--out", default="demo.png", help="PNG figure")
    p.add_argument("--slices", type=a.positive, default=2)
    p.add_argument("--samples", type=a.positive, default=4)
    _seed_and_overwrite(p)
    from mridpm.tasks.commands import add_parsers

    add_parsers(sub, _seed_and_overwrite)
    parser.commands = sub.choices  # type: ignore[attr-defined]
    return parser


def _seed_and_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=a.seed, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")


def _speed_flags(p: argparse.ArgumentParser) -> None:
    """How the network runs (mridpm.nets.speed.Speed); all off: eager float32."""
    g = p.add_argument_group("network speed (mridpm.nets.speed)")
    g.add_argument("--inference-mode", action="store_true", help="run the network under torch.inference_mode (not dps)")
    g.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs (same numbers)")
    g.add_argument("--autocast", choices=["bf16", "fp16"], help="run the network in bfloat16 or float16 autocast, "
                   "output in float32 (numbers change slightly; slow on CPUs without native bf16/fp16)")
    g.add_argument("--compile", action="store_true", help="torch.compile the network (minutes, at the first call)")
    g.add_argument("--cuda-graph", action="store_true", help="record the network as a CUDA graph per image shape "
                   "and replay it (GPU only: on a CPU it runs eagerly, with a warning; not dps)")


def speed_of(args: argparse.Namespace) -> Speed | None:
    """The Speed the flags of _speed_flags ask for, or None when none is on."""
    from mridpm.nets.speed import Speed

    speed = Speed(channels_last=args.channels_last, autocast=args.autocast, compile=args.compile,
                  cuda_graph=args.cuda_graph, inference_mode=args.inference_mode)
    return speed if speed.enabled else None


def _mask_kind(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mask-kind", choices=["lines", "poisson", "random"], default="lines",
                   help="with --accel: 1D random lines, or a 2D variable-density Poisson-disc or uniform random mask")


def _accels(text: str) -> tuple[float, ...]:
    return tuple(a.real(1, open_lo=True)(t) for t in text.split(","))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mridpm`; returns the exit status (2: bad input or options, 1: a CUDA failure or the
    GPU out of memory, 130: interrupted)."""
    parser = _parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # said by the subcommand, like every other error about its options
            parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")  # type: ignore[attr-defined]
    except SystemExit as stop:  # a bad option (2) or --help (0), already printed
        return int(stop.code or 0)
    try:
        return _run(args)
    except (ValueError, OSError, MemoryError) as err:  # bad input: a message, not a traceback
        print(f"mridpm {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a kernel's CUDA failure or the GPU out of memory: one line; else a bug's traceback
        if not (str(err).startswith("mridpm") or type(err).__name__ == "OutOfMemoryError"):
            raise
        print(f"mridpm {args.command}: error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mridpm {args.command}: interrupted; nothing half-written was left", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from mridpm.data._atomic import all_or_none
    from mridpm.data.paths import check_output_dir, check_outputs
    from mridpm.tasks.commands import TASKS

    if args.command in TASKS:
        from mridpm.tasks.commands import run

        run(args)
    if args.command == "reconstruct":
        _reconstruct(args)

    if args.command in ("evaluate", "demo"):
        from mridpm.tables import markdown_table
        from mridpm.tasks.recon_evaluation import TABLE_COLUMNS, TABLE_FORMATS, evaluate
        from mridpm.tasks.recon_figures import demo
        from mridpm.tasks.recon_heads_eval import HEAD_COLUMNS, SUMMARY_COLUMNS, SUMMARY_FORMATS, summary

        check_outputs([args.out] if args.command == "demo" else [args.json] if args.json else [],
                      overwrite=args.overwrite)
        with all_or_none():
            if args.command == "demo":
                rows = demo(args.out, slices=args.slices, samples=args.samples, seed=args.seed)
                print(f"wrote {args.out}")
            elif args.kspace_cv:
                rows = _kspace_cv(args)
            else:
                rows = evaluate(args.accels, tuple((args.methods or DEFAULT_METHODS).split(",")),
                                prior=args.prior, samples=args.samples,
                                slices=args.slices, seed=args.seed)
                if args.json:
                    from mridpm.data._atomic import atomic_path

                    with atomic_path(args.json, ".json") as tmp:
                        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        if args.command == "evaluate" and args.kspace_cv:
            print(markdown_table(rows, *CV_TABLE))
        elif rows and "data" in rows[0]:  # a head prior's rows name their data and sampling (recon_heads_eval)
            print(markdown_table(rows, HEAD_COLUMNS, TABLE_FORMATS))
            print(markdown_table(summary(rows), SUMMARY_COLUMNS, SUMMARY_FORMATS))
        else:
            print(markdown_table(rows, TABLE_COLUMNS, TABLE_FORMATS))

    if args.command == "sample":
        import torch

        from mridpm._memory import require, unet_bytes
        from mridpm.dpm import sample_ddim
        from mridpm.figures import grid, write_png
        from mridpm.nets.priors import load_prior
        from mridpm.ops import randn
        from mridpm.random import Generator

        check_outputs([args.out], overwrite=args.overwrite)
        prior = load_prior(args.prior)
        size = prior.info["image_size"]
        require(unet_bytes(prior.model.config, args.n, size), f"sampling --n {args.n} images")
        gen = Generator(args.seed)
        x = randn((args.n, prior.model.config.in_channels, *size), generator=gen)
        with torch.no_grad():
            images = sample_ddim(prior.model, x, prior.schedule, steps=args.steps, generator=gen,
                                 prediction=prior.prediction, clip=tuple(prior.info["data_range"]), progress=True)
        print(f"wrote {write_png(args.out, grid(images.clamp(-1, 1), columns=8, value=-1.0))}")

    if args.command == "train":
        from mridpm.train.run import run

        overrides = {k: v for k, v in (("steps", args.steps), ("out_dir", args.out_dir)) if v is not None}
        state = run(args.config, overrides, args.device, resume_from=args.resume_from, init=args.init)
        print(f"trained to step {state.step}")

    if args.command == "simulate":
        from mridpm._memory import require
        from mridpm.data.simulated import simulate_dataset, simulated_names

        h, w = args.size
        names = simulated_names(args.volumes, args.contrast, args.seed, args.source)
        check_output_dir(args.out, names, overwrite=args.overwrite)
        require(4 * 8 * (args.coils + 1) * args.slices * h * w, f"simulating {args.slices} slices of {h} x {w}")
        with all_or_none():
            paths = simulate_dataset(args.out, args.volumes, args.contrast, args.coils, args.slices, (h, w),
                                     args.noise, seed=args.seed, progress=True, source=args.source)
        print(f"wrote {len(paths)} files to {args.out}")

    if args.command == "info":
        from mridpm.info import format_info, info

        data = info()
        print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


def _reconstruct(args: argparse.Namespace) -> None:
    """One file in one process as always (reconstruct_file); several files, a directory or a pattern,
    or any input under torchrun, as a dataset split over the processes (recon_dataset)."""
    import glob
    import os
    from pathlib import Path

    from mridpm.tasks.recon_dataset import SUMMARY, reconstruct_dataset
    from mridpm.tasks.recon_file import reconstruct_file

    first, out = Path(args.input[0]), Path(args.out)
    to_dir = (out.is_dir() or args.out.endswith(("/", os.sep))) and out.suffix.lower() not in (".h5", ".hdf5")
    pattern = glob.has_magic(args.input[0]) and not first.exists()
    single = len(args.input) == 1 and not first.is_dir() and not pattern and not to_dir
    common = {"method": args.method, "accel": args.accel, "center": args.center, "samples": args.samples,
              "steps": args.steps, "seed": args.seed, "prior": args.prior, "noise_std": args.noise_std,
              "overwrite": args.overwrite, "mask_kind": args.mask_kind, "batch": args.batch,
              "prior_format": args.prior_format, "prior_config": args.prior_config,
              **{k: v for k, v in (("warm_start", args.warm_start), ("t_start", args.t_start),
                                   ("speed", speed_of(args))) if v is not None}}
    if single and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        for kind, path in reconstruct_file(first, args.out, maps=args.maps, **common).items():
            print(f"wrote {kind}: {path}")
        return
    if args.maps is not None:
        raise ValueError("--maps holds the coil maps of one file: give one input file and run one process")
    rows = reconstruct_dataset(args.input, args.out, single_out=args.out if single else None, **common)
    if rows:
        from mridpm.tables import markdown_table

        print(markdown_table(rows, *SUMMARY))


CV_TABLE = (("file", "method", "cv_nmse", "slices", "seconds"), {"cv_nmse": "{:.4f}", "seconds": "{:.2f}"})


def _kspace_cv(args: argparse.Namespace) -> list[dict]:
    """The k-space cross-validation rows of every --kspace-cv file."""
    from mridpm.tasks.kspace_cv import cross_validate_file

    methods = tuple(args.methods.split(",")) if args.methods else None
    return [row for f in args.kspace_cv
            for row in cross_validate_file(f, **({"methods": methods} if methods else {}), prior=args.prior,
                                           accel=args.accel, center=args.center, mask_kind=args.mask_kind,
                                           fraction=args.fraction, seed=args.seed, folds=args.folds,
                                           steps=args.steps, samples=args.samples, progress=True)]


if __name__ == "__main__":
    sys.exit(main())
