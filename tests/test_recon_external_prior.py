"""`mridpm reconstruct --prior CKPT --prior-format NAME --prior-config CFG`: checkpoints in their
original layout whose architecture differs from the format's defaults, reconstructed from the command
line (the dataset of test_recon_dataset), the same in two torchrun processes as in one, and one-line
refusals of a config that cannot be used, before anything is written."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

import test_recon_dataset as trd
from mridpm import cli
from mridpm.tasks import recon_file as rf

data, one_thread = trd.data, trd.one_thread  # the 2-file 4-coil 32x32 dataset; one thread, as the ranks
pytestmark = pytest.mark.filterwarnings("ignore:the prior was trained on")

GD = {"image_size": 32, "num_channels": 32, "channel_mult": "1,2", "attention_resolutions": "16", "num_heads": 2,
      "num_head_channels": -1, "resblock_updown": False, "use_scale_shift_norm": False, "learn_sigma": True}
SDE = {"nf": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "image_size": 32, "N": 50}
RUN = ["--accel", "4", "--center", "0.25", "--steps", "2", "--samples", "1"]


def _randomize(net: torch.nn.Module) -> torch.nn.Module:
    """Every parameter random (the originals zero-initialise output convs, which would hide the network)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            z = torch.randn(p.shape, generator=g)
            p.copy_(z / math.sqrt(p[0].numel()) if p.dim() > 1 else (1 if name.endswith("weight") else 0) + 0.1 * z)
    return net


