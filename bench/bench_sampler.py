"""Per-step sampler overhead without the model: mridpm's schedulers against diffusers' own.

    python bench/bench_sampler.py [--device cpu|cuda] [--quick]

Each row times one scheduler.step (model output given) at a batch of 4-channel 64x64 latents:
diffusers' DDIM (eta = 0 and eta = 1) and DDPM, and mridpm.compat's drop-ins with the same
config (torch.Generator noise, as diffusers draws it, and Philox noise in the kernel).
GB/s counts the bytes one fused step must move (read sample and model output, write the result).
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
from mridpm import compat


def _step_timer(scheduler, x, out, device, **step_kwargs):
    scheduler.set_timesteps(50)
    t = scheduler.timesteps[10]
    index = scheduler.timesteps.tolist().index(int(t))

    def one_step():
        if hasattr(scheduler, "_step_index"):
            scheduler._step_index = index  # keep stepping from the same timestep
        return scheduler.step(out, t, x, **step_kwargs)

    return measure(one_step, device)


def bench(batch: int, device: torch.device) -> list[Row]:
    diffusers = __import__("diffusers")
    shape = (batch, 4, 64, 64)
    x = torch.randn(shape, device=device)
    out = torch.randn(shape, device=device)
    nbytes = 3 * x.nbytes
    gen = torch.Generator(device=device).manual_seed(0)
    cases = [
        ("ddim eta=0", diffusers.DDIMScheduler(), compat.DDIMScheduler(), {}, {}),
        ("ddim eta=1", diffusers.DDIMScheduler(), compat.DDIMScheduler(), {"eta": 1.0, "generator": gen},
         {"eta": 1.0, "generator": mridpm.Generator(0)}),
        ("ddpm", diffusers.DDPMScheduler(), compat.DDPMScheduler(), {"generator": gen},
         {"generator": mridpm.Generator(0)}),
    ]
    rows = []
    for name, theirs, ours, kw_theirs, kw_philox in cases:
        base = _step_timer(theirs, x, out, device, **kw_theirs)
        same_noise = _step_timer(ours, x, out, device, **kw_theirs)
        philox = _step_timer(ours, x, out, device, **kw_philox)
        label = f"{name} {tuple(shape)}"
        rows += [Row(label, "float32", "diffusers", base, nbytes / base / 1e3, 1.0),
                 Row(label, "float32", "mridpm", same_noise, nbytes / same_noise / 1e3, base / same_noise)]
        if kw_philox:
            rows.append(Row(label, "float32", "mridpm-philox", philox, nbytes / philox / 1e3, base / philox))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="batch 1 only, results not saved")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [r for batch in ((1,) if args.quick else (1, 16)) for r in bench(batch, device)]
    print_table(rows)
    if not args.quick:
        print(f"\nwrote {save(f'sampler-{device.type}', rows, {'columns': [*asdict(rows[0])]})}")


if __name__ == "__main__":
    main()
