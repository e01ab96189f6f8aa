"""MRI physics: centered FFTs, forward operators, data consistency, masks and metrics."""

from mridpm.mri.dc import conjugate_gradient, gradient, project
from mridpm.mri.fft import fft2c, fft3c, fftnc, ifft2c, ifft3c, ifftnc
from mridpm.mri.operators import FFT, CoilExpand, Identity, LinearOperator, Mask, Sense, SingleCoil

__all__ = ["FFT", "CoilExpand", "Identity", "LinearOperator", "Mask", "Sense", "SingleCoil", "conjugate_gradient",
           "fft2c", "fft3c", "fftnc", "gradient", "ifft2c", "ifft3c", "ifftnc", "project"]
