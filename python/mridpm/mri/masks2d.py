"""2D Cartesian sampling of a k-space plane (the phase-encode plane of 3D scans, or any 2D pattern of
a file): uniform random and variable-density Poisson-disc masks, and the masks of a file's
reconstruction when they are not lines: made for an acceleration, read from the file as (H, W) or
(slices, H, W), or inferred from which k-space locations hold data; `acs_square` sizes the fully
sampled center that ESPIRiT calibrates from."""

from __future__ import annotations

import math

import numpy as np
import torch

MASK_KINDS = ("lines", "poisson", "random")  # reconstruct_file's mask_kind: 1D lines or a 2D pattern


def _check_accel(acceleration: float, center: int, total: int) -> int:
    """The number of samples an acceleration keeps of total, refused when it is < 1 or below the center's."""
    if not math.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    target = round(total / acceleration)
    if target < center:
        raise ValueError(f"acceleration {acceleration} keeps {target} of {total} samples, fewer than the "
                         f"{center} of the fully sampled center")
    return target


def uniform_random_2d(shape: tuple[int, int], acceleration: float, calib: int = 0,
                      seed: int | None = None) -> torch.Tensor:
    """Points drawn uniformly without replacement plus a calib x calib center block; exactly
    round(H W / acceleration) samples; shape (H, W)."""
    h, w = shape
    mask = _center_block(h, w, calib)
    target = _check_accel(acceleration, int(mask.sum()), h * w)
    rest = np.flatnonzero(mask.reshape(-1) == 0)
    pick = np.random.default_rng(seed).choice(rest, size=target - int(mask.sum()), replace=False)
    mask.reshape(-1)[pick] = 1
    return torch.from_numpy(mask)


def _center_block(h: int, w: int, calib: int) -> np.ndarray:
    """float32 (h, w) zeros with a calib x calib block of ones at the center."""
    mask = np.zeros((h, w), dtype=np.float32)
    if calib > 0:
        if calib > min(h, w):
            raise ValueError(f"calib {calib} exceeds the k-space size {(h, w)}")
        r0, c0 = (h - calib + 1) // 2, (w - calib + 1) // 2
        mask[r0 : r0 + calib, c0 : c0 + calib] = 1
    return mask


def poisson_disc_2d(shape: tuple[int, int], acceleration: float, calib: int = 0, seed: int | None = None,
                    tol: float = 0.02, max_tries: int = 40) -> torch.Tensor:
    """Variable-density Poisson-disc sampling of a (H, W) k-space plane (for 3D Cartesian phase
    encoding): dart throwing in a random order, each point's exclusion radius growing away from
    the center (scale * (1 + |k|) in units where the edges lie at |k| = 1), plus a calib x calib
    center block; the scale is bisected until the acceleration is within tol of the target. Where
    the radius falls below one pixel (the very center at high sampling rates) every point is kept."""
    h, w = shape
    base = _center_block(h, w, calib)
    _check_accel(acceleration, int(base.sum()), h * w)
    ky, kx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    shape_r = (1.0 + np.sqrt(ky * ky + kx * kx)).astype(np.float32).reshape(-1)
    order = np.random.default_rng(seed).permutation(h * w).astype(np.int64)
    def throw(scale: float) -> tuple[np.ndarray, float]:
        mask = np.maximum(base, dart_throw(h, w, (scale * shape_r).astype(np.float32), order).reshape(h, w))
        return mask, h * w / mask.sum()

    lo, hi = 0.0, math.sqrt(acceleration)  # a radius near sqrt(R) pixels keeps about one point in R
    while throw(hi)[1] < acceleration and hi < max(h, w):
        lo, hi = hi, 2 * hi
    best, best_err = base, math.inf
    for _ in range(max_tries):
        scale = 0.5 * (lo + hi)
        mask, achieved = throw(scale)
        if abs(achieved - acceleration) < best_err:
            best, best_err = mask, abs(achieved - acceleration)
        if best_err <= tol * acceleration:
            break
        lo, hi = (scale, hi) if achieved < acceleration else (lo, scale)
    return torch.from_numpy(best.astype(np.float32))


