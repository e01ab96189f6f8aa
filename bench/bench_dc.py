"""Data consistency per call: mridpm's fused path against the same math in eager PyTorch and in sigpy.

    python bench/bench_dc.py [--device cpu|cuda] [--quick]

Rows: the hard projection (lam = 1) and the gradient A^H (y - A x) for 15 coils at 320x320
and 640x368, batch 1 and 8, complex64, a random line mask at R = 4. "eager" is the plain
operator math (centered FFTs with their shifts, separate pointwise ops); "mridpm" expands,
FFTs, blends, inverse-FFTs and combines with the fused kernels, the shifts folded into them
as checkerboard signs; "sigpy" (CPU) is the same math with sigpy's centered FFT on NumPy.
GB/s counts the bytes the pointwise work must move around the FFTs (read x, maps and y,
write x): a floor, not the traffic of the FFTs themselves.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Row, measure, parse_args, report
from mridpm import mri
from mridpm.mri.coils import birdcage_maps


def _eager(x, y, maps, mask, keep):
    k = mri.fft2c(maps * x.unsqueeze(1))
    k = keep * k + mask * (y - k)
    return (maps.conj() * mri.ifft2c(k)).sum(1)


def _sigpy(sp, x, y, maps, mask, keep):
    k = sp.fft(maps * x[:, None], axes=(-2, -1))
    k = keep * k + mask * (y - k)
    return (maps.conj() * sp.ifft(k, axes=(-2, -1))).sum(1)


def bench(batch: int, shape: tuple[int, int], device: torch.device, with_sigpy: bool) -> list[Row]:
    g = torch.Generator().manual_seed(0)
    maps = birdcage_maps(15, shape).unsqueeze(0).to(device)
    mask = (torch.rand(shape[1], generator=g) < 0.25).float()
    mask[shape[1] // 2 - 12 : shape[1] // 2 + 12] = 1
    mask = mask.to(device)
    A = mri.Sense(maps, mask)
    x = torch.randn(batch, *shape, dtype=torch.complex64, generator=g).to(device)
    y = A(torch.randn(batch, *shape, dtype=torch.complex64, generator=g).to(device))
    nbytes = (2 * x.numel() + maps.numel() + y.numel()) * 8
    reps = {"warmup": 2, "reps": 10, "min_seconds": 0.3}
    rows = []
    for name, keep, ours in (("project", 1.0, lambda: mri.project(x, y, A)),
                             ("gradient", 0.0, lambda: mri.gradient(x, y, A))):
        label = f"{name} {batch}x15x{shape[0]}x{shape[1]}"
        base = measure(lambda keep=keep: _eager(x, y, maps, mask, keep), device, **reps)
        mine = measure(ours, device, **reps)
        rows += [Row(label, "complex64", "eager", base, nbytes / base / 1e3, 1.0),
                 Row(label, "complex64", "mridpm", mine, nbytes / mine / 1e3, base / mine)]
        if with_sigpy:
            import sigpy as sp

            arrays = (x.numpy(), y.numpy(), maps.numpy(), mask.numpy())
            t = measure(lambda keep=keep, arrays=arrays: _sigpy(sp, *arrays, keep), device, **reps)
            rows.append(Row(label, "complex64", "sigpy", t, nbytes / t / 1e3, base / t))
    return rows


def collect(device: torch.device, quick: bool) -> list[Row]:
    """Every case's rows (batch 1 at 320x320 only when quick)."""
    with_sigpy = device.type == "cpu" and importlib.util.find_spec("sigpy") is not None
    cases = [(1, (320, 320))] if quick else [(1, (320, 320)), (8, (320, 320)), (1, (640, 368)), (8, (640, 368))]
    return [r for batch, shape in cases for r in bench(batch, shape, device, with_sigpy)]


def main() -> None:
    args, device = parse_args(__doc__, "batch 1 at 320x320 only, results not saved")
    report(collect(device, args.quick), f"dc-{device.type}", args.quick)


if __name__ == "__main__":
    main()
