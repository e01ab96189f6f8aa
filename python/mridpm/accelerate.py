"""Whole sampler loops as CUDA graphs: recorded once for fixed shapes, replayed with fresh noise.

    run = mridpm.accelerate.graph(lambda x: sample_ddim(model, x, schedule, steps=50, generator=g), x_T)
    sample = run(x_T)   # one graph launch for the whole loop: model, fused steps, data consistency

A sampler step is a few small kernels whose launch costs more than their work at MRI sizes; a graph
launches them all at once. Every mridpm noise draw made while recording reads its generator's
(seed, offset) from a device tensor that is written before each replay, so replay k draws what the
k-th eager call would have drawn, and the generator moves on as it would have. Where a graph cannot
be recorded (no CUDA, CPU tensors, a host synchronisation inside fn such as .item() or a stopping
tolerance), the callable runs fn eagerly instead and says why, once, with an AccelerateWarning.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.utils import _pytree as pytree

from mridpm import _capture

__all__ = ["AccelerateWarning", "Graphed", "graph"]


class AccelerateWarning(UserWarning):
    """A graph could not be recorded: the callable runs eagerly (the message says why)."""


class Graphed:
    """fn recorded as a CUDA graph for inputs shaped like the examples; calling it copies the inputs
    into the graph's buffers and replays. When recording is impossible it calls fn eagerly, with
    the same checks, so code written against it runs unchanged on a CPU."""

    def __init__(self, fn: Callable[..., Any], example: tuple[torch.Tensor, ...], *, warmup: int = 2,
                 clone: bool = True, enabled: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1 (lazy set-up must not be recorded), got {warmup!r}")
        for i, t in enumerate(example):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"input {i} must be a tensor (close over everything else), got {type(t).__name__}")
        self.fn, self.clone = fn, clone
        self._specs = [(tuple(t.shape), t.dtype, t.device) for t in example]
        self._graph: torch.cuda.CUDAGraph | None = None
        self._recording: _capture.Recording | None = None
        self._static: list[torch.Tensor] = []
        self._outputs: Any = None
        self.reason = _unsupported(example, enabled) or self._record(example, warmup)
        if self.reason is not None:
            name = getattr(fn, "__qualname__", type(fn).__name__)
            warnings.warn(f"mridpm.accelerate: running {name} eagerly: {self.reason}", AccelerateWarning, stacklevel=3)

    @property
    def captured(self) -> bool:
        """True when calls replay a recorded graph, False when they run fn eagerly (see reason)."""
        return self._graph is not None

    def _record(self, example: tuple[torch.Tensor, ...], warmup: int) -> str | None:
        """Warms fn up on a side stream (generators rewound after), records it; the failure, if any."""
        device = example[0].device
        self._static = [t.detach().clone() for t in example]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        warm = _capture.Warmup()
        try:
            _capture.active = warm
            with torch.cuda.stream(side):  # kernels compile, cuFFT plans and workspaces are made here
                for _ in range(warmup):
                    self.fn(*self._static)
        finally:
            _capture.active = None
            warm.rewind()
        torch.cuda.current_stream(device).wait_stream(side)
        graph, recording = torch.cuda.CUDAGraph(), _capture.Recording(device)
        try:
            _capture.active = recording
            with torch.cuda.graph(graph):
                outputs = self.fn(*self._static)
        except Exception as err:  # any failure to record means: run eagerly
            with contextlib.suppress(RuntimeError):
                torch.cuda.synchronize(device)
            return f"it could not be recorded as a CUDA graph ({_first_cause(err)})"
        finally:
            _capture.active = None
        self._graph, self._recording, self._outputs = graph, recording, outputs
        return None

    def __call__(self, *inputs: torch.Tensor) -> Any:
        """fn(*inputs): one graph replay (outputs cloned unless clone=False), or fn run eagerly."""
        if len(inputs) != len(self._specs):
            raise TypeError(f"expected {len(self._specs)} input tensors, got {len(inputs)}")
        for i, (t, (shape, dtype, device)) in enumerate(zip(inputs, self._specs, strict=True)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"input {i} must be a tensor, got {type(t).__name__}")
            if tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
                raise ValueError(f"input {i} must match the example the graph was made for ({shape}, {dtype}, "
                                 f"{device}), got ({tuple(t.shape)}, {t.dtype}, {t.device})")
        if self._graph is None:
            return self.fn(*inputs)
        for static, t in zip(self._static, inputs, strict=True):
            if t is not static:
                static.copy_(t)
        assert self._recording is not None
        self._recording.before_replay()
        self._graph.replay()
        self._recording.after_replay()
        if not self.clone:
            return self._outputs
        return pytree.tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, self._outputs)


def graph(fn: Callable[..., Any], *example: torch.Tensor, warmup: int = 2, clone: bool = True,
          enabled: bool = True) -> Graphed:
    """fn (tensors in, any pytree of tensors out) as a CUDA graph for inputs shaped like example.

    fn may call any mridpm sampler, model and data-consistency op; its mridpm noise is fresh at every
    replay (drawn from the generators fn uses, as eager calls would draw it). Everything but the
    input tensors is fixed at recording: shapes, schedules, coefficients, closed-over tensors
    (whose contents a replay reads as they are then). warmup eager runs come first and do not move
    the generators. clone=False returns the graph's own output buffers, overwritten by the next call.
    """
    return Graphed(fn, tuple(example), warmup=warmup, clone=clone, enabled=enabled)


def _unsupported(example: tuple[torch.Tensor, ...], enabled: bool) -> str | None:
    """Why these inputs cannot be recorded as a graph, or None."""
    if not enabled:
        return "graphs are disabled (enabled=False)"
    if not example:
        return "it has no input tensors to take the device from"
    devices = {t.device for t in example}
    if len(devices) > 1:
        return f"its inputs span several devices ({sorted(map(str, devices))})"
    (device,) = devices
    if device.type != "cuda":
        return f"its inputs are on {device}, and CUDA graphs record CUDA work only"
    if torch.cuda.is_current_stream_capturing():
        return "a CUDA graph is already being recorded"
    return None


def _first_cause(err: BaseException) -> str:
    """The first error of a chain (a failed capture raises again when the capture is closed)."""
    while err.__context__ is not None:
        err = err.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"
