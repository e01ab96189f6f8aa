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
from mridpm.tasks.recon_heads_eval import evaluate_heads, is_heads_prior
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


def demo(out_png: str | os.PathLike | None = "demo.png", *, accel: float = 8, slices: int = 2, samples: int = 4,
         seed: int = 0, prior: str = "heads_c", progress: bool = True) -> list[dict[str, Any]]:
    """The main job in a few CPU minutes: simulated 8-coil slices held out from the bundled prior's
    training (full-size T1 heads for a head prior), undersampled accel-fold by random lines,
    reconstructed by DDS with posterior samples, against the baselines; writes a figure of the last of
    them and returns the evaluation's rows."""
    from mridpm.nets.priors import load_prior

    p = load_prior(prior)
    if not is_heads_prior(p):
        rows = evaluate((accel,), ("dds",), prior=prior, samples=samples, slices=slices, seed=seed,
                        progress=progress)
        if out_png is not None:
            _demo_figure(out_png, accel, slices, samples, seed, prior)
        return rows
    keep: dict[str, torch.Tensor] = {}
    rows = evaluate_heads(p, ("dds",), data=("T1",), samplings=(("lines", float(accel)),), slices=slices,
                          samples=samples, seed=seed, progress=progress, keep=keep)
    if out_png is not None:
        _write_demo(out_png, keep)
    return rows


def _write_demo(out_png: str | os.PathLike, images: dict[str, torch.Tensor]) -> None:
    """The truth, each method's image titled with its PSNR and SSIM, the DDS std and its error."""
    from mridpm.figures import write_panels

    truth = images["truth"]
    methods = [n for n in images if n != "truth" and not n.endswith(" std")]
    panels = [("truth", truth.abs())]
    panels += [(f"{n}\nPSNR {m['psnr']:.2f} SSIM {m['ssim']:.3f}", images[n].abs())
               for n in methods for m in [image_metrics(truth, images[n])]]
    panels += [("uncertainty (std)", images["dds std"]), ("|error| of DPM", (images["dds"].abs() - truth.abs()).abs())]
    write_panels(out_png, panels)


def _demo_figure(out_png: str | os.PathLike, accel: float, slices: int, samples: int, seed: int, prior: str) -> None:
    """The truth, the baselines, the DDS mean, its std and its error on the demo's last held-out slice."""
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
    _write_demo(out_png, {"truth": x[0], **{n: im[0] for n, im in images.items()}, "dds": r.mean[0],
                          "dds std": r.std[0]})
