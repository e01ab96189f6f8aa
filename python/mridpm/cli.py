"""The mridpm command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `mridpm`; returns the exit status."""
    parser = argparse.ArgumentParser(prog="mridpm", description="Diffusion probabilistic models for MRI.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="versions, built backends and visible devices")
    p_info.add_argument("--json", action="store_true", help="print JSON instead of text")
    p_sim = sub.add_parser("simulate", help="write simulated multi-coil brain volumes as fastMRI HDF5 files")
    p_sim.add_argument("--out", required=True, help="output directory")
    p_sim.add_argument("--volumes", type=int, default=4)
    p_sim.add_argument("--contrast", choices=["T1", "T2", "PD"], default="T1")
    p_sim.add_argument("--coils", type=int, default=8)
    p_sim.add_argument("--slices", type=int, default=8, help="axial slices per volume")
    p_sim.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p_sim.add_argument("--noise", type=float, default=0.002, help="k-space noise std, relative to its maximum")
    p_sim.add_argument("--seed", type=int, default=0)
    p_train = sub.add_parser("train", help="train a diffusion model from a TOML or YAML configuration")
    p_train.add_argument("config", help="the run configuration ([model], [data], [train])")
    p_train.add_argument("--steps", type=int, help="override [train] steps")
    p_train.add_argument("--out-dir", help="override [train] out_dir")
    p_train.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p_sample = sub.add_parser("sample", help="sample images from a bundled prior into a PNG grid")
    p_sample.add_argument("--prior", default="brain64")
    p_sample.add_argument("--n", type=int, default=16, help="number of images")
    p_sample.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p_sample.add_argument("--seed", type=int, default=0)
    p_sample.add_argument("--out", required=True, help="PNG file")
    p_rec = sub.add_parser("reconstruct", help="reconstruct undersampled fastMRI k-space with a diffusion prior")
    p_rec.add_argument("input", help="fastMRI HDF5 file")
    p_rec.add_argument("--out", required=True, help="output HDF5 file (NIfTI and PNG are written next to it)")
    p_rec.add_argument("--method", default="dds",
                       choices=["projection", "langevin", "pc", "pc-rss", "dps", "dds", "tv3d"],
                       help="tv3d: the volume at once, DDS with TV along the slices")
    p_rec.add_argument("--maps", help="HDF5 file with coil maps 'maps' (slices, coils, H, W) (default: ESPIRiT)")
    p_rec.add_argument("--accel", type=float, help="undersample with a 1D random mask (default: the file's mask)")
    p_rec.add_argument("--center", type=float, help="center fraction (default 0.08 at 4x, 0.04 at 8x)")
    p_rec.add_argument("--samples", type=int, default=4, help="posterior samples (mean and std)")
    p_rec.add_argument("--steps", type=int, help="sampler steps (default: the method's)")
    p_rec.add_argument("--noise-std", type=float,
                       help="k-space noise std per real part (default: estimated from the outer k-space rows)")
    p_rec.add_argument("--warm-start", choices=["zero_filled", "cg"],
                       help="start the reverse process at --t-start from this reconstruction, noised")
    p_rec.add_argument("--t-start", type=int, help="the timestep a warm start begins at (e.g. 400 of 1000)")
    p_rec.add_argument("--prior", default="brain64c", help="a bundled prior or a training run directory")
    p_rec.add_argument("--seed", type=int, default=0)
    p_eval = sub.add_parser("evaluate", help="every method against the baselines on held-out simulated slices")
    p_eval.add_argument("--methods", default="projection,langevin,pc,pc-rss,dps,dds")
    p_eval.add_argument("--accels", default="4,8")
    p_eval.add_argument("--slices", type=int, help="number of held-out slices (default: all)")
    p_eval.add_argument("--samples", type=int, default=1)
    p_eval.add_argument("--prior", default="brain64c")
    p_eval.add_argument("--seed", type=int, default=0)
    p_eval.add_argument("--json", help="also write the rows to this JSON file")
    p_demo = sub.add_parser("demo", help="simulate, undersample 8x and reconstruct brain slices with the bundled prior")
    p_demo.add_argument("--out", default="demo.png", help="PNG figure")
    p_demo.add_argument("--slices", type=int, default=4)
    p_demo.add_argument("--samples", type=int, default=4)
    p_demo.add_argument("--seed", type=int, default=0)
    from mridpm.tasks.commands import add_parsers

    add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as err:  # bad input: a message, not a traceback
        print(f"mridpm {args.command}: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from mridpm.tasks.commands import TASKS

    if args.command in TASKS:
        from mridpm.tasks.commands import run

        run(args)
    if args.command == "reconstruct":
        from mridpm.tasks.recon_file import reconstruct_file

        written = reconstruct_file(args.input, args.out, method=args.method, accel=args.accel, center=args.center,
                                   samples=args.samples, steps=args.steps, seed=args.seed, prior=args.prior,
                                   noise_std=args.noise_std, maps=args.maps,
                                   **{k: v for k, v in (("warm_start", args.warm_start), ("t_start", args.t_start))
                                      if v is not None})
        for kind, path in written.items():
            print(f"wrote {kind}: {path}")

    if args.command in ("evaluate", "demo"):
        from mridpm.tables import markdown_table
        from mridpm.tasks.recon_evaluation import TABLE_COLUMNS, TABLE_FORMATS, evaluate
        from mridpm.tasks.recon_figures import demo

        if args.command == "demo":
            rows = demo(args.out, slices=args.slices, samples=args.samples, seed=args.seed)
            print(f"wrote {args.out}")
        else:
            rows = evaluate(tuple(float(a) for a in args.accels.split(",")), tuple(args.methods.split(",")),
                            prior=args.prior, samples=args.samples, slices=args.slices, seed=args.seed)
            if args.json:
                from pathlib import Path

                Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
        print(markdown_table(rows, TABLE_COLUMNS, TABLE_FORMATS))

    if args.command == "sample":
        import torch

        from mridpm.dpm import sample_ddim
        from mridpm.figures import grid, write_png
        from mridpm.nets.priors import load_prior
        from mridpm.ops import randn
        from mridpm.random import Generator

        prior = load_prior(args.prior)
        size = prior.info["image_size"]
        gen = Generator(args.seed)
        x = randn((args.n, prior.model.config.in_channels, *size), generator=gen)
        with torch.no_grad():
            images = sample_ddim(prior.model, x, prior.schedule, steps=args.steps, generator=gen,
                                 prediction=prior.prediction, clip=tuple(prior.info["data_range"]), progress=True)
        print(f"wrote {write_png(args.out, grid(images.clamp(-1, 1), columns=8, value=-1.0))}")

    if args.command == "train":
        from mridpm.train.run import run

        overrides = {k: v for k, v in (("steps", args.steps), ("out_dir", args.out_dir)) if v is not None}
        state = run(args.config, overrides, args.device)
        print(f"trained to step {state.step}")

    if args.command == "simulate":
        from mridpm.data.phantom import simulate_dataset

        paths = simulate_dataset(args.out, args.volumes, args.contrast, args.coils, args.slices, tuple(args.size),
                                 args.noise, seed=args.seed, progress=True)
        print(f"wrote {len(paths)} files to {args.out}")

    if args.command == "info":
        from mridpm.info import format_info, info

        data = info()
        print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
