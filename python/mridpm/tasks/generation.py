"""Image generation: unconditional 2D and 3D sampling, label-map-conditioned synthesis, slice-by-slice
volumes kept consistent by conditioning each slice on the one below, and covariate-conditioned latent
diffusion (an autoencoder's latents generated with the covariates cross-attended, as Pinaya et al.
2022 generate brains given age, sex and ventricle volume)."""

from __future__ import annotations

import dataclasses
import os

import torch

from mridpm.dpm.guidance import classifier_free
from mridpm.nets.autoencoder import KLAutoencoder
from mridpm.nets.priors import Prior
from mridpm.ops import randn
from mridpm.random import Generator
from mridpm.tasks._common import as_prior, check_images, ddim, image_shape


@torch.no_grad()
def generate(prior: Prior | str | os.PathLike, n: int = 1, *, shape: tuple[int, ...] | None = None, steps: int = 50,
             eta: float = 0.0, seed: int = 0, cond: torch.Tensor | None = None, context: torch.Tensor | None = None,
             guidance_scale: float | None = None, progress: bool = False) -> torch.Tensor:
    """n samples (n, C, *shape) in the prior's data range by DDIM, 2D or 3D as the prior's UNet is;
    cond (n, C', *shape) concatenated and context (n, [tokens,] dim) cross-attended, each one per
    sample; guidance_scale mixes in the unconditional output (conditions 0) for models trained with
    condition dropout (classifier-free guidance). Runs without autograd (inference)."""
    p = as_prior(prior)
    cfg = p.model.config
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    size = image_shape(p, shape)
    conditions: dict[str, torch.Tensor] = {}
    if (cond is None) != (cfg.cond_channels == 0):
        raise ValueError(f"this model takes {cfg.cond_channels} conditioning channels; cond is "
                         f"{'missing' if cond is None else 'not expected'}")
    if cond is not None:
        conditions["cond"] = check_images(cond, p, "cond", cfg.cond_channels)
        if cond.shape[0] != n or tuple(cond.shape[2:]) != size:
            raise ValueError(f"cond must be ({n}, {cfg.cond_channels}, *{size}), got {tuple(cond.shape)}")
    if (context is None) != (cfg.context_dim == 0):
        raise ValueError(f"this model cross-attends to {cfg.context_dim}-dim context; context is "
                         f"{'missing' if context is None else 'not expected'}")
    if context is not None:
        if context.shape[0] != n or context.shape[-1] != cfg.context_dim or not bool(torch.isfinite(context).all()):
            raise ValueError(f"context must be finite ({n}, [tokens,] {cfg.context_dim}), got {tuple(context.shape)}")
        conditions["context"] = context.float()
    device = next(p.model.parameters()).device
    if guidance_scale is not None:
        if not conditions:
            raise ValueError("guidance needs a conditional model and its conditions")
        null = {k: torch.zeros_like(v[:1]) for k, v in conditions.items()}
        p = dataclasses.replace(p, model=classifier_free(p.model, guidance_scale, null))
    gen = Generator(seed)
    x = randn((n, cfg.in_channels, *size), generator=gen, device=device)
    ts = p.schedule.timesteps(steps, "trailing")
    return ddim(p, x, ts, generator=gen, eta=eta, progress=progress,
                **{k: v.to(device) for k, v in conditions.items()})


def conditional_samples(prior: Prior, cond: torch.Tensor, samples: int, *, steps: int = 50, seed: int = 0,
                        progress: bool = False) -> torch.Tensor:
    """`samples` draws (samples, N, C, *spatial) of the prior's output given image conditions cond
    (N, C', *spatial), in the model's range, all in one batch (translation, segmentation)."""
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    n = cond.shape[0]
    x = generate(prior, n * samples, shape=tuple(cond.shape[2:]), cond=cond.repeat(samples, *[1] * (cond.dim() - 1)),
                 steps=steps, seed=seed, progress=progress)
    return x.reshape(samples, n, *x.shape[1:])


