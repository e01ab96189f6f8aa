"""Every bench in one run: the same timer (median of many runs after warm-up; CUDA events on the
GPU), one table, one JSON file with the machine, versions and git commit.

    python -m bench [--device cpu|cuda] [--quick] [--only step,dc,...] [--no-compile]
    python bench/run.py ...

Rows keep each bench's columns (shape, dtype, backend, median, GB/s, ratio to eager PyTorch,
measured in the same run); the JSON goes to bench/results/all-<device>.json (not with --quick).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, Row, machine, print_table

BENCHES = ("step", "sampler", "dc", "attention", "recon")


def run(names: tuple[str, ...], device: torch.device, quick: bool, compile_: bool) -> dict[str, list[Row]]:
    """Each named bench's rows, printed as they finish."""
    out = {}
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        start = time.perf_counter()
        kwargs = {"compile_": compile_} if name == "step" else {}
        out[name] = module.collect(device, quick, **kwargs)
        print(f"\n== {name} ({time.perf_counter() - start:.0f} s) ==")
        print_table(out[name])
        sys.stdout.flush()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="each bench's smallest case; nothing saved")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (slow to build)")
    args = parser.parse_args(argv)
    names = tuple(args.only.split(",")) if args.only else BENCHES
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benches {sorted(unknown)}; choose from {','.join(BENCHES)}")
    device = torch.device(args.device)
    results = run(names, device, args.quick, not args.no_compile)
    if args.quick:
        return
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"all-{device.type}.json"
    clean = {k: [{c: None if v != v else v for c, v in asdict(r).items()} for r in rows] for k, rows in results.items()}
    path.write_text(json.dumps({"machine": machine(), "benches": clean}, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
