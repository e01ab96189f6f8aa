"""Public kernels: each has a PyTorch reference, C++, CUDA and Triton backends behind one function.
The functions here also accept NumPy, CuPy and DLPack arrays and return the caller's type
(mridpm._arrays)."""

from mridpm import _arrays
from mridpm.ops._backend import BACKENDS, get_backend, use_backend
from mridpm.ops.philox import philox_randn
from mridpm.ops.step import dynamic_threshold_scale, fused_step, randn, step_reference

__all__ = [
    "BACKENDS",
    "dynamic_threshold_scale",
    "fused_step",
    "get_backend",
    "philox_randn",
    "randn",
    "step_reference",
    "use_backend",
]

_arrays.export(globals(), ["dynamic_threshold_scale", "fused_step", "philox_randn", "step_reference"])
