"""ESPIRiT against sigpy and the true maps, coil compression, and the classical reconstructions."""

import numpy as np
import pytest
import torch

from mridpm import mri
from mridpm.mri import classical, coils, metrics
from mridpm.mri.espirit import espirit_maps

H, W = 64, 48


def phantom(h=H, w=W):
    """Piecewise-constant ellipses with a smooth phase: sparse in Haar wavelets."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = ((y / 0.85) ** 2 + (x / 0.7) ** 2 < 1).float()
    img += 0.5 * (((y - 0.2) / 0.3) ** 2 + (x / 0.25) ** 2 < 1).float()
    img -= 0.4 * (((y + 0.3) / 0.2) ** 2 + ((x - 0.2) / 0.2) ** 2 < 1).float()
    return (img * torch.exp(1j * 0.4 * y)).to(torch.complex64)


def _corr(a, b):
    return float((a.conj() * b).sum().abs() / (a.norm() * b.norm()))


def test_espirit_matches_sigpy_and_the_true_maps():
    sigpy_mri = pytest.importorskip("sigpy.mri")
    truth = coils.birdcage_maps(8, (H, W))
    img = phantom()
    k = mri.fft2c(truth * img)
    ours = espirit_maps(k.unsqueeze(0), calib_width=20, kernel_width=6)[0]
    theirs = torch.from_numpy(np.asarray(sigpy_mri.app.EspiritCalib(k.numpy(), calib_width=20, kernel_width=6,
                                                                    show_pbar=False).run()))
    inside = (ours.abs().sum(0) > 0) & (theirs.abs().sum(0) > 0)
    assert inside.sum() > 0.5 * (img.abs() > 0).sum()
    assert _corr(ours[:, inside], theirs[:, inside]) >= 0.99
    # up to a per-pixel phase, the maps are the truth where the object is
    obj = img.abs() > 0
    phase = truth[0] * ours[0].conj()
    phase = phase / phase.abs().clamp_min(1e-12)
    assert _corr(ours[:, obj] * phase[obj], truth[:, obj]) >= 0.99


def test_espirit_bad_input():
    with pytest.raises(TypeError, match="complex"):
        espirit_maps(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="calib_width"):
        espirit_maps(torch.randn(1, 4, 16, 16, dtype=torch.complex64), calib_width=24)
    with pytest.raises(ValueError, match="NaN"):
        espirit_maps(torch.full((1, 4, 32, 32), float("nan"), dtype=torch.complex64))


def test_coil_compression_is_a_partial_isometry_keeping_the_energy():
    maps = coils.birdcage_maps(12, (H, W)).unsqueeze(0)
    k = mri.fft2c(maps * phantom())
    full = coils.coil_compression(k, 12)
    torch.testing.assert_close(full[0] @ full[0].conj().T, torch.eye(12, dtype=torch.complex64), atol=1e-5, rtol=0)
    torch.testing.assert_close(coils.compress(k, full).norm(), k.norm(), rtol=1e-4, atol=0)
    six = coils.compress(k, coils.coil_compression(k, 6))
    assert six.shape == (1, 6, H, W)
    assert float(six.norm() / k.norm()) > 0.99  # smooth maps: few virtual coils hold the energy
    with pytest.raises(ValueError, match="virtual_coils"):
        coils.coil_compression(k, 13)


def test_rss_and_sense_combine():
    maps = coils.birdcage_maps(4, (H, W)).unsqueeze(0)
    img = phantom().unsqueeze(0)
    coil_imgs = maps * img.unsqueeze(1)
    torch.testing.assert_close(coils.rss(coil_imgs), img.abs(), rtol=1e-5, atol=1e-5)  # sum |S|^2 = 1
    torch.testing.assert_close(coils.sense_combine(coil_imgs, maps), img, rtol=1e-5, atol=1e-5)


def test_cg_sense_undoes_two_fold_undersampling_with_eight_coils():
    maps = coils.birdcage_maps(8, (H, W)).unsqueeze(0)
    mask = torch.zeros(W)
    mask[::2] = 1
    A = mri.Sense(maps, mask)
    truth = phantom().unsqueeze(0)
    y = A(truth)
    x = classical.cg_sense(y, A, iters=60)
    assert metrics.nmse(truth.abs(), x.abs()) < 1e-4
    assert metrics.nmse(truth.abs(), classical.zero_filled(y, A).abs()) > 1e-2
    torch.testing.assert_close(classical.zero_filled(y, A), A.H(y))


def test_l1_wavelet_beats_zero_filled_and_least_squares_when_undersampled():
    g = torch.Generator().manual_seed(0)
    mask = (torch.rand(W, generator=g) < 0.3).float()
    mask[W // 2 - 4 : W // 2 + 4] = 1
    A = mri.SingleCoil(mask)
    truth = phantom().unsqueeze(0)
    y = A(truth) + 0.005 * mask * torch.randn(1, H, W, dtype=torch.complex64, generator=g)
    zf = classical.zero_filled(y, A)
    l1 = classical.l1_wavelet(y, A, lam=0.01, iters=200)
    err_zf, err_l1 = metrics.nmse(truth.abs(), zf.abs()), metrics.nmse(truth.abs(), l1.abs())
    assert err_l1 < 0.5 * err_zf
    # lam = 0: FISTA converges to a solution consistent with the data
    ls = classical.l1_wavelet(y, A, lam=0.0, iters=100)
    torch.testing.assert_close(A(ls), y, rtol=0, atol=1e-4)


def test_haar_is_orthonormal_and_inverts():
    x = torch.randn(2, 16, 24, dtype=torch.complex64)
    c = classical.haar(x, 3)
    torch.testing.assert_close(c.norm(), x.norm(), rtol=1e-5, atol=0)
    torch.testing.assert_close(classical.ihaar(c, 3), x, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(61, 47), (46, 36)])
def test_l1_wavelet_and_cg_sense_take_any_image_size(size):
    """Sides not divisible by 2^levels (odd, or not multiples of 8): the wavelet runs zero-padded and
    the result is cropped back; it still beats zero-filling, and with lam 0 it fits the data."""
    h, w = size
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(h, w, generator=g) < 0.35).float()  # a 2D mask
    mask[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4] = 1
    A = mri.SingleCoil(mask)
    truth = phantom(h, w).unsqueeze(0)
    y = A(truth)
    l1 = classical.l1_wavelet(y, A, lam=0.01, iters=150)
    assert l1.shape == (1, h, w)
    assert metrics.nmse(truth.abs(), l1.abs()) < 0.5 * metrics.nmse(truth.abs(), classical.zero_filled(y, A).abs())
    ls = classical.l1_wavelet(y, A, lam=0.0, iters=100)
    torch.testing.assert_close(A(ls), y, rtol=0, atol=1e-4)
    maps = coils.birdcage_maps(8, (h, w)).unsqueeze(0)
    S = mri.Sense(maps, mask)
    x = classical.cg_sense(S(truth), S, iters=60)
    assert x.shape == (1, h, w) and metrics.nmse(truth.abs(), x.abs()) < 1e-3
