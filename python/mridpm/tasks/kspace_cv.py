"""k-space cross-validation: scores reconstructions of acquisitions that have no fully sampled
reference by holding back a random fraction of the measured samples outside the calibration region,
reconstructing from the rest and comparing the reconstruction's predicted k-space (F S x with the
maps used) with the held-back measurements (their NMSE). Maps, noise estimate and baseline settings
come from the training samples alone, so the held-back samples never leak into a reconstruction."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mridpm.mri.classical import cg_sense, l1_wavelet, zero_filled
from mridpm.mri.espirit import center_maps, check_calibration
from mridpm.mri.operators import Sense, SingleCoil, check_mask
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import Baselines, estimate_noise_std
from mridpm.tasks.recon_scale import estimate_scale
from mridpm.tasks.reconstruction import METHODS, reconstruct_prior

Reconstructor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_train, train_mask) -> complex image
MapsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (y_train, train_mask) -> coil maps
BASELINES = ("zero_filled", "cg_sense", "l1_wavelet")
# diffusion methods that give one complex image per slice (pc-rss gives magnitudes: no k-space to predict)
PRIOR_METHODS = tuple(m for m in METHODS if m not in ("kspace", "tv3d", "pc-rss"))


def _rows(m: torch.Tensor) -> torch.Tensor:
    """The mask as (-1, W) rows."""
    return m.reshape(-1, m.shape[-1])


def is_line_mask(mask: torch.Tensor) -> bool:
    """Whether the mask is constant along every axis but the last (whole phase-encode lines)."""
    rows = _rows(mask)
    return bool((rows == rows[:1]).all())


def _center_run(line: torch.Tensor) -> tuple[int, int]:
    """[lo, hi) of the contiguous sampled lines around the center (what masks.acs_lines counts)."""
    m = line.bool().tolist()
    lo = hi = len(m) // 2
    while lo > 0 and m[lo - 1]:
        lo -= 1
    while hi < len(m) and m[hi]:
        hi += 1
    return lo, hi


def _center_square(plane: torch.Tensor) -> int:
    """The side of the largest fully sampled centered square (masks2d._center_block's placement)."""
    h, w = plane.shape
    side = 0
    while side < min(h, w):
        c = side + 1
        r0, c0 = (h - c + 1) // 2, (w - c + 1) // 2
        if not bool(plane[r0 : r0 + c, c0 : c0 + c].all()):
            break
        side = c
    return side


def holdout_mask(mask: torch.Tensor, fraction: float = 0.1, seed: int = 0, calib: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(train mask, held-back mask), float32 of the mask's shape, disjoint, summing to the mask:
    round(fraction * n) of the n sampled lines (a line mask: constant along all axes but the last)
    or points (a 2D mask (..., H, W), one for all leading axes) outside the calibration region are
    held back, drawn with seed. calib: the center lines (or the center square's side) kept for
    training; None takes the contiguous fully sampled center."""
    m = check_mask(mask)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("cross-validation needs a 0/1 mask")
    if isinstance(fraction, bool) or not 0 < fraction < 1:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    if calib is not None and (isinstance(calib, bool) or not isinstance(calib, int) or calib < 0):
        raise ValueError(f"calib must be a non-negative integer or None, got {calib!r}")
    if is_line_mask(m):
        base = _rows(m)[0]
        if calib is None:
            lo, hi = _center_run(base)
        else:
            lo = (len(base) - calib + 1) // 2
            hi = lo + calib
        protect = torch.zeros_like(base, dtype=torch.bool)
        protect[max(lo, 0) : hi] = True
    else:
        if m.dim() < 2:
            raise ValueError(f"a point mask must be (..., H, W), got {tuple(m.shape)}")
        planes = m.reshape(-1, *m.shape[-2:])
        if not bool((planes == planes[:1]).all()):
            raise ValueError("a 2D mask must be the same for every slice and coil (one (H, W) plane)")
        base = planes[0]
        side = _center_square(base) if calib is None else calib
        h, w = base.shape
        r0, c0 = (h - side + 1) // 2, (w - side + 1) // 2
        protect = torch.zeros_like(base, dtype=torch.bool)
        protect[max(r0, 0) : r0 + side, max(c0, 0) : c0 + side] = True
    candidates = ((base != 0) & ~protect).flatten().nonzero().flatten()
    if len(candidates) < 2:
        raise ValueError(f"only {len(candidates)} sampled lines or points lie outside the calibration region: "
                         "nothing to hold back for cross-validation")
    n = min(max(1, round(fraction * len(candidates))), len(candidates) - 1)
    pick = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(int(seed)))[:n]]
    held = torch.zeros(base.numel(), dtype=torch.float32)
    held[pick] = 1
    held = held.reshape(base.shape)
    train = base - held
    return train.expand(m.shape).contiguous(), held.expand(m.shape).contiguous()


def _fit(mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mask with leading singleton axes dropped until it has no more axes than y (single-coil y)."""
    while mask.dim() > y.dim() and mask.shape[0] == 1:
        mask = mask[0]
    return mask


def _maps_of(op_or_maps: Sense | SingleCoil | torch.Tensor | None) -> torch.Tensor | None:
    """The coil maps of a Sense operator or a maps tensor; None for one coil."""
    if isinstance(op_or_maps, Sense):
        return op_or_maps.maps
    if op_or_maps is None or isinstance(op_or_maps, SingleCoil):
        return None
    if isinstance(op_or_maps, torch.Tensor):
        return op_or_maps
    raise TypeError(f"expected a Sense or SingleCoil operator, coil maps or None, got {type(op_or_maps).__name__}")


def operator(maps: torch.Tensor | None, mask: torch.Tensor, y: torch.Tensor) -> Sense | SingleCoil:
    """SENSE with the maps (batch or 1, coils, H, W) and mask, or single-coil for maps None."""
    return SingleCoil(_fit(mask, y)) if maps is None else Sense(maps, mask)


def cv_nmse(image: torch.Tensor, op_or_maps: Sense | SingleCoil | torch.Tensor | None, y: torch.Tensor,
            heldout_mask: torch.Tensor) -> float:
    """||M_h (F S x - y)||^2 / ||M_h y||^2 over the whole batch: how well the reconstruction x (batch,
    H, W) predicts the held-back measured k-space y (the mask of op_or_maps is ignored, its maps used)."""
    num, den = _residual(image, op_or_maps, y, heldout_mask)
    if den == 0:
        raise ValueError("the held-back k-space samples are all zero: nothing to score against")
    return num / den


def _residual(image: torch.Tensor, op_or_maps: Sense | SingleCoil | torch.Tensor | None, y: torch.Tensor,
              heldout_mask: torch.Tensor) -> tuple[float, float]:
    """(||M_h (F S x - y)||^2, ||M_h y||^2) in float64: cv_nmse's numerator and denominator."""
    if not isinstance(image, torch.Tensor) or not image.is_complex():
        raise TypeError("cv_nmse needs the complex reconstruction (a magnitude image predicts no k-space)")
    held = check_mask(heldout_mask)
    pred = operator(_maps_of(op_or_maps), held, y).forward(image.to(y.dtype))
    measured = y * _fit(held, y).to(y.device)
    energy = torch.view_as_real(measured).double().square().sum()
    return float(torch.view_as_real(pred - measured).double().square().sum()), float(energy)


def cross_validate(y: torch.Tensor, mask: torch.Tensor,
                   reconstructors: dict[str, Reconstructor] | Callable[[torch.Tensor | None], dict[str, Reconstructor]],
                   maps: torch.Tensor | MapsFn | None = None, fraction: float = 0.1, seed: int = 0,
                   calib: int | None = None, folds: int = 1) -> dict[str, float]:
    """{name: CV NMSE} of each reconstructor run on the training k-space (y times the train mask).
    y: measured k-space (batch, coils, H, W) with maps, or (batch, H, W) for one coil (maps None).
    maps may be a function of (y_train, train_mask) (e.g. ESPIRiT), and reconstructors a function
    of those maps giving the dict, so that maps come from the training samples alone. folds > 1
    repeats the split with seeds seed, seed + 1, ... and pools the residuals (less variance for
    line masks, where a split holds back only a few lines)."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    sums: dict[str, list[float]] = {}
    for f in range(folds):
        train, held = holdout_mask(mask, fraction, seed + f, calib)
        y_train = y * _fit(train, y).to(y.device)
        m = maps(y_train, train) if callable(maps) else maps
        if m is None and y.dim() == 4:
            raise ValueError("multi-coil y (batch, coils, H, W) needs coil maps (a tensor or a function of the "
                             "training k-space)")
        recs = reconstructors(m) if callable(reconstructors) else reconstructors
        for name, fn in recs.items():
            num, den = _residual(fn(y_train, train), m, y, held)
            acc = sums.setdefault(name, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + num, acc[1] + den
    if any(den == 0 for _, den in sums.values()):
        raise ValueError("the held-back k-space samples are all zero: nothing to score against")
    return {name: num / den for name, (num, den) in sums.items()}


def baseline_reconstructors(maps: torch.Tensor | None, baselines: Baselines | None = None
                            ) -> dict[str, Reconstructor]:
    """zero_filled, cg_sense and l1_wavelet with the maps and fixed settings (default Baselines():
    without a reference there is nothing to tune them on; the L1 weight is relative to the image peak
    of the training k-space)."""
    b = Baselines() if baselines is None else baselines

    def zf(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return zero_filled(y, operator(maps, mask, y))

    def cg(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return cg_sense(y, operator(maps, mask, y), iters=b.cg_iters)

    def l1(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        op = operator(maps, mask, y)
        return l1_wavelet(y, op, b.l1_lam * estimate_scale(y, op), iters=60)

    return {"zero_filled": zf, "cg_sense": cg, "l1_wavelet": l1}


def prior_reconstructor(prior: Any, method: str, maps: torch.Tensor | None, *, samples: int = 1,
                        steps: int | None = None, seed: int = 0, noise_std: float | None = None) -> Reconstructor:
    """A diffusion method's posterior mean with the maps; noise_std None estimates the noise from
    the measured samples in the outermost rows of the training k-space."""
    if method not in PRIOR_METHODS:
        raise ValueError(f"method must be one of {PRIOR_METHODS} for cross-validation, got {method!r}")

    def run(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        sigma = estimate_noise_std(y, mask) if noise_std is None else noise_std
        r = reconstruct_prior(y, operator(maps, mask, y), prior, method=method, samples=samples, steps=steps,
                              noise_std=sigma, generator=Generator(seed))
        return r.mean

    return run


def _timed(fn: Reconstructor, seconds: list[float]) -> Reconstructor:
    """fn, appending each call's duration to seconds."""
    def run(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tic = time.perf_counter()
        out = fn(y, mask)
        seconds.append(time.perf_counter() - tic)
        return out

    return run


FILE_METHODS = ("zero_filled", "cg_sense", "l1_wavelet", "dds")


def cross_validate_file(path: str | os.PathLike, methods: Sequence[str] = FILE_METHODS, *, prior: str = "brain64c",
                        accel: float | None = None, center: float | None = None, mask_kind: str = "lines",
                        fraction: float = 0.1, seed: int = 0,
                        folds: int = 1, steps: int | None = None, samples: int = 1,
                        slices: Sequence[int] | None = None, noise_std: float | None = None,
                        baselines: Baselines | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """One row per method: the mean over the file's slices (all, or `slices`) of the CV NMSE, with
    the file's mask (or a fastMRI line mask for accel/center). Per slice the coil maps are estimated
    by ESPIRiT from the training k-space and the noise from its outermost rows; folds as in cross_validate."""
    from tqdm.auto import tqdm

    from mridpm.data.fastmri import read_fastmri
    from mridpm.mri.masks import acs_square, file_mask
    from mridpm.tasks.recon_file import check_size, check_volume

    bad = [m for m in methods if m not in BASELINES + PRIOR_METHODS]
    if bad or not methods:
        raise ValueError(f"methods must be among {BASELINES + PRIOR_METHODS}, got {list(methods)}")
    vol = read_fastmri(path)
    check_volume(vol, path, "dds")
    kspace = vol.kspace if vol.multicoil else vol.kspace[:, None]
    mask = file_mask(kspace, vol.mask, accel, center, seed, kind=mask_kind)
    acs = acs_square(mask, tuple(kspace.shape[-2:]))
    if vol.multicoil:
        check_calibration(acs)
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    held = int(holdout_mask(mask, fraction, seed)[1].sum())  # checks fraction before any work
    p = None
    if any(m in PRIOR_METHODS for m in methods):
        from mridpm.nets.priors import load_prior

        p = load_prior(prior)
        check_size(p, tuple(kspace.shape[-2:]))
    chosen = list(range(kspace.shape[0])) if slices is None else [int(s) for s in slices]
    if not chosen or any(not 0 <= s < kspace.shape[0] for s in chosen):
        raise ValueError(f"slices must be a non-empty list within [0, {kspace.shape[0]}), got {chosen}")
    scores: dict[str, list[float]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}

    def maps_from_training(y_train: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
        return center_maps(y_train, acs)

    for s in tqdm(chosen, desc="k-space CV", disable=not progress):
        m = mask[s : s + 1] if mask.dim() == 4 and mask.shape[0] > 1 else mask  # a per-slice 2D mask
        y = kspace[s : s + 1] * m
        y = y if vol.multicoil else y[:, 0]

        def make(maps: torch.Tensor | None, s: int = s) -> dict[str, Reconstructor]:
            base = baseline_reconstructors(maps, baselines)
            recs = {m: base[m] if m in base else prior_reconstructor(p, m, maps, samples=samples, steps=steps,
                                                                     seed=seed + s, noise_std=noise_std)
                    for m in methods}
            return {m: _timed(fn, seconds[m]) for m, fn in recs.items()}

        result = cross_validate(y, m, make, maps_from_training if vol.multicoil else None, fraction, seed,
                                folds=folds)
        for m, v in result.items():
            scores[m].append(v)
    return [{"file": str(path), "method": m, "cv_nmse": sum(scores[m]) / len(scores[m]), "slices": len(chosen),
             "heldout_lines": held, "sampled_lines": int(mask.sum()), "fraction": fraction, "folds": folds,
             "seconds": sum(seconds[m]) / len(seconds[m])} for m in methods]
