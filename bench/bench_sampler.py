"""Per-step sampler overhead without the model: mridpm's schedulers against diffusers' own.

    python bench/bench_sampler.py [--device cpu|cuda] [--quick]

Each row times one scale_model_input + scheduler.step (model output given) on 4-channel 64x64
latents at batch 1, 4 and 16: diffusers' DDIM (eta = 0 and 1), DDPM, DPM-Solver++ 2M and Euler
against mridpm.compat's drop-ins with the same config, the noisy ones both with a
torch.Generator (diffusers' noise, drawn as diffusers draws it) and with Philox noise made
inside the kernel. GB/s counts the bytes one fused step must move (read sample and model
output, write the result). On a GPU the time is the wall time of 50 steps queued back to back
and one synchronisation at the end, divided by 50: a host sync inside a step would show.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import mridpm
from bench.common import Row, measure, parse_args, report
from mridpm import compat


def _step_timer(scheduler, x, out, device, **step_kwargs) -> float:
    """Median microseconds of one step from timestep index 10 of 50 (history already filled)."""
    scheduler.set_timesteps(50)
    ts = scheduler.timesteps
    index = 10

    def one_step():
        scheduler._step_index = index  # keep stepping from the same timestep
        t = ts[index]
        return scheduler.step(out, t, scheduler.scale_model_input(x, t), **step_kwargs)

    for i in range(index):  # multistep solvers: fill the history as a real loop would
        scheduler.step(out, ts[i], scheduler.scale_model_input(x, ts[i]), **step_kwargs)
    if device.type != "cuda":
        return measure(one_step, device)
    runs = []
    for _ in range(7):
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(50):
            one_step()
        torch.cuda.synchronize(device)
        runs.append((time.perf_counter() - start) / 50 * 1e6)
    return statistics.median(runs)


def bench(batch: int, device: torch.device) -> list[Row]:
    diffusers = __import__("diffusers")
    shape = (batch, 4, 64, 64)
    x = torch.randn(shape, device=device)
    out = torch.randn(shape, device=device)
    nbytes = 3 * x.nbytes
    gen = torch.Generator(device=device).manual_seed(0)
    noisy = ({"generator": gen}, {"generator": mridpm.Generator(0)})
    cases = [
        ("ddim eta=0", "DDIMScheduler", {}, ({}, None)),
        ("ddim eta=1", "DDIMScheduler", {}, tuple({"eta": 1.0, **kw} for kw in noisy)),
        ("ddpm", "DDPMScheduler", {}, noisy),
        ("dpm++ 2m", "DPMSolverMultistepScheduler", {}, ({}, None)),
        ("euler", "EulerDiscreteScheduler", {}, ({}, None)),
    ]
    rows = []
    for name, cls, config, (kw_theirs, kw_philox) in cases:
        theirs, ours = getattr(diffusers, cls)(**config), getattr(compat, cls)(**config)
        base = _step_timer(theirs, x, out, device, **kw_theirs)
        same_noise = _step_timer(ours, x, out, device, **kw_theirs)
        label = f"{name} {tuple(shape)}"
        rows += [Row(label, "float32", "diffusers", base, nbytes / base / 1e3, 1.0),
                 Row(label, "float32", "mridpm", same_noise, nbytes / same_noise / 1e3, base / same_noise)]
        if kw_philox is not None:
            philox = _step_timer(ours, x, out, device, **kw_philox)
            rows.append(Row(label, "float32", "mridpm-philox", philox, nbytes / philox / 1e3, base / philox))
    return rows


def collect(device: torch.device, quick: bool) -> list[Row]:
    """Every batch's rows (batch 1 only when quick)."""
    return [r for batch in ((1,) if quick else (1, 4, 16)) for r in bench(batch, device)]


def main() -> None:
    args, device = parse_args(__doc__, "batch 1 only, results not saved")
    report(collect(device, args.quick), f"sampler-{device.type}", args.quick)


if __name__ == "__main__":
    main()
