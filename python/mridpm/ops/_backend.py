"""Backend choice for every op: an explicit name, or the default a context manager sets.

A backend name means the same on every op (fused_step, the data-consistency kernels, attention):

    name      what runs                             tensors                              gradients
    "ref"     the plain PyTorch reference           any device                           yes
    "cpu"     the compiled CPU kernel               CPU only                             attention only
    "cuda"    the compiled CUDA kernel              CUDA only                            attention only
    "triton"  the Triton kernel                     CUDA (CPU under TRITON_INTERPRET=1)  attention only
    "auto"    the choice below

The compiled kernels of fused_step and the DC ops are mridpm._C's own (C++/OpenMP and CUDA), which
"cpu" and "cuda" need. mridpm ships no compiled attention, so attention's "cpu" and "cuda" run torch's
scaled_dot_product_attention on that device (its fused C++ and CUDA kernels), with autograd; its
Triton kernel registers its own backward.

"auto": for fused_step and DC, "ref" when a gradient is needed; else CPU tensors get "cpu" ("ref"
without the extension) and CUDA tensors "cuda" when mridpm._C has its CUDA kernels, else "triton"
when installed, else "ref". For attention, CPU tensors get "cpu" and CUDA tensors "triton" (flash
attention, memory linear in the tokens) when installed, else "cuda". Tensors on other devices get
"ref". `mridpm info` lists each op's choice on this install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from mridpm import _ext

BACKENDS = ("auto", "ref", "cpu", "cuda", "triton")
# What each backend runs, per op (mridpm info prints these).
KERNELS: dict[str, dict[str, str]] = {
    "fused_step": {"ref": "PyTorch reference", "cpu": "mridpm._C C++/OpenMP", "cuda": "mridpm._C CUDA",
                   "triton": "Triton"},
    "dc": {"ref": "PyTorch reference", "cpu": "mridpm._C C++/OpenMP", "cuda": "mridpm._C CUDA", "triton": "Triton"},
    "attention": {"ref": "PyTorch reference (float32 math)", "cpu": "torch scaled_dot_product_attention",
                  "cuda": "torch scaled_dot_product_attention", "triton": "Triton flash attention"},
}
_TORCH_KERNELS = frozenset({"attention"})  # ops whose "cpu"/"cuda" are torch's kernels: no extension, autograd
_ON = {"cpu": "CPU", "cuda": "CUDA"}
# A plain list, not a ContextVar: torch.compile traces reads of module state but not ContextVar.get.
_default = ["auto"]


def _check_name(name: object) -> str:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name  # type: ignore[return-value]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Sets the backend that ops use when called with backend=None, inside a with-block."""
    _default.append(_check_name(name))
    try:
        yield
    finally:
        _default.pop()


def get_backend() -> str:
    """The current default backend name."""
    return _default[-1]


def triton_available() -> bool:
    """True when Triton is installed."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreted() -> bool:
    """True when Triton kernels run on the CPU through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def interpret_triton(cuda_available: bool, env: str | None) -> bool:
    """Whether Triton should run through its interpreter, given whether a CUDA GPU is usable and the
    TRITON_INTERPRET a user set (None or empty: unset): as the user says, else only without a GPU, so a
    GPU machine compiles the kernels it ships and a CPU-only one can still run them."""
    return env == "1" if env else not cuda_available


def _auto(op: str, device: torch.device, needs_grad: bool) -> str:
    if op in _TORCH_KERNELS:
        if device.type == "cuda":
            return "triton" if triton_available() else "cuda"
        return "cpu" if device.type == "cpu" else "ref"
    if needs_grad:
        return "ref"
    if device.type == "cuda":
        if _ext.cuda_built():
            return "cuda"
        return "triton" if triton_available() else "ref"
    return "cpu" if device.type == "cpu" and _ext.cpu_built() else "ref"


def _usable(device: torch.device) -> str:
    """The backend names that take tensors on device, for error messages."""
    names = ["auto", "ref"] + ([device.type] if device.type in _ON else [])
    if device.type == "cuda" or (device.type == "cpu" and triton_interpreted()):
        names.append("triton")
    return ", ".join(repr(n) for n in names)


def resolve(backend: str | None, device: torch.device, needs_grad: bool = False, *, op: str = "fused_step") -> str:
    """Maps a requested backend (None: the default) to the one that runs op on device, or raises why
    it cannot; needs_grad: the call must record gradients."""
    if op not in KERNELS:
        raise ValueError(f"unknown op {op!r}; ops are {tuple(KERNELS)}")
    name = _check_name(get_backend() if backend is None else backend)
    if name == "auto":
        return _auto(op, device, needs_grad)
    torch_kernels = op in _TORCH_KERNELS
    if name != "ref" and needs_grad and not torch_kernels:
        raise ValueError(f"backend {name!r} does not record gradients; use backend='ref' or 'auto' under autograd")
    if name in _ON:
        if device.type != name:
            raise ValueError(f"backend {name!r} needs {_ON[name]} tensors, got device {device}; "
                             f"backends for these tensors: {_usable(device)}")
        if name == "cpu" and not (torch_kernels or _ext.cpu_built()):
            raise RuntimeError("backend 'cpu' needs the compiled extension mridpm._C, which could not be imported")
        if name == "cuda" and not (torch_kernels or _ext.cuda_built()):
            raise RuntimeError("backend 'cuda': mridpm._C was built without CUDA kernels")
    elif name == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package")
        if device.type == "cpu" and not triton_interpreted():
            raise ValueError("backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' needs CUDA tensors, got device {device}; "
                             f"backends for these tensors: {_usable(device)}")
    return name


def auto_choices() -> dict[str, dict[str, str | None]]:
    """Per op, the backend "auto" picks for CPU and for CUDA tensors on this install (without
    gradients); None for CUDA when this torch has no CUDA."""
    has_cuda = torch.backends.cuda.is_built()
    return {op: {"cpu": _auto(op, torch.device("cpu"), False),
                 "cuda": _auto(op, torch.device("cuda"), False) if has_cuda else None} for op in KERNELS}
