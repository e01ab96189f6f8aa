"""The one way every op reaches a kernel: tensors marshalled for mridpm._C, the device and stream a
kernel runs on, and the generator state it draws from (while compiling or recording a CUDA graph).

mridpm._C takes buffers as (pointer, batch stride, capacity) triples in real elements (complex64 as
float pairs) and has, per kernel, a `<name>_cpu` entry (last argument: the thread count) and a
`<name>_cuda` entry (last argument: the stream) with the same arguments before; it raises ValueError
on a bad status and RuntimeError on a CUDA failure. Triton kernels run with their tensors' CUDA device
current. For tests, `cuda_emulation()` sends backend "cpu" calls to `_<name>_emulated`: the CUDA
kernels' grids run on the host (csrc/cuda/emulate.h), so CI proves the CUDA kernels without a GPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from mridpm import _capture, _ext
from mridpm.random import Generator

Buffer = tuple[int, int, int]
NO_BUFFER: Buffer = (0, 0, 0)
U64 = 1 << 64
_T = TypeVar("_T")


def on_device(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Makes a CUDA device current for a launch (a no-op for other devices)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


_EMULATION: list[dict[str, Any]] = []  # the active cuda_emulation blocks, innermost last (tests only)


@contextlib.contextmanager
def cuda_emulation(grid_cap: int = 1 << 20) -> Iterator[list[dict[str, Any]]]:
    """Test hook: inside the block, backend "cpu" runs the CUDA kernels emulated on the host (every
    block and thread of their grid, at most grid_cap blocks, so a small cap makes grid-stride loops
    iterate) instead of the CPU kernels. Yields the list of each call's launch (grid, threads,
    blocks_run, vec). Not a backend: it proves the CUDA source where no GPU is."""
    if _ext.extension() is None:
        raise RuntimeError("the CUDA emulation needs the compiled extension mridpm._C")
    reports: list[dict[str, Any]] = []
    _EMULATION.append({"grid_cap": grid_cap, "reports": reports})
    try:
        yield reports
    finally:
        _EMULATION.pop()


def run_compiled(entry: str, backend: str, device: torch.device, *args: object, **kwargs: object) -> None:
    """Runs mridpm._C's <entry>_cpu with torch's thread count, or <entry>_cuda on device's current stream
    (or _<entry>_emulated inside cuda_emulation); kwargs: the entries' keyword arguments."""
    ext = _ext.extension()
    if ext is None:
        raise RuntimeError(f"backend {backend!r} needs the compiled extension mridpm._C, which could not be imported")
    if backend == "cpu" and _EMULATION:
        emulation = _EMULATION[-1]
        report = getattr(ext, f"_{entry}_emulated")(*args, grid_cap=emulation["grid_cap"], **kwargs)
        emulation["reports"].append(report)
    elif backend == "cpu":
        getattr(ext, f"{entry}_cpu")(*args, torch.get_num_threads(), **kwargs)
    elif backend == "cuda":
        with torch.cuda.device(device):
            getattr(ext, f"{entry}_cuda")(*args, torch.cuda.current_stream(device).cuda_stream, **kwargs)
    else:
        raise ValueError(f"backend {backend!r} has no kernel in mridpm._C")


def run_triton(kernel: Callable[..., _T], device: torch.device, *args: object) -> _T:
    """Runs a Triton launcher with device current (its kernels go to that device's current stream)."""
    with on_device(device):
        return kernel(*args)


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


def storage_buffer(t: torch.Tensor) -> Buffer:
    """(pointer, batch stride, elements reachable from the pointer in its storage) of a real tensor; the
    stride is 0 for an input expanded along the batch (the kernels read it with shared_rows=True)."""
    capacity = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    return t.data_ptr(), t.stride(0), capacity


def rows_buffer(t: torch.Tensor, inner: int, keep: list[torch.Tensor]) -> Buffer:
    """The buffer of t's (batch, inner) rows in real elements; a copy it needs is kept alive in keep."""
    if t.is_contiguous():  # rows of `inner` reals one after another, exactly batch * inner of them
        return t.data_ptr(), inner, t.shape[0] * inner
    rows = as_rows(t)
    keep.append(rows)
    return storage_buffer(rows)


def flat_buffer(t: torch.Tensor | None) -> Buffer:
    """The buffer of a contiguous tensor as one run of real elements (no batch stride); None: no buffer."""
    if t is None:
        return NO_BUFFER
    return t.data_ptr(), 0, t.numel() * (2 if t.is_complex() else 1)


def noise_state(generator: Generator, n: int, device: torch.device) -> tuple[int, int, torch.Tensor | None]:
    """(seed, offset, state) of a draw of n numbers on device, the generator advanced past them.
    Under torch.compile the state is the generator's (seed, offset) tensor, a graph input (no offset
    baked in); while a CUDA graph is recorded it is the device pair each replay reads."""
    if torch.compiler.is_compiling():
        return 0, 0, generator.reserve_state(n)
    return _capture.reserve(generator, n, device)


def rng_for(rng: torch.Tensor, device: torch.device, seed: int, offset: int) -> tuple[int, int, torch.Tensor | None]:
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
    return s % U64, offset + o, None
