"""The fused sampler step, the update every DPM sampler performs once per step:

    x0  = m * clamp(sum_k a_k v_k, lo, hi)                   (optional x0 branch)
    out = sum_k c_k v_k + w * x0 + s * z,   z ~ N(0, 1) by Philox at (seed, offset)

with K = 1..4 inputs v_k and per-sample coefficients. One kernel reads each input
once and makes the noise in registers; the reference below is the ground truth.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch

from mridpm import _capture, _ext
from mridpm.ops import _checks
from mridpm.ops._backend import resolve
from mridpm.ops.philox import philox_randn
from mridpm.random import Generator, default_generator

HAS_X0, CLAMP, WRITE_X0, NOISE = 1, 2, 4, 8
_DTYPE_CODE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.complex64: 0}  # complex: float pairs
_U64 = 1 << 64


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """A (batch, inner) real view with unit inner stride; complex values count as float pairs."""
    if t.is_complex():
        t = torch.view_as_real(t)
    if t.numel() > 0 and t.is_contiguous():  # the common case, without reshape's checks
        return t.view(t.shape[0], -1)
    rows = t.reshape(t.shape[0], math.prod(t.shape[1:]))
    if rows.shape[1] > 1 and rows.stride(1) != 1:
        rows = rows.contiguous()
    return rows


def step_reference(rows: Sequence[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
                   rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The step in plain PyTorch, float32 arithmetic, on (batch, inner) rows; returns (out, x0).
    rng: an optional int64 (seed, base offset) device tensor read at run time (CUDA graph replays)."""
    K = len(rows)
    v = [r.float() for r in rows]
    p = params.float()
    col = [p[:, j : j + 1] for j in range(p.shape[1])]
    w, lo, hi, m, s = col[2 * K :]
    out = col[0] * v[0]
    for k in range(1, K):
        out = out + col[k] * v[k]
    x0 = None
    if flags & HAS_X0:
        x0 = col[K] * v[0]
        for k in range(1, K):
            x0 = x0 + col[K + k] * v[k]
        if flags & CLAMP:
            x0 = torch.clamp(x0, lo, hi)
        x0 = m * x0
        out = out + w * x0
    if flags & NOISE:
        out = out + s * philox_randn(seed, offset, tuple(out.shape), out.device, rng)
    dtype = rows[0].dtype
    return out.to(dtype), (None if x0 is None else x0.to(dtype))


def _triple(t: torch.Tensor) -> tuple[int, int, int]:
    """(pointer, batch stride, elements reachable from the pointer) for the extension."""
    size = t.element_size()
    capacity = t.untyped_storage().nbytes() // size - t.storage_offset()
    return t.data_ptr(), t.stride(0), capacity


def _buffer(t: torch.Tensor, inner: int, keep: list[torch.Tensor]) -> tuple[int, int, int]:
    """_triple of t's (batch, inner) rows in real elements; a copy it needs is kept alive in keep."""
    if t.is_contiguous():  # rows of `inner` reals one after another, exactly batch * inner of them
        return t.data_ptr(), inner, t.shape[0] * inner
    rows = as_rows(t)
    keep.append(rows)
    return _triple(rows)


def _params_tensor(params: torch.Tensor | list[float], device: torch.device) -> torch.Tensor:
    """The params table as a tensor on device; a host row goes up without blocking the host."""
    if isinstance(params, torch.Tensor):
        return params
    return _capture.to_device(torch.tensor([params], dtype=torch.float32), device)


