"""Enhancement with the bundled prior on held-out slices: denoising, super-resolution, inpainting."""

import itertools
import math

import pytest
import torch

from mridpm.data.phantom import brain_slices
from mridpm.mri.metrics import psnr
from mridpm.nets.priors import load_prior
from mridpm.tasks import enhancement as en


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    return brain_slices("T1", [45, 125], (64, 64))[:, None]  # outside brain64's training range


def test_noise_estimate_and_matching_timestep():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(2, 1, 64, 64, generator=g), 9, 1, 4)
    noisy = smooth + 0.07 * torch.randn(smooth.shape, generator=g)
    assert en.estimate_sigma(noisy) == pytest.approx(torch.full((2,), 0.07), rel=0.1)
    p = load_prior("brain64")
    t = en.matching_timestep(p, 0.2)
    abar = p.schedule.alpha_bar(t)
    assert math.sqrt((1 - abar) / abar) == pytest.approx(0.2, rel=0.05)


def test_denoising_gains_psnr(slices):
    g = torch.Generator().manual_seed(0)
    noisy = slices + 0.1 * torch.randn(slices.shape, generator=g)
    out = en.denoise("brain64", noisy, 0.1, steps=10)
    assert out.mean.shape == slices.shape and out.mean.min() >= 0 and out.mean.max() <= 1
    assert psnr(slices, out.mean, 1.0) > psnr(slices, noisy, 1.0) + 6
    estimated = en.denoise("brain64", noisy, steps=10)  # sigma from the image
    assert psnr(slices, estimated.mean, 1.0) > psnr(slices, noisy, 1.0) + 6
    two = en.denoise("brain64", noisy, 0.1, samples=2, steps=5, eta=1.0)
    assert two.samples.shape == (2, 2, 1, 64, 64) and two.std.mean() > 0


def test_super_resolution_keeps_the_measured_k_space_and_beats_zero_padding(slices):
    low = en.lowres_kspace(slices, 2)
    assert low.shape == (2, 1, 32, 32)
    # intensities kept: the low-res image's mean equals the image's
    assert torch.allclose(en.zero_padded(low, 2).mean((-2, -1)), slices.mean((-2, -1)), atol=1e-5)
    out = en.super_resolve("brain64", low, 2, steps=20)
    assert out.mean.shape == slices.shape
    measured = en.lowres_kspace(out.mean, 2)
    assert ((measured - low).abs().norm() / low.abs().norm()) < 0.02  # up to the final clip to [0, 1]
    zp, bic = en.zero_padded(low, 2).clamp(0, 1), en.bicubic(low, 2).clamp(0, 1)
    assert psnr(slices, out.mean, 1.0) > psnr(slices, zp, 1.0) + 1 > psnr(slices, bic, 1.0) + 1


def test_bicubic_sits_on_the_k_space_grid():
    x = torch.linspace(0, 1, 32).repeat(32, 1)[None, None]  # a ramp along W
    low = en.lowres_kspace(x.to(torch.complex64).real, 2)
    up = en.bicubic(low, 2)
    lowimg = torch.fft.ifftshift(torch.fft.ifft2(torch.fft.fftshift(low), norm="ortho")).real
    assert torch.allclose(up[..., ::2, ::2], lowimg, atol=1e-5)  # low pixel i on high pixel 2i


def test_repaint_schedule():
    walk = en.repaint_schedule(10, 2, 3)
    assert walk[0] == 9 and walk[-1] == -1
    ups = sum(1 for a, b in itertools.pairwise(walk) if b > a)
    assert ups == 2 * 2 * len(range(0, 10 - 2, 2))  # (resample - 1) jumps of 2 at 4 indices
    assert en.repaint_schedule(5, 1, 1) == [4, 3, 2, 1, 0, -1]


def test_inpainting_keeps_known_pixels_and_fills_the_hole(slices):
    hole = torch.zeros(2, 64, 64, dtype=torch.bool)
    hole[:, 24:40, 20:36] = True
    out = en.inpaint("brain64", slices, hole, steps=10, jump=2, resample=2)
    assert torch.allclose(out.mean[:, 0][~hole], slices[:, 0][~hole], atol=1e-6)
    img, truth = out.mean[:, 0], slices[:, 0]

    def seam(x: torch.Tensor) -> torch.Tensor:  # |inside - outside| across the hole's four edges
        return torch.cat([(x[:, 24, 20:36] - x[:, 23, 20:36]), (x[:, 39, 20:36] - x[:, 40, 20:36]),
                          (x[:, 24:40, 20] - x[:, 24:40, 19]), (x[:, 24:40, 35] - x[:, 24:40, 36])]).abs().mean()

    assert seam(img) < 2 * seam(truth) + 0.02 and seam(img) < 0.3 * seam(truth.masked_fill(hole, 0))
    assert abs(float(img[hole].mean() - truth[hole].mean())) < 0.1


def test_bad_inputs(slices):
    with pytest.raises(ValueError, match="sigma"):
        en.denoise("brain64", slices, -1.0)
    with pytest.raises(ValueError, match="factor"):
        en.lowres_kspace(slices, 3)
    with pytest.raises(ValueError, match="complex"):
        en.super_resolve("brain64", slices, 2)
    with pytest.raises(ValueError, match="not all zero"):
        en.super_resolve("brain64", torch.zeros(1, 1, 32, 32, dtype=torch.complex64), 2)
    with pytest.raises(ValueError, match=r"divisible|channels"):
        en.super_resolve("brain64", en.lowres_kspace(slices[..., :60, :60], 2)[..., :15, :15], 2)
    hole = torch.zeros(2, 64, 64, dtype=torch.bool)
    with pytest.raises(ValueError, match="some pixels"):
        en.inpaint("brain64", slices, hole)
    with pytest.raises(ValueError, match="bool mask"):
        en.inpaint("brain64", slices, hole[:1])
    with pytest.raises(ValueError, match="steps, jump"):
        en.repaint_schedule(10, 0, 1)
