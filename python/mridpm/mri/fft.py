"""Centered orthonormal FFTs, the fastMRI convention: ifftshift, FFT with norm="ortho", fftshift.

k-space and images are complex tensors whose last 2 (or 3) dimensions are the spatial ones.
For even sizes the two shifts equal a checkerboard sign on each side (see checkerboard);
the fused data-consistency kernels use that instead of moving memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mridpm.ops.dc import sign_grid


def _check_complex(name: str, x: object, ndim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(f"{name} must be complex (complex64 or complex128), got {x.dtype}; "
                        "use torch.view_as_complex for (..., 2) real views")
    if x.dim() < ndim:
        raise ValueError(f"{name} needs at least {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def fftnc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centered orthonormal FFT over the last ndim dimensions."""
    dims = tuple(range(-ndim, 0))
    x = _check_complex("x", x, ndim)
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifftnc(k: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centered orthonormal inverse FFT over the last ndim dimensions."""
    dims = tuple(range(-ndim, 0))
    k = _check_complex("k", k, ndim)
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="ortho"), dim=dims)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """fastMRI's fft2c on complex tensors: centered orthonormal 2D FFT of the last two dimensions."""
    return fftnc(x, 2)


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """fastMRI's ifft2c on complex tensors."""
    return ifftnc(k, 2)


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal 3D FFT of the last three dimensions."""
    return fftnc(x, 3)


def ifft3c(k: torch.Tensor) -> torch.Tensor:
    """Centered orthonormal inverse 3D FFT of the last three dimensions."""
    return ifftnc(k, 3)


def checkerboard(shape: Sequence[int], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """The sign s = (-1)^(sum of indices) with fftnc(x) = c * s * fftn(s * x, norm="ortho") (and the
    same for the inverse) when every size is even, c = checkerboard_constant(shape). Raises for odd
    sizes, where the shifts really move data."""
    if any(n % 2 for n in shape):
        raise ValueError(f"the checkerboard form needs even sizes, got {tuple(shape)}")
    return sign_grid(tuple(shape), device).to(dtype)


def checkerboard_constant(shape: Sequence[int]) -> int:
    """(-1)^(sum of sizes / 2): the global sign of the even-size identity."""
    return -1 if (sum(shape) // 2) % 2 else 1
