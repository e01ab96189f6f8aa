"""What the reconstructions are judged against and given: the classical baselines (zero-filled,
CG-SENSE, L1-wavelet) with settings tuned fairly on training slices, the image metrics that tune
and judge them, and the k-space noise estimate the diffusion methods receive."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from mridpm.mri.classical import cg_sense, l1_wavelet, zero_filled
from mridpm.mri.metrics import nmse, psnr, ssim
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.tasks.recon_scale import estimate_scale

BASELINES = ("zero-filled", "CG-SENSE", "L1-wavelet")  # Baselines.run's names, in its order


@dataclass
class Baselines:
    """The classical reconstructions' settings (CG iterations, L1-wavelet weight relative to the
    image scale, recon_scale.estimate_scale) and how to run them."""

    cg_iters: int = 10
    l1_lam: float = 0.003

    def run(self, y: torch.Tensor, op: Sense | SingleCoil) -> dict[str, tuple[torch.Tensor, float]]:
        """{name: (image, seconds)} of zero-filled, CG-SENSE and L1-wavelet."""
        scale = estimate_scale(y, op)
        methods = (lambda: zero_filled(y, op), lambda: cg_sense(y, op, iters=self.cg_iters),
                   lambda: l1_wavelet(y, op, self.l1_lam * scale, iters=60))
        out = {}
        for name, fn in zip(BASELINES, methods, strict=True):
            tic = time.perf_counter()
            out[name] = (fn(), time.perf_counter() - tic)
        return out

    def settings(self, name: str) -> dict[str, float]:
        """The tuned settings an evaluation row of baseline `name` records (none for zero-filled)."""
        return {"cg_iters": self.cg_iters, "l1_lam": self.l1_lam} if name in ("CG-SENSE", "L1-wavelet") else {}


def image_metrics(target: torch.Tensor, image: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and NMSE of magnitudes against the target magnitude (fastMRI's conventions)."""
    t, p = target.abs().float(), image.abs().float()
    return {"psnr": psnr(t, p), "ssim": ssim(t, p), "nmse": nmse(t, p)}


CG_ITERS = (1, 2, 3, 5, 10, 20, 40)  # early stopping is CG-SENSE's only regularization: few iterations count
L1_LAMS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # relative to the image scale


def mean_psnr(x: torch.Tensor, images: torch.Tensor) -> float:
    """The mean PSNR of images against the slices x: what every setting is tuned by."""
    return sum(image_metrics(x[i], images[i])["psnr"] for i in range(len(x))) / len(x)


def tune_baselines(x: torch.Tensor, y: torch.Tensor, op: Sense) -> Baselines:
    """The CG iteration count (CG_ITERS) and L1 weight (L1_LAMS) with the best mean PSNR on the given
    (training) slices; every evaluation table reports the values picked."""
    iters = max(CG_ITERS, key=lambda n: mean_psnr(x, cg_sense(y, op, iters=n)))
    s = estimate_scale(y, op)
    lam = max(L1_LAMS, key=lambda v: mean_psnr(x, l1_wavelet(y, op, v * s, iters=60)))
    return Baselines(iters, lam)


def estimate_noise_std(y: torch.Tensor, mask: torch.Tensor, rows: int = 4) -> float:
    """The k-space noise std per real part from the measured samples in the outermost `rows` rows
    (high frequencies, mostly noise) of lines or of any 2D mask broadcastable to y (extra leading
    ones dropped): 1.4826 times the median absolute real and imaginary value."""
    m = mask != 0
    while m.dim() > y.dim() and m.shape[0] == 1:
        m = m[0]
    m = torch.broadcast_to(m.to(y.device), y.shape)
    edge = torch.cat([y[..., :rows, :], y[..., -rows:, :]], -2)
    measured = torch.cat([m[..., :rows, :], m[..., -rows:, :]], -2)
    values = torch.view_as_real(edge[measured]).abs().flatten()
    return float(1.4826 * values.median()) if values.numel() else 0.0
