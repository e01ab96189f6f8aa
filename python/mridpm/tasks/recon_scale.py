"""The intensity scale a prior reconstruction divides the k-space by: a high percentile of the
initial image's magnitude, robust to the few bright pixels of real data (fat, vessels, artefacts,
a noise spike) that would make the peak a poor measure of the image's range."""

from __future__ import annotations

import math

import torch

from mridpm.mri.classical import cg_sense
from mridpm.mri.operators import Sense, SingleCoil

SCALE_PERCENTILE = 99.0  # of the magnitude, by nearest rank


def _percentiles(images: torch.Tensor) -> torch.Tensor:
    """The SCALE_PERCENTILE-th percentile (nearest rank) of the magnitude of each image along the first axis."""
    mag = images.detach().abs().reshape(images.shape[0], -1)
    k = max(1, math.ceil(SCALE_PERCENTILE / 100 * mag.shape[1]))
    return mag.kthvalue(k, dim=1).values


def image_scales(images: torch.Tensor) -> torch.Tensor:
    """image_scale of each image along the first axis: a real tensor (n,), at least 1e-30 (pc-rss
    divides each coil image by it)."""
    return _percentiles(images).clamp_min(1e-30)


def image_scale(image: torch.Tensor) -> float:
    """The SCALE_PERCENTILE-th percentile of an image's magnitude, at least 1e-30: estimate_scale of
    a CG-SENSE image already made."""
    return max(float(_percentiles(image.reshape(1, -1))[0]), 1e-30)


def estimate_scale(y: torch.Tensor, op: Sense | SingleCoil) -> float:
    """image_scale of a 10-iteration CG-SENSE image: what to divide y by so that the image's range is
    near 1, as the bundled priors' training slices are."""
    return image_scale(cg_sense(y, op, iters=10))