@pytest.fixture(scope="module")
def guided(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny guided-diffusion UNet as DDS saves it (torch.save(model.state_dict())) and its config file."""
    from mridpm.nets.external import guided_diffusion as gd
    from mridpm.nets.external._adm_unet import UNetModel

    d = tmp_path_factory.mktemp("guided")
    net = _randomize(UNetModel(**gd.model_kwargs({**gd.DEFAULTS, **GD})))
    torch.save(net.state_dict(), d / "model.pt")
    (d / "config.json").write_text(json.dumps(GD))
    return d / "model.pt", d / "config.json"


@pytest.fixture(scope="module")
def score_sde(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny NCSN++ as score_sde's run_lib saves it ("module." state, the EMA's shadow_params list)."""
    from mridpm.nets.external import score_sde as sde
    from mridpm.nets.external._ncsnpp import NCSNpp, NCSNppConfig

    d = tmp_path_factory.mktemp("score_sde")
    arch = {k: tuple(v) if isinstance(v, list) else v for k, v in SDE.items() if k in sde.ARCH}
    net = _randomize(NCSNpp(NCSNppConfig(**arch)))
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    state["module.sigmas"] = torch.exp(torch.linspace(math.log(378.0), math.log(0.01), 10, dtype=torch.float64))
    shadow = [p.detach().clone() for p in net.parameters() if p.requires_grad]
    torch.save({"model": state, "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow}, "step": 1},
               d / "checkpoint.pth")
    (d / "config.json").write_text(json.dumps(SDE))
    return d / "checkpoint.pth", d / "config.json"


def _check_outputs(out: Path, config: dict) -> None:
    for name in trd.SLICES:
        images, attrs = trd._read(out / name)
        assert set(images) == {"reconstruction", "uncertainty", "zero_filled", "cg_sense"}
        assert all(bool(torch.isfinite(v).all()) for v in images.values()), name
        assert images["reconstruction"].shape[0] == trd.SLICES[name]
        assert json.loads(attrs["prior_config"]) == config
        assert not (out / f"{name}.parts").exists()


@pytest.fixture(scope="module")
def guided_out(data, guided, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset reconstructed with DDS and the guided-diffusion checkpoint in this process."""
    out = tmp_path_factory.mktemp("guided_out") / "out"
    ckpt, cfg = guided
    assert cli.main(["reconstruct", str(data), "--out", str(out), "--prior", str(ckpt), "--prior-format",
                     "guided-diffusion", "--prior-config", str(cfg), "--method", "dds", *RUN]) == 0
    return out


def test_guided_diffusion_with_its_config(data, guided, guided_out, tmp_path) -> None:
    """The dataset's outputs, and one file alone (reconstruct_file) gives the same as in the dataset."""
    _check_outputs(guided_out, GD)
    ckpt, cfg = guided
    assert cli.main(["reconstruct", str(data / "b.h5"), "--out", str(tmp_path / "b.h5"), "--prior", str(ckpt),
                     "--prior-format", "guided-diffusion", "--prior-config", cfg.read_text(), "--method", "dds",
                     *RUN]) == 0
    (got, got_attrs), (want, want_attrs) = trd._read(tmp_path / "b.h5"), trd._read(guided_out / "b.h5")
    assert got_attrs == want_attrs and all(torch.equal(got[k], want[k]) for k in want)


def test_score_sde_with_its_config(data, score_sde, tmp_path) -> None:
    ckpt, cfg = score_sde
    assert cli.main(["reconstruct", str(data), "--out", str(tmp_path), "--prior", str(ckpt), "--prior-format",
                     "score-sde", "--prior-config", cfg.read_text(), "--method", "pc", *RUN]) == 0
    _check_outputs(tmp_path, SDE)


def test_two_processes_match_one(data, guided, guided_out, tmp_path) -> None:
    ckpt, cfg = guided
    run = trd._torchrun(str(data), "--out", str(tmp_path / "out"), "--prior", str(ckpt), "--prior-format",
                        "guided-diffusion", "--prior-config", str(cfg), "--method", "dds", *RUN)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-3000:]
    assert trd._computed(stderr) == {0: 2, 1: 3}
    trd._assert_same(tmp_path / "out", guided_out)


def test_bad_configs_give_one_line_errors(data, guided, tmp_path, capsys) -> None:
    ckpt, cfg = guided
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    out = tmp_path / "out"
    base = ["reconstruct", str(data), "--out", str(out), "--prior", str(ckpt), *RUN]
    gd = ["--prior-format", "guided-diffusion"]
    for args, message in [
        (["--prior-config", str(cfg)], "use it with --prior-format"),
        ([*gd, "--prior-config", '{"image_size": 32,'], "not a valid JSON object"),
        ([*gd, "--prior-config", str(tmp_path / "missing.json")], "neither a JSON object nor an existing"),
        ([*gd, "--prior-config", str(tmp_path / "list.json")], "expected a JSON object, got list"),
        ([*gd, "--prior-config", str(tmp_path / "broken.json")], "missing or not readable JSON"),
        ([*gd, "--prior-config", json.dumps({**GD, "depth": 3})], r"unknown guided-diffusion options \['depth'\]"),
        ([*gd, "--prior-config", "{}"], "is not a 'guided-diffusion' checkpoint of this configuration"),
        (["--prior-format", "diffusers", "--prior-config", '{"nf": 8}'], r"unknown diffusers options \['nf'\]"),
    ]:
        assert cli.main([*base, *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("mridpm reconstruct: error: "), (args, err)
        assert re.search(message, err), (args, err)
    assert not out.exists()


def test_the_config_goes_to_the_loader(monkeypatch) -> None:
    """config= for the formats that merge it over their defaults, keyword options for monai and diffusers."""
    from mridpm.nets import priors

    seen = []
    monkeypatch.setattr(priors, "load_prior", lambda name, device="cpu", **kw: seen.append(kw))
    rf.open_prior("ckpt.pt", "edm", torch.device("cpu"), rf.read_prior_config('{"img_resolution": 32}', "edm"))
    rf.open_prior("bundle", "monai", torch.device("cpu"), {"p99": 0.5, "latent": False})
    rf.open_prior("ckpt.pt", "ncsnv2", torch.device("cpu"))
    assert seen == [{"format": "edm", "config": {"img_resolution": 32}},
                    {"format": "monai", "p99": 0.5, "latent": False}, {"format": "ncsnv2"}]
    assert "prior_config" not in rf.file_settings("a.h5", method="dds", accel=None, center=None, mask_kind="lines",
                                                  samples=1, steps=None, seed=0, prior="p", noise_std=None, maps=None,
                                                  batch=1, prior_format="edm", options={})
