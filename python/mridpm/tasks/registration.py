"""Deformable registration with DiffuseMorph (Kim et al. 2022): a conditional diffusion UNet denoises
the fixed image given (moving, fixed); its last decoder features and eps output, with the pair, go
into a small deformation UNet that outputs the displacement field. Both train jointly on the diffusion
loss plus -LNCC(warp(moving, field), fixed) + smoothness; registering runs them at t = 0, and the
continuous deformation is warp(moving, gamma * field) for gamma from 0 to 1. The network's field is then
refined per pair by Adam steps on an image dissimilarity plus smoothness (instance optimisation, as
learning-based registration commonly finishes; `refine = 0` keeps the network's own). Fields follow
mridpm.tasks.warps: warp(moving, field)(p) = moving(p + field(p)). The baselines are no registration
and SimpleITK's demons."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from mridpm.nets.diffusemorph import DiffuseMorph
from mridpm.tasks import warps as W  # noqa: N812


@dataclass
class Registration:
    """warped (N, 1, *spatial) = warp(moving, field); field (N, dims, *spatial) in pixels; intermediates
    (S, N, 1, *spatial), warp(moving, gamma * field) for S values of gamma from 0 (moving) to 1 (warped)."""

    warped: torch.Tensor
    field: torch.Tensor
    intermediates: torch.Tensor


# the refinement, chosen by Dice on training slices (three pair seeds): from the network's field, 200
# steps of SSD + 0.02 smoothness gave 0.935 (demons 0.920; the same from a zero field 0.908 at 300 steps;
# LNCC at its best window 13 0.926)
REFINE_STEPS = 200
SIMILARITIES = ("mse", "lncc")


def load_registration(run: str | os.PathLike, device: str | torch.device = "cpu") -> DiffuseMorph:
    """The EMA weights of a registration run's latest checkpoint (`mridpm train configs/register64.toml`)."""
    from mridpm.train.run import load_task_model

    return load_task_model(run, DiffuseMorph, "registration", "configs/register64.toml", device)[0]


