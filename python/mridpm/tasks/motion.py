"""Motion correction: k-space rows acquired while the head had moved (rigid in-plane motion between
the shots of an interleaved scan) are inconsistent with the rest. A prior-cleaned image exposes them:
each shot's k-space residual against that image is compared with the other shots' (a robust z-score),
flagged shots are excluded from data consistency, and the image is reconstructed from the rest."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mridpm.mri.fft import fft2c, ifft2c
from mridpm.nets.priors import Prior
from mridpm.random import Generator
from mridpm.tasks._common import as_prior, check_images, to_unit
from mridpm.tasks.enhancement import consistent_sample


@dataclass
class MotionCorrection:
    """image (H, W) in the k-space's intensity units; excluded (shots,) bool, the shots left out of data
    consistency; shifts (shots, 2), each shot's estimated (dy, dx) shift in pixels, undone in k-space."""

    image: torch.Tensor
    excluded: torch.Tensor
    shifts: torch.Tensor


def shot_residuals(kspace: torch.Tensor, image: torch.Tensor, shots: int) -> torch.Tensor:
    """||y_s - F(image)_s|| / ||y_s|| for the rows of each shot s (row r belongs to shot r % shots)."""
    r = (kspace - fft2c(image.to(torch.complex64))).abs().square().sum(-1)
    e = kspace.abs().square().sum(-1)
    rows = torch.arange(kspace.shape[-2]) % shots
    num = torch.zeros(shots, dtype=r.dtype).index_add_(0, rows, r)
    den = torch.zeros(shots, dtype=e.dtype).index_add_(0, rows, e).clamp_min(1e-30)
    return (num / den).sqrt()


def shift_phase(shape: tuple[int, int], dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """exp(-2 pi i (ky dy / H + kx dx / W)) on the centered k-space grid (..., H, W): the factor a
    shift of the image by (dy, dx) pixels multiplies its k-space by."""
    h, w = shape
    ky = (torch.arange(h) - h // 2).float() / h
    kx = (torch.arange(w) - w // 2).float() / w
    phase = -2 * torch.pi * (dy[..., None, None] * ky[:, None] + dx[..., None, None] * kx)
    return torch.polar(torch.ones_like(phase), phase)


def estimate_shifts(kspace: torch.Tensor, image: torch.Tensor, shots: int, max_shift: float = 4.0,
                    step: float = 0.125) -> torch.Tensor:
    """Each shot's in-plane shift (shots, 2) (dy, dx pixels) against image: the grid point whose phase
    best correlates the shot's rows with image's k-space (max of Re sum y conj(F(image) phase))."""
    ref = fft2c(image.to(torch.complex64))
    rows = torch.arange(kspace.shape[0]) % shots
    grid = torch.arange(-max_shift, max_shift + step / 2, step)
    dy, dx = (g.flatten() for g in torch.meshgrid(grid, grid, indexing="ij"))
    out = torch.zeros(shots, 2)
    for s in range(shots):
        sel = rows == s
        cross = kspace[sel] * ref[sel].conj()  # (rows of s, W)
        score = torch.cat([(cross * shift_phase(tuple(kspace.shape), a, b)[:, sel].conj()).real.sum((1, 2))  # type: ignore[arg-type]
                           for a, b in zip(dy.split(128), dx.split(128), strict=True)])
        best = int(score.argmax())
        out[s] = torch.stack([dy[best], dx[best]])
    return out


@torch.no_grad()
def correct_motion(prior: Prior | str | os.PathLike, kspace: torch.Tensor, shots: int, *, steps: int = 25,
                   rounds: int = 2, min_shift: float = 0.75, undo: bool = False, seed: int = 0,
                   progress: bool = False) -> MotionCorrection:
    """The image of single-coil k-space (H, W) of a real object scanned in `shots` interleaved shots
    with rigid in-plane motion between them. Each round reconstructs under the prior with data
    consistency on the shots trusted so far, estimates every shot's shift against that image (relative
    to the median shot: the frame most shots share), and marks the shots that moved more than min_shift
    pixels; these are excluded from data consistency, or with undo their shift is undone in k-space and
    they are kept (rotation, which a shift does not model, then remains)."""
    p = as_prior(prior)
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.dim() != 2:
        raise ValueError(f"kspace must be complex (H, W), got {getattr(kspace, 'shape', type(kspace))}")
    if not bool(torch.isfinite(torch.view_as_real(kspace)).all()) or not bool((kspace != 0).any()):
        raise ValueError("kspace must be finite and not all zero")
    if not isinstance(shots, int) or not 2 <= shots <= kspace.shape[0]:
        raise ValueError(f"shots must be an integer in [2, {kspace.shape[0]}], got {shots!r}")
    scale = float(ifft2c(kspace).abs().amax())
    y = kspace / scale
    check_images(y.real[None, None], p, "the image")
    rows = torch.arange(kspace.shape[0]) % shots
    moved = torch.zeros(shots, dtype=torch.bool)
    shifts = torch.zeros(shots, 2)
    data = y
    for _ in range(rounds):
        image = _reconstruct(p, data[None, None], ~moved[rows][None] | undo, steps, seed, progress)[0, 0]
        shifts = estimate_shifts(y, image, shots)
        shifts = shifts - shifts.median(0).values
        moved = shifts.abs().amax(1) > min_shift
        if undo:
            phase = shift_phase(tuple(y.shape), shifts[:, 0] * moved, shifts[:, 1] * moved)  # type: ignore[arg-type]
            data = y * phase[rows, torch.arange(y.shape[0])].conj()
    image = _reconstruct(p, data[None, None], ~moved[rows][None] | undo, steps, seed, progress)[0, 0]
    return MotionCorrection(image * scale, moved & ~torch.tensor(undo), shifts)


def _reconstruct(p: Prior, y: torch.Tensor, keep_rows: torch.Tensor, steps: int, seed: int, progress: bool
                 ) -> torch.Tensor:
    """Images (B, 1, H, W) in [0, 1] from k-space y (1, 1, H, W) with data consistency on the rows
    keep_rows (B, H) of each, generated by the prior in one batch."""
    device = next(p.model.parameters()).device
    b = keep_rows.shape[0]
    mask = keep_rows[:, None, :, None].expand(b, 1, *y.shape[-2:]).to(device)
    out = consistent_sample(p, y.to(device).expand(b, -1, -1, -1), mask, steps, Generator(seed), progress=progress)
    return to_unit(out, p).clamp(0, 1).cpu()
