"""MRI physics: centered FFTs, forward operators, data consistency, masks, coils, classical
reconstructions and metrics. The names here accept NumPy, CuPy and DLPack arrays besides torch
tensors and return the caller's type (mridpm._arrays); the submodules' functions take tensors."""

from mridpm import _arrays
from mridpm.mri.classical import cg_sense, haar, ihaar, l1_wavelet, zero_filled
from mridpm.mri.coils import birdcage_maps, coil_compression, compress, rss, sense_combine
from mridpm.mri.dc import conjugate_gradient, gradient, project
from mridpm.mri.espirit import espirit_maps, resize_center
from mridpm.mri.fft import fft2c, fft3c, fftnc, ifft2c, ifft3c, ifftnc
from mridpm.mri.masks import acceleration, acs_lines
from mridpm.mri.metrics import nmse, psnr, ssim, ssim_batch
from mridpm.mri.operators import FFT, CoilExpand, Identity, LinearOperator, Mask, Sense, SingleCoil

__all__ = ["FFT", "CoilExpand", "Identity", "LinearOperator", "Mask", "Sense", "SingleCoil", "acceleration",
           "acs_lines", "birdcage_maps", "cg_sense", "coil_compression", "compress", "conjugate_gradient",
           "espirit_maps", "fft2c", "fft3c", "fftnc", "gradient", "haar", "ifft2c", "ifft3c", "ifftnc", "ihaar",
           "l1_wavelet", "nmse", "project", "psnr", "resize_center", "rss", "sense_combine", "ssim", "ssim_batch",
           "zero_filled"]

_arrays.export(globals(), __all__)
