"""fused_step's argument checks: the params columns and kernel flags from its keyword arguments, the
clamp bounds, the out tensor."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mridpm.ops import _checks
from mridpm.ops._contract import CLAMP, HAS_X0, NOISE, WRITE_X0
from mridpm.ops._launch import as_rows


def _bounds(clamp: object, batch: int) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be a pair (low, high), got {clamp!r}")
    lo = _checks.per_sample("clamp[0]", clamp[0], batch)
    hi = _checks.per_sample("clamp[1]", clamp[1], batch)
    bad = lo > hi if isinstance(lo, float) and isinstance(hi, float) else bool(torch.any(torch.as_tensor(lo) > hi))
    if bad:
        raise ValueError(f"clamp needs low <= high, got {lo} > {hi}")
    return lo, hi


def check_out(out: object, like: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """out itself, once it is a contiguous tensor like the inputs that is an input or overlaps none."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a tensor, got {type(out).__name__}")
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"out must match the inputs' shape, dtype and device ({tuple(like.shape)}, {like.dtype}, "
                         f"{like.device}), got ({tuple(out.shape)}, {out.dtype}, {out.device})")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous")
    lo, hi = out.data_ptr(), out.data_ptr() + out.nbytes
    for k, t in enumerate(inputs):
        rows = as_rows(t)
        t_lo = t.data_ptr()
        t_hi = t_lo + (rows.stride(0) * max(rows.shape[0] - 1, 0) + rows.shape[1]) * rows.element_size()
        in_place = t_lo == lo and t.is_contiguous()
        if not in_place and t_lo < hi and lo < t_hi:
            raise ValueError(f"out partially overlaps inputs[{k}]; pass that input itself (in place) or a new tensor")
    return out


def step_columns(K: int, batch: int, coeffs: object, noise_scale: object, x0_coeffs: object, x0_weight: object,
                 clamp: object, threshold: object, return_x0: bool) -> tuple[list[float | torch.Tensor], int]:
    """The checked params columns c[K], a[K], w, lo, hi, m, s and the kernel flags. A scalar zero
    noise_scale is no noise (nothing drawn); a tensor of scales is not read, so it draws."""
    columns = _checks.coefficient_columns("coeffs", coeffs, K, batch)
    flags = 0
    if x0_coeffs is None:
        for name, value in (("x0_weight", x0_weight), ("clamp", clamp), ("threshold", threshold)):
            if value is not None:
                raise ValueError(f"{name} acts on the x0 prediction; give x0_coeffs too")
        if return_x0:
            raise ValueError("return_x0 needs x0_coeffs")
        columns += [0.0] * (K + 1)
    else:
        flags |= HAS_X0 | (WRITE_X0 if return_x0 else 0)
        columns += _checks.coefficient_columns("x0_coeffs", x0_coeffs, K, batch)
        columns.append(0.0 if x0_weight is None else _checks.per_sample("x0_weight", x0_weight, batch))
    if clamp is not None and threshold is not None:
        raise ValueError("give clamp or threshold, not both")
    lo, hi = _bounds(clamp, batch) if clamp is not None else (0.0, 0.0)
    flags |= CLAMP if clamp is not None or threshold is not None else 0
    columns += [lo, hi, 1.0]
    scale = 0.0 if noise_scale is None else _checks.per_sample("noise_scale", noise_scale, batch)
    columns.append(scale)
    if not isinstance(scale, float) or scale != 0.0:
        flags |= NOISE
    return columns, flags
