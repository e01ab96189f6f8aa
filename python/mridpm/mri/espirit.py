"""ESPIRiT coil sensitivities (Uecker et al. 2014) from the autocalibration region, in PyTorch
(any device, batched): calibration matrix -> SVD -> image-space kernels -> per-pixel power
iteration for the dominant eigenvector, as sigpy's EspiritCalib computes it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mridpm.mri.dc import all_finite
from mridpm.mri.fft import ifftnc


def resize_center(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Center-crops or zero-pads the last len(shape) dimensions to shape (sigpy.resize's placement)."""
    ndim = len(shape)
    out = x.new_zeros((*x.shape[: x.dim() - ndim], *shape))
    src, dst = [slice(None)] * (x.dim() - ndim), [slice(None)] * (x.dim() - ndim)
    for i, o in zip(x.shape[x.dim() - ndim :], shape, strict=True):
        si, so = max(i // 2 - o // 2, 0), max(o // 2 - i // 2, 0)
        n = min(i, o)
        src.append(slice(si, si + n))
        dst.append(slice(so, so + n))
    out[tuple(dst)] = x[tuple(src)]
    return out


def _blocks(calib: torch.Tensor, width: int, ndim: int) -> torch.Tensor:
    """(patches, coils * width^ndim) Hankel matrix of every width^ndim patch, coil-major columns."""
    x = calib
    for d in range(ndim):
        x = x.unfold(1 + d, width, 1)  # (coils, *positions, *window)
    coils = calib.shape[0]
    positions = math.prod(x.shape[1 : 1 + ndim])
    x = x.reshape(coils, positions, width**ndim)
    return x.permute(1, 0, 2).reshape(positions, coils * width**ndim)


def espirit_maps(kspace: torch.Tensor, calib_width: int = 24, kernel_width: int = 6, thresh: float = 0.02,
                 crop: float = 0.95, max_iter: int = 100, ndim: int = 2) -> torch.Tensor:
    """Sensitivity maps (batch, coils, *spatial) from centered k-space (batch, coils, *spatial).

    thresh keeps singular vectors above thresh * the largest; crop zeroes pixels whose dominant
    eigenvalue is below it (outside the object); the phase is taken relative to coil 0."""
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex():
        raise TypeError("kspace must be a complex tensor (batch, coils, *spatial)")
    if kspace.dim() != ndim + 2:
        raise ValueError(f"kspace must have shape (batch, coils, *spatial) with {ndim} spatial dimensions, "
                         f"got {tuple(kspace.shape)}")
    spatial = tuple(kspace.shape[2:])
    if not 1 <= kernel_width <= calib_width <= min(spatial):
        raise ValueError(f"need 1 <= kernel_width <= calib_width <= {min(spatial)}, got {kernel_width}, {calib_width}")
    if not 0 <= thresh < 1 or not 0 <= crop < 1:
        raise ValueError(f"thresh and crop must lie in [0, 1), got {thresh}, {crop}")
    if not all_finite(kspace):
        raise ValueError("kspace contains NaN or Inf")
    return torch.stack([_espirit_one(k, calib_width, kernel_width, thresh, crop, max_iter, ndim) for k in kspace])


MIN_CALIBRATION = 8  # the smallest fully sampled center ESPIRiT is given


def check_calibration(acs: int) -> None:
    """Refuses a fully sampled center (acs x acs, masks.acs_square) too small for ESPIRiT."""
    if acs < MIN_CALIBRATION:
        raise ValueError(f"the fully sampled center is only {acs} x {acs}: ESPIRiT needs at least "
                         f"{MIN_CALIBRATION} x {MIN_CALIBRATION} (raise --center)")


def center_maps(kspace: torch.Tensor, acs: int) -> torch.Tensor:
    """ESPIRiT maps calibrated on an acs x acs fully sampled center (at most 24, kernel at most 6):
    the maps a file reconstruction or its cross-validation estimates."""
    check_calibration(acs)
    return espirit_maps(kspace, calib_width=min(24, acs), kernel_width=min(6, acs // 2))


def _espirit_one(y: torch.Tensor, calib_width: int, kernel_width: int, thresh: float, crop: float, max_iter: int,
                 ndim: int) -> torch.Tensor:
    coils, spatial = y.shape[0], tuple(y.shape[1:])
    calib = resize_center(y, [calib_width] * ndim)
    mat = _blocks(calib, kernel_width, ndim)
    _, s, vh = torch.linalg.svd(mat, full_matrices=False)
    if float(s.max()) == 0:
        raise ValueError("the calibration region is all zeros")
    vh = vh[s > thresh * s.max()]
    kernels = vh.reshape(vh.shape[0], coils, *([kernel_width] * ndim))
    img = ifftnc(resize_center(kernels, spatial), ndim)  # (kernels, coils, *spatial)
    v = img.reshape(img.shape[0], coils, -1).permute(2, 1, 0)  # (pixels, coils, kernels)
    aha = (v @ v.conj().transpose(1, 2)) * (math.prod(spatial) / kernel_width**ndim)  # (pixels, coils, coils)
    x = torch.ones(aha.shape[0], coils, 1, dtype=y.dtype, device=y.device)
    eig = torch.ones(aha.shape[0], 1, 1, dtype=y.real.dtype, device=y.device)
    for _ in range(max_iter):
        x = aha @ x
        eig = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        x = x / torch.where(eig > 0, eig, 1.0)
    maps = x[..., 0].T.reshape(coils, *spatial)
    eig = eig.reshape(*spatial)
    ref = maps[0]
    phase = torch.where(ref.abs() > 0, ref.conj() / ref.abs().clamp_min(1e-30), torch.ones_like(ref))
    return maps * phase * (eig > crop)
