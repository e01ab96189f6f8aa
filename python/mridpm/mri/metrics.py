"""Image-quality metrics as fastMRI computes them (NMSE, PSNR, SSIM over a volume, data range the
target volume's maximum), in PyTorch float64, and a batched SSIM for training loops."""

from __future__ import annotations

import math

import torch
from torch.nn.functional import avg_pool2d


def _pair(target: object, pred: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(target, torch.Tensor) or not isinstance(pred, torch.Tensor):
        raise TypeError("target and pred must be tensors")
    if target.is_complex() or pred.is_complex():
        raise TypeError("metrics take real (magnitude) images; use .abs() on complex ones")
    if target.shape != pred.shape:
        raise ValueError(f"target {tuple(target.shape)} and pred {tuple(pred.shape)} differ in shape")
    if target.numel() == 0:
        raise ValueError("empty images")
    t, p = target.double(), pred.double()
    if not bool(torch.isfinite(t).all() and torch.isfinite(p).all()):
        raise ValueError("target or pred contains NaN or Inf")
    return t, p


def nmse(target: torch.Tensor, pred: torch.Tensor) -> float:
    """||target - pred||^2 / ||target||^2 over the whole volume."""
    t, p = _pair(target, pred)
    return float(torch.sum((t - p) ** 2) / torch.sum(t * t))


def psnr(target: torch.Tensor, pred: torch.Tensor, data_range: float | None = None) -> float:
    """10 log10(data_range^2 / MSE), data_range the target's maximum unless given."""
    t, p = _pair(target, pred)
    rng = float(t.max()) if data_range is None else float(data_range)
    mse = float(torch.mean((t - p) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(rng * rng / mse)


def ssim_map_mean(target: torch.Tensor, pred: torch.Tensor, data_range: torch.Tensor | float, win_size: int = 7,
                  k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM per image of (batch, H, W) stacks: uniform win_size window, sample covariance, the
    window's valid region only (scikit-image's structural_similarity defaults); shape (batch,)."""
    if target.dim() != 3 or min(target.shape[-2:]) < win_size:
        raise ValueError(f"SSIM needs (batch, H, W) images of at least {win_size}x{win_size}, "
                         f"got {tuple(target.shape)}")
    x, y = target.unsqueeze(1), pred.unsqueeze(1)
    pool = [avg_pool2d(v, win_size, stride=1) for v in (x, y, x * x, y * y, x * y)]
    ux, uy, uxx, uyy, uxy = pool
    n = win_size * win_size
    cov = n / (n - 1)
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    r = torch.as_tensor(data_range, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim(target: torch.Tensor, pred: torch.Tensor, data_range: float | None = None) -> float:
    """fastMRI's volume SSIM: the mean over slices of (slices, H, W), data range the volume's maximum."""
    t, p = _pair(target, pred)
    if t.dim() == 2:
        t, p = t.unsqueeze(0), p.unsqueeze(0)
    rng = float(t.max()) if data_range is None else float(data_range)
    return float(ssim_map_mean(t, p, rng).mean())


def ssim_batch(target: torch.Tensor, pred: torch.Tensor, data_range: torch.Tensor | float | None = None
               ) -> torch.Tensor:
    """Per-image SSIM of (batch, H, W) tensors on their device (data range per image's target max
    unless given), differentiable in pred: for training losses and batched evaluation."""
    if target.shape != pred.shape or target.dim() != 3:
        raise ValueError(f"need two (batch, H, W) tensors of one shape, got {tuple(target.shape)}, "
                         f"{tuple(pred.shape)}")
    rng = target.detach().amax(dim=(1, 2)) if data_range is None else data_range
    return ssim_map_mean(target, pred, rng)


def dice(pred: torch.Tensor, target: torch.Tensor, classes: list[int]) -> dict[int, float]:
    """Dice 2|P & T| / (|P| + |T|) per class over all images (1 where both are empty)."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    out = {}
    for c in classes:
        p, t = pred == c, target == c
        total = int(p.sum() + t.sum())
        out[c] = 1.0 if total == 0 else 2 * int((p & t).sum()) / total
    return out
