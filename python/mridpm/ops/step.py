"""The fused sampler step, the update every DPM sampler performs once per step:

    x0  = m * clamp(sum_k a_k v_k, lo, hi)                   (optional x0 branch)
    out = sum_k c_k v_k + w * x0 + s * z,   z ~ N(0, 1) by Philox at (seed, offset)

with K = 1..4 inputs v_k and per-sample coefficients. One kernel reads each input once and makes
the noise in registers. This module is the public function; the pieces live by job in
_step_ref.py (the reference), _step_args.py (argument checks), _threshold.py (dynamic
thresholding), _step_launch.py (one backend's run), _step_op.py (the torch.library op) and
_contract.py (the flag bits, from the C++ header).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mridpm.ops import _checks
from mridpm.ops._backend import resolve
from mridpm.ops._contract import CLAMP, HAS_X0, NOISE, WRITE_X0
from mridpm.ops._launch import as_rows, noise_state
from mridpm.ops._step_args import check_out, step_columns
from mridpm.ops._step_launch import launch
from mridpm.ops._step_op import fused_step_op
from mridpm.ops._step_ref import step_reference
from mridpm.ops._threshold import dynamic_threshold_scale, threshold_args, threshold_params
from mridpm.random import Generator, default_generator

__all__ = ["CLAMP", "HAS_X0", "NOISE", "WRITE_X0", "as_rows", "dynamic_threshold_scale", "fused_step",
           "fused_step_op", "launch", "randn", "step_reference"]


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
    Philox noise drawn from generator (mridpm.random.default_generator when None); a scalar
    zero draws nothing and leaves the generator where it is. backend: see mridpm.ops._backend.
    """
    vs = _checks.tensor_list("inputs", inputs, 1, 4)
    _checks.same_layout("inputs", vs, _checks.STEP_DTYPES)
    K, batch, device = len(vs), vs[0].shape[0], vs[0].device
    columns, flags = step_columns(K, batch, coeffs, noise_scale, x0_coeffs, x0_weight, clamp, threshold, return_x0)
    if threshold is not None:
        ratio, max_value = threshold_args(threshold)
    if generator is not None and not isinstance(generator, Generator):
        raise TypeError(f"generator must be a mridpm.Generator, got {type(generator).__name__}")
    if out is not None:
        out = check_out(out, vs[0], vs)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in vs)
    name = resolve(backend, device, needs_grad)

    compiling = name != "ref" and torch.compiler.is_compiling()
    if threshold is None and not compiling and all(type(c) is float for c in columns):
        params: torch.Tensor | list[float] = columns  # type: ignore[assignment]  # one row, sent by value
    else:
        params = _checks.pack_columns(columns, batch, device)
    if threshold is not None and vs[0].numel() > 0:
        raw = fused_step(vs, columns[K : 2 * K], backend=name)  # the x0 prediction before thresholding
        params = threshold_params(params, raw, K, ratio, max_value)  # type: ignore[arg-type]
    seed, offset, rng = 0, 0, None
    if flags & NOISE:  # rng: the generator state a compiled graph or a recorded CUDA graph reads
        n = vs[0].numel() * (2 if vs[0].is_complex() else 1)
        seed, offset, rng = noise_state(generator or default_generator, n, device)

    if compiling:
        result, x0_out = fused_step_op(vs, params, seed, offset, flags, name, rng)  # noise: from rng
        if out is not None:
            out.copy_(result)
            result = out
    else:
        result = torch.empty_like(vs[0], memory_format=torch.contiguous_format) if out is None else out
        x0_out = torch.empty_like(result) if return_x0 else None
        launch(name, vs, params, result, x0_out, seed, offset, flags, rng)
    return (result, x0_out) if return_x0 else result


def randn(shape: Sequence[int], *, generator: Generator | None = None, dtype: torch.dtype = torch.float32,
          device: torch.device | str = "cpu", backend: str | None = None) -> torch.Tensor:
    """Philox normals of the given shape (batch first), the noise the step kernels draw."""
    zeros = torch.zeros(tuple(shape), dtype=dtype, device=device)
    if zeros.dim() == 0:
        raise ValueError("randn needs a shape with a leading batch dimension")
    return fused_step(zeros, [0.0], 1.0, generator=generator, backend=backend)  # type: ignore[return-value]
