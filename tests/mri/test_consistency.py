"""The fused data-consistency composition against the operators' plain formulas, at even sizes (the
FFT shifts folded into the kernels as signs) and odd ones, single- and multi-coil."""

import pytest
import torch

from mridpm import mri
from mridpm.mri import consistency
from mridpm.mri.coils import birdcage_maps

G = torch.Generator().manual_seed(3)


def crandn(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.complex64)


def _operators(shape):
    """A single-coil operator and a 4-coil SENSE operator with a 2D (not line) 0/1 mask."""
    mask = (torch.rand(shape, generator=G) < 0.4).float()
    return [mri.SingleCoil(mask), mri.Sense(birdcage_maps(4, shape).unsqueeze(0), mask)]


def _plain(x, y, op, lam, keep, y_scale=1.0):
    """S^H F^H [keep k + lam M (y_scale y - k)] op by op, in complex128."""
    maps = getattr(op, "maps", None)
    maps = torch.ones(1, 1, *x.shape[1:], dtype=torch.complex128) if maps is None else maps.to(torch.complex128)
    k = mri.fft2c(maps * x.to(torch.complex128).unsqueeze(1))
    yc = 0.0 if y is None else y_scale * (y if getattr(op, "maps", None) is not None else y.unsqueeze(1))
    k = keep * k + lam * op.mask.mask.double() * (yc - k)
    return (maps.conj() * mri.ifft2c(k)).sum(1).to(torch.complex64)


@pytest.mark.parametrize("shape", [(8, 10), (9, 7)])
def test_named_functions_are_the_composition(shape):
    for op in _operators(shape):
        x = crandn(2, *shape)
        y = op(crandn(2, *shape))
        tol = {"rtol": 1e-4, "atol": 1e-5}
        torch.testing.assert_close(consistency.normal(x, op), op.adjoint(op.forward(x)), **tol)
        torch.testing.assert_close(consistency.gradient(x, y, op), op.adjoint(y - op.forward(x)), **tol)
        torch.testing.assert_close(consistency.project(x, y, op, 0.5, 2.0), _plain(x, y, op, 0.5, 1.0, 2.0), **tol)
        torch.testing.assert_close(consistency.unmeasured(x, op), _plain(x, None, op, 1.0, 1.0), **tol)
        if isinstance(op, mri.SingleCoil):  # one coil: F^H (1 - M) F x, which A does not see
            torch.testing.assert_close(op.forward(consistency.unmeasured(x, op)), torch.zeros_like(y), rtol=0,
                                       atol=1e-5)


def test_the_operators_normal_goes_through_the_composition():
    op = _operators((8, 10))[1]
    x = crandn(3, 8, 10)
    torch.testing.assert_close(op.N(x), consistency.normal(x, op), rtol=0, atol=0)
