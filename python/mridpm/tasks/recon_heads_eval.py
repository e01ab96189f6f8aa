"""`mridpm evaluate` for a size-free head prior (data source "heads"): full-size held-out synthetic head
slices of each named contrast and dipy's real T1 slice, 8-coil simulated acquisitions, 1D line and 2D
Poisson-disc sampling; baselines and the prior's data-consistency strength tuned per (data, sampling) on
training-position head slices only."""

from __future__ import annotations

from typing import Any

import torch

from mridpm.data.simulation import acquire
from mridpm.mri.masks import line_mask
from mridpm.mri.masks2d import plane_mask
from mridpm.mri.operators import Sense
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import BASELINES, image_metrics, mean_psnr, tune_baselines
from mridpm.tasks.reconstruction import reconstruct_prior

DATA = ("T1", "T2", "PD", "dipy-T1")
# (mask kind, acceleration) rows; dipy's slice is evaluated on the line masks only (as the issue asks)
SAMPLINGS = (("lines", 4.0), ("lines", 8.0), ("poisson", 8.0))
POISSON_CENTER = 0.08  # side of the fully sampled calibration square, as a fraction of the smaller side
HEAD_COLUMNS = {"data": "data", "sampling": "sampling", "method": "method", "psnr": "PSNR (dB)", "ssim": "SSIM",
                "nmse": "NMSE", "seconds": "s / slice", "evals": "model evals"}
SUMMARY_COLUMNS = {"data": "data", "sampling": "sampling", "CG-SENSE": "CG-SENSE", "L1-wavelet": "L1-wavelet",
                   "prior": "DDS", "margin": "DDS - best baseline (dB)"}
SUMMARY_FORMATS = {"CG-SENSE": "{:.2f}", "L1-wavelet": "{:.2f}", "prior": "{:.2f}", "margin": "{:+.2f}"}

# a prior method's settings tuned per case like the baselines': DDS's CG steps per sampler step (the card's 2
# fits the measurement noise where the truth is smooth or zero, 1 lets the prior remove it)
PRIOR_GRID: dict[str, dict[str, tuple[Any, ...]]] = {"dds": {"cg_iters": (1, 2)}}


def is_heads_prior(prior: Any) -> bool:
    """Whether a prior was trained on synthetic heads (mridpm.data.heads), so evaluates at full size."""
    data = prior.info.get("train", {}).get("extra", {}).get("data", {})
    return isinstance(data, dict) and data.get("source") == "heads"


def images(data: str, n: int, size: tuple[int, int], seed: int, heldout: bool = True) -> torch.Tensor:
    """n complex evaluation images (held out) or tuning images (training positions) of `data`; dipy's T1
    slice (evaluation only) is tuned on skull-stripped T1 head slices at its size."""
    from mridpm.data.heads import head_slices
    from mridpm.data.phantom import smooth_phase
    from mridpm.data.real_images import dipy_t1_slice

    if data == "dipy-T1":
        if heldout:
            import numpy as np

            mag = dipy_t1_slice()
            phase = smooth_phase(tuple(mag.shape), np.random.default_rng(seed))  # type: ignore[arg-type]
            return torch.polar(mag.float(), phase.float())[None]
        # tuned on skull-stripped T1 heads at its size: the real slice is skull-stripped too
        return head_slices(n, tuple(dipy_t1_slice().shape), seed, contrast="T1", strip=1.0)  # type: ignore[arg-type]
    return head_slices(n, size, seed, heldout=heldout, contrast=data)