def refine_field(moving: torch.Tensor, fixed: torch.Tensor, field: torch.Tensor, steps: int, *,
                 similarity: str = "mse", smooth_weight: float = 0.02, window: int = 9, lr: float = 0.05
                 ) -> torch.Tensor:
    """field after `steps` Adam steps on dissimilarity(warp(moving, u), fixed) + smooth_weight smoothness(u)
    from u = field, each pair on its own (the same field alone or in any batch). dissimilarity: the mean
    squared difference ("mse", one contrast, as demons) or -LNCC over window boxes ("lncc", contrasts that
    differ; a smooth_weight near the training's, 0.5)."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    u = field.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            warped = W.warp(moving, u)
            dissimilarity = (warped - fixed).square().mean() if similarity == "mse" else -W.lncc(warped, fixed, window)
            loss = len(u) * (dissimilarity + smooth_weight * W.smoothness(u))  # sum over pairs: none shrinks another
            opt.zero_grad()
            loss.backward()
            opt.step()
    return u.detach()


def register(model: DiffuseMorph | str | os.PathLike, moving: torch.Tensor, fixed: torch.Tensor, *,
             steps: int = 8, refine: int = REFINE_STEPS, **refine_options: Any) -> Registration:
    """Registers moving to fixed (N, 1, *spatial), both in [0, 1], with the features at t = 0, then
    `refine` steps of refine_field (its options: similarity, smooth_weight, window, lr; refine = 0: the
    network's field as it is)."""
    from mridpm.tasks._common import check_unit_images

    net = model if isinstance(model, DiffuseMorph) else load_registration(model)
    dims = net.config.dims
    moving, fixed = check_unit_images(moving, "moving", dims), check_unit_images(fixed, "fixed", dims)
    if moving.shape != fixed.shape or moving.shape[1] != 1:
        raise ValueError(f"moving {tuple(moving.shape)} and fixed {tuple(fixed.shape)} must be the same "
                         f"(N, 1, *spatial) shape")
    down = 2 ** (max(len(net.config.channel_mult), len(net.deform.config.channel_mult)) - 1)
    if any(n % down for n in moving.shape[2:]):
        raise ValueError(f"image sizes {tuple(moving.shape[2:])} must be divisible by {down} for this model")
    if steps < 2:
        raise ValueError(f"steps must be at least 2 (moving and warped), got {steps}")
    if refine < 0:
        raise ValueError(f"refine must be at least 0, got {refine}")
    device = next(net.parameters()).device
    moving, fixed = moving.to(device), fixed.to(device)
    with torch.no_grad():
        _, field = net(fixed * 2 - 1, torch.zeros(moving.shape[0], device=device), moving, fixed)
        if refine:
            field = refine_field(moving, fixed, field, refine, **refine_options)
        gammas = torch.linspace(0, 1, steps).tolist()
        inter = torch.stack([W.warp(moving, g * field) for g in gammas])
    return Registration(inter[-1], field, inter)


def eval_pairs(zs: list[int], size: tuple[int, int], seed: int, noise: float = 0.02, jitter: float = 0.1
               ) -> dict[str, torch.Tensor]:
    """Evaluation pairs at slices zs: moving (one contrast draw) and its labels as they are; fixed (another
    draw) and its labels warped by a random field, the true field (what registration should find)."""
    from mridpm.data.phantom import brain_slices, tissue_labels

    g = torch.Generator().manual_seed(seed)
    labels = tissue_labels(zs, size)
    moving = brain_slices("T1", zs, size, jitter=jitter, seed=1000 + seed)[:, None]
    other = brain_slices("T1", zs, size, jitter=jitter, seed=2000 + seed)[:, None]
    field = W.random_smooth_field(size, generator=g, batch=len(zs), **W.FIELD)
    fixed = (W.warp(other, field) + noise * torch.randn(other.shape, generator=g)).clamp(0, 1)
    moving = (moving + noise * torch.randn(moving.shape, generator=g)).clamp(0, 1)
    return {"moving": moving, "fixed": fixed, "moving_labels": labels, "fixed_labels": W.warp_labels(labels, field),
            "field": field}


def tune_demons(zs: list[int], size: tuple[int, int], seed: int = 0) -> dict[str, float]:
    """The demons settings (iterations, field smoothing) with the best Dice on training slices zs."""
    pairs = eval_pairs(zs, size, seed)
    grid = [{"iterations": i, "sigma": s} for i in (50, 100, 200, 400, 800) for s in (1.0, 1.5, 2.0, 2.5)]
    return max(grid, key=lambda kw: W.mean_dice(W.warp_labels(pairs["moving_labels"],  # type: ignore[arg-type]
                                                               W.demons(pairs["moving"], pairs["fixed"], **kw)),
                                                pairs["fixed_labels"]))


def evaluate_registration(model: DiffuseMorph | str | os.PathLike, zs: list[int], *, seed: int = 0,
                          size: tuple[int, int] = (64, 64), tune_on: list[int] | None = None
                          ) -> tuple[list[dict[str, Any]], list]:
    """Rows {method, dice, epe, folding_pct, seconds} of no registration, demons (tuned on tune_on's
    slices when given) and DiffuseMorph without and with its refinement on pairs at held-out slices zs,
    and figure panels (of the refined field)."""
    import time

    net = model if isinstance(model, DiffuseMorph) else load_registration(model)
    data = eval_pairs(zs, size, seed)
    brain = data["fixed_labels"] > 0
    methods: dict[str, Any] = {"no registration": lambda m, f: torch.zeros(m.shape[0], 2, *size)}
    try:
        import SimpleITK  # noqa: F401

        kw = tune_demons(tune_on, size, seed) if tune_on else {}  # type: ignore[arg-type]
        label = f" ({kw['iterations']} iterations, sigma {kw['sigma']})" if kw else ""
        methods["SimpleITK demons" + label] = lambda m, f: W.demons(m, f, **kw)
    except ImportError:
        pass
    methods["DiffuseMorph"] = lambda m, f: register(net, m, f, refine=0).field
    methods[f"DiffuseMorph + {REFINE_STEPS} refinement steps"] = lambda m, f: register(net, m, f).field
    rows, panels = [], [("moving", data["moving"][:, 0]), ("fixed", data["fixed"][:, 0])]
    for name, fn in methods.items():
        start = time.perf_counter()
        field = fn(data["moving"], data["fixed"])
        secs = time.perf_counter() - start
        rows.append({"task": "registration", "method": name, "slices": len(zs),
                     "dice": W.mean_dice(W.warp_labels(data["moving_labels"], field), data["fixed_labels"]),
                     "epe": W.endpoint_error(field, data["field"], brain),
                     "folding_pct": 100 * W.folding_fraction(field, brain), "seconds": secs})
        if name.startswith("DiffuseMorph +"):
            panels += [("warped", W.warp(data["moving"], field)[:, 0]), ("|field|", field.norm(dim=1)),
                       ("|true field|", data["field"].norm(dim=1))]
    return rows, panels
