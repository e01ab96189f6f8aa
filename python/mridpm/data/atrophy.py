"""Simulated atrophy of MNI152 slices (the classification task, mridpm.tasks.classification): a smooth
deformation that enlarges the ventricles (a radial expansion around their centroid with a Gaussian
falloff) and thins the cortex (a displacement away from grey matter along the gradient of the smoothed
grey-matter mask), of graded strength in [0, 1]; and labelled data sets of normal (0) and atrophied (1)
slices, each also deformed by a small random smooth field so that shape alone does not give the class
away. Fields pull, as in mridpm.tasks.warps: warp(image, u)(p) = image(p + u(p))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812

from mridpm.tasks import warps as W  # noqa: N812

VENTRICLE_GAIN = 0.5  # the largest radial contraction of the sampling around the ventricles (< 1: no folding)
CORTEX_SHIFT = 1.5  # pixels: the largest displacement away from grey matter at strength 1


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(N, H, W) smoothed by a separable Gaussian of std sigma pixels (edges replicated)."""
    r = max(1, round(3 * sigma))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    k = (k / k.sum()).to(x.device)
    y = F.pad(x[:, None], (r, r, r, r), mode="replicate")
    return F.conv2d(F.conv2d(y, k.reshape(1, 1, -1, 1)), k.reshape(1, 1, 1, -1))[:, 0]


def atrophy_field(labels: torch.Tensor, strength: torch.Tensor | float, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """The atrophy displacement (N, 2, H, W) in pixels of tissue label maps (N, H, W) (mridpm.data.phantom
    LABELS: 1 CSF, 2 GM) at strength (N,) or a scalar in [0, 1]; 0 gives the zero field. The ventricles
    are the CSF within half the brain's radius of its centroid; the expansion's width varies by +-20 %
    (one draw per slice from generator)."""
    if labels.dim() != 3:
        raise ValueError(f"labels must be (N, H, W), got {tuple(labels.shape)}")
    n = labels.shape[0]
    s = torch.as_tensor(strength, dtype=torch.float32).expand(n) if torch.as_tensor(strength).dim() == 0 \
        else torch.as_tensor(strength, dtype=torch.float32)
    if s.shape != (n,) or not bool(((s >= 0) & (s <= 1)).all()):
        raise ValueError(f"strength must be a number or {n} numbers in [0, 1], got {s.tolist()}")
    pos = torch.stack(torch.meshgrid(*(torch.arange(m, dtype=torch.float32) for m in labels.shape[1:]),
                                     indexing="ij"))[None]  # (1, 2, H, W)
    brain, csf = (labels > 0).float(), (labels == 1).float()

    def centroid(mask: torch.Tensor) -> torch.Tensor:
        return (mask[:, None] * pos).sum((2, 3)) / mask.sum((1, 2)).clamp_min(1)[:, None]

    radius = (brain.sum((1, 2)) / torch.pi).sqrt()
    centre = centroid(brain)
    vent = csf * ((pos - centre[:, :, None, None]).norm(dim=1) < 0.5 * radius[:, None, None])
    centre = torch.where(vent.sum((1, 2))[:, None] > 0, centroid(vent), centre)
    spread = 1 + 0.2 * (2 * torch.rand(n, generator=generator) - 1)
    sigma = (0.35 * radius * spread).clamp_min(1.0)[:, None, None, None]
    rel = pos - centre[:, :, None, None]
    expand = -VENTRICLE_GAIN * rel * torch.exp(-rel.square().sum(1, keepdim=True) / (2 * sigma**2))
    grad = torch.stack(torch.gradient(_blur((labels == 2).float(), 1.5), dim=(1, 2)), 1)
    grad = grad / grad.norm(dim=1, keepdim=True).amax((2, 3), keepdim=True).clamp_min(1e-6)
    return s[:, None, None, None] * (expand - CORTEX_SHIFT * grad)


def atrophy(image: torch.Tensor, labels: torch.Tensor, strength: torch.Tensor | float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """image (N, C, H, W) deformed by atrophy_field(labels, strength, generator): larger ventricles and
    thinner cortex; strength 0 returns the image unchanged."""
    return W.warp(image, atrophy_field(labels, strength, generator).to(image.device, image.dtype))


def atrophy_slices(zs: Sequence[int], size: tuple[int, int] = (64, 64), *, copies: int = 4, seed: int = 0,
                   strength: tuple[float, float] = (0.3, 1.0), deform: float = 2.0, noise: float = 0.02,
                   jitter: float = 0.1, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, H, W) in [0, 1], each slice's peak 1; labels (N,) int64) of T1 slices at zs: per
    copy (a tissue-contrast draw) each slice once normal (0) and once atrophied (1) at a strength drawn
    uniformly from the range, each then deformed by a random smooth field of `deform` pixels at most and
    given Gaussian noise of std `noise`; flip adds the mirror images. Every draw comes from seed."""
    from mridpm.data.phantom import brain_slices, tissue_labels

    lo, hi = strength
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"strength must be a range within [0, 1], got {list(strength)}")
    g = torch.Generator().manual_seed(seed)
    tissue = tissue_labels(list(zs), size)
    n = len(zs)
    images, labels = [], []
    for c in range(copies):
        clean = brain_slices("T1", list(zs), size, jitter=jitter, seed=seed * 1000 + c)[:, None]
        for y in (0, 1):
            s = y * (lo + (hi - lo) * torch.rand(n, generator=g))
            u = atrophy_field(tissue, s, g)
            if deform > 0:
                u = u + W.random_smooth_field(size, deform, 8.0, generator=g, batch=n)
            x = (W.warp(clean, u) + noise * torch.randn(clean.shape, generator=g)).clamp(0, 1)
            images.append(x / x.amax((2, 3), keepdim=True).clamp_min(1e-12))
            labels.append(torch.full((n,), y))
    x, y = torch.cat(images), torch.cat(labels)
    return (torch.cat([x, x.flip(-1)]), torch.cat([y, y])) if flip else (x, y)
