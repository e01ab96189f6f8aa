"""Every committed training configuration parses, builds its data and fits its model."""

from pathlib import Path

import pytest

from mridpm.nets.unet import UNetConfig
from mridpm.train.run import load_config, training_data

pytest.importorskip("nilearn")
CONFIGS = sorted(Path(__file__).parents[1].glob("configs/*.toml")) + sorted(
    Path(__file__).parents[1].glob("python/mridpm/nets/priors/*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_data_and_model(path):
    cfg = load_config(path)
    if cfg["data"].get("task") == "registration":  # DiffuseMorph: pairs of contrast draws, moving and fixed
        from mridpm.train.registration import registration_data
        from mridpm.train.run import phantom_slices

        data = {**cfg["data"], "size": [16, 16]}
        assert registration_data(data, phantom_slices(data)).shape[1] == cfg["data"]["copies"]
        assert UNetConfig.from_dict(cfg["model"]).cond_channels == 2
        return
    if cfg["data"].get("task") == "classification":  # DiffAE: normal and atrophied slices, labels as a channel
        from mridpm.train.classification import classification_data
        from mridpm.train.run import phantom_slices

        data = {**cfg["data"], "size": [16, 16], "copies": 1}
        images, labels = classification_data(data, phantom_slices(data))
        assert images.shape[1] == UNetConfig.from_dict(cfg["model"]).in_channels == 1
        assert set(labels.tolist()) == {0, 1}
        return
    x, c = training_data({**cfg["data"], "size": [16, 16], **({"patch": 16} if "patch" in cfg["data"] else {})})
    model = UNetConfig.from_dict(cfg["model"])
    assert x.shape[1] == model.in_channels and x.shape[0] > 0
    assert (c is None and model.cond_channels == 0) or c.shape[1] == model.cond_channels
    assert "out_dir" in cfg["train"] or path.parent.name == "priors"
