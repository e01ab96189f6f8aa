"""Every bench in one run: the same timer (median of many runs after warm-up; CUDA events on the
GPU), one table, one JSON file with the machine, versions and git commit.

    python -m bench [--device cpu|cuda] [--quick] [--only step,dc,...] [--no-compile]
    python bench/run.py ...

Rows keep each bench's columns (shape, dtype, backend, median, GB/s, ratio to eager PyTorch and,
for the step bench, to its floor, measured in the same run; the net bench without its compile rows,
whose build takes minutes: bench/bench_net.py alone has them); the JSON goes to
bench/results/all-<device>.json (not with --quick), rewritten after each bench ("complete": false
until the last), so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import RESULTS, Row, machine, print_table

BENCHES = ("step", "sampler", "dc", "attention", "recon", "net")


def run(names: tuple[str, ...], device: torch.device, quick: bool, compile_: bool,
        after: Callable[[dict[str, list[Row]]], object] | None = None) -> dict[str, list[Row]]:
    """Each named bench's rows, printed as they finish; after(rows so far) runs after each bench."""
    out: dict[str, list[Row]] = {}
    for name in names:
        module = importlib.import_module(f"bench.bench_{name}")
        start = time.perf_counter()
        kwargs = {"compile_": compile_} if name == "step" else {"compile_": False} if name == "net" else {}
        try:
            out[name] = module.collect(device, quick, **kwargs)
        except ModuleNotFoundError as err:  # a peer compared against (diffusers, say) is not installed
            print(f"\n== {name}: skipped, {err.name} is not installed ==")
            out[name] = []
            continue
        print(f"\n== {name} ({time.perf_counter() - start:.0f} s) ==")
        print_table(out[name])
        sys.stdout.flush()
        if after is not None:
            after(out)
    return out


def _find(rows: list[Row], shape: str, backend: str, dtype: str | None = None) -> Row | None:
    return next((r for r in rows if r.shape == shape and r.backend == backend and dtype in (None, r.dtype)), None)


def targets(results: dict[str, list[Row]]) -> list[dict[str, object]]:
    """The acceleration targets (GPU figures; on a CPU the same ratios, for the record) from this run's rows:
    each {target, measured, goal, met}; met is None where the rows are missing (e.g. no copy row on a CPU)."""
    out: list[dict[str, object]] = []

    def add(name: str, value: float | None, goal: float, unit: str) -> None:
        ok = None if value is None or value != value else value >= goal
        out.append({"target": name, "measured": value, "goal": goal, "unit": unit, "met": ok})

    step = results.get("step", [])
    for dtype in ("float32", "bfloat16"):
        shape = "(67108864,)"
        copy = _find(step, shape, "copy", dtype)
        best = max((r for r in step if r.shape == shape and r.dtype == dtype and r.backend.startswith("mridpm-")),
                   key=lambda r: r.gbps, default=None)
        add(f"fused step {dtype} 64M: bandwidth / copy", best.gbps / copy.gbps if best and copy else None, 0.85, "")
        add(f"fused step {dtype} 64M: speed-up over eager", best.vs_eager if best else None, 5.0, "x")
    dc = _find(results.get("dc", []), "project 8x15x320x320", "mridpm")
    add("DC projection 8x15x320x320: speed-up over eager", dc.vs_eager if dc else None, 2.0, "x")
    blocks = [r.vs_eager for r in results.get("attention", []) if r.backend == "block-mridpm"]
    add("3D attention block: speed-up over the SDPA block (worst case)", min(blocks) if blocks else None, 1.3, "x")
    dds = _find(results.get("recon", []), "dds loop/eval 1x15x320x320", "mridpm+graphs")
    add("DDS with brain64c, CUDA graphs: speed-up over eager", dds.vs_eager if dds else None, 2.0, "x")
    return out


def print_targets(rows: list[dict[str, object]]) -> None:
    print("\n== targets (the goals are for a GPU) ==")
    for t in rows:
        value = "not measured" if t["measured"] is None else f"{t['measured']:.2f}{t['unit']}"
        verdict = {None: "", True: "met", False: "MISSED"}[t["met"]]  # type: ignore[index]
        print(f"{t['target']:<66}{value:>14}  (goal {t['goal']}{t['unit']}) {verdict}")


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
    info = None if args.quick else machine()

    def save(results: dict[str, list[Row]], complete: bool = False) -> Path:
        return write(results, device, info or {}, complete)

    results = run(names, device, args.quick, not args.no_compile, None if args.quick else save)
    print_targets(targets(results))
    if not args.quick:
        print(f"\nwrote {save(results, complete=True)}")


def write(results: dict[str, list[Row]], device: torch.device, info: dict[str, object], complete: bool) -> Path:
    """Writes the rows so far, the machine and the targets they reach to bench/results/all-<device>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"all-{device.type}.json"
    clean = {k: [{c: None if v != v else v for c, v in asdict(r).items()} for r in rows] for k, rows in results.items()}
    payload = {"machine": info, "complete": complete, "benches": clean, "targets": targets(results)}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


if __name__ == "__main__":
    main()
