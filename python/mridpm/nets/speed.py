"""Faster network evaluation for inference, each part behind a flag of `Speed`:

    net = fast_model(prior.model, Speed(channels_last=True, autocast="bf16", cuda_graph=True))
    eps = net(x, t)   # same signature, float32 out like x

inference_mode runs the network under torch.inference_mode; channels_last converts the module's
weights (in place, values unchanged) and each input to the channels-last layout; autocast runs it in
bfloat16 or float16 autocast and casts the output back to the input's dtype; compile runs it through
torch.compile; cuda_graph records it per input shape with mridpm.accelerate.graph and replays it
(on a CPU, or where it cannot be recorded, it runs eagerly with an AccelerateWarning saying why).
Methods that differentiate through the network (DPS) cannot use inference_mode or cuda_graph: both
cut the autograd graph, so asking for them there is a one-line ValueError.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NO_GRAD_FLAGS = ("inference_mode", "cuda_graph")  # flags that cut the autograd graph through the network


@dataclass(frozen=True)
class Speed:
    """How to run a network for inference; all off (the default) is plain eager float32."""

    channels_last: bool = False
    autocast: str | None = None
    compile: bool = False
    cuda_graph: bool = False
    inference_mode: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "autocast" and not isinstance(getattr(self, f.name), bool):
                raise ValueError(f"Speed.{f.name} must be True or False, got {getattr(self, f.name)!r}")
        if self.autocast is not None and self.autocast not in AUTOCAST:
            raise ValueError(f"Speed.autocast must be None, 'bf16' or 'fp16', got {self.autocast!r}")

    @property
    def enabled(self) -> list[str]:
        """The flags that are on, by name (autocast as autocast=bf16)."""
        return [f"autocast={v}" if f.name == "autocast" else f.name
                for f in fields(self) if (v := getattr(self, f.name)) not in (False, None)]


def check_speed(speed: Speed | None, differentiable: bool = False, method: str = "this method") -> None:
    """Refuses a speed that is no Speed, and inference_mode or cuda_graph for a method that
    differentiates through the network (both cut the autograd graph)."""
    if speed is None:
        return
    if not isinstance(speed, Speed):
        raise ValueError(f"speed must be a mridpm.nets.speed.Speed or None, got {type(speed).__name__}")
    cut = [name for name in _NO_GRAD_FLAGS if getattr(speed, name)]
    if differentiable and cut:
        raise ValueError(f"{' and '.join(cut)} cannot run {method}, which differentiates through the network; "
                         "drop them (channels_last, autocast and compile keep gradients)")


def check_autocast(dtype_name: str, device: torch.device) -> None:
    """Refuses an autocast dtype that torch's autocast on device does not support (it would silently
    run in float32 otherwise)."""
    dtype = AUTOCAST[dtype_name]
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError(f"autocast bf16 is not supported on {torch.cuda.get_device_name(device)}; use fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            with torch.autocast(device.type, dtype=dtype):
                pass
        except (RuntimeError, UserWarning) as err:
            raise ValueError(f"autocast {dtype_name} is not available on {device.type}: {_cause(err)}") from None


def _cause(err: BaseException) -> str:
    """The root of an error chain in one line: its type and its first line."""
    while (err.__cause__ or err.__context__) is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class FastModel:
    """model(x, t, **kwargs) run as speed says (module docstring), output in x's dtype and layout."""

    def __init__(self, model: Callable[..., torch.Tensor], speed: Speed) -> None:
        if not callable(model):
            raise TypeError(f"model must be callable, got {type(model).__name__}")
        check_speed(speed)
        self.model, self.speed = model, speed
        if speed.channels_last and isinstance(model, nn.Module):
            model.to(memory_format=torch.channels_last)  # 4D weights only; values unchanged
        self._net = torch.compile(model) if speed.compile else model
        self._graphs: dict[tuple, Any] = {}
        self._checked: set[torch.device] = set()

    def _eager(self, x: torch.Tensor, t: torch.Tensor, *values: torch.Tensor, names: tuple[str, ...] = ()
               ) -> torch.Tensor:
        """One network evaluation under the flags' contexts (everything but the CUDA graph)."""
        s = self.speed
        xin = x.contiguous(memory_format=torch.channels_last) if s.channels_last and x.dim() == 4 else x
        with contextlib.ExitStack() as stack:
            if s.inference_mode:
                stack.enter_context(torch.inference_mode())
            if s.autocast is not None:
                stack.enter_context(torch.autocast(x.device.type, dtype=AUTOCAST[s.autocast]))
            try:
                out = self._net(xin, t, **dict(zip(names, values, strict=True)))
            except Exception as err:
                if s.compile and type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise ValueError(f"torch.compile of the network failed ({_cause(err)}); run without "
                                     "compile") from None
                raise
        out = out.to(dtype=x.dtype, memory_format=torch.contiguous_format)
        return out.clone() if out.is_inference() else out  # a normal tensor: callers may update it in place

    def __call__(self, x: torch.Tensor, t: torch.Tensor | float, **kwargs: torch.Tensor) -> torch.Tensor:
        """model(x, t, **kwargs), as fast as the flags make it."""
        t = torch.as_tensor(t, device=x.device)
        if self.speed.autocast is not None and x.device not in self._checked:
            check_autocast(self.speed.autocast, x.device)
            self._checked.add(x.device)
        names = tuple(sorted(kwargs))
        values = tuple(kwargs[k] for k in names)
        if not self.speed.cuda_graph:
            return self._eager(x, t, *values, names=names)
        if torch.is_grad_enabled():  # a replay has no autograd graph: its gradients would be wrong
            raise ValueError("cuda_graph runs the network without gradients: call it under torch.no_grad() or "
                             "torch.inference_mode()")
        key = (names, *((tuple(v.shape), v.dtype, v.device) for v in (x, t, *values)))
        if key not in self._graphs:  # one recording per input shape (the first call records it)
            from mridpm.accelerate import graph

            def run(xs: torch.Tensor, ts: torch.Tensor, *vs: torch.Tensor) -> torch.Tensor:
                return self._eager(xs, ts, *vs, names=names)

            run.__qualname__ = f"the network ({type(self.model).__name__})"
            self._graphs[key] = graph(run, x, t, *values)
        return self._graphs[key](x, t, *values)


def fast_model(model: Callable[..., torch.Tensor], speed: Speed | None, differentiable: bool = False
               ) -> Callable[..., torch.Tensor]:
    """model itself when speed is None or all off, else a FastModel; differentiable: the caller
    differentiates through it (DPS), which refuses inference_mode and cuda_graph."""
    check_speed(speed, differentiable)
    if speed is None or not speed.enabled:
        return model
    return FastModel(model, speed)
