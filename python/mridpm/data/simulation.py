"""Simulated multi-coil acquisitions of MNI152 brain slices, slice by slice: each slice its own peak,
phase and noise level, as the reconstruction evaluation and the demo need (phantom.simulate_multicoil
gives whole volumes, one phase and one noise level)."""

from __future__ import annotations

import math

import torch


def acquire(x: torch.Tensor, coils: int, noise: float, seed: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps (1, coils, H, W), k-space (S, coils, H, W), noise std per slice (S,)) of complex images
    (S, H, W): birdcage coils and complex noise of std noise * max |k| per real part."""
    from mridpm.mri.coils import birdcage_maps
    from mridpm.mri.fft import fft2c

    maps = birdcage_maps(coils, tuple(x.shape[-2:])).unsqueeze(0)
    k = fft2c(maps * x[:, None])
    std = noise * k.abs().amax(dim=(1, 2, 3))
    gen = torch.Generator().manual_seed(seed + 1)
    k = k + std.reshape(-1, 1, 1, 1) * math.sqrt(2) * torch.randn(k.shape, dtype=torch.complex64, generator=gen)
    return maps, k, std


def simulated_slices(z: list[int], size: tuple[int, int], coils: int, noise: float, seed: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(complex images (S, H, W) with peak 1, maps (1, coils, H, W), k-space (S, coils, H, W), noise
    std per slice (S,)) of MNI152 T1 slices with random smooth phases, acquired as acquire() does."""
    from mridpm.data.phantom import brain_slices
    from mridpm.train.run import complex_slices

    x = complex_slices(brain_slices("T1", z, size), seed)
    return (x, *acquire(x, coils, noise, seed))
