"""A backend name means the same on every op (fused_step, the DC kernels, attention): "ref" the PyTorch
reference on any device, "cpu" a compiled kernel for CPU tensors only, "cuda" one for CUDA tensors
only, "triton" the Triton kernel; "auto" picks as mridpm.ops._backend documents."""

import pytest
import torch

from mridpm import _ext
from mridpm.ops import _backend, dc, fused_step, use_backend
from mridpm.ops._backend import KERNELS, resolve
from mridpm.ops.attention import attention

CPU, CUDA, META = torch.device("cpu"), torch.device("cuda"), torch.device("meta")
OPS = sorted(KERNELS)


def _crandn(*shape):
    return torch.randn(*shape, dtype=torch.complex64)


X = torch.zeros(2, 3)
Q = torch.randn(1, 4, 2, 8)
K = _crandn(1, 2, 4, 4)
MAPS = _crandn(1, 2, 4, 4)
IMAGE = _crandn(1, 4, 4)
CALLS = {  # each public op on CPU tensors, given a backend
    "fused_step": lambda b: fused_step([X], [1.0], backend=b),
    "coil_expand": lambda b: dc.coil_expand(IMAGE, MAPS, backend=b),
    "kspace_blend": lambda b: dc.kspace_blend(K, K, torch.ones(4), backend=b),
    "coil_combine": lambda b: dc.coil_combine(K, MAPS, backend=b),
    "attention": lambda b: attention(Q, Q, Q, backend=b),
}


@pytest.mark.parametrize("op", OPS)
def test_cpu_takes_cpu_tensors_only(op):
    with pytest.raises(ValueError, match="backend 'cpu' needs CPU tensors, got device cuda"):
        resolve("cpu", CUDA, op=op)
    if op == "attention" or _ext.cpu_built():
        assert resolve("cpu", CPU, op=op) == "cpu"


@pytest.mark.parametrize("op", OPS)
def test_cuda_takes_cuda_tensors_only(op):
    with pytest.raises(ValueError, match="backend 'cuda' needs CUDA tensors, got device cpu"):
        resolve("cuda", CPU, op=op)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_public_op_refuses_cuda_for_cpu_tensors_alike(call):
    """Before, attention said "attention backends are ..." where the others named the device."""
    with pytest.raises(ValueError, match=r"backend 'cuda' needs CUDA tensors, got device cpu; backends for these "
                                         r"tensors: 'auto', 'ref', 'cpu'"):
        CALLS[call]("cuda")


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_public_op_runs_ref_and_cpu_on_cpu_tensors(call):
    want = CALLS[call]("ref")
    if call == "attention" or _ext.cpu_built():
        torch.testing.assert_close(CALLS[call]("cpu"), want, rtol=1e-5, atol=1e-5)


def test_attention_cpu_is_not_sdpa_on_other_devices():
    """Before, backend='cpu' ran scaled_dot_product_attention on whatever device the tensors were on."""
    q = torch.empty(1, 4, 2, 8, device="meta")
    with pytest.raises(ValueError, match="backend 'cpu' needs CPU tensors, got device meta"):
        attention(q, q, q, backend="cpu")
    assert attention(q, q, q, backend="ref").device == META  # the reference runs anywhere


def test_attention_cuda_is_torchs_kernel_and_needs_no_extension(monkeypatch):
    monkeypatch.setattr(_ext, "cuda_built", lambda: False)
    assert resolve("cuda", CUDA, op="attention") == "cuda"
    assert resolve("cuda", CUDA, True, op="attention") == "cuda"  # SDPA records gradients
    with pytest.raises(RuntimeError, match="without CUDA kernels"):
        resolve("cuda", CUDA, op="fused_step")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("device", [CPU, CUDA, META], ids=str)
def test_ref_runs_anywhere(op, device):
    assert resolve("ref", device, op=op) == "ref"
    assert resolve("ref", device, True, op=op) == "ref"


@pytest.mark.parametrize("cpu_built", [True, False])
@pytest.mark.parametrize("cuda_built", [True, False])
@pytest.mark.parametrize("triton", [True, False])
def test_auto_is_the_documented_choice(monkeypatch, cpu_built, cuda_built, triton):
    monkeypatch.setattr(_ext, "cpu_built", lambda: cpu_built)
    monkeypatch.setattr(_ext, "cuda_built", lambda: cuda_built)
    monkeypatch.setattr(_backend, "triton_available", lambda: triton)
    kernel_cuda = "cuda" if cuda_built else ("triton" if triton else "ref")
    for op in ("fused_step", "dc"):
        assert resolve("auto", CPU, op=op) == ("cpu" if cpu_built else "ref")
        assert resolve("auto", CUDA, op=op) == kernel_cuda
        assert resolve("auto", CPU, True, op=op) == resolve("auto", CUDA, True, op=op) == "ref"
        assert resolve("auto", META, op=op) == "ref"
    for grad in (False, True):
        assert resolve("auto", CPU, grad, op="attention") == "cpu"
        assert resolve("auto", CUDA, grad, op="attention") == ("triton" if triton else "cuda")
        assert resolve("auto", META, grad, op="attention") == "ref"
    choices = _backend.auto_choices()
    assert choices["fused_step"]["cpu"] == choices["dc"]["cpu"] == ("cpu" if cpu_built else "ref")
    if torch.backends.cuda.is_built():
        assert choices["fused_step"]["cuda"] == kernel_cuda
    else:
        assert choices["fused_step"]["cuda"] is choices["attention"]["cuda"] is None


def test_the_default_backend_means_the_same_on_every_op():
    with use_backend("cuda"):
        for call in CALLS.values():
            with pytest.raises(ValueError, match="needs CUDA tensors"):
                call(None)
    with use_backend("ref"):
        torch.testing.assert_close(CALLS["attention"](None), CALLS["attention"]("ref"))


def test_unknown_names_are_refused_by_every_op():
    for call in CALLS.values():
        with pytest.raises(ValueError, match="backend must be one of"):
            call("gpu")
    with pytest.raises(ValueError, match="unknown op"):
        resolve("auto", CPU, op="fft")
