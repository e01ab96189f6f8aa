"""The `mridpm` subcommands of the image tasks. Images travel as NIfTI files of 2D slices along the
last axis (H, W) or (H, W, S), at the in-plane size the model was trained on; each command writes
its NIfTI outputs and a PNG figure of the first slice next to them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mridpm.tasks.command_files import figure, nifti_path, png_path, read_slices, write_slices

TASKS = ("phantom", "generate", "translate", "segment", "anomaly", "enhance", "denoise", "register", "classify",
         "evaluate-tasks")


def add_parsers(sub: Any, seed_and_overwrite: Callable[[argparse.ArgumentParser], None]) -> None:
    """The task subcommands, added to the `mridpm` parser's subparsers (seed_and_overwrite adds the
    --seed and --overwrite options every writing command has)."""
    from mridpm import _args as a

    def common(p: argparse.ArgumentParser, steps: int) -> None:
        p.add_argument("--steps", type=a.positive, default=steps, help="DDIM steps")
        p.add_argument("--out", required=True, help="output NIfTI file (.nii or .nii.gz); a PNG is written next to it")
        seed_and_overwrite(p)

    p = sub.add_parser("phantom", help="write held-out MNI152 slices (T1, T2, PD, labels, lesions) as NIfTI")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--z", type=a.count, nargs="+", default=[44, 124], help="axial slice positions (1 mm MNI grid)")
    p.add_argument("--size", type=a.integer(8), nargs=2, default=[64, 64], metavar=("H", "W"))
    seed_and_overwrite(p)
    p = sub.add_parser("generate", help="generate images: unconditional, from a label map, or a volume slice by slice")
    p.add_argument("--prior", default="brain64", help="a bundled prior or a training run directory")
    p.add_argument("--n", type=a.positive, default=4, help="images (unconditional)")
    p.add_argument("--labels", help="NIfTI label map (H, W[, S]): synthesise images with these tissues")
    p.add_argument("--depth", type=a.positive, help="a volume of this many slices, each conditioned on the one before")
    common(p, steps=50)
    p = sub.add_parser("translate", help="translate source contrasts (NIfTI) to the model's target contrast")
    p.add_argument("sources", nargs="+", help="NIfTI images, one per source contrast, in the model's order")
    p.add_argument("--model", required=True, help="a translation model (training run directory or bundled name)")
    p.add_argument("--samples", type=a.positive, default=1)
    common(p, steps=50)
    p = sub.add_parser("segment", help="GM/WM/CSF label maps of T1-weighted slices with a segmentation DPM")
    p.add_argument("input", help="NIfTI image")
    p.add_argument("--model", default="seg64")
    p.add_argument("--samples", type=a.positive, default=8, help="ensemble size (consensus and uncertainty)")
    common(p, steps=20)
    p = sub.add_parser("anomaly", help="anomaly maps by partial diffusion and DDIM (AnoDDPM)")
    p.add_argument("input", help="NIfTI image")
    p.add_argument("--prior", default="brain64")
    p.add_argument("--t", type=a.integer(1, 999), default=400, help="the noise level (timestep of 1000) to diffuse to")
    p.add_argument("--noise", choices=["gaussian", "simplex"], default="gaussian")
    p.add_argument("--threshold", type=a.real(0), default=0.25, help="anomaly mask: score above this (image peak 1)")
    common(p, steps=25)
    p = sub.add_parser("enhance", help="denoise, super-resolve, inpaint or motion-correct with a diffusion prior")
    p.add_argument("mode", choices=["denoise", "superres", "inpaint", "motion"])
    p.add_argument("input", help="NIfTI image (motion: NIfTI of complex single-coil k-space)")
    p.add_argument("--prior", default="brain64")
    p.add_argument("--sigma", type=a.real(0, open_lo=True),
                   help="denoise: noise std, image peak 1 (default: estimated)")
    p.add_argument("--factor", type=a.positive, default=2, help="superres: the upsampling factor")
    p.add_argument("--mask", help="inpaint: NIfTI mask, nonzero where pixels are missing")
    p.add_argument("--shots", type=a.positive, default=8, help="motion: interleaved shots (row r in shot r %% shots)")
    p.add_argument("--samples", type=a.positive, default=1)
    common(p, steps=50)
    p = sub.add_parser("denoise", help="self-supervised denoising of a 4D series (DWI directions, repetitions) "
                                       "with DDM2, trained on the series itself")
    p.add_argument("input", help="4D NIfTI series (H, W, S, V): V noisy volumes of one anatomy")
    p.add_argument("--self-supervised", action="store_true",
                   help="train DDM2 on the noisy series alone (required; a clean-prior denoiser is `mridpm enhance "
                        "denoise`)")
    p.add_argument("--neighbours", type=a.positive, default=7, help="other volumes each volume is predicted from")
    p.add_argument("--stage1-steps", type=a.positive, default=600, help="training steps of the Stage I denoiser")
    p.add_argument("--stage3-steps", type=a.positive, default=1500, help="training steps of the Stage III DPM")
    p.add_argument("--noise", choices=["rician", "gaussian"], default="rician",
                   help="the series' noise: rician (magnitude images, bias corrected) or gaussian (real-valued)")
    p.add_argument("--work-dir", help="checkpoint both trainings here; a rerun resumes them")
    p.add_argument("--out", required=True, help="denoised NIfTI (.nii or .nii.gz); a PNG is written next to it")
    seed_and_overwrite(p)
    p = sub.add_parser("register", help="register MOVING to FIXED (NIfTI slices) with a DiffuseMorph model")
    p.add_argument("moving", help="NIfTI image to deform")
    p.add_argument("fixed", help="NIfTI image to match, the same shape")
    p.add_argument("--model", required=True, help="a registration run directory (mridpm train configs/register64.toml)")
    p.add_argument("--steps", type=a.integer(2), default=8, help="images along the continuous deformation")
    p.add_argument("--refine", type=a.integer(0), default=200,
                   help="Adam steps refining the network's field (0: the network's field as it is)")
    p.add_argument("--similarity", choices=("mse", "lncc"), default="mse",
                   help="what the refinement matches: squared differences (one contrast) or local correlation")
    p.add_argument("--out", required=True, help="warped NIfTI; _field (H, W, S, 2) and _intermediates (H, W, S, "
                                                "steps) files and a PNG are written next to it")
    seed_and_overwrite(p)
    p = sub.add_parser("classify", help="normal or atrophied (label, score per slice) with a diffusion autoencoder, "
                                        "and a counterfactual figure")
    p.add_argument("input", help="NIfTI image")
    p.add_argument("--model", required=True,
                   help="a classification run directory (mridpm train configs/classify64.toml)")
    p.add_argument("--steps", type=a.positive, default=20, help="DDIM steps of the counterfactual")
    p.add_argument("--t-start", type=a.integer(1, 999), default=400,
                   help="the timestep (of 1000) the counterfactual inverts to")
    p.add_argument("--out", required=True, help="JSON file of labels and scores; a counterfactual PNG is written "
                                                "next to it")
    seed_and_overwrite(p)
    p = sub.add_parser("evaluate-tasks", help="segmentation, anomaly, denoising, super-resolution (motion, "
                                              "registration, classification, selfsup) against baselines on "
                                              "held-out simulated slices")
    p.add_argument("--tasks", default="segmentation,anomaly,denoising,superres")
    p.add_argument("--slices", type=a.positive, help="held-out slices per task (default: all)")
    p.add_argument("--json", help="also write the rows to this JSON file (with --overwrite, an existing file keeps "
                                  "the rows of the tasks not run)")
    p.add_argument("--figure", help="also write a PNG of every task's first slice")
    seed_and_overwrite(p)


PHANTOM_FILES = ("t1", "t2", "pd", "labels", "t1_lesion", "lesion_mask", "t1_motion_kspace")
# the extra NIfTI files beside --out (_std only with --samples > 1)
SUFFIXES = {"translate": ("_std",), "segment": ("_uncertainty",), "anomaly": ("_mask", "_healthy"),
            "enhance": ("_std",), "register": ("_field", "_intermediates")}


def outputs(args: argparse.Namespace) -> tuple[list[Path], list[str]]:
    """(every file the task command will write, every file it reads), known from its options alone."""
    named = ("input", "labels", "mask", "moving", "fixed")
    inputs = [*getattr(args, "sources", []), *(getattr(args, k, None) or "" for k in named)]
    inputs = [i for i in inputs if i]
    if args.command == "phantom":
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"the output directory {args.out} is an existing file; name a directory")
        return [Path(args.out) / f"{n}.nii.gz" for n in PHANTOM_FILES], inputs
    if args.command == "evaluate-tasks":
        f = Path(args.figure) if args.figure else None
        figures = [f.with_name(f"{f.stem}_{t}.png") for t in dict.fromkeys(args.tasks.split(","))] if f else []
        return [*figures, *([Path(args.json)] if args.json else [])], inputs
    if args.command == "classify":
        if not args.out.endswith(".json"):
            raise ValueError(f"--out must name a JSON file (.json), got {args.out}")
        return [Path(args.out), Path(args.out).with_suffix(".png")], inputs
    if not args.out.endswith((".nii", ".nii.gz")):
        raise ValueError(f"--out must name a NIfTI file (.nii or .nii.gz), got {args.out}")
    extra = [s for s in SUFFIXES.get(args.command, ()) if s != "_std" or args.samples > 1]
    if args.command == "enhance" and args.mode == "motion":
        extra = []
    return [Path(args.out), *(nifti_path(args.out, s) for s in extra), png_path(args.out)], inputs


def run(args: argparse.Namespace) -> None:
    """Runs the task subcommand args.command: checks its outputs, then computes, then writes them all
    together (or none); prints what it wrote."""
    from mridpm.data._atomic import all_or_none
    from mridpm.data.paths import check_outputs

    outs, inputs = outputs(args)
    check_outputs(outs, inputs, overwrite=args.overwrite)
    with all_or_none():
        from mridpm.tasks import commands_analysis

        name = "_" + args.command.replace("-", "_")
        written = (globals().get(name) or getattr(commands_analysis, name))(args)
    for path in written:
        print(f"wrote {path}")


def _phantom(args: argparse.Namespace) -> list[Path]:
    import torch

    from mridpm.data import phantom as ph
    from mridpm.data.nifti import write_nifti

    size = tuple(args.size)
    out = Path(args.out)
    labels = ph.tissue_labels(args.z, size)  # type: ignore[arg-type]
    vols = {c.lower(): ph.brain_slices(c, args.z, size) for c in ("T1", "T2", "PD")}  # type: ignore[arg-type]
    vols["labels"] = labels.float()
    lesion, mask = ph.insert_lesions(vols["t1"], labels > 0, seed=args.seed)
    vols["t1_lesion"], vols["lesion_mask"] = lesion, mask.float()
    k = torch.stack([ph.motion_kspace(img, 8, [2, 5], seed=args.seed + i)[0] for i, img in enumerate(vols["t1"])])
    vols["t1_motion_kspace"] = k
    return [write_nifti(out / f"{name}.nii.gz", vols[name].permute(1, 2, 0).contiguous()) for name in PHANTOM_FILES]


def _generate(args: argparse.Namespace) -> list[Path]:
    from mridpm.tasks import generation as gen
    from mridpm.tasks._common import as_prior, to_unit

    p = as_prior(args.prior)
    if args.labels and args.depth:
        raise ValueError("give --labels or --depth, not both")
    if args.labels:
        from mridpm.data.nifti import read_nifti

        vol, _ = read_nifti(args.labels)
        vol = vol if vol.dim() == 3 else vol[..., None]
        labels = vol.permute(2, 0, 1).round().long()
        images = gen.synthesize(p, labels, steps=args.steps, seed=args.seed, progress=True)[:, 0]
        panels = [("labels", labels[0].float()), ("synthesised", images[0])]
    elif args.depth:
        images = gen.generate_volume(p, args.depth, n=1, steps=args.steps, seed=args.seed, progress=True)[0, 0]
        panels = [(f"slice {d}", images[d]) for d in range(min(args.depth, 6))]
    else:
        images = gen.generate(p, args.n, steps=args.steps, seed=args.seed, progress=True)[:, 0]
        panels = [(f"sample {i}", images[i]) for i in range(min(args.n, 6))]
    images = to_unit(images, p).clamp(0, 1)
    return [write_slices(args.out, images), figure(args.out, panels)]


def _translate(args: argparse.Namespace) -> list[Path]:
    import torch

    from mridpm.tasks.translation import translate

    parts = [read_slices(s) for s in args.sources]
    if len({tuple(x.shape) for x, _, _ in parts}) != 1:
        raise ValueError(f"the source images differ in shape: {[tuple(x.shape) for x, _, _ in parts]}")
    src = torch.cat([x for x, _, _ in parts], 1)
    res = translate(args.model, src, samples=args.samples, steps=args.steps, seed=args.seed, progress=True)
    out = [write_slices(args.out, res.mean[:, 0], parts[0][2])]
    if args.samples > 1:
        out.append(write_slices(args.out, res.std[:, 0], parts[0][2], "_std"))
    panels = [(f"source {i}", src[0, i]) for i in range(src.shape[1])] + [("translated", res.mean[0, 0])]
    return [*out, figure(args.out, panels)]


def _segment(args: argparse.Namespace) -> list[Path]:
    from mridpm.tasks.segmentation import segment

    x, _, affine = read_slices(args.input)
    res = segment(args.model, x, samples=args.samples, steps=args.steps, seed=args.seed, progress=True)
    return [write_slices(args.out, res.labels.float(), affine),
            write_slices(args.out, res.uncertainty, affine, "_uncertainty"),
            figure(args.out, [("image", x[0, 0]), ("labels", res.labels[0].float()),
                               ("uncertainty", res.uncertainty[0])])]


def _anomaly(args: argparse.Namespace) -> list[Path]:
    from mridpm.tasks.anomaly import detect

    x, _, affine = read_slices(args.input)
    res = detect(args.prior, x, t=args.t, steps=args.steps, noise=args.noise, threshold=args.threshold,
                 seed=args.seed, progress=True)
    assert res.mask is not None
    return [write_slices(args.out, res.score, affine), write_slices(args.out, res.mask.float(), affine, "_mask"),
            write_slices(args.out, res.healthy[:, 0], affine, "_healthy"),
            figure(args.out, [("input", x[0, 0]), ("healthy", res.healthy[0, 0]), ("|input - healthy|", res.score[0]),
                               ("mask", res.mask[0].float())])]


def _enhance(args: argparse.Namespace) -> list[Path]:
    from mridpm.tasks import enhancement as en

    common = {"steps": args.steps, "seed": args.seed, "progress": True}
    if args.mode == "motion":
        return _motion(args)
    x, peak, affine = read_slices(args.input)
    if args.mode == "denoise":
        res = en.denoise(args.prior, x, None if args.sigma is None else args.sigma, samples=args.samples, **common)
    elif args.mode == "superres":
        res = en.super_resolve(args.prior, en.lowres_kspace(x, 1), args.factor, samples=args.samples, **common)
    else:
        if not args.mask:
            raise ValueError("inpaint needs --mask, a NIfTI mask of the missing pixels")
        m, _, _ = read_slices(args.mask)
        if m.shape != x.shape:
            raise ValueError(f"the mask {tuple(m.shape[2:])} x {m.shape[0]} does not match the image "
                             f"{tuple(x.shape[2:])} x {x.shape[0]}")
        res = en.inpaint(args.prior, x, m[:, 0] > 0, samples=args.samples, **common)
    out = [write_slices(args.out, res.mean[:, 0] * peak, affine)]
    if args.samples > 1:
        out.append(write_slices(args.out, res.std[:, 0] * peak, affine, "_std"))
    return [*out, figure(args.out, [("input", x[0, 0]), (args.mode, res.mean[0, 0])])]


def _motion(args: argparse.Namespace) -> list[Path]:
    import torch

    from mridpm.data.nifti import read_nifti
    from mridpm.mri.fft import ifft2c
    from mridpm.tasks.motion import correct_motion

    k, affine = read_nifti(args.input)
    if not k.is_complex() or k.dim() not in (2, 3):
        raise ValueError(f"{args.input}: motion correction takes complex k-space (H, W[, S]), got "
                         f"{tuple(k.shape)} {k.dtype}")
    k = (k if k.dim() == 3 else k[..., None]).permute(2, 0, 1)
    results = [correct_motion(args.prior, s, args.shots, steps=args.steps, seed=args.seed) for s in k]
    for i, r in enumerate(results):
        print(f"slice {i}: excluded shots {r.excluded.nonzero().flatten().tolist()}, "
              f"shifts {[tuple(round(float(v), 2) for v in s) for s in r.shifts]}")
    images = torch.stack([r.image for r in results])
    return [write_slices(args.out, images, affine),
            figure(args.out, [("input", ifft2c(k[0]).abs()), ("motion corrected", images[0])])]


def _evaluate_tasks(args: argparse.Namespace) -> list[Path]:
    import json

    from mridpm.tasks.evaluation import evaluate_tasks, format_rows

    rows = evaluate_tasks(tuple(args.tasks.split(",")), slices=args.slices, seed=args.seed, figure=args.figure)
    print(format_rows(rows))
    if args.json:
        from mridpm.data._atomic import atomic_path

        ran = {r["task"] for r in rows}
        kept = [r for r in json.loads(Path(args.json).read_text()) if r["task"] not in ran] \
            if Path(args.json).is_file() else []
        with atomic_path(args.json, ".json") as tmp:
            tmp.write_text(json.dumps(kept + rows, indent=2) + "\n")
    return outputs(args)[0]
