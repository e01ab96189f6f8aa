"""Fused sampler step against the update a diffusers DDIM step performs (eta > 0).

    python bench/bench_step.py [--device cpu|cuda] [--quick] [--no-compile]

Backends: eager (separate PyTorch ops plus torch.randn, as diffusers does), compile
(torch.compile of the same function), floor (one torch.add of x and eps into a
preallocated output: one op moving the bytes a fused step must move, the fastest the step
can be) and mridpm's kernels. GB/s counts those bytes: read x and eps, write the result.
Every row gives its speed-up over eager and its fraction of the floor's speed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mridpm
from bench.common import Row, measure, print_table, save
from mridpm import _ext

A_T, A_PREV, STD = 0.5, 0.6, 0.1


def ddim_eager(x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DDIMScheduler.step's arithmetic for eta > 0, op by op."""
    pred_x0 = (x - (1 - A_T) ** 0.5 * eps) / A_T**0.5
    direction = (1 - A_PREV - STD**2) ** 0.5 * eps
    prev = A_PREV**0.5 * pred_x0 + direction
    noise = torch.randn(x.shape, generator=gen, dtype=x.dtype, device=x.device)
    return prev + STD * noise


def ddim_fused(x: torch.Tensor, eps: torch.Tensor, gen: mridpm.Generator, backend: str) -> torch.Tensor:
    """The same update as one fused_step call."""
    return mridpm.fused_step(
        [x, eps], [0.0, (1 - A_PREV - STD**2) ** 0.5], STD, generator=gen, backend=backend,
        x0_coeffs=[A_T**-0.5, -((1 - A_T) / A_T) ** 0.5], x0_weight=A_PREV**0.5,
    )


def copy_row(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Row:
    """Device-to-device copy: the bandwidth ceiling the step is measured against."""
    src = torch.randn(shape, device=device).to(dtype)
    dst = torch.empty_like(src)
    us = measure(lambda: dst.copy_(src), device)
    return Row(str(tuple(shape)), str(dtype).replace("torch.", ""), "copy", us, 2 * src.nbytes / us / 1e3, 0.0)


def bench(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, compile_: bool) -> list[Row]:
    """One configuration's rows (eager, compile, floor, each mridpm kernel), each with its speed-up over
    eager and its fraction of the floor's speed, all measured in this call."""
    x = torch.randn(shape, device=device).to(dtype)
    eps = torch.randn(shape, device=device).to(dtype)
    nbytes = 3 * x.nbytes
    gen = torch.Generator(device=device).manual_seed(0)
    cases = {"eager": lambda: ddim_eager(x, eps, gen)}
    if compile_:
        compiled = torch.compile(ddim_eager)
        cases["compile"] = lambda: compiled(x, eps, gen)
    floor_out = torch.empty_like(x)
    cases["floor"] = lambda: torch.add(x, eps, out=floor_out)
    ours = mridpm.Generator(0)
    kernels = ["cpu"] if device.type == "cpu" else (["cuda"] if _ext.cuda_built() else []) + ["triton"]
    for backend in kernels:
        cases[f"mridpm-{backend}"] = lambda b=backend: ddim_fused(x, eps, ours, b)
    times = {name: measure(fn, device) for name, fn in cases.items()}
    label, dt = str(tuple(shape)), str(dtype).replace("torch.", "")
    return [Row(label, dt, name, us, nbytes / us / 1e3, times["eager"] / us, times["floor"] / us)
            for name, us in times.items()]


def overhead_rows(device: torch.device) -> list[Row]:
    """Per-call cost at a tiny size: the direct eager path against the torch.library custom op."""
    from mridpm.ops.step import NOISE, fused_step_op

    backend = "cpu" if device.type == "cpu" else ("cuda" if _ext.cuda_built() else "triton")
    x = torch.randn(1, 64, device=device)
    params = torch.rand(1, 7, device=device)
    gen = mridpm.Generator(0)
    direct = measure(lambda: mridpm.fused_step(x, [1.0], 0.5, generator=gen, backend=backend), device)
    via_op = measure(lambda: fused_step_op([x], params, 0, 0, NOISE, backend), device)
    eager = measure(lambda: x + 0.5 * torch.randn(x.shape, device=device), device)
    return [Row("(1, 64)", "float32", name, us, 3 * x.nbytes / us / 1e3, eager / us)
            for name, us in (("eager", eager), (f"mridpm-{backend}", direct), (f"custom-op-{backend}", via_op))]


def collect(device: torch.device, quick: bool, compile_: bool = True) -> list[Row]:
    """The copy ceiling (on the GPU, for the bandwidth target), then every configuration's step rows,
    each with its floor row."""
    if device.type == "cuda":
        configs = [((4, 3, 256, 256), torch.float32), ((64 * 1024 * 1024,), torch.float32),
                   ((64 * 1024 * 1024,), torch.bfloat16), ((8, 15, 320, 320), torch.complex64)]
    else:
        configs = [((4, 3, 256, 256), torch.float32), ((4, 3, 256, 256), torch.bfloat16),
                   ((4, 3, 256, 256), torch.float16), ((8, 1, 320, 320), torch.complex64),
                   ((1, 4, 64, 64), torch.float32)]
    rows: list[Row] = []
    for shape, dtype in configs[:1] if quick else configs:
        if device.type == "cuda" and shape == (64 * 1024 * 1024,):
            rows.append(copy_row(shape, dtype, device))
        rows += bench(shape, dtype, device, compile_)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="only the headline configuration")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to build)")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = collect(device, args.quick, not args.no_compile)
    print_table(rows)
    overhead = overhead_rows(device)
    print("\nper-call overhead (public function, which skips the dispatcher in eager mode, and the registered op):")
    print_table(overhead)
    if not args.quick:  # the recorded tables hold full runs only
        path = save(f"step-{device.type}", rows, {"overhead": [asdict(r) for r in overhead]})
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
