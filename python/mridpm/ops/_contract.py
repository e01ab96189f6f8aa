"""The codes Python passes to the kernels: step flag bits, dtype codes, data-consistency op codes.

They are defined once, in csrc/step.h, csrc/common.h and csrc/dc.h; mridpm._C exports them and this
module reads them from there. Without the extension the copies below stand in (the reference and
Triton backends still pass flags), and tests/ops/test_contract.py holds the copies to the headers.
"""

from __future__ import annotations

import torch

from mridpm import _ext

# csrc/step.h StepFlags, csrc/common.h DType, csrc/dc.h DcOp and DcFlags: the same names and values.
FALLBACK: dict[str, dict[str, int]] = {
    "step_flags": {"HAS_X0": 1, "CLAMP": 2, "WRITE_X0": 4, "NOISE": 8},
    "dtype_codes": {"float32": 0, "float16": 1, "bfloat16": 2},
    "dc_ops": {"expand": 0, "blend": 1, "combine": 2},
    "dc_flags": {"SIGN": 1},
}


def _table(name: str) -> dict[str, int]:
    """One table of codes, from mridpm._C when it is loaded, else the copy above."""
    ext = _ext.extension()
    return dict(FALLBACK[name] if ext is None else getattr(ext, name))


STEP_FLAGS = _table("step_flags")
HAS_X0: int = STEP_FLAGS["HAS_X0"]  # the x0 branch runs
CLAMP: int = STEP_FLAGS["CLAMP"]  # x0 is clamped to [lo, hi]
WRITE_X0: int = STEP_FLAGS["WRITE_X0"]  # x0 is written out
NOISE: int = STEP_FLAGS["NOISE"]  # noise is drawn and added

_DTYPES = _table("dtype_codes")
# complex64 travels as float32 pairs
DTYPE_CODES: dict[torch.dtype, int] = {
    torch.float32: _DTYPES["float32"], torch.float16: _DTYPES["float16"], torch.bfloat16: _DTYPES["bfloat16"],
    torch.complex64: _DTYPES["float32"],
}

DC_OPS = _table("dc_ops")
DC_SIGN: int = _table("dc_flags")["SIGN"]  # the checkerboard sign g of the centered FFT
