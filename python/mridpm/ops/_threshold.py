"""Dynamic thresholding of the x0 prediction (Imagen; diffusers' `thresholding=True`): per sample,
x0 -> clamp(x0, -s, s) / s with s a quantile of |x0|, folded into the fused step's clamp and scale."""

from __future__ import annotations

import math

import torch

from mridpm.ops import _checks
from mridpm.ops._launch import as_rows


def dynamic_threshold_scale(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Per-sample s = clamp(quantile(|x0|, ratio), 1, max_value) as diffusers' dynamic thresholding
    computes it (linear interpolation between order statistics), without quantile's size limit."""
    flat = as_rows(x0).float().abs()
    n = flat.shape[1]
    pos = ratio * (n - 1)
    low = math.floor(pos)
    v_lo = flat.kthvalue(low + 1, dim=1).values
    v_hi = flat.kthvalue(min(low + 2, n), dim=1).values
    return torch.lerp(v_lo, v_hi, pos - low).clamp(1.0, max_value)


def threshold_args(threshold: object) -> tuple[float, float]:
    """The checked (ratio, max_value) pair of fused_step's threshold argument."""
    if not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
        raise TypeError(f"threshold must be a pair (ratio, max_value), got {threshold!r}")
    ratio = _checks.finite_number("threshold ratio", threshold[0])
    max_value = _checks.finite_number("threshold max_value", threshold[1])
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"threshold ratio must lie in (0, 1], got {ratio}")
    if max_value < 1.0:
        raise ValueError(f"threshold max_value must be at least 1, got {max_value}")
    return ratio, max_value


def threshold_params(params: torch.Tensor, x0: torch.Tensor, K: int, ratio: float, max_value: float
                     ) -> torch.Tensor:
    """A per-sample copy of the params table whose x0 branch thresholds: lo, hi, m = -s, s, 1 / s
    with s the dynamic threshold scale of the unclamped x0 prediction."""
    scale = dynamic_threshold_scale(x0, ratio, max_value)
    params = params.expand(x0.shape[0], -1).clone()
    params[:, 2 * K + 1], params[:, 2 * K + 2], params[:, 2 * K + 3] = -scale, scale, 1.0 / scale
    return params
