"""Shared test settings: Triton compiles on a machine with a CUDA GPU and runs interpreted (on CPU
tensors too) without one, unless TRITON_INTERPRET says otherwise; tolerances are defined once per dtype."""

import os

import pytest
import torch

from mridpm import _ext
from mridpm.ops._backend import interpret_triton, triton_available, triton_interpreted

# Before any import of triton (importing mridpm does not import it); torch.cuda.is_available() does not.
_INTERPRET = interpret_triton(torch.cuda.is_available(), os.environ.get("TRITON_INTERPRET"))
os.environ["TRITON_INTERPRET"] = "1" if _INTERPRET else "0"

TOL = {
    torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    torch.complex64: {"rtol": 1e-5, "atol": 1e-5},
    torch.float16: {"rtol": 2e-3, "atol": 2e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}


def kernel_backends() -> list[tuple[str, str]]:
    """(backend, device) pairs this machine can run, the reference excluded."""
    pairs = []
    if _ext.cpu_built():
        pairs.append(("cpu", "cpu"))
    if triton_available() and triton_interpreted():
        pairs.append(("triton", "cpu"))
    if torch.cuda.is_available():
        if _ext.cuda_built():
            pairs.append(("cuda", "cuda"))
        if triton_available():
            pairs.append(("triton", "cuda"))
    return pairs


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "kernel" in metafunc.fixturenames:
        pairs = kernel_backends()
        metafunc.parametrize("kernel", pairs, ids=[f"{b}-{d}" for b, d in pairs])


@pytest.fixture
def tol():
    """Per-dtype assert_close tolerances."""
    return TOL
