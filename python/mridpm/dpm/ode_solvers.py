"""An adaptive Runge-Kutta integrator (Dormand-Prince 5(4), as scipy's RK45) for tuples of tensors.

Step sizes depend on error norms read back to the host: use it where accuracy matters more
than graph capture (likelihoods, reference solutions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

State = list[torch.Tensor]

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def _combine(y: State, h: float, ks: Sequence[State], weights: Sequence[float]) -> State:
    out = []
    for j, yj in enumerate(y):
        acc = yj.clone()
        for w, k in zip(weights, ks, strict=False):
            if w != 0.0:
                acc = acc + (h * w) * k[j]
        out.append(acc)
    return out


def dopri5(fun: Callable[[float, State], State], y0: Sequence[torch.Tensor], t0: float, t1: float, *,
           rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 100_000) -> tuple[State, int]:
    """Integrates dy/dt = fun(t, y) from t0 to t1 (either direction); returns (y(t1), evaluations)."""
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got {rtol}, {atol}")
    y = [v.clone() for v in y0]
    t, span = t0, t1 - t0
    direction = 1.0 if span > 0 else -1.0
    h = direction * min(abs(span), 0.01 * abs(span) + 1e-3)
    k1 = fun(t, y)
    nfe = 1
    for _ in range(max_steps):
        if direction * (t1 - t) <= 0:
            return y, nfe
        last = abs(h) >= abs(t1 - t)
        h = t1 - t if last else h
        ks = [k1]
        for i in range(1, 6):
            ks.append(fun(t + _C[i] * h, _combine(y, h, ks, _A[i])))
        y5 = _combine(y, h, ks, _B5[:6])
        k7 = fun(t + h, y5)
        nfe += 6
        ks.append(k7)
        err = _combine([torch.zeros_like(v) for v in y], h, ks, [b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True)])
        sq, count = 0.0, 0
        for e, a, b in zip(err, y, y5, strict=True):
            scale = atol + rtol * torch.maximum(a.abs(), b.abs())
            sq += float((e / scale).double().square().sum())
            count += e.numel()
        norm = math.sqrt(sq / max(count, 1))
        if norm <= 1.0:
            t, y, k1 = (t1 if last else t + h), y5, k7
        factor = 10.0 if norm == 0 else min(10.0, max(0.2, 0.9 * norm ** -0.2))
        h *= factor
        if abs(h) < 1e-12:
            raise RuntimeError(f"dopri5: step size underflow at t = {t}")
    raise RuntimeError(f"dopri5: no convergence within {max_steps} steps")
