"""One timer and one table for every bench: median of many runs after warm-up (CUDA events on GPU)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    shape: str
    dtype: str
    backend: str
    median_us: float
    gbps: float
    vs_eager: float
    vs_floor: float = float("nan")  # floor time / this time: 1.0 runs as fast as one op moving the same bytes


def measure(fn: Callable[[], object], device: torch.device, warmup: int = 5, reps: int = 50,
            min_seconds: float = 0.5) -> float:
    """Median wall time of fn in microseconds; at least `reps` runs and `min_seconds` of runs."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < reps or time.perf_counter() - start < min_seconds:
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
        if len(times) >= 20 * reps:
            break
    return statistics.median(times)


def parse_args(doc: str | None, quick_help: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> tuple[argparse.Namespace, torch.device]:
    """The options every bench takes: --device and --quick (plus any extra ones)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if extra is not None:
        extra(parser)
    args = parser.parse_args()
    return args, torch.device(args.device)


def report(rows: list[Row], name: str, quick: bool) -> None:
    """Prints the table; unless quick, saves it as bench/results/<name>.json."""
    print_table(rows)
    if not quick:
        print(f"\nwrote {save(name, rows, {'columns': [*asdict(rows[0])]})}")


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS.parent).stdout.strip()
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "commit": commit or "unknown",
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    try:
        from mridpm.info import info as mridpm_info

        found = mridpm_info()
        info["mridpm"], info["backends"] = found["mridpm"], found["backends"]
    except ImportError:  # the package is not importable: the rows say what ran
        pass
    for name in ("numpy", "triton", "diffusers", "sigpy"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_table(rows: list[Row]) -> None:
    """Fixed columns: shape, dtype, backend, median, GB/s, speed-up over eager PyTorch, and the fraction
    of the floor's speed where a bench measured a floor (one op moving the same bytes)."""
    w = max([22, *(len(r.shape) + 2 for r in rows)])
    floors = any(r.vs_floor == r.vs_floor for r in rows)
    print(f"{'shape':<{w}}{'dtype':<10}{'backend':<16}{'median':>12}{'GB/s':>9}{'vs eager':>10}"
          + (f"{'vs floor':>10}" if floors else ""))
    for r in rows:
        print(f"{r.shape:<{w}}{r.dtype:<10}{r.backend:<16}{_fmt_time(r.median_us):>12}{r.gbps:>9.1f}"
              f"{_fmt_ratio(r.vs_eager)}" + (_fmt_ratio(r.vs_floor) if floors else ""))


def _fmt_ratio(x: float) -> str:
    return f"{x:>9.2f}x" if x == x else f"{'-':>10}"  # NaN: no row to compare with


def _fmt_time(us: float) -> str:
    if us != us:  # NaN: a row that was not timed (its note says why)
        return "-"
    return f"{us / 1e3:.3f} ms" if us >= 1000 else f"{us:.1f} us"


def save(name: str, rows: list[Row], extra: dict[str, object] | None = None) -> Path:
    """Writes rows and the machine description to bench/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    clean = [{k: None if v != v else v for k, v in asdict(r).items()} for r in rows]  # NaN -> null
    payload = {"machine": machine(), "rows": clean, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
