"""Attention over volumetric tokens: mridpm's op against torch's SDPA backends and the naive math.

    python bench/bench_attention.py [--device cpu|cuda] [--quick]

Rows: 8^3, 16^3 and 32^3 tokens (batch 1, 4 heads) at head dims 32 and 64, forward only, and on
a GPU the whole attention block (GroupNorm, qkv projection, attention, output projection,
residual) with mridpm's Triton kernel against the same block written with SDPA. GB/s counts
reading q, k, v and writing the output once (what a fused kernel must move). On a GPU the
peak memory of each attention call is printed too. The naive math materialises the
tokens x tokens matrix, so it (and SDPA's math backend) is skipped where that exceeds 2 GB;
"vs eager" is the speed-up over SDPA's math backend where it ran, else over mridpm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Row, measure, parse_args, report
from mridpm.nets.layers import AttentionBlock
from mridpm.ops.attention import attention, attention_reference

_SDPA = {"sdpa-math": SDPBackend.MATH, "sdpa-flash": SDPBackend.FLASH_ATTENTION,
         "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION}


def _sdpa(kind):
    def run(q, k, v):
        with sdpa_kernel(_SDPA[kind]):
            return scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return run


def _peak_mb(fn, device) -> float:
    if device.type != "cuda":
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def bench(side: int, head_dim: int, device: torch.device, dtype: torch.dtype, peaks: list[str]) -> list[Row]:
    n, heads = side**3, 4
    qkv = torch.randn(1, n, 3, heads, head_dim, device=device, dtype=dtype)
    q, k, v = qkv.unbind(2)
    nbytes = 4 * q.numel() * q.element_size()
    label = f"{side}^3 tokens d={head_dim}"
    cands = {"mridpm": lambda: attention(q, k, v)}
    fits = n * n * 4 * heads <= 2**31  # the tokens x tokens matrix of the math backends
    for kind in _SDPA if fits else [kind for kind in _SDPA if kind != "sdpa-math"]:
        try:
            _sdpa(kind)(q, k, v)
            cands[kind] = lambda kind=kind: _sdpa(kind)(q, k, v)
        except RuntimeError:  # backend not available for this device, dtype or size
            pass
    if fits:
        cands["naive"] = lambda: attention_reference(q, k, v, head_dim**-0.5)
    times = {name: measure(fn, device, warmup=2, reps=10, min_seconds=0.2) for name, fn in cands.items()}
    base = times.get("sdpa-math", times["mridpm"])
    dt = str(dtype).removeprefix("torch.")
    rows = [Row(label, dt, name, t, nbytes / t / 1e3, base / t) for name, t in times.items()]
    peaks += [f"{label:<24}{name:<16}{_peak_mb(fn, device):10.1f} MB" for name, fn in cands.items()]
    if device.type == "cuda" and side >= 16:
        block = AttentionBlock(heads * head_dim, heads).to(device, dtype)
        x = torch.randn(1, heads * head_dim, side, side, side, device=device, dtype=dtype)
        with torch.no_grad():
            from mridpm.ops import use_backend

            with use_backend("triton"):
                ours = measure(lambda: block(x), device, warmup=2, reps=10, min_seconds=0.2)
            with use_backend("cuda"):  # the same block through torch's SDPA
                theirs = measure(lambda: block(x), device, warmup=2, reps=10, min_seconds=0.2)
        rows += [Row(f"block {label}", dt, "block-sdpa", theirs, 0.0, 1.0),
                 Row(f"block {label}", dt, "block-mridpm", ours, 0.0, theirs / ours)]
    return rows


def collect(device: torch.device, quick: bool, peaks: list[str] | None = None) -> list[Row]:
    """Every case's rows (8^3 and 16^3 at d=32 only when quick); peak memory lines go to peaks."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    cases = [(8, 32), (16, 32)] if quick else [(s, d) for s in (8, 16, 32) for d in (32, 64)]
    return [r for side, d in cases for r in bench(side, d, device, dtype, [] if peaks is None else peaks)]


def main() -> None:
    args, device = parse_args(__doc__, "8^3 and 16^3 at d=32 only, results not saved")
    peaks: list[str] = []
    report(collect(device, args.quick, peaks), f"attention-{device.type}", args.quick)
    if device.type == "cuda":
        print("\npeak memory per call:\n" + "\n".join(peaks))


if __name__ == "__main__":
    main()
