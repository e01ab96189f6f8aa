"""One model evaluation of a full-size diffusion network under each speed flag of mridpm.nets.speed.

    python bench/bench_net.py [--device cpu|cuda] [--quick] [--no-compile] [--nets adm,ncsnpp] [--size N]

Two random-weight networks of the real architecture and size, called as their loaders call them
(prior.model(x, t), x one complex image as 2 channels (1, 2, H, W), t a (1,) timestep): "adm", the
guided-diffusion ADM UNet of DDS's fastMRI knee model (guided_diffusion.DEFAULTS, 361M parameters),
and "ncsnpp", score-MRI's fastMRI NCSN++ (score_sde.ARCH, 61M parameters, real and imaginary parts
through the 1-channel network as a batch of 2). Rows at 320x320 (--quick: 32x32, widths / 8, one run,
no compile row; bench/run.py leaves the compile rows out too, as their build takes minutes):
eager (torch.no_grad, float32: what reconstruct() runs today), then each flag alone: inference_mode,
channels_last, autocast bf16 and fp16, compile, and on a GPU cuda_graph and all of them but compile
together. Each row is the median of `reps` runs after one warm-up run (whose output gives max_rel_err:
max |out - eager| / max |eager|, so "where the prior tolerates it" is measured). An autocast dtype
the device does not support, or that a probe (one 3x3 convolution) finds more than 4x slower than
float32 (CPUs without native bf16/fp16 arithmetic emulate it), is a row without a time that says why.
Results: bench/results/net-<device>.json (a --nets subset: net-<nets>-<device>.json).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Row, measure, parse_args, report
from mridpm.nets.speed import Speed, check_autocast, fast_model

FLAGS: dict[str, Speed] = {"inference_mode": Speed(inference_mode=True), "channels_last": Speed(channels_last=True),
                           "autocast-bf16": Speed(autocast="bf16"), "autocast-fp16": Speed(autocast="fp16"),
                           "compile": Speed(compile=True), "cuda_graph": Speed(cuda_graph=True)}
ALL_BUT_COMPILE = Speed(inference_mode=True, channels_last=True, autocast="bf16", cuda_graph=True)


@dataclass
class NetRow(Row):
    max_rel_err: float = float("nan")  # max |out - eager| / max |eager|
    note: str = ""


def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights (the external layers keep no initializers): normal of std 1/sqrt(fan-in) for
    matrices and kernels, identity GroupNorms, small normal vectors otherwise."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
        for m in net.modules():
            if isinstance(m, nn.GroupNorm) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return net


def adm(size: int, narrow: int = 1) -> nn.Module:
    """DDS's guided-diffusion UNet as guided_diffusion.load makes it (eps channels of the learned-variance
    head); narrow divides its widths (--quick)."""
    from mridpm.nets.external import guided_diffusion as gd
    from mridpm.nets.external._adm_unet import UNetModel

    kwargs = gd.model_kwargs({**gd.DEFAULTS, "num_channels": 256 // narrow})
    net = UNetModel(**{**kwargs, "image_size": size})  # the 320 model's layers at any size
    return gd.EpsModel(randomize(net), 2)


def ncsnpp(size: int, narrow: int = 1) -> nn.Module:
    """score-MRI's NCSN++ as score_sde.load makes it (VE score as eps, real and imaginary parts apart);
    narrow divides its widths (--quick)."""
    from mridpm.nets.external import score_sde as ss
    from mridpm.nets.external._hub import ComplexChannels
    from mridpm.nets.external._ncsnpp import NCSNpp, NCSNppConfig
    from mridpm.nets.external.convert import SigmaPrior

    net = randomize(NCSNpp(NCSNppConfig(**{**ss.ARCH, "image_size": size, "nf": 128 // narrow})))
    return ComplexChannels(SigmaPrior(net, ss.geometric_sigmas(0.01, 378.0, 2000), "score"), 1, 1, "bench")


NETS: dict[str, Callable[[int, int], nn.Module]] = {"adm": adm, "ncsnpp": ncsnpp}


def autocast_problem(name: str, device: torch.device) -> str | None:
    """Why an autocast row is not timed on this device (unsupported, or emulated: > 4x float32), or None."""
    try:
        check_autocast(name, device)
    except ValueError as err:
        return str(err)
    conv = nn.Conv2d(64, 64, 3, padding=1).to(device)
    x = torch.randn(1, 64, 64, 64, device=device)
    plain = measure(lambda: conv(x), device, warmup=1, reps=3, min_seconds=0)
    with torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[name]):
        low = measure(lambda: conv(x), device, warmup=1, reps=3, min_seconds=0)
    if low > 4 * plain:
        return f"a {name} convolution runs {low / plain:.0f}x slower than float32 here (emulated)"
    return None


def bench_net(name: str, size: int, device: torch.device, reps: int, compile_: bool, narrow: int = 1
              ) -> list[NetRow]:
    """The eager row and one row per speed flag for network `name` at size x size (widths / narrow)."""
    torch.manual_seed(0)
    model = NETS[name](size, narrow).to(device).eval()
    x = torch.randn(1, 2, size, size, device=device)
    t = torch.full((1,), 500, dtype=torch.long, device=device)
    label = f"{name}{f'/{narrow}' if narrow > 1 else ''} eval 1x2x{size}x{size}"
    flags = dict(FLAGS)
    if device.type == "cuda":
        flags["all-but-compile"] = ALL_BUT_COMPILE
    else:
        del flags["cuda_graph"]
    if not compile_:  # inductor builds a large network for minutes (over 15 on a small CPU)
        del flags["compile"]
    ref = model(x, t).double()
    eager = measure(lambda: model(x, t), device, warmup=0, reps=reps, min_seconds=0)
    rows = [NetRow(label, "float32", "eager", eager, 0.0, 1.0, max_rel_err=0.0)]
    for flag, speed in flags.items():
        dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(speed.autocast or "", "float32")
        why = autocast_problem(speed.autocast, device) if speed.autocast and flag.startswith("autocast") else None
        if why is not None:
            rows.append(NetRow(label, dtype, flag, float("nan"), 0.0, float("nan"), note=f"not timed: {why}"))
            continue
        fast = fast_model(model, speed)
        tic = time.perf_counter()
        out = fast(x, t)  # the warm-up (compiles, records), and the error against eager float32
        first = time.perf_counter() - tic
        err = float((out.double() - ref).abs().max() / ref.abs().max())
        us = measure(lambda f=fast: f(x, t), device, warmup=0, reps=reps, min_seconds=0)
        note = f"first call {first:.0f} s" if speed.compile else ""
        if speed.cuda_graph and not all(g.captured for g in fast._graphs.values()):  # type: ignore[attr-defined]
            note = "not recorded as a graph: ran eagerly (see the AccelerateWarning)"
        rows.append(NetRow(label, dtype, flag, us, 0.0, eager / us, max_rel_err=err, note=note))
        if speed.channels_last:  # FastModel converted the weights in place: back for the next rows
            model.to(memory_format=torch.contiguous_format)
    return rows


def print_errors(rows: list[NetRow]) -> None:
    """Each row's error against eager float32 and its note."""
    print(f"\n{'network':<30}{'backend':<18}{'max rel err':>12}  note")
    for r in rows:
        err = "-" if r.max_rel_err != r.max_rel_err else f"{r.max_rel_err:.1e}"
        print(f"{r.shape:<30}{r.backend:<18}{err:>12}  {r.note}")


