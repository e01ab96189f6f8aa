"""Coil sensitivities and combination: simulated birdcage maps, root-sum-of-squares, and the
sensitivity-weighted (SENSE-1) combination."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def birdcage_maps(coils: int, shape: Sequence[int], radius: float = 1.5, rings: int = 1,
                  dtype: torch.dtype = torch.complex64, normalize: bool = True) -> torch.Tensor:
    """Simulated sensitivities (coils, *shape) of a birdcage array: coils spread over `rings` rings
    (along the first axis of 3D shapes) on a circle of `radius` (in units of the half field of view),
    magnitude ~ 1 / distance and phase the angle about each coil. normalize scales them so that
    sum_c |S_c|^2 = 1 everywhere, the SENSE convention."""
    if len(shape) not in (2, 3) or any(n < 1 for n in shape):
        raise ValueError(f"shape must be (H, W) or (D, H, W) with positive sizes, got {tuple(shape)}")
    if coils < 1 or rings < 1 or coils % rings:
        raise ValueError(f"need coils >= 1 divisible by rings >= 1, got {coils}, {rings}")
    axes = [torch.linspace(-1, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
            for n in shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    y, x = grid[-2], grid[-1]
    z = grid[0] if len(shape) == 3 else torch.zeros_like(x)
    per_ring = coils // rings
    maps = []
    for c in range(coils):
        ring, k = divmod(c, per_ring)
        angle = 2 * math.pi * k / per_ring
        cy, cx = radius * math.sin(angle), radius * math.cos(angle)
        cz = 0.0 if rings == 1 else -1 + 2 * ring / (rings - 1)
        dist = torch.sqrt((y - cy) ** 2 + (x - cx) ** 2 + (z - cz) ** 2)
        maps.append(torch.polar(1 / (dist + 0.25), torch.atan2(y - cy, x - cx) + angle))
    s = torch.stack(maps)
    if normalize:
        s = s / torch.sqrt((s.abs() ** 2).sum(0, keepdim=True))
    return s.to(dtype)


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares combination over the coil dimension (fastMRI's rss)."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim))


def sense_combine(coil_images: torch.Tensor, maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """sum_c conj(S_c) x_c / sum_c |S_c|^2: the least-squares image of fully sampled coil images
    (batch, coils, *spatial), zero where no coil sees anything."""
    if not coil_images.is_complex() or not maps.is_complex():
        raise TypeError("coil images and maps must be complex")
    if coil_images.shape[1] != maps.shape[1]:
        raise ValueError(f"{coil_images.shape[1]} coil images but {maps.shape[1]} maps")
    num = (maps.conj() * coil_images).sum(1)
    den = (maps.abs() ** 2).sum(1)
    return torch.where(den > eps, num / den.clamp_min(eps), torch.zeros_like(num))


def coil_compression(kspace: torch.Tensor, virtual_coils: int) -> torch.Tensor:
    """Per-sample SVD coil compression matrices (batch, virtual, coils): the leading left singular
    vectors of the (coils, samples) data, conjugated, so compressed = matrix @ coils."""
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.dim() < 3:
        raise TypeError("kspace must be a complex (batch, coils, *spatial) tensor")
    coils = kspace.shape[1]
    if not 1 <= virtual_coils <= coils:
        raise ValueError(f"virtual_coils must lie in [1, {coils}], got {virtual_coils}")
    data = kspace.reshape(kspace.shape[0], coils, -1)
    u, _, _ = torch.linalg.svd(data, full_matrices=False)
    return u[:, :, :virtual_coils].conj().transpose(1, 2)


def compress(data: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Applies coil_compression's matrix to k-space, coil images or maps (batch, coils, *spatial)."""
    if data.shape[1] != matrix.shape[2]:
        raise ValueError(f"data have {data.shape[1]} coils but the matrix expects {matrix.shape[2]}")
    flat = data.reshape(data.shape[0], data.shape[1], -1)
    return (matrix.to(data.dtype) @ flat).reshape(data.shape[0], matrix.shape[1], *data.shape[2:])
