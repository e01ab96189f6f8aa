"""The fused step on one backend: inputs, params and outputs marshalled through ops/_launch.py."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mridpm import _capture
from mridpm.ops import _launch
from mridpm.ops._contract import DTYPE_CODES
from mridpm.ops._launch import NO_BUFFER, U64, as_rows, rows_buffer
from mridpm.ops._step_ref import step_reference


def params_tensor(params: torch.Tensor | list[float], device: torch.device) -> torch.Tensor:
    """The params table as a tensor on device; a host row goes up without blocking the host."""
    if isinstance(params, torch.Tensor):
        return params
    return _capture.to_device(torch.tensor([params], dtype=torch.float32), device)


def launch(backend: str, inputs: Sequence[torch.Tensor], params: torch.Tensor | list[float], out: torch.Tensor,
           x0: torch.Tensor | None, seed: int, offset: int, flags: int, rng: torch.Tensor | None = None) -> None:
    """Runs one backend, writing into out (and x0 when given). params: a (rows, P) float32 table on the
    device, or one row of Python floats that every sample shares; flags: ops/_contract.py's step
    flags; rng: an optional int64 (seed, base offset) tensor read when the kernel runs."""
    batch = out.shape[0]
    inner = out.numel() * (2 if out.dtype == torch.complex64 else 1) // batch if batch else 0
    if batch == 0 or inner == 0:
        return
    device = out.device
    seed %= U64
    if rng is not None:
        seed, offset, rng = _launch.rng_for(rng, device, seed, offset)
    if backend in ("ref", "triton"):
        rows = [as_rows(t) for t in inputs]
        p = params_tensor(params, device)
        out_rows, x0_rows = as_rows(out), (None if x0 is None else as_rows(x0))
        if backend == "ref":
            o, z = step_reference(rows, p, seed, offset, flags, rng)
            out_rows.copy_(o)
            if x0_rows is not None:
                x0_rows.copy_(z)
            return
        from mridpm.kernels.triton import step as triton_step

        _launch.run_triton(triton_step.step, device, rows, p, out_rows, x0_rows, seed, offset, flags, rng)
        return
    keep: list[torch.Tensor] = []  # row copies of strided tensors, alive until the kernel has run
    if isinstance(params, torch.Tensor):
        p_arg, uniform = (params.data_ptr(), params.stride(0) if params.shape[0] > 1 else 0, params.numel()), []
    else:
        p_arg, uniform = NO_BUFFER, params
    _launch.run_compiled(
        "step", backend, device, DTYPE_CODES[out.dtype], flags, batch, inner, rows_buffer(out, inner, keep),
        NO_BUFFER if x0 is None else rows_buffer(x0, inner, keep), [rows_buffer(t, inner, keep) for t in inputs],
        p_arg, uniform, seed, offset, NO_BUFFER if rng is None else (rng.data_ptr(), 0, rng.numel()),
        shared_rows=True)  # inputs expanded along the batch are read in place (batch stride 0)
