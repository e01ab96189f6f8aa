"""The front end of external priors: load_prior(path, format=...) dispatches to the format's loader
and refuses unknown formats and missing files in one line; reconstruct_prior reads the card (p99
scale, padding multiple, data range); tiny random-weight guided-diffusion and EDM checkpoints in
their original layouts reconstruct a small multi-coil problem end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _adm_testing import multicoil_problem, randomize

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets import external
from mridpm.nets.external import _adm_edm, edm, guided_diffusion
from mridpm.nets.external._adm_unet import UNetModel
from mridpm.nets.priors import Prior, load_prior
from mridpm.random import Generator
from mridpm.tasks import reconstruction
from mridpm.tasks.reconstruction import reconstruct_prior

GD = {"image_size": 16, "num_channels": 32, "channel_mult": "1,1,2", "attention_resolutions": "8",
      "num_head_channels": 32}
EDM = {"img_resolution": 16, "model_channels": 32, "channel_mult": [1, 1, 2], "attn_resolutions": [8],
       "num_blocks": 1}


def _guided_diffusion(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint saved as DDS saves one: torch.save(model.state_dict())."""
    net = UNetModel(**guided_diffusion.model_kwargs({**guided_diffusion.DEFAULTS, **GD}))
    torch.save(randomize(net).state_dict(), tmp_path / "gd.pt")
    return tmp_path / "gd.pt", {"config": GD}


def _edm(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint saved as InverseBench saves one: {"net": ..., "ema": EDMPrecond.state_dict()}."""
    net = randomize(_adm_edm.DhariwalUNet(16, 2, 2, 32, [1, 1, 2], 4, 1, [8]))
    state = edm.EDMPrecond(net).state_dict()
    torch.save({"net": state, "ema": state}, tmp_path / "ckpt.pt")
    return tmp_path / "ckpt.pt", {"config": EDM}


MAKERS = {"guided-diffusion": _guided_diffusion, "edm": _edm}


def test_unknown_formats_and_missing_files_are_one_line_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown prior format 'ddpm'; formats: score-sde, ncsnv2") as err:
        load_prior(tmp_path, format="ddpm")
    assert "\n" not in str(err.value) and all(f in str(err.value) for f in external.FORMATS)
    with pytest.raises(ValueError, match=r"no checkpoint at '.*nope\.pt' \(format 'edm'\)"):
        load_prior(tmp_path / "nope.pt", format="edm")
    with pytest.raises(ValueError, match="apply only to external checkpoints"):
        load_prior("brain64", image_size=64)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a weights-only torch checkpoint") as err:
        load_prior(tmp_path / "junk.pt", format="guided-diffusion")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("fmt", "method"), [("guided-diffusion", "dds"), ("edm", "dds"), ("edm", "dps")])
def test_a_tiny_checkpoint_reconstructs_end_to_end(fmt: str, method: str, tmp_path) -> None:
    """DDS, and DPS (gradients through the sigma-scale conversion), 3 steps each."""
    path, options = MAKERS[fmt](tmp_path)
    prior = load_prior(path, format=fmt, **options)
    assert {"format", "image_size", "data_range", "p99", "size_multiple", "source", "notes"} <= set(prior.info)
    assert prior.info["format"] == fmt and prior.info["size_multiple"] == 4
    y, op = multicoil_problem((30, 26))  # 26 is no multiple of 4: the network sees 32 x 28
    r = reconstruct_prior(y, op, prior, method=method, steps=3, samples=1, generator=Generator(0))
    assert tuple(r.mean.shape) == (1, 30, 26) and bool(torch.isfinite(r.mean).all())


class _Spy:
    """reconstruct() stand-in recording y and the model it was given."""

    def __call__(self, y: torch.Tensor, op: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        self.y, self.model, self.kwargs = y, model, kwargs
        return reconstruction.Reconstruction(y[:, 0], y[:, 0], y[:, :1], 0, 0.0)


def test_reconstruct_prior_reads_p99_size_multiple_and_data_range(monkeypatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(reconstruction, "reconstruct", spy)
    y, op = multicoil_problem((30, 26))
    info = {"data_range": [-3.0, 3.0], "p99": 2.0, "size_multiple": 8}
    prior = Prior(lambda x, t: x, DiscreteSchedule.from_name("linear", 10), "eps", info)
    reconstruct_prior(y, op, prior)
    s = reconstruction.estimate_scale(y, op)
    torch.testing.assert_close(spy.y, y / (s / 2.0))  # k-space divided by estimate_scale / p99
    assert spy.model.factor == 8 and spy.kwargs["clip"] == (-3.0, 3.0)
    reconstruct_prior(y, op, prior, scale=5.0)
    torch.testing.assert_close(spy.y, y / 5.0)  # a given scale is used as given
