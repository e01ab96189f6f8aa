"""Contrast translation with a paired conditional DPM (Palette-style, as SynDiff's and Dalmaz et al.'s
baselines): the source contrasts of a slice are concatenated to the noisy target and the target
contrast is generated; one-to-one (T1 -> T2) or many-to-one (T1 + PD -> T2)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mridpm.nets.priors import Prior
from mridpm.tasks._common import as_prior, check_unit_images, from_unit, to_unit
from mridpm.tasks.generation import conditional_samples


@dataclass
class Translation:
    """mean and std over the samples (N, C, H, W) and the samples (S, N, C, H, W), in [0, 1]."""

    mean: torch.Tensor
    std: torch.Tensor
    samples: torch.Tensor


def translate(prior: Prior | str | os.PathLike, sources: torch.Tensor, *, samples: int = 1, steps: int = 50,
              seed: int = 0, progress: bool = False) -> Translation:
    """The target contrast of source images (N, S, H, W) in [0, 1], S the model's source contrasts in
    the order it was trained with ([data] condition)."""
    p = as_prior(prior)
    x = check_unit_images(sources, "sources", p.model.config.dims)
    if x.shape[1] != p.model.config.cond_channels:
        raise ValueError(f"this model translates {p.model.config.cond_channels} source contrasts, got {x.shape[1]}")
    draws = to_unit(conditional_samples(p, from_unit(x, p), samples, steps=steps, seed=seed, progress=progress), p)
    draws = draws.clamp(0, 1)
    return Translation(draws.mean(0), draws.std(0) if samples > 1 else torch.zeros_like(draws[0]), draws)