def _launch(backend: str, inputs: Sequence[torch.Tensor], params: torch.Tensor | list[float], out: torch.Tensor,
            x0: torch.Tensor | None, seed: int, offset: int, flags: int, rng: torch.Tensor | None = None) -> None:
    """Runs one backend, writing into out (and x0 when given). params: a (rows, P) float32 table
    on the device, or one row of Python floats that every sample shares; rng as in step_reference."""
    batch = out.shape[0]
    inner = out.numel() * (2 if out.dtype == torch.complex64 else 1) // batch if batch else 0
    if batch == 0 or inner == 0:
        return
    seed %= _U64
    if rng is not None:
        seed, offset, rng = _rng_for(rng, out.device, seed, offset)
    if backend in ("ref", "triton"):
        rows = [as_rows(t) for t in inputs]
        p = _params_tensor(params, out.device)
        out_rows, x0_rows = as_rows(out), (None if x0 is None else as_rows(x0))
        if backend == "ref":
            o, z = step_reference(rows, p, seed, offset, flags, rng)
            out_rows.copy_(o)
            if x0_rows is not None:
                x0_rows.copy_(z)
            return
        from mridpm.kernels.triton import step as triton_step

        with torch.cuda.device(out.device) if out.is_cuda else contextlib.nullcontext():
            triton_step.step(rows, p, out_rows, x0_rows, seed, offset, flags, rng)
        return
    ext = _ext.extension()
    assert ext is not None
    keep: list[torch.Tensor] = []
    if isinstance(params, torch.Tensor):
        p_arg, uniform = (params.data_ptr(), params.stride(0) if params.shape[0] > 1 else 0, params.numel()), []
    else:
        p_arg, uniform = (0, 0, 0), params
    head = (_DTYPE_CODE[out.dtype], flags)
    if backend == "cpu":
        head += (torch.get_num_threads(),)
    x0_arg = (0, 0, 0) if x0 is None else _buffer(x0, inner, keep)
    args = (*head, batch, inner, _buffer(out, inner, keep), x0_arg, [_buffer(t, inner, keep) for t in inputs],
            p_arg, uniform, seed, offset, (0, 0, 0) if rng is None else (rng.data_ptr(), 0, rng.numel()))
    if backend == "cpu":
        ext.step_cpu(*args)
    else:
        with torch.cuda.device(out.device):
            ext.step_cuda(*args, torch.cuda.current_stream(out.device).cuda_stream)


def _rng_for(rng: torch.Tensor, device: torch.device, seed: int, offset: int
             ) -> tuple[int, int, torch.Tensor | None]:
    """(seed, offset, rng) for a kernel on device: a state on another device (a compiled call's CPU
    generator state for a CUDA kernel) is read here, once; one on the kernel's device is passed on."""
    if rng.dtype != torch.int64 or rng.numel() != 2 or not rng.is_contiguous():
        raise ValueError(f"rng must be a contiguous int64 (seed, offset) pair, got {rng.dtype} {tuple(rng.shape)}")
    if rng.device == device:
        return seed, offset, rng
    if _capture.recording() is not None:
        raise RuntimeError("noise drawn by a torch.compile'd function cannot be recorded in a CUDA graph by "
                           "mridpm.accelerate (its generator state is on the host); record the eager function")
    s, o = rng.tolist()
    return s % _U64, offset + o, None


