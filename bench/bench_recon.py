"""Reconstruction loops: mridpm's posterior samplers against the same loops in eager PyTorch.

    python bench/bench_recon.py [--device cpu|cuda] [--quick] [--prior-steps N]

15 coils at 320x320, complex64, 1D random lines at R = 4. Two parts:
- "step": the non-network part of one sampler step, timed over a 10-step loop whose model returns
  a fixed eps (so the network costs nothing): every method of ours, and for projection and DDS the
  same loop in eager PyTorch (diffusers' DDIM step math as separate ops with torch.randn noise,
  the plain operator math with the FFT shifts, CG with separate ops), the two run in turn (median
  of 5 loops each: these machines drift);
- "loop": the whole loop with the bundled prior (brain64c, convolutional, run at 320x320), per
  model evaluation, projection and DDS, ours against eager with the same network calls, the two
  run in turn (median of 5 each).
On a GPU both parts add "mridpm+graphs": the same posterior sampler recorded once as a CUDA graph
(mridpm.accelerate.graph, y the input) and timed by its replays, fresh noise at each.
GB/s counts the pointwise floor of the data-consistency passes of a step (read x, maps and y,
write x, once per pass), not the FFTs' traffic.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import Row, measure, parse_args, report
from mridpm import accelerate, mri
from mridpm.dpm import DiscreteSchedule
from mridpm.dpm._common import discrete_timesteps
from mridpm.mri.classical import zero_filled
from mridpm.mri.coils import birdcage_maps
from mridpm.random import Generator
from mridpm.tasks import posterior as ps
from mridpm.tasks.reconstruction import reconstruct

SHAPE, COILS, CG_ITERS = (320, 320), 15, 5


def _ddim(x, eps, x0, abar, abar_prev, eta=1.0):
    """diffusers' DDIM step after pred_x0, op by op."""
    var = (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    std = eta * var**0.5
    out = abar_prev**0.5 * x0 + (1 - abar_prev - std**2) ** 0.5 * eps
    return out + std * torch.randn_like(x) if std > 0 else out


def _dc(x, y, maps, mask, keep, y_scale=1.0):
    k = mri.fft2c(maps * x.unsqueeze(1))
    k = keep * k + mask * (y_scale * y - keep * k)
    return (maps.conj() * mri.ifft2c(k)).sum(1)


def _normal(x, maps, mask):
    return (maps.conj() * mri.ifft2c(mask * mri.fft2c(maps * x.unsqueeze(1)))).sum(1)


def _cg(x, b, maps, mask, mu, iters):
    def dot(u, v):
        return (u.conj() * v).real.sum(dim=(-2, -1), keepdim=True)

    r = b - _normal(x, maps, mask) - mu * x
    p, rr = r.clone(), dot(r, r)
    for _ in range(iters):
        q = _normal(p, maps, mask) + mu * p
        alpha = rr / dot(p, q)
        x, r = x + alpha * p, r - alpha * q
        rr_new = dot(r, r)
        p, rr = r + (rr_new / rr) * p, rr_new
    return x


def eager_loop(method, model, y, maps, mask, schedule, steps, noise_std, clip=(-1.0, 1.0)):
    """The projection or DDS loop of mridpm.tasks.posterior written as eager PyTorch."""
    ts = discrete_timesteps(schedule, None, steps, "leading", 0)
    x = torch.randn(y.shape[0], *y.shape[2:], dtype=y.dtype, device=y.device)
    b = (maps.conj() * mri.ifft2c(mask * y)).sum(1)
    for i, t in enumerate(ts):
        abar = schedule.alpha_bar(t)
        abar_prev = schedule.alpha_bar(ts[i + 1]) if i + 1 < len(ts) else 1.0
        a, s = abar**0.5, (1 - abar) ** 0.5
        tt = torch.full((x.shape[0],), t, device=x.device)
        if method == "projection":
            z = torch.randn_like(x)
            x = _dc(x - s * z, y, maps, mask, 1.0, a) + s * z
        eps = model(x, tt)
        x0 = torch.view_as_complex(torch.view_as_real((x - s * eps) / a).clamp(*clip))  # parts clipped
        if method == "dds":
            g2 = (s / a) ** 2
            mu = noise_std**2 * (1 + g2) / g2
            x0 = _cg(x0, b + mu * x0, maps, mask, mu, CG_ITERS)
        x = _ddim(x, eps, x0, abar, abar_prev)
    return x


class Fixed(torch.nn.Module):
    """A model whose output is a fixed eps: the loop's non-network cost alone."""

    def __init__(self, eps: torch.Tensor) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.eps[: x.shape[0]]


def _problem(batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    maps = birdcage_maps(COILS, SHAPE).unsqueeze(0).to(device)
    mask = (torch.rand(SHAPE[1], generator=g) < 0.25).float()
    mask[SHAPE[1] // 2 - 12 : SHAPE[1] // 2 + 12] = 1
    mask = mask.reshape(1, 1, 1, -1).to(device)
    op = mri.Sense(maps, mask)
    x = torch.randn(batch, *SHAPE, dtype=torch.complex64, generator=g).to(device)
    return op, maps, mask, op(x) + 0.01 * torch.randn(batch, COILS, *SHAPE, dtype=torch.complex64,
                                                      generator=g).to(device)


def _interleaved(fns: dict[str, Callable[[], object]], device: torch.device, reps: int) -> dict[str, float]:
    """Median microseconds of each fn, run in turn reps times after one warm-up each: the network
    dominates these loops and its time drifts, so the two sides take turns."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(measure(fn, device, warmup=0, reps=1, min_seconds=0.0))
    return {k: statistics.median(v) for k, v in times.items()}


def graphed_sampler(method: str, model, op, y: torch.Tensor, schedule: DiscreteSchedule, steps: int):
    """The projection or DDS posterior sampler as reconstruct() runs it (no final DC: noise_std > 0),
    recorded as one CUDA graph with y as its input; None where it could not be recorded."""
    shape = (y.shape[0], *y.shape[2:])
    g = Generator(0)
    sampler = ps.sample_projection if method == "projection" else ps.sample_dds
    t0 = ps.timesteps(schedule, steps)[0]

    def run(y: torch.Tensor) -> torch.Tensor:
        x = ps.start(schedule, t0, shape, y, g)
        return sampler(model, x, schedule, problem=ps.Problem(y, op, 0.01), steps=steps, eta=1.0, clip=(-1.0, 1.0),
                       generator=g)

    with torch.no_grad():
        graphed = accelerate.graph(run, y, clone=False)
    return graphed if graphed.captured else None


def steps_bench(batch: int, device: torch.device, steps: int = 10) -> list[Row]:
    schedule = DiscreteSchedule.from_name("linear", 1000)
    op, maps, mask, y = _problem(batch, device)
    eps = torch.randn(COILS * batch, *SHAPE, dtype=torch.complex64, device=device)
    model = Fixed(eps)
    passes = {"projection": 1, "langevin": 3, "pc": 2, "pc-rss": 2, "dps": 2, "dds": CG_ITERS + 1}
    floor = (2 * batch * math.prod(SHAPE) + maps.numel() + y.numel()) * 8
    rows = []
    for method, n in passes.items():
        label = f"{method} step {batch}x{COILS}x{SHAPE[0]}x{SHAPE[1]}"
        fns = {"mridpm": lambda m=method: reconstruct(y, op, model, schedule, method=m, steps=steps, noise_std=0.01,
                                                      generator=Generator(0), clip=(-1.0, 1.0))}
        if method in ("projection", "dds"):
            fns["eager"] = lambda m=method: eager_loop(m, model, y, maps, mask, schedule, steps, 0.01)
            fns.update(_graph_fns(method, model, op, y, schedule, steps, device))
        t = {k: v / steps for k, v in _interleaved(fns, device, 5).items()}
        base = t.pop("eager", None)
        if base is not None:
            rows.append(Row(label, "complex64", "eager", base, n * floor / base / 1e3, 1.0))
        rows += [Row(label, "complex64", k, v, n * floor / v / 1e3, base / v if base else float("nan"))
                 for k, v in t.items()]
    return rows


def _graph_fns(method: str, model, op, y: torch.Tensor, schedule: DiscreteSchedule, steps: int,
               device: torch.device) -> dict[str, Callable[[], object]]:
    """{"mridpm+graphs": replay} on a GPU where the loop records, else nothing."""
    if device.type != "cuda":
        return {}
    graphed = graphed_sampler(method, model, op, y, schedule, steps)
    return {} if graphed is None else {"mridpm+graphs": lambda: graphed(y)}


def loop_bench(device: torch.device, steps: int, reps: int = 5) -> list[Row]:
    from mridpm.nets.priors import load_prior

    prior = load_prior("brain64c", device)
    model = ps.ComplexDenoiser(prior.model)
    op, maps, mask, y = _problem(1, device)
    y = y / float(zero_filled(y, op).abs().amax())
    rows = []
    with torch.no_grad():
        for method in ("projection", "dds"):
            label = f"{method} loop/eval 1x{COILS}x{SHAPE[0]}x{SHAPE[1]}"
            t = _interleaved({
                "eager": lambda m=method: eager_loop(m, model, y, maps, mask, prior.schedule, steps, 0.01),
                "mridpm": lambda m=method: reconstruct(y, op, model, prior.schedule, method=m, steps=steps,
                                                       noise_std=0.01, generator=Generator(0), clip=(-1.0, 1.0)),
                **_graph_fns(method, model, op, y, prior.schedule, steps, device)},
                device, reps)
            rows += [Row(label, "complex64", k, v / steps, 0.0, t["eager"] / v) for k, v in t.items()]
    return rows


def main() -> None:
    def extra(p):
        p.add_argument("--prior-steps", type=int, default=3, help="steps of the loops with the bundled prior")

    args, device = parse_args(__doc__, "batch 1 steps only, results not saved", extra)
    report(collect(device, args.quick, args.prior_steps), f"recon-{device.type}", args.quick)


def collect(device: torch.device, quick: bool, prior_steps: int = 3) -> list[Row]:
    """The non-network steps at batch 1 (and 4), then the whole loops with the bundled prior (not when quick)."""
    with torch.no_grad():
        rows = steps_bench(1, device) + ([] if quick else steps_bench(4, device))
    return rows if quick else rows + loop_bench(device, prior_steps)


if __name__ == "__main__":
    main()
