"""`mridpm evaluate-tasks`: segmentation Dice, anomaly AUROC and Dice, denoising and super-resolution
PSNR, registration Dice, endpoint error and folding, classification AUROC and accuracy of the diffusion
methods against simple baselines, on MNI152 slices the models never saw."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import torch

from mridpm.mri.metrics import psnr, ssim_batch
from mridpm.tables import markdown_table

# slices outside brain64's training range z = 50..119 (denoising, super-resolution); anomaly detection
# takes those above it, each twice with different lesions: the low ones show anatomy (cerebellum,
# temporal poles) the prior never saw, which it would flag as anomalous everywhere
HELD_OUT = [*range(40, 50, 2), *range(120, 132, 2)]
ANOMALY_HELD_OUT = [z for z in HELD_OUT if z >= 120]


def _held_out(prior: Any, slices: int | None) -> list[int]:
    from mridpm.train.run import phantom_slices

    data = prior.info.get("train", {}).get("extra", {}).get("data")
    z = phantom_slices(data, heldout=True) if data and data.get("holdout_every") else HELD_OUT
    return z[:slices] if slices else z


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _mean_psnr(target: torch.Tensor, pred: torch.Tensor) -> float:
    return sum(psnr(t, p, 1.0) for t, p in zip(target, pred, strict=True)) / target.shape[0]


def segmentation(slices: int | None, seed: int, samples: int = 8) -> tuple[list[dict[str, Any]], list]:
    from mridpm.data.phantom import brain_slices, tissue_labels
    from mridpm.nets.priors import load_prior
    from mridpm.tasks.anomaly import auroc
    from mridpm.tasks.segmentation import dice, kmeans_segment, otsu_segment, segment

    p = load_prior("seg64")
    z = _held_out(p, slices)
    size = tuple(p.info["image_size"])
    x = brain_slices("T1", z, size)[:, None]  # type: ignore[arg-type]
    truth = tissue_labels(z, size)  # type: ignore[arg-type]
    res, secs = _timed(segment, p, x, samples=samples, seed=seed)
    methods = {"Otsu thresholds": (otsu_segment(x), 0.0), "k-means": (kmeans_segment(x), 0.0),
               "DPM, 1 sample": (res.samples[0], secs / samples), f"DPM, consensus of {samples}": (res.labels, secs)}
    rows = []
    for name, (labels, s) in methods.items():
        d = dice(labels, truth, [1, 2, 3])
        rows.append({"task": "segmentation", "method": name, "slices": len(z), "dice_csf": d[1], "dice_gm": d[2],
                     "dice_wm": d[3], "dice_mean": sum(d.values()) / 3, "seconds": s})
    errors = res.labels != truth
    rows[-1]["uncertainty_auroc_of_errors"] = auroc(res.uncertainty, errors) if errors.any() else None
    panels = [("T1", x[:, 0]), ("truth", truth.float()), ("k-means", methods["k-means"][0].float()),
              ("DPM consensus", res.labels.float()), ("uncertainty", res.uncertainty)]
    return rows, panels


def _brain64_slices(slices: int | None) -> tuple[Any, list[int], torch.Tensor]:
    """(the bundled prior, its held-out z, those T1 slices (S, 1, H, W) in [0, 1])."""
    from mridpm.data.phantom import brain_slices
    from mridpm.nets.priors import load_prior

    p = load_prior("brain64")
    z = _held_out(p, slices)
    return p, z, brain_slices("T1", z, tuple(p.info["image_size"]))[:, None]  # type: ignore[arg-type]


def _metrics(x: torch.Tensor, img: torch.Tensor) -> dict[str, float]:
    return {"psnr": _mean_psnr(x, img), "ssim": float(ssim_batch(x[:, 0], img[:, 0], 1.0).mean())}


def anomaly(slices: int | None, seed: int, levels: tuple[int, ...] = (150, 250, 400)) -> tuple[list[dict], list]:
    from mridpm.data.phantom import brain_slices, insert_lesions, tissue_labels
    from mridpm.nets.priors import available, load_prior
    from mridpm.tasks.anomaly import auroc, best_dice, detect

    priors = {"gaussian": load_prior("brain64")}
    if "anoddpm64" in available():
        priors["simplex"] = load_prior("anoddpm64")
    z = (ANOMALY_HELD_OUT[:slices] if slices else ANOMALY_HELD_OUT) * 2
    size = tuple(priors["gaussian"].info["image_size"])
    brain = tissue_labels(z, size) > 0  # type: ignore[arg-type]
    x, truth = insert_lesions(brain_slices("T1", z, size), brain, seed=seed)  # type: ignore[arg-type]
    x = x[:, None]
    rows, panels = [], [("with lesions", x[:, 0]), ("lesion mask", truth.float())]
    for t in levels:
        for (noise, prior), one in itertools.product(priors.items(), (True, False)):
            name = f"{'DAE residual (one step)' if one else 'AnoDDPM (DDIM)'}, {noise} noise"
            res, secs = _timed(detect, prior, x, t=t, noise=noise, one_step=one, seed=seed)
            d, th = best_dice(res.score, truth, brain)
            rows.append({"task": "anomaly", "method": name, "slices": len(z), "t": t,
                         "auroc": auroc(res.score, truth, brain), "best_dice": d, "threshold": th, "seconds": secs})
            if not one and t == levels[-1]:
                panels += [(f"healthy ({noise})", res.healthy[:, 0]), (f"score ({noise})", res.score)]
    return rows, panels


def denoising(slices: int | None, seed: int, sigmas: tuple[float, ...] = (0.05, 0.1)) -> tuple[list[dict], list]:
    from mridpm.tasks.enhancement import denoise

    p, z, x = _brain64_slices(slices)
    rows, panels = [], [("clean", x[:, 0])]
    for sigma in sigmas:
        g = torch.Generator().manual_seed(seed)
        noisy = x + sigma * torch.randn(x.shape, generator=g)
        res, secs = _timed(denoise, p, noisy, sigma, seed=seed)
        base = {"task": "denoising", "slices": len(z), "sigma": sigma}
        rows.append({**base, "method": "noisy input", **_metrics(x, noisy), "seconds": 0.0})
        rows.append({**base, "method": "DPM (DDIM from the matching t)", **_metrics(x, res.mean), "seconds": secs})
        panels += [(f"noisy {sigma}", noisy[:, 0]), (f"denoised {sigma}", res.mean[:, 0])]
    return rows, panels


def superres(slices: int | None, seed: int, factors: tuple[int, ...] = (2, 4)) -> tuple[list[dict], list]:
    from mridpm.tasks.enhancement import bicubic, lowres_kspace, super_resolve, zero_padded

    p, z, x = _brain64_slices(slices)
    rows, panels = [], [("target", x[:, 0])]
    for f in factors:
        low = lowres_kspace(x, f)
        res, secs = _timed(super_resolve, p, low, f, seed=seed)
        for name, img, s in (("bicubic", bicubic(low, f), 0.0), ("zero-padded k-space", zero_padded(low, f), 0.0),
                             ("DPM with low-res k-space DC", res.mean, secs)):
            img = img.clamp(0, 1)
            rows.append({"task": "superres", "method": name, "slices": len(z), "factor": f, **_metrics(x, img),
                         "seconds": s})
            if name != "bicubic":
                panels.append((f"{name.split()[0]} x{f}", img[:, 0]))
    return rows, panels


# (moved shots, largest rotation in degrees) of the motion cases, 8 shots, shifts up to 3 pixels
MOTION_CASES = (((2, 5), 0.0), ((1,), 0.0), ((0, 3, 6), 0.0), ((2, 5), 3.0), ((1, 6), 3.0))


def motion(slices: int | None, seed: int, steps: int = 15) -> tuple[list[dict], list]:
    from mridpm.data.phantom import motion_kspace
    from mridpm.mri.fft import ifft2c
    from mridpm.tasks.motion import correct_motion

    p, z, x = _brain64_slices(1)
    img = x[0, 0]
    rows, panels = [], [("target", img[None])]
    for i, (moved, angle) in enumerate(MOTION_CASES[:slices] if slices else MOTION_CASES):
        k, _ = motion_kspace(img, 8, list(moved), max_shift=3, max_angle=angle, seed=seed + i)
        base = {"task": "motion", "slices": len(z), "moved": str(list(moved)), "max_angle": angle}
        rows.append({**base, "method": "corrupted", "psnr": psnr(img, ifft2c(k).abs(), 1.0), "seconds": 0.0})
        for undo in (False, True):
            res, secs = _timed(correct_motion, p, k, 8, steps=steps, undo=undo, seed=seed)
            rows.append({**base, "method": "shifts undone" if undo else "moved shots excluded",
                         "psnr": psnr(img, res.image, 1.0), "found": str(res.shifts.abs().amax(1).gt(0.75)
                                                                          .nonzero().flatten().tolist()),
                         "seconds": secs})
            if i == 0:
                panels.append((rows[-1]["method"], res.image[None]))
        if i == 0:
            panels.insert(1, ("corrupted", ifft2c(k).abs()[None]))
    return rows, panels


REGISTRATION_RUN = "runs/register64"  # what `mridpm train configs/register64.toml` writes
CLASSIFICATION_RUN = "runs/classify64"  # what `mridpm train configs/classify64.toml` writes


def _trained(task: str, run: str) -> None:
    """Refuses to evaluate a task whose model was not trained into run (configs/<run's name>.toml)."""
    from pathlib import Path

    if not Path(run).is_dir():
        raise ValueError(f"{task} needs a trained model in {run}: run `mridpm train configs/{Path(run).name}.toml` "
                         "first")


def registration(slices: int | None, seed: int) -> tuple[list[dict], list]:
    from mridpm.tasks.registration import evaluate_registration, load_registration
    from mridpm.train.run import phantom_slices

    _trained("registration", REGISTRATION_RUN)
    model = load_registration(REGISTRATION_RUN)
    z = phantom_slices(model.data, heldout=True) or HELD_OUT
    size = tuple(model.data.get("size", (64, 64)))
    return evaluate_registration(model, z[:slices] if slices else z, seed=seed, size=size,  # type: ignore[arg-type]
                                 tune_on=phantom_slices(model.data)[::10])


def classification(slices: int | None, seed: int) -> tuple[list[dict], list]:
    from mridpm.tasks.classification import evaluate_classification, load_classifier
    from mridpm.train.run import phantom_slices

    _trained("classification", CLASSIFICATION_RUN)
    clf = load_classifier(CLASSIFICATION_RUN)
    z = phantom_slices(clf.model.data, heldout=True) or HELD_OUT
    return evaluate_classification(clf, z[:slices] if slices else z, seed=seed)


# selfsup: NLM's sigma multiplier is tuned on series at these slices, inside brain64's training range
SELFSUP_TUNE_Z = [60, 76, 92, 108]
NLM_MULTIPLIERS = (0.5, 0.75, 1.0, 1.5)


def _dwi_like(z: list[int], seed: int, sigma: float, volumes: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, Rician-noisy) series (V, S, 64, 64) of T2 slices z, each volume its own tissue-contrast draw."""
    from mridpm.data.phantom import brain_slices

    clean = torch.stack([brain_slices("T2", z, (64, 64), jitter=0.2, seed=v) for v in range(volumes)])
    g = torch.Generator().manual_seed(seed)
    real, imag = (sigma * torch.randn(clean.shape, generator=g) for _ in range(2))
    return clean, torch.hypot(clean + real, imag)


def nlm_series(noisy: torch.Tensor, multiplier: float = 1.0) -> torch.Tensor:
    """dipy's non-local means (Rician) of each volume of a series (V, S, H, W) as a 3D volume, with sigma
    multiplier times the median over volumes of dipy's estimate_sigma (one coil): one noise level for the
    series, as in a DWI acquisition (a per-volume estimate takes a b0's anatomy for noise on small crops)."""
    import numpy as np
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    arrs = [vol.permute(1, 2, 0).double().numpy() for vol in noisy]
    sigma = float(np.median([estimate_sigma(a, N=1)[0] for a in arrs])) * multiplier
    return torch.stack([torch.from_numpy(nlmeans(a, sigma, rician=True, num_threads=1)).float().permute(2, 0, 1)
                        for a in arrs])


def residual_whiteness(noisy: torch.Tensor, denoised: torch.Tensor) -> float:
    """Mean |lag-1 autocorrelation| of the residual noisy - denoised along each spatial axis of each
    volume (V, S, H, W): near 0 when the residual is white noise, higher when it holds removed structure."""
    r = noisy - denoised
    r = r - r.mean((1, 2, 3), keepdim=True)
    corrs = []
    for d in (1, 2, 3):
        a, b = r.narrow(d, 0, r.shape[d] - 1), r.narrow(d, 1, r.shape[d] - 1)
        corrs.append((a * b).sum((1, 2, 3)) / ((a * a).sum((1, 2, 3)) * (b * b).sum((1, 2, 3))).sqrt().clamp_min(1e-12))
    return float(torch.stack(corrs).abs().mean())


def homogeneous_region(series: torch.Tensor, size: int = 3) -> tuple[slice, slice, slice]:
    """The size^3 cube (S, H, W slices) of the series' mean image with the lowest local coefficient of
    variation among cubes at least as bright as the median voxel: a homogeneous tissue (white-matter-like)
    region, picked from the noisy data, the same for every method."""
    m = series.mean(0)[None, None]
    mean = torch.nn.functional.avg_pool3d(m, size, 1)[0, 0]
    std = (torch.nn.functional.avg_pool3d(m * m, size, 1)[0, 0] - mean**2).clamp_min(0).sqrt()
    cv = torch.where(mean >= m.median(), std / mean.clamp_min(1e-12), torch.inf)
    s, h, w = (int(i) for i in torch.unravel_index(cv.argmin(), cv.shape))
    return slice(s, s + size), slice(h, h + size), slice(w, w + size)


def _real_dwi() -> tuple[torch.Tensor, torch.Tensor]:
    """(dipy's bundled small_64D DWI as a series (65, 10, 10, 10), its b = 0 volumes (bool (65,)))."""
    import os

    import dipy
    import numpy as np

    from mridpm.data.nifti import read_nifti

    path = os.path.join(os.path.dirname(dipy.__file__), "data", "files", "small_64D")
    vol, _ = read_nifti(path + ".nii")
    return vol.permute(3, 2, 0, 1).float(), torch.from_numpy(np.loadtxt(path + ".bval") < 50)


def selfsup_denoising(slices: int | None, seed: int, sigma: float = 0.08) -> tuple[list[dict], list]:
    """Self-supervised denoising (DDM2) against dipy's NLM (its sigma multiplier tuned on training slices)
    and the clean-T1 prior's denoiser on a Rician-noisy 8-volume T2 series; and on dipy's real DWI data
    (no clean reference there), the residual's whiteness and, in a homogeneous region, the SNR (mean / std)
    of the b0 volume and the mean SNR of the diffusion-weighted ones."""
    import tempfile

    from mridpm.nets.priors import load_prior
    from mridpm.tasks.ddm2 import DDM2Config, ddm2_denoise, normalise_series
    from mridpm.tasks.enhancement import denoise

    z = HELD_OUT[:slices] if slices else HELD_OUT
    tune_clean, tune_noisy = _dwi_like(SELFSUP_TUNE_Z, seed + 1, sigma)
    mult = max(NLM_MULTIPLIERS, key=lambda m: _mean_psnr(tune_clean.flatten(0, 1), nlm_series(tune_noisy, m)
                                                          .flatten(0, 1)))
    clean, noisy = _dwi_like(z, seed, sigma)
    flat = clean.flatten(0, 1)[:, None]
    nlm, nlm_secs = _timed(nlm_series, noisy, mult)
    prior, prior_secs = _timed(denoise, load_prior("brain64"), noisy.flatten(0, 1)[:, None], None, seed=seed)
    x, scale = normalise_series(noisy)
    with tempfile.TemporaryDirectory() as work:  # Stage I alone first, then resumed by the full run
        s1, s1_secs = _timed(ddm2_denoise, x, DDM2Config(stage3_steps=0, seed=seed), work, False)
        res, secs = _timed(ddm2_denoise, x, DDM2Config(seed=seed), work, False)
    methods = {"noisy input": (noisy, 0.0), f"NLM (dipy, {mult} x estimated sigma)": (nlm, nlm_secs),
               "clean-prior DPM (brain64, trained on clean T1)": (prior.mean.reshape(noisy.shape), prior_secs),
               "DDM2 stage I (J-invariant)": (s1.stage1 * scale, s1_secs),
               "DDM2 (stage III)": (res.denoised * scale, s1_secs + secs)}
    rows = [{"task": "selfsup", "method": name, "slices": len(z), "sigma": sigma,
             **_metrics(flat, img.flatten(0, 1)[:, None]), "seconds": s} for name, (img, s) in methods.items()]
    panels = [("clean", clean[0]), ("noisy", noisy[0]), ("NLM", nlm[0]), ("DDM2 stage I", s1.stage1[0] * scale),
              ("DDM2", res.denoised[0] * scale)]
    real, b0 = _real_dwi()
    region = homogeneous_region(real)
    xr, scale_r = normalise_series(real)
    real_nlm, nlm_secs = _timed(nlm_series, real, mult)
    real_res, secs = _timed(ddm2_denoise, xr, DDM2Config(seed=seed), None, False)
    for name, (img, s) in {"noisy input": (real, 0.0), f"NLM (dipy, {mult} x estimated sigma)": (real_nlm, nlm_secs),
                           "DDM2": (real_res.denoised * scale_r, secs)}.items():
        cube = img[(slice(None), *region)].flatten(1)
        rows.append({"task": "selfsup-real", "method": name, "slices": real.shape[1], "volumes": real.shape[0],
                     "whiteness": None if s == 0.0 else residual_whiteness(real, img),
                     "snr_b0": float(cube[b0].mean() / cube[b0].std()),
                     "snr_dwi": float((cube[~b0].mean(1) / cube[~b0].std(1)).mean()), "seconds": s})
    first_b0 = int(b0.nonzero()[0])
    panels += [("real b0", real[first_b0]), ("real b0 NLM", real_nlm[first_b0]),
               ("real b0 DDM2", real_res.denoised[first_b0] * scale_r)]
    return rows, panels


EVALUATIONS = {"segmentation": segmentation, "anomaly": anomaly, "denoising": denoising, "superres": superres,
               "motion": motion, "registration": registration, "classification": classification,
               "selfsup": selfsup_denoising}


def evaluate_tasks(tasks: tuple[str, ...] = tuple(EVALUATIONS), *, slices: int | None = None, seed: int = 0,
                   figure: str | None = None) -> list[dict[str, Any]]:
    """Rows of metrics for each task; figure: a PNG per task (figure's stem + _task.png) of one slice."""
    from pathlib import Path

    from mridpm.figures import write_panels

    unknown = set(tasks) - set(EVALUATIONS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; choose from {sorted(EVALUATIONS)}")
    rows = []
    for task in tasks:
        out, panels = EVALUATIONS[task](slices, seed)
        rows += out
        if figure:
            f = Path(figure)
            middle = next(iter(panels))[1].shape[0] // 2  # a mid-list slice: the lists begin low in the brain
            write_panels(f.with_name(f"{f.stem}_{task}.png"), [(t, img[middle]) for t, img in panels])
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A Markdown table per task, titled with the task and its number of held-out slices."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        part = [r for r in rows if r["task"] == task]
        keys = [k for k in dict.fromkeys(k for r in part for k in r) if k not in ("task", "slices")]
        out += [f"{task} ({part[0]['slices']} held-out slices)", markdown_table(part, keys), ""]
    return "\n".join(out)