def synthesize(prior: Prior | str | os.PathLike, labels: torch.Tensor, **options: object) -> torch.Tensor:
    """Images (N, C, H, W) whose tissues follow label maps (N, H, W) (mridpm.data.phantom.LABELS),
    from a model trained with [data] condition = ["labels"]."""
    from mridpm.data.phantom import one_hot

    p = as_prior(prior)
    if p.model.config.cond_channels < 2:
        raise ValueError(f"this model takes {p.model.config.cond_channels} conditioning channels, not a one-hot "
                         "label map; train one with [data] condition = [\"labels\"]")
    if not isinstance(labels, torch.Tensor) or labels.dim() != p.model.config.dims + 1:
        raise ValueError(f"labels must be (N, *spatial) integers, got {getattr(labels, 'shape', type(labels))}")
    cond = one_hot(labels, p.model.config.cond_channels)
    return generate(p, labels.shape[0], shape=tuple(labels.shape[1:]), cond=cond, **options)  # type: ignore[arg-type]


def generate_volume(prior: Prior | str | os.PathLike, depth: int, *, first: torch.Tensor | None = None, n: int = 1,
                    seed: int = 0, **options: object) -> torch.Tensor:
    """A (n, C, depth, H, W) volume generated slice by slice, each slice conditioned on the one before
    (a model trained with [data] condition = ["previous"]); the first slice continues `first`
    (n, C, H, W), or is generated with the null condition (0) when none is given."""
    p = as_prior(prior)
    cfg = p.model.config
    if cfg.dims != 2 or cfg.cond_channels != cfg.in_channels:
        raise ValueError("slice-by-slice volumes need a 2D model conditioned on the previous slice "
                         f"(cond_channels = in_channels), got dims {cfg.dims}, cond_channels {cfg.cond_channels}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    size = image_shape(p, options.pop("shape", None))  # type: ignore[arg-type]
    prev = torch.zeros((n, cfg.in_channels, *size)) if first is None else check_images(first, p, "first")
    if prev.shape[0] != n or tuple(prev.shape[2:]) != size:
        raise ValueError(f"first must be ({n}, {cfg.in_channels}, *{size}), got {tuple(prev.shape)}")
    slices = []
    for d in range(depth):
        prev = generate(p, n, shape=size, cond=prev, seed=seed + d, **options)  # type: ignore[arg-type]
        slices.append(prev)
    return torch.stack(slices, 2)


@dataclasses.dataclass
class LatentDiffusion:
    """An autoencoder and a diffusion prior over its (scaled) latents, the prior cross-attending to
    covariates (batch, k) (its context_dim = k)."""

    autoencoder: KLAutoencoder
    prior: Prior

    def generate(self, covariates: torch.Tensor, **options: object) -> torch.Tensor:
        """Images (N, C, *spatial) for covariates (N, k), decoded from generated latents."""
        cfg = self.prior.model.config
        if covariates.dim() != 2 or covariates.shape[1] != cfg.context_dim:
            raise ValueError(f"covariates must be (N, {cfg.context_dim}), got {tuple(covariates.shape)}")
        z = generate(self.prior, covariates.shape[0], context=covariates, **options)  # type: ignore[arg-type]
        with torch.no_grad():
            return self.autoencoder.from_latent(z)


def phantom_covariates(z: list[int], size: tuple[int, int]) -> torch.Tensor:
    """(N, 2) covariates of MNI152 slices: the slice position (z - 85) / 45 and the CSF fraction of the
    slice's intracranial pixels (standardised by 0.2), what a covariate-conditioned model is given."""
    from mridpm.data.phantom import tissue_labels

    labels = tissue_labels(z, size)
    inside = (labels > 0).sum((1, 2)).clamp_min(1)
    csf = (labels == 1).sum((1, 2)) / inside
    return torch.stack([(torch.tensor(z, dtype=torch.float32) - 85) / 45, (csf.float() - 0.1) / 0.2], 1)
