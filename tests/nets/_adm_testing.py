"""Helpers of the external-prior tests: seeded random weights in every parameter (zero-initialised
output convs would make any two networks agree), and a small multi-coil problem to reconstruct."""

from __future__ import annotations

import math

import torch
from torch import nn

from mridpm.mri import coils
from mridpm.mri.masks import poisson_disc_2d
from mridpm.mri.operators import Sense


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """net with every parameter redrawn: weights N(0, 1/fan_in), biases and norm shifts N(0, 0.1^2),
    norm scales 1 + N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if p.dim() > 1:
                p.copy_(z / math.sqrt(p[0].numel()))
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * z)
            else:
                p.copy_(0.1 * z)
    return net.eval()


def max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max |b| (at least 1)."""
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def multicoil_problem(size: tuple[int, int] = (30, 26), ncoils: int = 4) -> tuple[torch.Tensor, Sense]:
    """(k-space, operator) of an ellipse with a smooth phase seen by birdcage coils, Poisson-disc mask."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
    x = ((yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1).to(torch.complex64) * torch.exp(1j * xx)
    op = Sense(coils.birdcage_maps(ncoils, size).unsqueeze(0), poisson_disc_2d(size, 2.0, calib=8, seed=0))
    return op(x.unsqueeze(0)), op
