"""Arrays from any framework: the one conversion layer behind the public names of mridpm.mri,
mridpm.ops and mridpm.tasks (docs/arrays.md).

In: NumPy arrays, CuPy arrays and any DLPack producer, also inside tuples, lists and dicts of
arguments, become torch tensors without a copy (torch.from_numpy, torch.from_dlpack: same device,
same memory). NumPy arrays torch cannot view are copied: negative strides, non-native byte order
and read-only arrays (writing through a view of one would be undefined), so a function writing
into such an argument (fused_step's out) writes into the copy. A call with no such array runs
the function untouched.

Out: tensors in the result (also inside tuples, lists, dicts, NamedTuples and dataclasses such as
Reconstruction) come back as the type of the first non-torch array argument (so a call mixing
torch and NumPy returns NumPy): NumPy arrays (views of CPU results), or through the producer's
package's from_dlpack (cupy.from_dlpack), or torch tensors when that package has none. Everything
else passes unchanged both ways; callables given to a function (models) receive torch tensors.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

F = TypeVar("F", bound=Callable[..., Any])
_METHODS = ("__init__", "__call__", "forward", "adjoint", "normal")
_KIND: dict[type, int] = {}  # per type: 0 passes through, 1 is an array, 2 holds arguments (tuple, list, dict)


def _kind(t: type) -> int:
    """What the values of type t are to the conversion (decided once per type: this runs on every call)."""
    k = _KIND.get(t)
    if k is None:
        if t is tuple or t is list or t is dict:
            k = 2
        else:  # NumPy scalars are numbers, torch tensors stay as they are
            k = int(issubclass(t, np.ndarray) or (hasattr(t, "__dlpack__")
                                                  and not issubclass(t, (torch.Tensor, np.generic))))
        _KIND[t] = k
    return k


def _first_array(v: object) -> object | None:
    """The first non-torch array in v, looking into tuples, lists and dicts; None when there is none."""
    k = _kind(type(v))
    if k == 2:
        for item in v.values() if type(v) is dict else v:  # type: ignore[attr-defined,union-attr]
            found = _first_array(item)
            if found is not None:
                return found
    return v if k == 1 else None


def to_tensor(v: object, name: str = "argument") -> torch.Tensor:
    """One array as a torch tensor: a view where torch can make one (see the module docstring)."""
    if isinstance(v, np.ndarray):
        if v.dtype.hasobject:
            raise TypeError(f"{name}: a NumPy array of dtype {v.dtype} has no torch equivalent")
        if not v.flags.writeable or not v.dtype.isnative or any(s < 0 for s in v.strides):
            v = np.array(v, dtype=v.dtype.newbyteorder("="))  # a writable, native, positive-stride copy
        try:
            return torch.from_numpy(v)
        except TypeError as e:
            raise TypeError(f"{name}: {e}") from None
    try:
        return torch.from_dlpack(v)  # type: ignore[arg-type]
    except (TypeError, BufferError, RuntimeError, ValueError) as e:
        raise TypeError(f"{name}: a {type(v).__name__} could not be read through DLPack ({e})") from None


def _inputs(v: object, name: str) -> object:
    """v with every array (also inside tuples, lists and dicts) as a torch tensor."""
    if _kind(type(v)) == 1:
        return to_tensor(v, name)
    if type(v) in (tuple, list):
        return type(v)(_inputs(x, f"{name}[{i}]") for i, x in enumerate(v))  # type: ignore[union-attr]
    if type(v) is dict:
        return {k: _inputs(x, f"{name}[{k!r}]") for k, x in v.items()}  # type: ignore[union-attr]
    return v


def from_tensor(t: torch.Tensor, like: object) -> object:
    """A result tensor as the type of the array `like`: NumPy, or like's package's from_dlpack."""
    t = t.detach().resolve_conj().resolve_neg()
    if isinstance(like, np.ndarray):
        return t.cpu().numpy()
    package = sys.modules.get(type(like).__module__.partition(".")[0])
    back = getattr(package, "from_dlpack", None)
    if back is None:
        return t
    return back(t.to(to_tensor(like).device))  # on like's device (a view of like: no copy)


def _outputs(v: object, like: object) -> object:
    """v with every tensor (also inside tuples, lists, dicts, NamedTuples and dataclasses) as like's type."""
    if isinstance(v, torch.Tensor):
        return from_tensor(v, like)
    if isinstance(v, tuple) and hasattr(v, "_fields"):
        return type(v)(*(_outputs(x, like) for x in v))
    if type(v) in (tuple, list):
        return type(v)(_outputs(x, like) for x in v)  # type: ignore[union-attr]
    if type(v) is dict:
        return {k: _outputs(x, like) for k, x in v.items()}  # type: ignore[union-attr]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        changes = {f.name: _outputs(getattr(v, f.name), like) for f in dataclasses.fields(v) if f.init}
        return dataclasses.replace(v, **changes)
    return v


def _names(fn: Callable[..., Any], n: int) -> list[str]:
    """The names of fn's first n positional parameters (for error messages)."""
    try:
        params = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return params[:n] + [f"argument {i}" for i in range(len(params), n)]


def _wrap_function(fn: F) -> F:
    if getattr(fn, "__mridpm_arrays__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        like = _first_array(args) if args else None
        if like is None and kwargs:
            like = _first_array(kwargs)
        if like is None:  # torch tensors only: the function, untouched
            return fn(*args, **kwargs)
        names = _names(fn, len(args))
        args = tuple(_inputs(a, f"argument {n!r}") for a, n in zip(args, names, strict=True))
        kwargs = {k: _inputs(v, f"argument {k!r}") for k, v in kwargs.items()}
        return _outputs(fn(*args, **kwargs), like)

    wrapper.__mridpm_arrays__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def _subclasses(cls: type) -> list[type]:
    """cls and every subclass of it defined so far."""
    found = [cls]
    for sub in cls.__subclasses__():
        found += [c for c in _subclasses(sub) if c not in found]
    return found


def accepts_arrays(obj: F) -> F:
    """Makes a function, or a class and its subclasses (their constructors and __call__, forward,
    adjoint and normal methods, in place), accept arrays from any framework and return the caller's."""
    if not isinstance(obj, type):
        return _wrap_function(obj)
    for cls in _subclasses(obj):
        for name in _METHODS:
            if inspect.isfunction(cls.__dict__.get(name)):
                setattr(cls, name, _wrap_function(cls.__dict__[name]))
    return obj


def export(namespace: dict[str, Any], names: list[str]) -> None:
    """Wraps with accepts_arrays every function and class among `names` in a module's namespace."""
    for name in names:
        value = namespace[name]
        if inspect.isfunction(value) or isinstance(value, type):
            namespace[name] = accepts_arrays(value)
