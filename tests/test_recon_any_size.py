"""Any image size and a robust scale: the prior runs on the image zero-padded to the sides its UNet
takes and cropped back (every method, odd sizes, 2D masks), reconstruct_file takes odd sizes, and
the intensity scale is the 99th percentile of the magnitude, not the peak."""

from __future__ import annotations

import pytest
import torch

from mridpm.mri import coils
from mridpm.mri.masks import poisson_disc_2d
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.nets import priors
from mridpm.random import Generator
from mridpm.tasks import recon_file as rf
from mridpm.tasks.recon_padding import PaddedModel, fit_model, padded_size, unet_factor
from mridpm.tasks.recon_scale import estimate_scale, image_scale, image_scales
from mridpm.tasks.reconstruction import reconstruct_prior

needs_prior = pytest.mark.skipif("brain64c" not in priors.available(), reason="prior not bundled")


def test_padded_model_pads_to_the_multiple_and_crops_back() -> None:
    shapes = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return 2 * x + t

    x = torch.randn(3, 61, 47, dtype=torch.complex64)
    out = PaddedModel(model, 8)(x, torch.tensor(1.0))
    assert shapes == [(3, 64, 48)] and out.shape == x.shape
    torch.testing.assert_close(out, 2 * x + 1)  # the image sits centered in the padding and comes back
    assert padded_size((61, 47), 4) == (64, 48) and padded_size((64, 48), 4) == (64, 48)
    assert fit_model(model, (64, 48), 4) is model and isinstance(fit_model(model, (61, 48), 4), PaddedModel)


def test_the_scale_is_a_percentile_robust_to_a_few_bright_pixels() -> None:
    img = torch.ones(1, 32, 32, dtype=torch.complex64)
    img[0, 3, 4] = 1000.0  # one spike (fat, a vessel, an artefact) does not set the range
    assert image_scale(img) == 1.0
    ramp = torch.arange(1, 201, dtype=torch.float32).reshape(2, 100)
    assert image_scales(ramp).tolist() == [99.0, 199.0]  # nearest rank, per image
    assert image_scale(torch.zeros(4, 4)) == 1e-30
    op = SingleCoil(torch.ones(32, 32))
    assert estimate_scale(op(img), op) == pytest.approx(1.0, rel=1e-4)


@needs_prior
def test_the_prior_unet_factor() -> None:
    assert unet_factor(priors.load_prior("brain64c").model) == 4 and unet_factor(lambda x: x) == 1


@needs_prior
@pytest.mark.parametrize("method", rf.PRIOR_METHODS)
def test_every_method_takes_an_odd_size_and_a_2d_mask(method: str) -> None:
    """61 x 47 (odd, no multiple of 4): the UNet sees 64 x 48, the data consistency stays at 61 x 47,
    and the noiseless result reproduces the measured k-space."""
    p = priors.load_prior("brain64c")
    size = (61, 47)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
    x = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).to(torch.complex64).expand(2, *size)
    mask = poisson_disc_2d(size, 3.0, calib=10, seed=0)
    op = Sense(coils.birdcage_maps(4, size).unsqueeze(0), mask)
    y = op(x)
    r = reconstruct_prior(y, op, p, method=method, steps=2, samples=1, generator=Generator(0))
    want = (2, *size)
    assert tuple(r.mean.shape) == want and bool(torch.isfinite(r.mean).all())
    if method != "pc-rss":  # magnitudes of the per-coil images, not one complex image
        torch.testing.assert_close(op(r.mean), y, rtol=0, atol=2e-3 * float(y.abs().max()))
    single = SingleCoil(mask)
    r = reconstruct_prior(single(x), single, p, method="dds" if method == "pc-rss" else method, steps=2,
                          samples=1, generator=Generator(0))
    assert tuple(r.mean.shape) == want


@needs_prior
@pytest.mark.filterwarnings("ignore:the prior was trained on")
def test_reconstruct_file_takes_an_odd_size(tmp_path) -> None:
    """A 2-slice 4-coil 61 x 47 file runs end to end (it was refused as not divisible by 4)."""
    h5py = pytest.importorskip("h5py")
    pytest.importorskip("nibabel")
    from mridpm.data.fastmri import write_fastmri
    from mridpm.data.simulation import simulated_slices

    x, _, k, _ = simulated_slices([60, 68], (61, 47), 4, 0.002, seed=1)
    write_fastmri(tmp_path / "odd.h5", k, target=x.abs())
    out = rf.reconstruct_file(tmp_path / "odd.h5", tmp_path / "r.h5", accel=3.0, center=0.3, mask_kind="random",
                              steps=2, samples=1, progress=False)
    with h5py.File(out["hdf5"]) as f:
        assert all(f[name].shape == (2, 61, 47) for name in ("reconstruction", "uncertainty", "zero_filled",
                                                               "cg_sense"))
