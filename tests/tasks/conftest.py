"""Tiny conditional models trained once per test session on 32x32 MNI152 slices (seconds on a CPU):
enough to show each task's conditioning behaviour, not its quality (evaluate-tasks measures that)."""

import pytest
import torch

from mridpm.dpm.schedules import DiscreteSchedule
from mridpm.nets.priors import Prior
from mridpm.nets.unet import UNet, UNetConfig
from mridpm.train.run import conditional_data
from mridpm.train.trainer import TrainConfig, train

SIZE = (32, 32)
TRAIN_Z = list(range(50, 120, 2))


def tiny_prior(tmp_path_factory, name: str, data: dict, steps: int = 150, cond_dropout: float = 0.0) -> Prior:
    x, c = conditional_data({"size": list(SIZE), **data}, TRAIN_Z)
    cfg = UNetConfig(in_channels=x.shape[1], cond_channels=c.shape[1], channels=16, channel_mult=(1, 2),
                     attention_levels=(), dropout=0.0)
    model = UNet(cfg)
    out = tmp_path_factory.mktemp(name)
    torch.manual_seed(0)
    cfg = TrainConfig(steps=steps, batch_size=8, lr=2e-3, ema_decay=0.9, prediction="x0", out_dir=str(out),
                      checkpoint_every=10_000, cond_dropout=cond_dropout, extra={"data": {**data, "size": list(SIZE)}})
    train(model, x, cfg, cond=c, progress=False)
    # the trained weights (not the EMA), in eval mode; info["run_dir"]: the run, loadable by name in the CLI
    info = {"image_size": list(SIZE), "data_range": [-1.0, 1.0], "train": {"extra": {"data": data}},
            "run_dir": str(out)}
    return Prior(model.eval(), DiscreteSchedule.from_name("linear", 1000), "x0", info)


@pytest.fixture(scope="session")
def seg_prior(tmp_path_factory) -> Prior:
    return tiny_prior(tmp_path_factory, "seg", {"target": "labels", "condition": ["T1"]})


@pytest.fixture(scope="session")
def synth_prior(tmp_path_factory) -> Prior:
    return tiny_prior(tmp_path_factory, "synth", {"target": "T1", "condition": ["labels"]})


@pytest.fixture(scope="session")
def translate_prior(tmp_path_factory) -> Prior:
    return tiny_prior(tmp_path_factory, "translate", {"target": "T2", "condition": ["T1", "PD"]})


@pytest.fixture(scope="session")
def volume_prior(tmp_path_factory) -> Prior:
    return tiny_prior(tmp_path_factory, "volume", {"target": "T1", "condition": ["previous"], "slice_step": 2},
                      cond_dropout=0.2)
