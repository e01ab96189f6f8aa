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



def test_conditional_data_pairs_targets_with_conditions(tmp_path, capsys):
    import torch

    from mridpm.data.phantom import brain_slices, tissue_labels
    from mridpm.train.run import training_data

    data = {"source": "phantom", "size": [16, 16], "z": [80, 83], "target": "T1", "condition": ["labels", "previous"],
            "slice_step": 2}
    x, c = training_data(data)
    assert x.shape == (6, 1, 16, 16) and c.shape == (6, 5, 16, 16)  # three slices and their mirror images
    torch.testing.assert_close(x[:3, 0], brain_slices("T1", [80, 81, 82], (16, 16)) * 2 - 1)
    assert torch.equal(c[:3, :4].argmax(1), tissue_labels([80, 81, 82], (16, 16)))
    assert set(c[:, :4].unique().tolist()) == {-1.0, 1.0}
    torch.testing.assert_close(c[:3, 4], brain_slices("T1", [78, 79, 80], (16, 16)) * 2 - 1)  # 2 mm below
    assert torch.equal(x[3:], x[:3].flip(-1)) and torch.equal(c[3:], c[:3].flip(-1))
    for bad, message in (({"condition": "T1"}, "non-empty list"), ({"condition": ["T3"]}, "unknown image kind"),
                         ({"condition": ["T1"], "source": "fastmri"}, "phantom source")):
        with pytest.raises(ValueError, match=message):
            training_data({"size": [16, 16], "z": [80, 82], **bad})
    # the model must take the condition's channels
    cfg = tmp_path / "seg.toml"
    cfg.write_text(TOML.replace('contrast = "T2"', 'target = "labels"\ncondition = ["T1"]'))
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "o"), "--device", "cpu"]) == 2
    assert "cond_channels = 1" in capsys.readouterr().err
    cfg.write_text(cfg.read_text().replace("channels = 8", "channels = 8\nin_channels = 4\ncond_channels = 1"))
    assert cli.main(["train", str(cfg), "--out-dir", str(tmp_path / "o"), "--device", "cpu"]) == 0
    from mridpm.nets.priors import load_prior

    prior = load_prior(tmp_path / "o")
    assert prior.model.config.cond_channels == 1 and prior.model.config.in_channels == 4
