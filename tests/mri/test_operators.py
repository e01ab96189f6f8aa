"""Operators: adjointness, linearity, normal = H A for every operator; FFT and SENSE against the peers."""

import numpy as np
import pytest
import torch

from mridpm import mri
from mridpm.mri import operators as ops
from mridpm.mri.coils import birdcage_maps

G = torch.Generator().manual_seed(0)


def crandn(*shape, generator=None):
    return torch.randn(*shape, generator=generator, dtype=torch.complex64)


def _mask(shape, p=0.4):
    m = (torch.rand(shape, generator=G) < p).float()
    m.view(-1)[0] = 1.0
    return m


FACTORIES = {
    "fft2": lambda: (ops.FFT(2), (3, 7, 10)),
    "fft3": lambda: (ops.FFT(3), (2, 5, 6, 7)),
    "mask": lambda: (ops.Mask(_mask((1, 7, 10))), (3, 7, 10)),
    "weighted_mask": lambda: (ops.Mask(torch.rand(7, 10, generator=G) + 0.1), (2, 7, 10)),
    "coil_expand": lambda: (ops.CoilExpand(crandn(2, 4, 6, 5, generator=G)), (2, 6, 5)),
    "single_coil": lambda: (ops.SingleCoil(_mask((1, 10))), (3, 7, 10)),
    "single_coil_3d": lambda: (ops.SingleCoil(_mask((4, 6, 1)), ndim=3), (2, 4, 6, 5)),
    "sense_odd": lambda: (ops.Sense(crandn(1, 3, 9, 7, generator=G), _mask((1, 1, 1, 7))), (2, 9, 7)),
    "sense_15_coils": lambda: (ops.Sense(birdcage_maps(15, (8, 10)).unsqueeze(0), _mask((10,))), (3, 8, 10)),
    "sense_3d": lambda: (ops.Sense(crandn(2, 3, 4, 6, 5, generator=G), _mask((2, 1, 4, 6, 1)), ndim=3),
                         (2, 4, 6, 5)),
    "sense_no_mask": lambda: (ops.Sense(crandn(1, 2, 6, 6, generator=G)), (1, 6, 6)),
    "composed": lambda: (ops.FFT(2) @ ops.Mask(_mask((7, 10))) @ ops.FFT(2).H, (2, 7, 10)),
    "adjoint_of_sense": lambda: (ops.Sense(crandn(1, 3, 6, 5, generator=G), _mask((1, 5))).H, (2, 3, 6, 5)),
}


def _inner(a, b):
    return torch.vdot(a.reshape(-1).to(torch.complex128), b.reshape(-1).to(torch.complex128))


