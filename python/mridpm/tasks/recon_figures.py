"""The figures of the reconstruction pipelines: the middle slice of a reconstructed file against its
baselines (and its fastMRI target when the file has one), and `mridpm demo`, which evaluates a few
held-out slices and draws the last of them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mridpm.data.simulation import simulated_slices
from mridpm.mri.metrics import psnr, ssim
from mridpm.mri.operators import Sense
from mridpm.random import Generator
from mridpm.tasks.recon_baselines import image_metrics
from mridpm.tasks.recon_evaluation import evaluate, prepare
from mridpm.tasks.reconstruction import reconstruct_prior


def center_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central (h, w) of an (..., H, W) image, as fastMRI crops to its targets."""
    h, w = size
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


def file_figure(png: str | os.PathLike, vols: dict[str, torch.Tensor], target: torch.Tensor | None,
                method: str) -> Path:
    """A PNG of the middle slice of a file's magnitude volumes (mean, std, zero_filled, cg): zero-filled,
    CG-SENSE, the DPM mean and its std; with the file's target (S, h, w), each cropped to it as fastMRI
    does, titled with PSNR and SSIM against it, and the DPM's error."""
    from mridpm.figures import write_panels

    mid = vols["mean"].shape[0] // 2
    images = {k: v[mid] for k, v in vols.items()}
    ref, peak = None, None
    if target is not None and target.dim() == 3 and all(a <= b for a, b in zip(target.shape[1:], images["mean"].shape,
                                                                               strict=True)):
        ref, peak = target[mid].float(), float(target.max())  # fastMRI: the target's crop, its volume's peak
        images = {k: center_crop(v, tuple(ref.shape)) for k, v in images.items()}

    def title(name: str, image: torch.Tensor) -> str:
        if ref is None:
            return name
        return f"{name}\nPSNR {psnr(ref, image, peak):.2f} SSIM {ssim(ref, image, peak):.3f}"

    panels = [(title("zero-filled", images["zero_filled"]), images["zero_filled"]),
              (title("CG-SENSE", images["cg"]), images["cg"]),
              (title(f"DPM ({method})", images["mean"]), images["mean"]),
              ("uncertainty (std)", images["std"])]
    if ref is not None:
        panels.append(("|error| of DPM", (images["mean"] - ref).abs()))
    return write_panels(png, panels)


def demo(out_png: str | os.PathLike | None = "demo.png", *, accel: float = 8, slices: int = 4, samples: int = 4,
         seed: int = 0, prior: str = "brain64c", progress: bool = True) -> list[dict[str, Any]]:
    """The main job in a few CPU minutes: simulated 8-coil brain slices held out from the bundled
    prior's training, undersampled accel-fold, reconstructed by DDS with posterior samples, against
    the baselines; writes a figure of the last of them and returns evaluate()'s rows."""
    rows = evaluate((accel,), ("dds",), prior=prior, samples=samples, slices=slices, seed=seed,
                    progress=progress)
    if out_png is not None:
        _demo_figure(out_png, accel, slices, samples, seed, prior)
    return rows


def _demo_figure(out_png: str | os.PathLike, accel: float, slices: int, samples: int, seed: int, prior: str) -> None:
    """The truth, the baselines, the DDS mean, its std and its error on the demo's last held-out slice."""
    from mridpm.figures import write_panels
    from mridpm.nets.priors import load_prior
    from mridpm.train.run import phantom_slices

    p = load_prior(prior)
    size = tuple(p.info["image_size"])
    z = phantom_slices(p.info["train"]["extra"]["data"], heldout=True)[max(slices, 1) - 1 : max(slices, 1)]
    x, maps, k, sigma = simulated_slices(z, size, 8, 0.002, seed)
    mask, base = prepare(p, accel, 8, 0.002, seed)
    op = Sense(maps, mask)
    y = k * mask
    images = {name: image for name, (image, _) in base.run(y, op).items()}
    r = reconstruct_prior(y, op, p, method="dds", samples=samples, noise_std=float(sigma[0]),
                          generator=Generator(seed))
    images["DPM (DDS)"] = r.mean
    panels = [("truth", x[0].abs())]
    panels += [(f"{n}\nPSNR {image_metrics(x[0], im[0])['psnr']:.2f} SSIM {image_metrics(x[0], im[0])['ssim']:.3f}",
                im[0].abs()) for n, im in images.items()]
    panels += [("uncertainty (std)", r.std[0]), ("|error| of DPM", (r.mean[0].abs() - x[0].abs()).abs())]
    write_panels(out_png, panels)
