"""Argument checks shared by the public ops: each raises a clear error naming the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from mridpm import _capture

STEP_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.complex64)


def tensor_list(name: str, value: object, min_len: int, max_len: int) -> list[torch.Tensor]:
    """A tensor or a sequence of min_len..max_len tensors, as a list."""
    items = [value] if isinstance(value, torch.Tensor) else value
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a tensor or a list of tensors, got {type(value).__name__}")
    if not min_len <= len(items) <= max_len:
        raise ValueError(f"{name} must hold {min_len} to {max_len} tensors, got {len(items)}")
    for i, t in enumerate(items):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    return list(items)


def same_layout(name: str, tensors: Sequence[torch.Tensor], dtypes: Sequence[torch.dtype]) -> None:
    """All tensors share shape, dtype and device; the dtype is one of dtypes; batch dim first."""
    first = tensors[0]
    if first.dtype not in dtypes:
        raise TypeError(f"{name}: dtype {first.dtype} is not supported; use one of {[str(d) for d in dtypes]}")
    if first.dim() < 1:
        raise ValueError(f"{name}: tensors need a leading batch dimension, got a 0-d tensor")
    for i, t in enumerate(tensors[1:], start=1):
        if t.dtype != first.dtype:
            raise TypeError(f"{name}[{i}] has dtype {t.dtype}, but {name}[0] has {first.dtype}")
        if t.device != first.device:
            raise ValueError(f"{name}[{i}] is on {t.device}, but {name}[0] is on {first.device}")
        if t.shape != first.shape:
            raise ValueError(f"{name}[{i}] has shape {tuple(t.shape)}, but {name}[0] has {tuple(first.shape)}")


def per_sample(name: str, value: object, batch: int) -> float | torch.Tensor:
    """A finite scalar (as a float) or per-sample value (as a float64 CPU tensor of shape (batch,))."""
    if type(value) is float and math.isfinite(value):  # the common case first: samplers pass floats
        return value
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or tensor, got bool")
    if isinstance(value, numbers.Real):  # kept free of tensor ops
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return float(value)
    if isinstance(value, torch.Tensor) and (value.device.type != "cpu" or _capture.recording() is not None):
        # computed on the device inside a sampling loop (or given while a CUDA graph is recorded): kept
        # there, and not checked for finiteness, since reading it back would synchronise with the device
        if value.is_complex() or value.dtype == torch.bool or value.numel() not in (1, batch):
            raise ValueError(f"{name}: a device tensor must be real with 1 or {batch} values, got "
                             f"{value.dtype} of shape {tuple(value.shape)}")
        return value.detach().reshape(-1).to(torch.float64).expand(batch)
    try:
        t = torch.as_tensor(value.detach() if isinstance(value, torch.Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a number, a sequence of numbers or a tensor: {err}") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must be real, got dtype {t.dtype}")
    t = t.to("cpu", torch.float64)
    if t.dim() == 0 or tuple(t.shape) == (1,):
        return per_sample(name, t.item(), batch)
    if tuple(t.shape) != (batch,):
        raise ValueError(f"{name} must be a scalar or have shape ({batch},) (one per sample), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, got {t.tolist()}")
    return t


def pack_columns(columns: list[float | torch.Tensor], batch: int, device: torch.device) -> torch.Tensor:
    """Per-sample columns as one float32 (rows, len(columns)) table on device; rows is 1 when all are scalars."""
    if all(isinstance(c, float) for c in columns):
        return _capture.to_device(torch.tensor([columns], dtype=torch.float32), device)
    full = [_capture.to_device(c.float(), device) if isinstance(c, torch.Tensor)
            else torch.full((batch,), c, dtype=torch.float32, device=device) for c in columns]
    return torch.stack(full, dim=1)


def coefficient_columns(name: str, value: object, count: int, batch: int) -> list[float | torch.Tensor]:
    """count per-sample columns from a length-count sequence, or a (batch, count) / (1, count) table."""
    if type(value) in (list, tuple) and len(value) == count and all(  # type: ignore[arg-type]
            type(v) is float and math.isfinite(v) for v in value):  # type: ignore[union-attr]
        return list(value)  # type: ignore[arg-type]  # the samplers' case, kept cheap
    if isinstance(value, torch.Tensor) and value.dim() == 2:
        if value.shape[1] != count or value.shape[0] not in (1, batch):
            raise ValueError(f"{name} must have shape ({batch}, {count}) or (1, {count}), got {tuple(value.shape)}")
        return [per_sample(f"{name}[:, {k}]", value[:, k], batch) for k in range(count)]
    if isinstance(value, numbers.Real) or (isinstance(value, torch.Tensor) and value.dim() == 0):
        value = [value]
    try:
        length = len(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {count} coefficients, got {type(value).__name__}") from None
    if length != count:
        raise ValueError(f"{name} must hold {count} coefficients (one per input), got {length}")
    return [per_sample(f"{name}[{k}]", value[k], batch) for k in range(count)]  # type: ignore[index]


def finite_number(name: str, value: object) -> float:
    """A finite Python float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def owns_elements(name: str, t: torch.Tensor) -> None:
    """Refuses an output with a stride-0 (expanded) dimension: writing it would write one element many times."""
    if any(st == 0 and n > 1 for n, st in zip(t.shape, t.stride(), strict=True)):
        raise ValueError(f"{name} is written but is expanded (a dimension of stride 0, shape {tuple(t.shape)}, strides "
                         f"{t.stride()}): one element would be written many times; pass a tensor that owns its "
                         f"elements (e.g. {name}.contiguous())")
