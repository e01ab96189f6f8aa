"""Anomaly detection by partial diffusion (AnoDDPM, Wyatt et al. 2022): noise a slice to level t with
Gaussian or simplex noise, reverse it to a healthy version with DDIM under a prior trained on healthy
slices, and score each pixel by |input - healthy|. The baseline is the plain residual of a denoising
autoencoder, here the same network's one-step clean estimate from the noised slice."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mridpm.nets.priors import Prior
from mridpm.ops.step import fused_step
from mridpm.random import Generator
from mridpm.tasks import _common as tc

NOISES = ("gaussian", "simplex")


@dataclass
class Anomalies:
    """healthy (N, C, H, W) in [0, 1], the reconstruction; score (N, H, W), |input - healthy| averaged
    over channels (and samples); mask (N, H, W) bool, score > threshold (None without one)."""

    healthy: torch.Tensor
    score: torch.Tensor
    mask: torch.Tensor | None


def _noise(kind: str, shape: tuple[int, ...], seed: int) -> torch.Tensor | None:
    if kind not in NOISES:
        raise ValueError(f"noise must be one of {NOISES}, got {kind!r}")
    if kind == "gaussian":
        return None  # Philox noise, drawn where it is used
    from mridpm.data.phantom import simplex_noise

    return simplex_noise(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def detect(prior: Prior | str | os.PathLike, images: torch.Tensor, *, t: int = 400, steps: int = 25,
           noise: str = "simplex", samples: int = 1, threshold: float | None = None, one_step: bool = False,
           seed: int = 0, progress: bool = False) -> Anomalies:
    """Anomaly maps of images (N, C, H, W) in [0, 1]: the healthy reconstruction after noising to
    timestep t and `steps` DDIM steps back (one_step: the network's direct clean estimate at t, the
    denoising-autoencoder baseline), averaged over `samples` noise draws."""
    p = tc.as_prior(prior)
    x = tc.check_unit_images(images, "images", p.model.config.dims)
    tc.check_images(x, p)
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    ts = tc.timesteps_from(p.schedule, t, steps)
    device = next(p.model.parameters()).device
    x0 = tc.from_unit(x, p).to(device).repeat(samples, 1, 1, 1)
    gen = Generator(seed)
    z = _noise(noise, tuple(x0.shape), seed)
    xt = tc.noise_to(p, x0, ts[0], None if z is None else z.to(device), generator=gen)
    if one_step:
        healthy = tc.ddim_step(p, xt, ts[0], -1)[1]
    else:
        healthy = tc.ddim(p, xt, ts, generator=gen, progress=progress)
    healthy = tc.to_unit(healthy, p).clamp(0, 1).reshape(samples, *x.shape).mean(0).cpu()
    score = fused_step([x, healthy], [1.0, -1.0]).abs().mean(1)
    mask = None if threshold is None else score > threshold
    return Anomalies(healthy, score, mask)


def auroc(score: torch.Tensor, truth: torch.Tensor, within: torch.Tensor | None = None) -> float:
    """Area under the ROC curve of pixel scores against a boolean truth (over `within` pixels): the
    Mann-Whitney probability that an anomalous pixel outscores a normal one, ties counted half."""
    s, y = score.flatten().double(), truth.flatten().bool()
    if within is not None:
        keep = within.flatten().bool()
        s, y = s[keep], y[keep]
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError("AUROC needs both anomalous and normal pixels")
    order = torch.argsort(s)
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=torch.float64)
    uniq, inverse = torch.unique(s, return_inverse=True)  # average the ranks of ties
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def best_dice(score: torch.Tensor, truth: torch.Tensor, within: torch.Tensor | None = None,
              candidates: int = 100) -> tuple[float, float]:
    """(the best Dice of score > threshold against truth, that threshold) over `candidates` quantiles of
    the scores (within `within`): the threshold-optimal Dice anomaly papers report."""
    s, y = score.flatten(), truth.flatten().bool()
    if within is not None:
        keep = within.flatten().bool()
        s, y = s[keep], y[keep]
    best, best_t = 0.0, float(s.max())
    for q in torch.linspace(0.5, 0.999, candidates):
        th = float(torch.quantile(s.double(), float(q)))
        pred = s > th
        d = 2 * int((pred & y).sum()) / max(int(pred.sum() + y.sum()), 1)
        if d > best:
            best, best_t = d, th
    return best, best_t