@pytest.mark.parametrize("name", list(FACTORIES))
def test_adjoint_linearity_and_normal(name):
    A, shape = FACTORIES[name]()
    x, x2 = crandn(*shape, generator=G), crandn(*shape, generator=G)
    Ax = A(x)
    y = crandn(*Ax.shape, generator=G)
    lhs, rhs = _inner(Ax, y), _inner(x, A.H(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs)
    a, b = 0.7 - 0.2j, -1.3 + 0.5j
    torch.testing.assert_close(A(a * x + b * x2), a * Ax + b * A(x2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(A.N(x), A.H(A(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spatial,mask_shape", [
    ((8, 10), (1, 1, 1, 10)), ((9, 7), (7,)), ((9, 7), (2, 1, 1, 7)), ((4, 6, 10), (1, 1, 1, 1, 10)),
    ((8, 10), (1, 1, 8, 10)),  # a 2D mask: the general path
])
def test_sense_normal_on_line_masks(spatial, mask_shape):
    """Line masks take 1D FFTs along the lines without shifts: equal to A^H A in the plain operator math."""
    g = torch.Generator().manual_seed(0)
    maps = birdcage_maps(3, spatial).unsqueeze(0)
    mask = (torch.rand(mask_shape, generator=g) < 0.5).float()
    mask.reshape(-1)[0] = 1
    A = ops.Sense(maps, mask, len(spatial))
    assert (A._lines is not None) == (len(mask_shape) == 1 or mask_shape[-2] == 1)
    x = torch.randn(2, *spatial, dtype=torch.complex64, generator=g)
    k = mri.fftnc(maps * x.unsqueeze(1), len(spatial)) * mask
    ref = (maps.conj() * mri.ifftnc(k, len(spatial))).sum(1)
    torch.testing.assert_close(A.N(x), ref, rtol=1e-5, atol=1e-5)


def test_operators_are_immutable():
    A = ops.Sense(crandn(1, 2, 4, 4, generator=G))
    with pytest.raises(AttributeError, match="immutable"):
        A.mask = None
    assert A.H.H is A


def test_fft_matches_fastmri_and_numpy(fastmri_module):
    fftc = fastmri_module("fftc.py")
    for shape in [(3, 8, 10), (2, 9, 7)]:
        x = crandn(*shape, generator=G)
        ref = torch.view_as_complex(fftc.fft2c_new(torch.view_as_real(x)))
        torch.testing.assert_close(mri.fft2c(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mri.ifft2c(x), torch.view_as_complex(fftc.ifft2c_new(torch.view_as_real(x))),
                                   rtol=1e-5, atol=1e-5)
    x = crandn(2, 5, 6, 7, generator=G).numpy()
    ref = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(x, axes=(-3, -2, -1)), axes=(-3, -2, -1), norm="ortho"),
                          axes=(-3, -2, -1))
    np.testing.assert_allclose(mri.fft3c(torch.from_numpy(x)).numpy(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mri.ifft3c(mri.fft3c(torch.from_numpy(x))), torch.from_numpy(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(8, 10), (6, 4, 8)])
def test_checkerboard_form_of_the_centered_fft(shape):
    x = crandn(2, *shape, generator=G)
    dims = tuple(range(-len(shape), 0))
    s, c = mri.fft.checkerboard(shape), mri.fft.checkerboard_constant(shape)
    torch.testing.assert_close(mri.fftnc(x, len(shape)), c * s * torch.fft.fftn(s * x, dim=dims, norm="ortho"))
    torch.testing.assert_close(mri.ifftnc(x, len(shape)), c * s * torch.fft.ifftn(s * x, dim=dims, norm="ortho"))
    with pytest.raises(ValueError, match="even"):
        mri.fft.checkerboard((7, 8))


def test_sense_matches_sigpy():
    sigpy_mri = pytest.importorskip("sigpy.mri")
    maps = crandn(4, 9, 8, generator=G)
    mask = _mask((1, 8))
    x = crandn(9, 8, generator=G)
    A = ops.Sense(maps.unsqueeze(0), mask)
    theirs = sigpy_mri.linop.Sense(maps.numpy(), weights=np.broadcast_to(mask.numpy(), (9, 8)).copy())
    np.testing.assert_allclose(A(x.unsqueeze(0))[0].numpy(), theirs * x.numpy(), rtol=1e-5, atol=1e-5)
    y = crandn(4, 9, 8, generator=G)
    np.testing.assert_allclose(A.H(y.unsqueeze(0))[0].numpy(), theirs.H * y.numpy(), rtol=1e-5, atol=1e-5)


BAD = [
    (TypeError, "complex", lambda: ops.FFT()(torch.randn(2, 4, 4))),
    (TypeError, "complex", lambda: ops.CoilExpand(torch.randn(1, 2, 4, 4))),
    (ValueError, "coils", lambda: ops.Sense(crandn(1, 3, 4, 4)).H(crandn(1, 2, 4, 4))),
    (ValueError, "image must have shape", lambda: ops.Sense(crandn(1, 3, 4, 4))(crandn(1, 4, 5))),
    (ValueError, "broadcast", lambda: ops.Sense(crandn(1, 3, 4, 4), torch.ones(3, 1))),
    (TypeError, "real", lambda: ops.Mask(crandn(4, 4))),
    (ValueError, "nothing", lambda: ops.Mask(torch.zeros(4))),
    (ValueError, "NaN", lambda: ops.Sense(torch.full((1, 2, 4, 4), float("nan"), dtype=torch.complex64))),
    (ValueError, "finite", lambda: ops.Mask(torch.tensor([1.0, float("inf")]))),
    (ValueError, "ndim", lambda: ops.FFT(4)),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()
