"""Backend choice for every op: an explicit name, or the default a context manager sets."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from mridpm import _ext

BACKENDS = ("auto", "ref", "cpu", "cuda", "triton")
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


def resolve(backend: str | None, device: torch.device, needs_grad: bool = False) -> str:
    """Maps a requested backend to the concrete one that will run, or raises why it cannot."""
    name = _check_name(get_backend() if backend is None else backend)
    if name == "auto":
        if needs_grad:
            return "ref"
        if device.type == "cuda":
            if _ext.cuda_built():
                return "cuda"
            return "triton" if triton_available() else "ref"
        if device.type == "cpu" and _ext.cpu_built():
            return "cpu"
        return "ref"
    if name != "ref" and needs_grad:
        raise ValueError(f"backend {name!r} does not record gradients; use backend='ref' or 'auto' under autograd")
    if name == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend 'cpu' needs CPU tensors, got device {device}")
        if not _ext.cpu_built():
            raise RuntimeError("backend 'cpu' needs the compiled extension mridpm._C, which could not be imported")
    elif name == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend 'cuda' needs CUDA tensors, got device {device}")
        if not _ext.cuda_built():
            raise RuntimeError("backend 'cuda': mridpm._C was built without CUDA kernels")
    elif name == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package")
        if device.type == "cpu" and not triton_interpreted():
            raise ValueError("backend 'triton' runs CPU tensors only under TRITON_INTERPRET=1")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'triton' needs CUDA tensors, got device {device}")
    return name
