"""Segmentation by a DPM that generates the label map given the image (Wolleb et al. 2022): an ensemble
of samples gives the consensus (majority vote) and an uncertainty map (the vote's entropy). The
baselines are intensity thresholds (multi-level Otsu) and k-means."""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass

import torch

from mridpm.mri.metrics import dice  # noqa: F401 (also imported from here)
from mridpm.nets.priors import Prior
from mridpm.tasks._common import as_prior, check_unit_images, from_unit
from mridpm.tasks.generation import conditional_samples


@dataclass
class Segmentation:
    """labels (N, H, W) int64, the consensus; votes (N, K, H, W), each class's share of the samples;
    uncertainty (N, H, W), the votes' entropy in nats; samples (S, N, H, W) int64."""

    labels: torch.Tensor
    votes: torch.Tensor
    uncertainty: torch.Tensor
    samples: torch.Tensor


def segment(prior: Prior | str | os.PathLike, images: torch.Tensor, *, samples: int = 8, steps: int = 20,
            seed: int = 0, progress: bool = False) -> Segmentation:
    """Label maps of images (N, 1, H, W) in [0, 1] from a model trained with [data] target = "labels"."""
    p = as_prior(prior)
    x = check_unit_images(images, "images", p.model.config.dims)
    if x.shape[1] != p.model.config.cond_channels:
        raise ValueError(f"this model segments {p.model.config.cond_channels}-channel images, got {x.shape[1]}")
    draws = conditional_samples(p, from_unit(x, p), samples, steps=steps, seed=seed, progress=progress)
    k = draws.shape[2]
    hard = draws.argmax(2)  # (S, N, H, W)
    votes = torch.nn.functional.one_hot(hard, k).float().mean(0).movedim(-1, 1)
    entropy = -(votes * votes.clamp_min(1e-12).log()).sum(1)
    return Segmentation(votes.argmax(1), votes, entropy, hard)


def kmeans_segment(images: torch.Tensor, classes: int = 4, iters: int = 50) -> torch.Tensor:
    """k-means on pixel intensities (N, 1, H, W) per image, clusters numbered from darkest to brightest."""
    x = check_unit_images(images)[:, 0]
    out = torch.empty(x.shape, dtype=torch.long)
    for i, img in enumerate(x):
        v = img.flatten().double()
        centers = torch.quantile(v, torch.linspace(0.05, 0.95, classes, dtype=torch.float64))
        for _ in range(iters):
            assign = (v[:, None] - centers).abs().argmin(1)
            new = torch.stack([v[assign == c].mean() if (assign == c).any() else centers[c] for c in range(classes)])
            if torch.allclose(new, centers):
                break
            centers = new
        order = torch.argsort(torch.argsort(centers))
        out[i] = order[(v[:, None] - centers).abs().argmin(1)].reshape(img.shape)
    return out


def otsu_segment(images: torch.Tensor, classes: int = 4, bins: int = 64) -> torch.Tensor:
    """Multi-level Otsu thresholds per image (N, 1, H, W): the classes - 1 thresholds that maximise the
    between-class variance of the intensity histogram, classes numbered from darkest to brightest."""
    x = check_unit_images(images)[:, 0]
    out = torch.empty(x.shape, dtype=torch.long)
    for i, img in enumerate(x):
        lo, hi = float(img.min()), float(img.max())
        hist = torch.histc(img.double(), bins, lo, hi)
        centers = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
        centers = (centers[:-1] + centers[1:]) / 2
        w, m = torch.cat([torch.zeros(1), hist.cumsum(0)]), torch.cat([torch.zeros(1), (hist * centers).cumsum(0)])
        best, cuts = -math.inf, ()
        for cut in itertools.combinations(range(1, bins), classes - 1):
            edges = (0, *cut, bins)
            score = 0.0
            for a, b in itertools.pairwise(edges):
                n = float(w[b] - w[a])
                if n > 0:
                    score += float(m[b] - m[a]) ** 2 / n
            if score > best:
                best, cuts = score, cut
        thresholds = torch.tensor([float(centers[c - 1] + centers[c]) / 2 for c in cuts], dtype=img.dtype)
        out[i] = torch.bucketize(img, thresholds)
    return out