def collect(device: torch.device, quick: bool, compile_: bool = True, nets: tuple[str, ...] = tuple(NETS),
            size: int | None = None) -> list[Row]:
    """Every network's rows (320x320, median of 3 on a CPU and 20 on a GPU; quick: 32x32 with the widths
    divided by 8, one run, no compile row: a check that every row runs, in seconds)."""
    reps = 1 if quick else (20 if device.type == "cuda" else 3)
    size = size or (32 if quick else 320)
    rows: list[Row] = []
    with torch.no_grad():
        for name in nets:
            rows += bench_net(name, size, device, reps, compile_ and not quick, 8 if quick else 1)
    return rows


def main() -> None:
    def extra(p):
        p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (slow to build)")
        p.add_argument("--nets", default=",".join(NETS), help=f"comma-separated subset of {','.join(NETS)}")
        p.add_argument("--size", type=int, help="image side (default 320; --quick: 32)")

    args, device = parse_args(__doc__, "32x32, widths / 8, one run per row, no compile row, results not saved", extra)
    nets = tuple(args.nets.split(","))
    if set(nets) - set(NETS):
        raise SystemExit(f"unknown networks {sorted(set(nets) - set(NETS))}; choose from {','.join(NETS)}")
    rows = collect(device, args.quick, not args.no_compile, nets, args.size)
    name = "-".join(["net", *([] if set(nets) == set(NETS) else nets), device.type])  # a subset: its own file
    report(rows, name, args.quick)
    print_errors(rows)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
