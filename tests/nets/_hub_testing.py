"""Helpers of the MONAI and diffusers prior tests: a peer's schedule formulas evaluated in float64 (the
peers build their tables in float32, which no 1e-10 comparison survives), a checkpoint corrupted in one
key, and the end-to-end reconstruction every loaded prior must run."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from _adm_testing import multicoil_problem

from mridpm.random import Generator
from mridpm.tasks.reconstruction import reconstruct_prior


@contextlib.contextmanager
def float64_formulas() -> Iterator[None]:
    """Within the block torch.linspace / torch.tensor make float64 where float32 is asked for, and the
    default dtype is float64: a peer scheduler built here has its own formulas' exact float64 table."""
    originals = {name: getattr(torch, name) for name in ("linspace", "tensor")}

    def widen(f: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            if kwargs.get("dtype") is torch.float32:
                kwargs["dtype"] = torch.float64
            return f(*args, **kwargs)
        return call

    default = torch.get_default_dtype()
    try:
        for name, f in originals.items():
            setattr(torch, name, widen(f))
        torch.set_default_dtype(torch.float64)
        yield
    finally:
        for name, f in originals.items():
            setattr(torch, name, f)
        torch.set_default_dtype(default)


def check_schedule(ours: torch.Tensor, peer: Callable[[], Any]) -> None:
    """ours equals the peer's float64 formulas at 1e-10 and its float32 table at float32 rounding."""
    with float64_formulas():
        exact = peer().alphas_cumprod
    assert exact.dtype == torch.float64
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours, peer().alphas_cumprod.double(), rtol=2e-4, atol=1e-7)


def corrupt(state: dict[str, torch.Tensor], how: str) -> tuple[dict[str, torch.Tensor], str]:
    """state with its first multi-dimensional weight reshaped ("shape") or removed ("missing"), and
    the error text expected."""
    key = next(k for k, v in state.items() if v.dim() == 4)
    state = dict(state)
    if how == "missing":
        shape = tuple(state.pop(key).shape)
        return state, f"'{key}' (shape {shape} in the model) is missing from the file"
    good = tuple(state[key].shape)
    state[key] = torch.zeros(good[0] + 1, *good[1:])
    return state, f"'{key}' has shape {(good[0] + 1, *good[1:])} in the file but {good} in the model"


def expect_one_line(load: Callable[[], Any], text: str) -> None:
    """load() raises a one-line ValueError containing text."""
    with pytest.raises(ValueError) as err:
        load()
    assert text in str(err.value) and "\n" not in str(err.value), str(err.value)


def reconstructs(prior: Any, size: tuple[int, int] = (16, 16)) -> None:
    """DDS with 3 steps on a small 4-coil problem gives a finite image of the problem's size."""
    y, op = multicoil_problem(size)
    with torch.no_grad():
        r = reconstruct_prior(y, op, prior, method="dds", steps=3, samples=1, generator=Generator(0))
    assert tuple(r.mean.shape) == (1, *size) and bool(torch.isfinite(r.mean).all())
