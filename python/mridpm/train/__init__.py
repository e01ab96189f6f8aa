"""Training: the loop, EMA, atomic safetensors checkpoints, data parallelism."""

from mridpm.train.checkpoint import load_checkpoint, save_checkpoint
from mridpm.train.ema import EMA
from mridpm.train.trainer import TrainConfig, TrainState, init_distributed, train

__all__ = ["EMA", "TrainConfig", "TrainState", "init_distributed", "load_checkpoint", "save_checkpoint", "train"]