def sampling_mask(kind: str, accel: float, shape: tuple[int, int], seed: int) -> torch.Tensor:
    """fastMRI random lines (1, 1, 1, W) or a 2D Poisson-disc mask (1, 1, H, W) with a calibration square."""
    if kind == "lines":
        return line_mask(shape[1], accel, seed=seed)
    return plane_mask(kind, shape, accel, POISSON_CENTER, seed)


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (data, sampling) of evaluate_heads' rows: the baselines' and DDS's mean PSNR and DDS's margin
    over the best baseline (the acceptance test's numbers); cases without DDS are left out."""
    psnr = {(r["data"], r["sampling"], r["method"]): r["psnr"] for r in rows}
    out = []
    for data, sampling in dict.fromkeys((r["data"], r["sampling"]) for r in rows):
        if (data, sampling, "dds") not in psnr:
            continue
        best = max(psnr[(data, sampling, m)] for m in BASELINES)
        got = psnr[(data, sampling, "dds")]
        out.append({"data": data, "sampling": sampling, **{m: psnr[(data, sampling, m)] for m in BASELINES},
                    "prior": got, "margin": got - best})
    return out


def tune_prior(prior: Any, method: str, x: torch.Tensor, y: torch.Tensor, op: Sense, sigma: torch.Tensor,
               seed: int, fixed: dict[str, Any], desc: str | None = None) -> dict[str, Any]:
    """fixed (the caller's options) plus each PRIOR_GRID[method] setting it leaves open, picked by the mean PSNR
    of one posterior sample per tuning image x (measured y by op, noise sigma), as the baselines are tuned;
    desc, when given, labels a progress bar."""
    from tqdm.auto import tqdm

    chosen = dict(fixed)
    for key, values in PRIOR_GRID.get(method, {}).items():
        if key in fixed:
            continue
        psnr = {}
        for value in tqdm(values, desc=f"{desc}: tuning {method} {key}", disable=desc is None):
            images = [reconstruct_prior(y[i : i + 1], op, prior, method=method, samples=1, noise_std=float(sigma[i]),
                                        generator=Generator(seed + i), **{**chosen, key: value}).mean[0]
                      for i in range(len(x))]
            psnr[value] = mean_psnr(x, torch.stack(images))
        chosen[key] = max(psnr, key=psnr.__getitem__)
    return chosen


def evaluate_heads(prior: Any, methods: tuple[str, ...] = ("dds",), *, data: tuple[str, ...] = DATA,
                   samplings: tuple[tuple[str, float], ...] = SAMPLINGS, size: tuple[int, int] = (192, 192),
                   slices: int = 4, coils: int = 8, noise: float = 0.002, samples: int = 1, seed: int = 0,
                   progress: bool = True, options: dict[str, dict[str, Any]] | None = None,
                   keep: dict[str, torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """One row of mean PSNR, SSIM, NMSE, seconds and model evaluations per (data, sampling, method):
    `slices` held-out head slices of size `size` per contrast (dipy: its one 256 x 256 slice). keep, when
    given, receives the last slice's truth, every method's image and each prior method's std (a figure's).
    A prior method's PRIOR_GRID settings not fixed by options are tuned per case (tune_prior)."""
    from tqdm.auto import tqdm

    rows = []
    for name in data:
        x = images(name, slices, size, seed)
        tune = images(name, 2, size, seed + 1000, heldout=False)
        shape = tuple(x.shape[-2:])
        maps, k, sigma = acquire(x, coils, noise, seed)
        tmaps, tk, tsigma = acquire(tune, coils, noise, seed + 1000)
        for kind, accel in samplings:
            if name == "dipy-T1" and kind != "lines":
                continue
            mask = sampling_mask(kind, accel, shape, seed)  # type: ignore[arg-type]
            ty, top = tk * mask, Sense(tmaps, mask)
            base = tune_baselines(tune, ty, top)
            op, y = Sense(maps, mask), k * mask
            label = f"{kind} {accel:g}x"
            settings = {m: tune_prior(prior, m, tune, ty, top, tsigma, seed + 1000, (options or {}).get(m, {}),
                                      f"{name} {label}" if progress else None) for m in methods}
            results: dict[str, list[dict[str, float]]] = {}
            for i in tqdm(range(len(x)), desc=f"{name} {label}", disable=not progress):
                shown = {"truth": x[i]}
                for method, (image, seconds) in base.run(y[i : i + 1], op).items():
                    shown[method] = image[0]
                    results.setdefault(method, []).append({**image_metrics(x[i], image[0]), "seconds": seconds,
                                                           "evals": 0})
                for method in methods:
                    r = reconstruct_prior(y[i : i + 1], op, prior, method=method, samples=samples,
                                          noise_std=float(sigma[i]), generator=Generator(seed + i),
                                          **settings[method])
                    shown[method], shown[f"{method} std"] = r.mean[0], r.std[0]
                    results.setdefault(method, []).append({**image_metrics(x[i], r.mean[0]), "seconds": r.seconds,
                                                           "evals": r.evaluations})
                if keep is not None:
                    keep.update(shown)
            for method, rs in results.items():
                rows.append({"data": name, "sampling": label, "method": method, "slices": len(rs),
                             "size": list(shape),
                             **{m: sum(r[m] for r in rs) / len(rs) for m in ("psnr", "ssim", "nmse", "seconds",
                                                                              "evals")},
                             **base.settings(method),
                             **({"samples": samples, **settings[method]} if method in methods else {})})
    return rows
