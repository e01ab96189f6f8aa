"""Undersampling masks. The fastMRI classes draw exactly what fastMRI's own draw for a seed (same
NumPy RandomState calls in the same order, same line counts and center placement); the others
(variable-density Gaussian 1D, and from masks2d uniform random 2D and Poisson-disc 2D) hit their
acceleration exactly. Masks are float32 0/1 tensors; `acceleration` reports what a mask really
achieves; `line_mask` gives the evaluation's line masks and `file_mask` the masks (lines or 2D) that
the reconstruction of files applies."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mridpm.mri.masks2d import (
    MASK_KINDS,
    _check_accel,
    acs_square,
    as_lines,
    check_mask_kind,
    dart_throw,
    dart_throw_reference,
    measured,
    plane_mask,
    poisson_disc_2d,
    stored_plane,
    uniform_random_2d,
)

__all__ = ["MASK_KINDS", "EquiSpacedMaskFunc", "EquispacedMaskFractionFunc", "MaskFunc", "RandomMaskFunc",
           "acceleration", "acs_lines", "acs_square", "check_line_options", "check_mask_kind", "dart_throw",
           "dart_throw_reference", "default_center", "file_mask", "gaussian_lines", "line_mask",
           "poisson_disc_2d", "uniform_random_2d"]


@contextlib.contextmanager
def _temp_seed(rng: np.random.RandomState, seed: int | Sequence[int] | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    state = rng.get_state()
    rng.seed(seed)
    try:
        yield
    finally:
        rng.set_state(state)


def _center_lines(num_cols: int, num_low: int) -> np.ndarray:
    """float32 0/1 lines with the num_low center ones set, starting at (num_cols - num_low + 1) // 2 (fastMRI)."""
    mask = np.zeros(num_cols, dtype=np.float32)
    pad = (num_cols - num_low + 1) // 2
    mask[pad : pad + num_low] = 1
    return mask


class MaskFunc:
    """fastMRI's MaskFunc interface: mask_func(shape, offset=None, seed=None) -> (mask, num_low_frequencies),
    lines along shape[-2] (fastMRI's real-view k-space (..., H, W, 2)); mask shaped [1, ..., W, 1]."""

    def __init__(self, center_fractions: Sequence[float], accelerations: Sequence[float],
                 allow_any_combination: bool = False, seed: int | None = None) -> None:
        if len(center_fractions) != len(accelerations) and not allow_any_combination:
            raise ValueError("center_fractions and accelerations must have the same length unless "
                             "allow_any_combination=True")
        if not center_fractions or any(not 0 <= c < 1 for c in center_fractions):
            raise ValueError(f"center fractions must lie in [0, 1), got {list(center_fractions)}")
        if not accelerations or any(a < 1 for a in accelerations):
            raise ValueError(f"accelerations must be >= 1, got {list(accelerations)}")
        self.center_fractions, self.accelerations = list(center_fractions), list(accelerations)
        self.allow_any_combination = allow_any_combination
        self.rng = np.random.RandomState(seed)

    def __call__(self, shape: Sequence[int], offset: int | None = None,
                 seed: int | Sequence[int] | None = None) -> tuple[torch.Tensor, int]:
        if len(shape) < 3:
            raise ValueError("shape should have 3 or more dimensions (fastMRI's (..., H, W, 2) convention)")
        with _temp_seed(self.rng, seed):
            num_cols = shape[-2]
            center_fraction, acceleration = self._choose()
            num_low = round(num_cols * center_fraction)
            center = _center_lines(num_cols, num_low)
            accel = self._acceleration_mask(num_cols, acceleration, offset, num_low)
        mask = np.maximum(center, accel.astype(np.float32))
        mask_shape = [1] * len(shape)
        mask_shape[-2] = num_cols
        return torch.from_numpy(mask.reshape(mask_shape).astype(np.float32)), num_low

    def _choose(self) -> tuple[float, float]:
        if self.allow_any_combination:
            return self.rng.choice(self.center_fractions), self.rng.choice(self.accelerations)
        choice = self.rng.randint(len(self.center_fractions))
        return self.center_fractions[choice], self.accelerations[choice]

    def _acceleration_mask(self, num_cols: int, acceleration: float, offset: int | None, num_low: int) -> np.ndarray:
        raise NotImplementedError


class RandomMaskFunc(MaskFunc):
    """Center lines plus each other line with p = (W / R - n_low) / (W - n_low): R holds on average only."""

    def _acceleration_mask(self, num_cols: int, acceleration: float, offset: int | None, num_low: int) -> np.ndarray:
        prob = (num_cols / acceleration - num_low) / (num_cols - num_low)
        return self.rng.uniform(size=num_cols) < prob


class EquiSpacedMaskFunc(MaskFunc):
    """Center lines plus every R-th line from a (random) offset, as in GRAPPA acquisitions."""

    def _acceleration_mask(self, num_cols: int, acceleration: float, offset: int | None, num_low: int) -> np.ndarray:
        if offset is None:
            offset = self.rng.randint(0, high=round(acceleration))
        mask = np.zeros(num_cols, dtype=np.float32)
        mask[offset :: int(acceleration)] = 1
        return mask


