"""`mridpm train CONFIG`: TOML and YAML configurations, the phantom data source, clear errors."""

import pytest

from mridpm import cli
from mridpm.train import load_checkpoint
from mridpm.train.run import load_config, training_images

pytest.importorskip("nilearn")

TOML = """
[model]
channels = 8
channel_mult = [1, 2]
attention_levels = []
groups = 4
[data]
source = "phantom"
contrast = "T2"
size = [16, 16]
z = [80, 84]
[train]
steps = 2
batch_size = 2
checkpoint_every = 1
num_train_timesteps = 50
"""


def test_cli_train_from_toml_writes_checkpoints(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text(TOML)
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    groups, meta = load_checkpoint(tmp_path / "out")
    assert meta["step"] == 2 and meta["model"]["config"]["channels"] == 8 and "ema" in groups
    # a run directory is a prior: its EMA weights, schedule and image size
    import torch

    from mridpm.nets.priors import load_prior

    prior = load_prior(tmp_path / "out")
    assert prior.info["image_size"] == [16, 16] and prior.schedule.num_train_timesteps == 50
    state = prior.model.state_dict()
    for k, v in groups["ema"].items():
        torch.testing.assert_close(state[k], v.float())


def test_yaml_and_data_and_errors(tmp_path, capsys):
    pytest.importorskip("yaml")
    y = tmp_path / "run.yaml"
    y.write_text("model:\n  channels: 8\ntrain:\n  steps: 1\n")
    assert load_config(y)["model"]["channels"] == 8
    imgs = training_images({"source": "phantom", "size": [16, 16], "z": [80, 83]})
    assert imgs.shape == (6, 1, 16, 16) and float(imgs.min()) >= -1 and float(imgs.max()) == pytest.approx(1.0)
    bad = tmp_path / "bad.toml"
    bad.write_text("[modle]\nchannels = 8\n")
    with pytest.raises(ValueError, match="unknown sections"):
        load_config(bad)
    bad.write_text("[model]\nchanels = 8\n")
    assert cli.main(["train", str(bad)]) == 2  # a message, not a traceback
    assert "unknown keys ['chanels']" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.toml")