@torch.library.custom_op("mridpm::fused_step", mutates_args=())
def fused_step_op(inputs: list[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
                  backend: str, rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op: returns (out, x0); x0 is empty unless flags ask to write it."""
    out = torch.empty_like(inputs[0], memory_format=torch.contiguous_format)
    x0 = torch.empty_like(out) if flags & WRITE_X0 else out.new_empty(0)
    _launch(backend, inputs, params, out, x0 if flags & WRITE_X0 else None, seed, offset, flags, rng)
    return out, x0


@fused_step_op.register_fake
def _(inputs: list[torch.Tensor], params: torch.Tensor, seed: int, offset: int, flags: int,
      backend: str, rng: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.empty_like(inputs[0], memory_format=torch.contiguous_format)
    return out, (torch.empty_like(out) if flags & WRITE_X0 else out.new_empty(0))


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


def _bounds(clamp: object, batch: int) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    if not isinstance(clamp, (tuple, list)) or len(clamp) != 2:
        raise TypeError(f"clamp must be a pair (low, high), got {clamp!r}")
    lo = _checks.per_sample("clamp[0]", clamp[0], batch)
    hi = _checks.per_sample("clamp[1]", clamp[1], batch)
    bad = lo > hi if isinstance(lo, float) and isinstance(hi, float) else bool(torch.any(torch.as_tensor(lo) > hi))
    if bad:
        raise ValueError(f"clamp needs low <= high, got {lo} > {hi}")
    return lo, hi


def _threshold_args(threshold: object) -> tuple[float, float]:
    if not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
        raise TypeError(f"threshold must be a pair (ratio, max_value), got {threshold!r}")
    ratio = _checks.finite_number("threshold ratio", threshold[0])
    max_value = _checks.finite_number("threshold max_value", threshold[1])
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"threshold ratio must lie in (0, 1], got {ratio}")
    if max_value < 1.0:
        raise ValueError(f"threshold max_value must be at least 1, got {max_value}")
    return ratio, max_value


def _check_out(out: object, like: torch.Tensor, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
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


def _step_columns(K: int, batch: int, coeffs: object, noise_scale: object, x0_coeffs: object, x0_weight: object,
                  clamp: object, threshold: object, return_x0: bool) -> tuple[list[float | torch.Tensor], int]:
    """The checked params columns c[K], a[K], w, lo, hi, m, s and the kernel flags."""
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
    if noise_scale is None:
        columns.append(0.0)
    else:
        columns.append(_checks.per_sample("noise_scale", noise_scale, batch))
        flags |= NOISE
    return columns, flags


def fused_step(
    inputs: torch.Tensor | Sequence[torch.Tensor],
    coeffs: object,
    noise_scale: object = None,
    *,
    generator: Generator | None = None,
    x0_coeffs: object = None,
    x0_weight: object = None,
    clamp: tuple[object, object] | None = None,
    threshold: tuple[float, float] | None = None,
    out: torch.Tensor | None = None,
    return_x0: bool = False,
    backend: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """out = sum_k coeffs[k] * inputs[k] (+ x0_weight * x0) (+ noise_scale * z) in one pass.

    inputs: 1 to 4 tensors of one shape (batch first) and dtype (float32, float16, bfloat16
    or complex64, computed in float32). Every coefficient is a scalar or one value per sample.
    x0_coeffs turns on the x0 prediction x0 = sum_k x0_coeffs[k] * inputs[k], which clamp
    (low, high) or threshold (ratio, max_value; Imagen's dynamic thresholding) limit before
    it enters out with weight x0_weight; return_x0 also returns it. noise_scale adds
    Philox noise drawn from generator (mridpm.random.default_generator when None).
    """
    vs = _checks.tensor_list("inputs", inputs, 1, 4)
    _checks.same_layout("inputs", vs, _checks.STEP_DTYPES)
    K, batch, device = len(vs), vs[0].shape[0], vs[0].device
    columns, flags = _step_columns(K, batch, coeffs, noise_scale, x0_coeffs, x0_weight, clamp, threshold, return_x0)
    if threshold is not None:
        ratio, max_value = _threshold_args(threshold)
    if generator is not None and not isinstance(generator, Generator):
        raise TypeError(f"generator must be a mridpm.Generator, got {type(generator).__name__}")
    if out is not None:
        out = _check_out(out, vs[0], vs)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in vs)
    name = resolve(backend, device, needs_grad)

    compiling = name != "ref" and torch.compiler.is_compiling()
    if threshold is None and not compiling and all(type(c) is float for c in columns):
        params: torch.Tensor | list[float] = columns  # type: ignore[assignment]  # one row, sent by value
    else:
        params = _checks.pack_columns(columns, batch, device)
    if threshold is not None and vs[0].numel() > 0:
        params = params.expand(batch, -1).clone()
        raw = fused_step(vs, columns[K : 2 * K], backend=name)
        scale = dynamic_threshold_scale(raw, ratio, max_value)
        params[:, 2 * K + 1], params[:, 2 * K + 2], params[:, 2 * K + 3] = -scale, scale, 1.0 / scale
    seed, offset, rng = 0, 0, None
    if flags & NOISE:
        n = vs[0].numel() * (2 if vs[0].is_complex() else 1)
        if torch.compiler.is_compiling():  # the state tensor enters the graph: no offset baked in
            rng = (generator or default_generator).reserve_state(n)
        else:  # rng: the device (seed, base offset) a CUDA graph being recorded reads at replay
            seed, offset, rng = _capture.reserve(generator or default_generator, n, device)

    if compiling:
        result, x0_out = fused_step_op(vs, params, seed, offset, flags, name, rng)  # noise: from rng
        if out is not None:
            out.copy_(result)
            result = out
    else:
        result = torch.empty_like(vs[0], memory_format=torch.contiguous_format) if out is None else out
        x0_out = torch.empty_like(result) if return_x0 else None
        _launch(name, vs, params, result, x0_out, seed, offset, flags, rng)
    return (result, x0_out) if return_x0 else result


def randn(shape: Sequence[int], *, generator: Generator | None = None, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu", backend: str | None = None) -> torch.Tensor:
    """Philox normals of the given shape (batch first), the noise the step kernels draw."""
    zeros = torch.zeros(tuple(shape), dtype=dtype, device=device)
    if zeros.dim() == 0:
        raise ValueError("randn needs a shape with a leading batch dimension")
    return fused_step(zeros, [0.0], 1.0, generator=generator, backend=backend)  # type: ignore[return-value]
