"""The bundled brain prior: loads offline, checks its weights, and samples brain-like slices."""

import shutil

import pytest
import torch

from mridpm import cli
from mridpm.dpm import sample_ddim
from mridpm.nets import priors
from mridpm.ops import randn
from mridpm.random import Generator

pytestmark = pytest.mark.skipif("brain64" not in priors.available(), reason="prior not bundled")


def test_samples_look_like_the_training_slices():
    prior = priors.load_prior("brain64")
    assert prior.info["image_size"] == [64, 64] and prior.prediction == "eps"
    gen = Generator(0)
    with torch.no_grad():
        x = sample_ddim(prior.model, randn((6, 1, 64, 64), generator=gen), prior.schedule, steps=25,
                        generator=gen, clip=tuple(prior.info["data_range"]))
    assert bool(torch.isfinite(x).all())
    pytest.importorskip("nilearn")
    from mridpm.train.run import training_images

    data = training_images({"source": "phantom", "contrast": "T1", "size": [64, 64], "z": [50, 120]})
    # the background is background, the head is bright, and the mean sample has the mean slice's layout
    assert float(x[:, :, :4, :4].mean()) < -0.8
    assert float(x[:, :, 24:40, 24:40].mean()) > -0.2
    a, b = x.mean(0).flatten(), data.mean(0).flatten()
    corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert corr > 0.9


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    src = priors._dir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(src / f"brain64{suffix}", tmp_path / f"brain64{suffix}")
    blob = bytearray((tmp_path / "brain64.safetensors").read_bytes())
    blob[-3] ^= 0x01
    (tmp_path / "brain64.safetensors").write_bytes(bytes(blob))
    monkeypatch.setattr(priors, "_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="SHA-256"):
        priors.load_prior("brain64")
    with pytest.raises(ValueError, match="no bundled prior"):
        priors.load_prior("brain999")


def test_cli_sample_writes_a_figure(tmp_path):
    out = tmp_path / "s.png"
    assert cli.main(["sample", "--n", "2", "--steps", "3", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
