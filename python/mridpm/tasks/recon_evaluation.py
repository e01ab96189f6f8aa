"""`mridpm evaluate`: every diffusion method against the tuned classical baselines on the prior's
held-out simulated brain slices, one row of mean metrics per (acceleration, method)."""

from __future__ import annotations

from typing import Any

import torch

from mridpm.data.simulation import simulated_slices
from mridpm.mri.masks import line_mask
from mridpm.mri.operators import Sense
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import Baselines, image_metrics, tune_baselines
from mridpm.tasks.recon_heads_eval import evaluate_heads, is_heads_prior
from mridpm.tasks.reconstruction import METHODS, reconstruct_prior

# what runs on single held-out slices with an unconditional 2D prior: not k-space priors, not volumes
SLICE_METHODS = tuple(m for m in METHODS if m not in ("kspace", "tv3d"))
# the columns of the printed table ({row key: header}) and how their values print
TABLE_COLUMNS = {"accel": "accel", "method": "method", "psnr": "PSNR (dB)", "ssim": "SSIM", "nmse": "NMSE",
                 "seconds": "s / slice", "evals": "model evals"}
HEADS_SLICES = 8  # held-out head slices per contrast when --slices is not given
TABLE_FORMATS = {"accel": "{:g}x", "psnr": "{:.2f}", "ssim": "{:.4f}", "nmse": "{:.4f}", "seconds": "{:.3f}",
                 "evals": "{:.0f}"}


def prepare(prior: Any, accel: float, coils: int, noise: float, seed: int) -> tuple[torch.Tensor, Baselines]:
    """The line mask for accel and the baselines tuned on two of the prior's training slices."""
    from mridpm.train.run import phantom_slices

    train = phantom_slices(prior.info["train"]["extra"]["data"])
    size = tuple(prior.info["image_size"])
    mask = line_mask(size[1], accel, seed=seed)
    x, maps, k, _ = simulated_slices([train[len(train) // 3], train[2 * len(train) // 3]], size, coils, noise,
                                     seed + 100)
    return mask, tune_baselines(x, k * mask, Sense(maps, mask))


def evaluate(accels: tuple[float, ...] = (4, 8), methods: tuple[str, ...] = ("dds",), *, prior: str = "brain64c",
             coils: int = 8, noise: float = 0.002, samples: int = 1, slices: int | None = None, seed: int = 0,
             progress: bool = True, options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every method and baseline on the prior's held-out simulated slices at each acceleration (1D
    random lines, fastMRI's center fractions, the true coil maps): one row per (accel, method) with
    mean PSNR, SSIM, NMSE, seconds per slice and model evaluations per slice. Baselines are tuned on
    two training slices. A head prior (recon_heads_eval) is evaluated at full size instead: lines at each
    acceleration and a 2D Poisson-disc mask at the highest, per contrast and on dipy's real T1 slice."""
    from tqdm.auto import tqdm

    from mridpm.nets.priors import load_prior
    from mridpm.train.run import phantom_slices

    bad = [m for m in methods if m not in SLICE_METHODS]
    if bad:
        raise ValueError(f"methods {bad} cannot run on single slices with an unconditional 2D prior; choose from "
                         f"{SLICE_METHODS}")
    p = load_prior(prior)
    if is_heads_prior(p):  # a size-free prior: full-size held-out heads and dipy's real slice, 2D masks too
        samplings = (*(("lines", float(a)) for a in accels), ("poisson", float(max(accels))))
        return evaluate_heads(p, methods, samplings=samplings, slices=slices or HEADS_SLICES, coils=coils,
                              noise=noise, samples=samples, seed=seed, progress=progress, options=options)
    size = tuple(p.info["image_size"])
    held = phantom_slices(p.info["train"]["extra"]["data"], heldout=True)[:slices]
    rows = []
    for accel in accels:
        mask, base = prepare(p, accel, coils, noise, seed)
        x, maps, k, sigma = simulated_slices(held, size, coils, noise, seed)
        op = Sense(maps, mask)
        y = k * mask
        results: dict[str, list[dict[str, float]]] = {}
        for i in tqdm(range(len(held)), desc=f"evaluate {accel:g}x", disable=not progress):
            for name, (image, seconds) in base.run(y[i : i + 1], op).items():
                results.setdefault(name, []).append({**image_metrics(x[i], image[0]), "seconds": seconds, "evals": 0})
            for method in methods:
                r = reconstruct_prior(y[i : i + 1], op, p, method=method, samples=samples, noise_std=float(sigma[i]),
                                      generator=Generator(seed + i), **(options or {}).get(method, {}))
                results.setdefault(method, []).append({**image_metrics(x[i], r.mean[0]), "seconds": r.seconds,
                                                       "evals": r.evaluations})
        for name, rs in results.items():
            rows.append({"accel": accel, "method": name, "slices": len(rs),
                         **{k: sum(r[k] for r in rs) / len(rs) for k in ("psnr", "ssim", "nmse", "seconds", "evals")},
                         **base.settings(name)})
    return rows
