"""Data consistency: projection, gradient and conjugate gradient."""

import pytest
import torch

from mridpm import mri
from mridpm.mri.coils import birdcage_maps

G = torch.Generator().manual_seed(1)


def crandn(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.complex64)


def _lines(width, p=0.3):
    m = (torch.rand(width, generator=G) < p).float()
    m[width // 2] = 1
    return m


@pytest.mark.parametrize("shape", [(8, 10), (9, 7)])
def test_single_coil_projection_keeps_y_where_measured_and_x_elsewhere(shape):
    mask = _lines(shape[1])
    A = mri.SingleCoil(mask)
    x, y = crandn(3, *shape), mri.fft2c(crandn(3, *shape)) * mask
    k = mri.fft2c(mri.project(x, y, A, lam=1.0))
    torch.testing.assert_close(k * mask, y, rtol=0, atol=1e-5)
    torch.testing.assert_close(k * (1 - mask), mri.fft2c(x) * (1 - mask), rtol=0, atol=1e-5)
    half = mri.fft2c(mri.project(x, y, A, lam=0.25))
    torch.testing.assert_close(half * mask, (0.25 * y + 0.75 * mri.fft2c(x)) * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(mri.project(x, y, A, lam=0.0), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("coils", [1, 15])
def test_multicoil_projection_of_consistent_data_returns_the_truth(coils):
    maps = birdcage_maps(coils, (10, 12)).unsqueeze(0)
    truth = crandn(2, 10, 12)
    full = mri.Sense(maps, torch.ones(12))
    y = full(truth)
    torch.testing.assert_close(mri.project(crandn(2, 10, 12), y, full), truth, rtol=1e-4, atol=1e-5)
    # undersampled: the coil k-space inside the projection takes y on the measured lines
    mask = _lines(12)
    A = mri.Sense(maps, mask)
    x = crandn(2, 10, 12)
    out = mri.project(x, A(truth), A)
    expected = maps.conj().mul(mri.ifft2c(mri.fft2c(maps * x.unsqueeze(1)) * (1 - mask) + A(truth))).sum(1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_gradient_is_the_negative_conjugate_gradient_of_the_data_term():
    maps = birdcage_maps(4, (6, 8)).unsqueeze(0)
    A = mri.Sense(maps, _lines(8))
    x, y = crandn(2, 6, 8).requires_grad_(), A(crandn(2, 6, 8))
    loss = 0.5 * (A(x) - y).abs().pow(2).sum()
    (grad,) = torch.autograd.grad(loss, x)  # PyTorch's complex gradient is the conjugate Wirtinger one
    torch.testing.assert_close(mri.gradient(x.detach(), y, A), -grad, rtol=1e-5, atol=1e-5)


def test_cg_sense_recovers_the_truth_from_full_noiseless_data():
    maps = birdcage_maps(8, (12, 10)).unsqueeze(0)
    A = mri.Sense(maps, torch.ones(10))
    truth = crandn(3, 12, 10)
    x = mri.conjugate_gradient(A.N, A.H(A(truth)), iters=30)
    torch.testing.assert_close(x, truth, rtol=1e-4, atol=1e-4)


def test_cg_matches_a_direct_solve_per_sample():
    maps = birdcage_maps(3, (5, 6)).unsqueeze(0).to(torch.complex128)
    A = mri.Sense(maps, _lines(6, 0.5))
    b = torch.randn(2, 5, 6, dtype=torch.complex128, generator=G)
    mu = 0.05
    x = mri.conjugate_gradient(A.N, b, mu=mu, iters=200, tol=1e-12)
    n = 30
    eye = torch.eye(n, dtype=torch.complex128).reshape(n, 5, 6)
    mat = torch.stack([A.N(e.unsqueeze(0))[0].reshape(-1) for e in eye], dim=1) + mu * torch.eye(n)
    direct = torch.linalg.solve(mat, b.reshape(2, n).T).T.reshape(2, 5, 6)
    torch.testing.assert_close(x, direct, rtol=1e-6, atol=1e-6)
    # conjugating inner products matters: a real-transpose CG would not converge to this


def test_cg_with_a_warm_start_and_zero_iterations():
    A = mri.SingleCoil(_lines(8))
    b, x0 = crandn(2, 6, 8), crandn(2, 6, 8)
    torch.testing.assert_close(mri.conjugate_gradient(A.N, b, x0=x0, iters=0), x0)


BAD = [
    (ValueError, "NaN", lambda: mri.project(crandn(1, 4, 4), torch.full((1, 4, 4), float("nan"), dtype=torch.complex64),
                                           mri.SingleCoil(torch.ones(4)))),
    (ValueError, "shape", lambda: mri.project(crandn(1, 4, 4), crandn(1, 2, 4, 4),
                                              mri.Sense(birdcage_maps(3, (4, 4)).unsqueeze(0), torch.ones(4)))),
    (TypeError, "complex", lambda: mri.gradient(torch.randn(1, 4, 4), crandn(1, 4, 4), mri.SingleCoil(torch.ones(4)))),
    (ValueError, "0/1", lambda: mri.project(crandn(1, 4, 4), crandn(1, 4, 4), mri.SingleCoil(torch.full((4,), 0.5)))),
    (ValueError, "lam", lambda: mri.project(crandn(1, 4, 4), crandn(1, 4, 4), mri.SingleCoil(torch.ones(4)), lam=2.0)),
    (ValueError, "mask", lambda: mri.project(crandn(1, 4, 4), crandn(1, 1, 4, 4),
                                             mri.Sense(birdcage_maps(1, (4, 4)).unsqueeze(0)))),
    (ValueError, "mu", lambda: mri.conjugate_gradient(mri.SingleCoil(torch.ones(4)).N, crandn(1, 4, 4), mu=-1.0)),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_all_finite_has_no_false_alarm_for_huge_values():
    from mridpm.mri.dc import all_finite

    big = torch.full((4, 1000), 3e37, dtype=torch.complex64)  # the float32 sum overflows
    assert all_finite(big)
    big[2, 7] = complex(float("nan"), 0)
    assert not all_finite(big)
    assert not all_finite(torch.tensor([1.0, float("inf")]))


def _direct(A: mri.LinearOperator, b: torch.Tensor) -> torch.Tensor:
    """The minimum-norm solution of A^H A x = b per sample (where CG from zero converges), from the
    explicit normal matrix in complex128."""
    n = b[0].numel()
    basis = torch.eye(n, dtype=b.dtype).reshape(n, *b.shape[1:])
    N = A.N(basis).reshape(n, n).T.to(torch.complex128)  # column j = N e_j
    rtol = 1e-5 if b.dtype == torch.complex64 else 1e-10  # the null space is zero to rounding of the operator
    return (torch.linalg.pinv(N, rtol=rtol, hermitian=True) @ b.reshape(b.shape[0], n).T.to(torch.complex128)).T


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("coils", [0, 4])
def test_conjugate_gradient_stops_where_it_converged_and_never_diverges(dtype, coils):
    """CG against the direct solve at 1..50 iterations: one coil (A^H A a projection, done after one
    step, where dividing by the leftover rounding once blew the image up to 1e9) and four coils
    (converges within the 50). The error never grows past the start and ends at rounding level."""
    shape = (10, 8)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # half the lines: SENSE condition number ~9
    if coils:
        A = mri.Sense(birdcage_maps(coils, shape, dtype=dtype).unsqueeze(0), mask)
    else:
        A = mri.SingleCoil(mask)
    truth = crandn(3, *shape).to(dtype)
    b = A.H(A(truth))
    want = _direct(A, b)
    scale = float(want.abs().max())
    tol = 1e-4 if dtype == torch.complex64 else 1e-10
    errors = []
    for iters in range(1, 51):
        x = mri.conjugate_gradient(A.N, b, iters=iters)
        errors.append(float((x.reshape(3, -1).to(torch.complex128) - want).abs().max()) / scale)
    assert max(errors) <= 1.0 + tol, errors
    assert max(errors[-10:]) <= tol, errors
    if not coils:  # a projection: exact after the first step
        assert max(errors) <= tol, errors


@pytest.mark.parametrize("tol", [float("nan"), -1.0, float("inf")])
def test_conjugate_gradient_refuses_a_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol"):
        mri.conjugate_gradient(mri.SingleCoil(torch.ones(4)).N, crandn(1, 4, 4), tol=tol)