class EquispacedMaskFractionFunc(MaskFunc):
    """fastMRI's equispaced mask of the public multi-coil data: spacing adjusted for the center lines."""

    def _acceleration_mask(self, num_cols: int, acceleration: float, offset: int | None, num_low: int) -> np.ndarray:
        adjusted = (acceleration * (num_low - num_cols)) / (num_low * acceleration - num_cols)
        if offset is None:
            offset = self.rng.randint(0, high=round(adjusted))
        mask = np.zeros(num_cols)
        mask[np.around(np.arange(offset, num_cols - 1, adjusted)).astype(np.uint)] = 1.0
        return mask


def gaussian_lines(width: int, acceleration: float, center_fraction: float = 0.08, std_fraction: float = 0.25,
                   seed: int | None = None) -> torch.Tensor:
    """1D variable density: the center lines plus lines drawn without replacement with Gaussian
    probability (std = std_fraction * width), round(width / acceleration) lines in all; shape (width,)."""
    num_low = round(width * center_fraction)
    target = _check_accel(acceleration, num_low, width)
    rng = np.random.default_rng(seed)
    mask = _center_lines(width, num_low)
    rest = np.flatnonzero(mask == 0)
    weights = np.exp(-0.5 * ((rest - width / 2) / (std_fraction * width)) ** 2)
    pick = rng.choice(rest, size=target - num_low, replace=False, p=weights / weights.sum())
    mask[pick] = 1
    return torch.from_numpy(mask)


def acceleration(mask: torch.Tensor, shape: Sequence[int] | None = None) -> float:
    """The acceleration a mask achieves on k-space of `shape` (the mask's own shape by default):
    the number of k-space samples over the number sampled."""
    full = tuple(mask.shape) if shape is None else tuple(shape)
    m = torch.broadcast_to(mask, full)
    sampled = float((m != 0).sum())
    if sampled == 0:
        raise ValueError("the mask samples nothing")
    return m.numel() / sampled


def default_center(accel: float) -> float:
    """fastMRI's center fractions: 8% at 4x, 4% at 8x."""
    return 0.08 if accel <= 4 else 0.04


def line_mask(width: int, accel: float, center: float | None = None, seed: int = 0) -> torch.Tensor:
    """A fastMRI 1D random line mask (1, 1, 1, width), center fraction default_center(accel) unless given."""
    mask, _ = RandomMaskFunc([default_center(accel) if center is None else center], [accel], seed=seed)(
        (1, width, 1))
    return mask.reshape(1, 1, 1, width)


def acs_lines(mask: torch.Tensor) -> int:
    """The number of contiguous sampled lines around the center of a (..., W) line mask: the
    autocalibration region ESPIRiT can use."""
    m = mask.reshape(-1).bool().tolist()
    c = len(m) // 2
    lo = hi = c
    while lo - 1 >= 0 and m[lo - 1]:
        lo -= 1
    while hi < len(m) and m[hi]:
        hi += 1
    return hi - lo


def check_line_options(accel: float | None, center: float | None) -> None:
    """Refuses a non-finite acceleration or one <= 1, a center fraction outside (0, 1), and a center
    fraction without an acceleration (it would be ignored: the file's own mask is used then)."""
    if accel is None:
        if center is not None:
            raise ValueError("a center fraction applies only with an acceleration (--accel): without one "
                             "the file's own mask is used")
        return
    if isinstance(accel, bool) or not isinstance(accel, numbers.Real) or not math.isfinite(accel) or accel <= 1:
        raise ValueError(f"the acceleration must be a finite number > 1, got {accel!r}")
    if center is not None and (isinstance(center, bool) or not isinstance(center, numbers.Real)
                               or not 0 < center < 1):
        raise ValueError(f"the center fraction must lie in (0, 1), got {center!r}")


def file_mask(kspace: torch.Tensor, stored: torch.Tensor | None, accel: float | None, center: float | None,
              seed: int, kind: str = "lines") -> torch.Tensor:
    """The mask to apply to a file's k-space (slices, [coils,] H, W), so that unmeasured k-space is never
    read as measured zeros: made for accel (kind 'lines': (1, 1, 1, W); 'poisson' or 'random': (1, 1, H,
    W)), else the file's own ((W,), (H, W) or (slices, H, W); finite and 0/1, so a damaged mask is not
    read as fully sampled), else the locations where any coil holds data; a stored or inferred
    pattern is (1 or slices, 1, H, W), or (1 or slices, 1, 1, W) when it is exactly lines."""
    check_line_options(accel, center)
    check_mask_kind(kind, accel)
    h, width = kspace.shape[-2:]
    if accel is not None:
        if kind == "lines":
            return line_mask(width, accel, center, seed)
        return plane_mask(kind, (h, width), accel, default_center(accel) if center is None else center, seed)
    if stored is not None:
        m = stored_plane(stored, tuple(kspace.shape))
        if not bool(torch.isfinite(m).all()):
            raise ValueError("the file's mask contains NaN or Inf; repair the file or give --accel")
        if not bool(((m == 0) | (m == 1)).all()):
            bad = sorted({float(v) for v in m[(m != 0) & (m != 1)].tolist()})[:3]
            raise ValueError(f"the file's mask must hold only 0 and 1, found {bad}; repair the file or give --accel")
        if not bool((m != 0).any()):
            raise ValueError("the file's mask samples no k-space line")
        return as_lines((m != 0).float())
    sampled = as_lines(measured(kspace))
    if bool(sampled.all()):
        raise ValueError("the k-space is fully sampled and the file has no mask: give --accel to undersample it")
    return sampled