def dart_throw(h: int, w: int, radius: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Keeps each candidate (in `order`) unless a kept point lies strictly within its radius; uint8 (h * w,).
    The compiled kernel when built, else the same loop in Python."""
    from mridpm import _ext

    radius = np.ascontiguousarray(radius, dtype=np.float32)
    order = np.ascontiguousarray(order, dtype=np.int64)
    bad = ~(np.isfinite(radius) & (radius >= 0))
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"dart_throw: every radius must be finite and non-negative; radius[{j}] is {radius[j]}")
    out = np.zeros(h * w, dtype=np.uint8)
    ext = _ext.extension()
    if ext is not None:
        ext.poisson_disc(h, w, (radius.ctypes.data, radius.size), (order.ctypes.data, order.size),
                         (out.ctypes.data, out.size))
        return out
    return dart_throw_reference(h, w, radius, order)


def dart_throw_reference(h: int, w: int, radius: np.ndarray, order: np.ndarray) -> np.ndarray:
    """dart_throw in plain Python: the ground truth of the compiled kernel."""
    kept = np.zeros((h, w), dtype=np.uint8)
    for idx in order:
        y, x = divmod(int(idx), w)
        r = float(radius[idx])
        reach = math.ceil(r)
        ys, xs = slice(max(y - reach, 0), min(y + reach + 1, h)), slice(max(x - reach, 0), min(x + reach + 1, w))
        py, px = np.nonzero(kept[ys, xs])
        d2 = (py + ys.start - y) ** 2 + (px + xs.start - x) ** 2
        if not np.any(d2.astype(np.float32) < np.float32(r) * np.float32(r)):
            kept[y, x] = 1
    return kept.reshape(-1)


def check_mask_kind(kind: object, accel: float | None) -> None:
    """Refuses a mask kind other than MASK_KINDS, and a 2D kind without an acceleration (the file's
    own mask, or its measured locations, are used then)."""
    if not isinstance(kind, str) or kind not in MASK_KINDS:
        raise ValueError(f"the mask kind must be one of {MASK_KINDS}, got {kind!r}")
    if accel is None and kind != "lines":
        raise ValueError(f"a mask kind ({kind!r}) applies only with an acceleration (--accel): without one the "
                         "file's own mask is used")


def plane_mask(kind: str, shape: tuple[int, int], accel: float, center: float, seed: int) -> torch.Tensor:
    """A (1, 1, H, W) 2D mask of `kind` ('poisson' or 'random') at acceleration accel, with a fully
    sampled center block of side round(center * min(H, W))."""
    calib = round(center * min(shape))
    if kind == "poisson":
        m = poisson_disc_2d(shape, accel, calib=calib, seed=seed)
    elif kind == "random":
        m = uniform_random_2d(shape, accel, calib=calib, seed=seed)
    else:
        raise ValueError(f"plane_mask makes 'poisson' or 'random' masks, got {kind!r}")
    return m.reshape(1, 1, *shape)


def as_lines(mask: torch.Tensor) -> torch.Tensor:
    """A (slices, 1, H, W) 0/1 mask reduced where it can be: to (slices, 1, 1, W) lines when every row
    of each slice is the same (so the operators take their fast line path), and to one slice when
    every slice is the same."""
    if mask.shape[-2] > 1 and bool((mask == mask[..., :1, :]).all()):
        mask = mask[..., :1, :]
    if mask.shape[0] > 1 and bool((mask == mask[:1]).all()):
        mask = mask[:1]
    return mask.contiguous()


def stored_plane(stored: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A file's stored mask, (W,), (H, W) or (slices, H, W) (leading ones dropped), for k-space of
    shape (slices, [coils,] H, W), as a (1 or slices, 1, H or 1, W) float mask; refuses other shapes."""
    m = stored
    while m.dim() > 1 and m.shape[0] == 1:
        m = m[0]
    slices, h, w = shape[0], shape[-2], shape[-1]
    if m.dim() <= 1:
        if m.numel() != w:
            raise ValueError(f"the file's mask has width {m.numel()} but its k-space {w}")
        return m.reshape(1, 1, 1, w).float()
    if tuple(m.shape) == (h, w):
        return m.reshape(1, 1, h, w).float()
    if tuple(m.shape) == (slices, h, w):
        return m.reshape(slices, 1, h, w).float()
    raise ValueError(f"the file's mask of shape {tuple(stored.shape)} fits neither lines ({w},) nor the k-space "
                     f"plane ({h}, {w}) nor its slices ({slices}, {h}, {w})")


def measured(kspace: torch.Tensor) -> torch.Tensor:
    """Where a file's k-space (slices, [coils,] H, W) holds data: a location is measured where any coil
    is nonzero; (slices, 1, H, W) float 0/1."""
    m = kspace != 0
    if m.dim() == 4:
        m = m.any(dim=1)
    return m.reshape(m.shape[0], 1, *m.shape[-2:]).float()


def acs_square(mask: torch.Tensor, shape: tuple[int, int]) -> int:
    """The side of the largest square, centered as ESPIRiT crops it (espirit.resize_center), that a
    mask broadcastable to (..., H, W) samples fully in every slice: the calibration region."""
    h, w = shape
    m = torch.broadcast_to(mask != 0, (*mask.shape[:-2], h, w)).reshape(-1, h, w).all(dim=0)
    side = 0
    for s in range(1, min(h, w) + 1):
        r0, c0 = h // 2 - s // 2, w // 2 - s // 2
        if not bool(m[r0 : r0 + s, c0 : c0 + s].all()):
            break
        side = s
    return side
