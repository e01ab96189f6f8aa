"""The `mridpm` analysis commands: register (DiffuseMorph), classify (diffusion autoencoder) and
denoise --self-supervised (DDM2); their options are in mridpm.tasks.commands, which runs them."""

from __future__ import annotations

import argparse
from pathlib import Path

from mridpm.tasks.command_files import figure, nifti_path, read_slices, write_slices


def _denoise(args: argparse.Namespace) -> list[Path]:
    from mridpm.data.nifti import read_nifti, write_nifti
    from mridpm.tasks.ddm2 import DDM2Config, ddm2_denoise, normalise_series

    if not args.self_supervised:
        raise ValueError("`mridpm denoise` is DDM2's self-supervised denoising: pass --self-supervised (a "
                         "clean-prior denoiser is `mridpm enhance denoise`)")
    vol, affine = read_nifti(args.input)
    if vol.is_complex() or vol.dim() != 4:
        raise ValueError(f"{args.input}: expected a real 4D (H, W, S, V) series of volumes, got {tuple(vol.shape)} "
                         f"{vol.dtype}")
    x, scale = normalise_series(vol.permute(3, 2, 0, 1))
    cfg = DDM2Config(neighbours=args.neighbours, stage1_steps=args.stage1_steps, stage3_steps=args.stage3_steps,
                     noise=args.noise, seed=args.seed)
    res = ddm2_denoise(x, cfg, work_dir=args.work_dir, progress=True)
    print(f"noise std per volume (of the 99.9th percentile {scale:.4g}): {[round(float(s), 4) for s in res.sigma]}; "
          f"t*: {res.t_star.tolist()}")
    v, s = x.shape[0] // 2, x.shape[1] // 2
    panels = [(f"noisy v{v} s{s}", x[v, s]), ("stage I", res.stage1[v, s]), ("DDM2", res.denoised[v, s]),
              ("noisy - DDM2", x[v, s] - res.denoised[v, s])]
    return [write_nifti(args.out, (res.denoised * scale).permute(2, 3, 1, 0).contiguous(), affine),
            figure(args.out, panels)]


def _register(args: argparse.Namespace) -> list[Path]:
    from mridpm.data.nifti import write_nifti
    from mridpm.tasks.registration import register

    moving, _, affine = read_slices(args.moving)
    fixed, _, _ = read_slices(args.fixed)
    if moving.shape != fixed.shape:
        raise ValueError(f"moving {tuple(moving.shape[2:])} x {moving.shape[0]} and fixed {tuple(fixed.shape[2:])} x "
                         f"{fixed.shape[0]} differ in shape")
    res = register(args.model, moving, fixed, steps=args.steps, refine=args.refine,
                   similarity=args.similarity)
    field, steps = res.field.permute(2, 3, 0, 1), res.intermediates[:, :, 0].permute(2, 3, 1, 0)
    return [write_slices(args.out, res.warped[:, 0], affine),
            write_nifti(nifti_path(args.out, "_field"), field.contiguous(), affine),
            write_nifti(nifti_path(args.out, "_intermediates"), steps.contiguous(), affine),
            figure(args.out, [("moving", moving[0, 0]), ("fixed", fixed[0, 0]), ("warped", res.warped[0, 0]),
                               ("|field| (pixels)", res.field[0].norm(dim=0))])]


def _classify(args: argparse.Namespace) -> list[Path]:
    import json

    from mridpm.data._atomic import atomic_path
    from mridpm.figures import write_panels
    from mridpm.tasks.classification import classify, counterfactual, load_classifier

    x, _, _ = read_slices(args.input)
    clf = load_classifier(args.model)
    size = tuple(clf.model.data.get("size", [64, 64]))
    if tuple(x.shape[2:]) != size:
        raise ValueError(f"{args.input}: slices of {tuple(x.shape[2:])}; this model takes {size}")
    scores, labels = classify(clf.model, x, clf.prototypes)
    rows = [{"slice": i, "label": ["normal", "atrophied"][int(y)], "score": float(s)}
            for i, (s, y) in enumerate(zip(scores, labels, strict=True))]
    for r in rows:
        print(f"slice {r['slice']}: {r['label']} (score {r['score']:+.3f})")
    other = "normal" if labels[0] else "atrophied"
    cf = counterfactual(clf, x[:1], clf.prototypes[1 - int(labels[0])], steps=args.steps, t_start=args.t_start)
    with atomic_path(args.out, ".json") as tmp:
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
    png = write_panels(Path(args.out).with_suffix(".png"), [("input", x[0, 0]), (f"as {other}", cf[0, 0]),
                                                           ("change", cf[0, 0] - x[0, 0])])
    return [Path(args.out), png]
