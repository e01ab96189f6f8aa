"""The real evaluation images that ship in dipy: read from the installed package, never downloaded."""

import importlib.util
import socket
import urllib.request
from pathlib import Path

import pytest
import torch

from mridpm.data import real_images
from mridpm.mri.fft import fft2c

needs_dipy = pytest.mark.skipif(importlib.util.find_spec("dipy") is None, reason="dipy is not installed")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to reach the network fails loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@needs_dipy
def test_t1_slice_offline_from_the_package(offline, monkeypatch):
    opened = []
    real_file = real_images._file
    monkeypatch.setattr(real_images, "_file", lambda name: opened.append(real_file(name)) or opened[-1])
    img = real_images.dipy_t1_slice()
    assert img.shape == (256, 256) and img.dtype == torch.float32 and bool(torch.isfinite(img).all())
    assert float(img.min()) >= 0 and float(torch.quantile(img.flatten(), real_images.ROBUST_QUANTILE)) == \
        pytest.approx(1.0, abs=1e-5)
    package = Path(importlib.util.find_spec("dipy").origin).parent.resolve()
    assert opened and all(p.resolve().is_relative_to(package) for p in opened)


@needs_dipy
def test_b0_slices_offline(offline):
    pytest.importorskip("nibabel")
    vol = real_images.dipy_b0_slices()
    assert vol.shape == (10, 128, 128) and vol.dtype == torch.float32 and bool(torch.isfinite(vol).all())
    assert float(torch.quantile(vol.flatten(), real_images.ROBUST_QUANTILE)) == pytest.approx(1.0, abs=1e-5)
    assert all(float(s.max()) > 0.5 for s in vol)  # every slice holds brain


def test_missing_dipy_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    for load in (real_images.dipy_t1_slice, real_images.dipy_b0_slices):
        with pytest.raises(ImportError, match=r"pip install 'mridpm\[data\]'"):
            load()


def test_simulated_acquisition():
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    image = ((x * x + 0.7 * y * y) < 0.6).float() * (0.6 + 0.4 * x.abs())
    k, maps, truth, std = real_images.simulated_acquisition(image, coils=4, noise=0.01, seed=3)
    assert k.shape == maps.shape == (4, 64, 64) and truth.shape == (64, 64) and k.is_complex()
    assert bool(torch.isfinite(torch.view_as_real(k)).all())
    torch.testing.assert_close(truth.abs(), image, rtol=1e-5, atol=1e-5)  # the magnitude kept, a phase added
    assert float(truth.angle().std()) > 0.01
    residual = torch.view_as_real(k - fft2c(maps * truth)).flatten()
    assert float(residual.std()) == pytest.approx(std, rel=0.05)
    again = real_images.simulated_acquisition(image, coils=4, noise=0.01, seed=3)
    assert torch.equal(again[0], k)
    with pytest.raises(ValueError, match="real"):
        real_images.simulated_acquisition(image.to(torch.complex64))
