"""Metrics against scikit-image and fastMRI's formulas, on the same arrays."""

import math

import numpy as np
import pytest
import torch

from mridpm.mri import metrics

skm = pytest.importorskip("skimage.metrics")
G = torch.Generator().manual_seed(0)


def _volume(shape=(4, 33, 28)):
    target = torch.rand(shape, generator=G, dtype=torch.float64) * 3
    pred = target + 0.2 * torch.randn(shape, generator=G, dtype=torch.float64)
    return target, pred


def test_nmse_and_psnr_as_fastmri():
    t, p = _volume()
    tn, pn = t.numpy(), p.numpy()
    assert metrics.nmse(t, p) == pytest.approx(np.linalg.norm(tn - pn) ** 2 / np.linalg.norm(tn) ** 2, rel=1e-12)
    assert metrics.psnr(t, p) == pytest.approx(skm.peak_signal_noise_ratio(tn, pn, data_range=tn.max()), rel=1e-10)
    assert metrics.psnr(t, t) == math.inf


def test_volume_ssim_as_fastmri():
    t, p = _volume()
    tn, pn = t.numpy(), p.numpy()
    expected = np.mean([skm.structural_similarity(tn[i], pn[i], data_range=tn.max()) for i in range(tn.shape[0])])
    assert metrics.ssim(t, p) == pytest.approx(expected, rel=1e-9)
    assert metrics.ssim(t[0], p[0]) == pytest.approx(skm.structural_similarity(tn[0], pn[0], data_range=tn[0].max()),
                                                     rel=1e-9)


def test_batched_ssim_per_image_and_differentiable():
    t, p = _volume((3, 20, 17))
    p = p.float().requires_grad_()
    s = metrics.ssim_batch(t.float(), p)
    tn, pn = t.numpy(), p.detach().double().numpy()
    for i in range(3):
        expected = skm.structural_similarity(tn[i], pn[i], data_range=tn[i].max())
        assert float(s[i].detach()) == pytest.approx(expected, abs=1e-5)
    s.sum().backward()
    assert p.grad is not None and bool(torch.isfinite(p.grad).all())


BAD = [
    (ValueError, "shape", lambda: metrics.nmse(torch.ones(3, 4), torch.ones(4, 3))),
    (TypeError, "real", lambda: metrics.psnr(torch.ones(2, 2, dtype=torch.complex64), torch.ones(2, 2,
                                                                                                   dtype=torch.complex64))),
    (ValueError, "NaN", lambda: metrics.psnr(torch.ones(2, 2), torch.full((2, 2), float("nan")))),
    (ValueError, "at least", lambda: metrics.ssim(torch.ones(1, 5, 5), torch.ones(1, 5, 5))),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()
