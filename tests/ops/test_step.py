"""Every backend of the fused step against the PyTorch reference at awkward sizes, in each dtype."""

import pytest
import torch

import mridpm
from mridpm.ops import dynamic_threshold_scale, fused_step, step_reference
from mridpm.ops.step import CLAMP, HAS_X0, NOISE, WRITE_X0, as_rows, launch

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.complex64]
SHAPES = [(5, 7), (4, 8), (3, 111)]  # per-sample shapes: odd, even, longer odd


def _inputs(K, batch, shape, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn((batch, *shape), generator=g, dtype=dtype).to(device) for _ in range(K)]


def _params(K, batch, per_sample, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    rows = batch if per_sample else 1
    p = torch.rand(rows, 2 * K + 5, generator=g) * 4 - 2
    p[:, 2 * K + 1] = -0.7  # lo
    p[:, 2 * K + 2] = 0.9  # hi
    return p


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch", [1, 3, 19])
@pytest.mark.parametrize("K", [1, 2, 3, 4])
def test_kernel_matches_reference(kernel, dtype, batch, K, tol):
    backend, device = kernel
    for shape in SHAPES:
        for flags in (0, HAS_X0 | CLAMP | WRITE_X0 | NOISE, HAS_X0 | NOISE):
            inputs = _inputs(K, batch, shape, dtype, device)
            params = _params(K, batch, per_sample=flags != 0).to(device)
            out = torch.full_like(inputs[0], float("nan"))  # poisoned: an unwritten element fails
            x0 = torch.full_like(inputs[0], float("nan")) if flags & WRITE_X0 else None
            launch(backend, inputs, params, out, x0, 1234, 99, flags)
            ref_out, ref_x0 = step_reference([as_rows(t).cpu() for t in inputs], params.cpu(), 1234, 99, flags)
            torch.testing.assert_close(as_rows(out).cpu(), ref_out, **tol[dtype])
            if x0 is not None:
                torch.testing.assert_close(as_rows(x0).cpu(), ref_x0, **tol[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_public_api_matches_reference(kernel, dtype, tol):
    backend, device = kernel
    batch = 3
    x, eps = _inputs(2, batch, (6, 5), dtype, device, seed=4)
    a_t = torch.tensor([0.3, 0.5, 0.9], dtype=torch.float64)
    kw = dict(x0_coeffs=[a_t.rsqrt(), -(1 - a_t).sqrt() / a_t.sqrt()], x0_weight=0.8, clamp=(-1.0, 1.0),
              return_x0=True)
    got = fused_step([x, eps], [0.0, 0.4], [0.1, 0.2, 0.3], generator=mridpm.Generator(7), backend=backend, **kw)
    want = fused_step([x.cpu(), eps.cpu()], [0.0, 0.4], [0.1, 0.2, 0.3], generator=mridpm.Generator(7),
                      backend="ref", **kw)
    for g, w in zip(got, want, strict=True):
        assert g.shape == x.shape and g.dtype == dtype
        torch.testing.assert_close(g.cpu(), w, **tol[dtype])


def test_reference_is_the_ddim_update():
    """The reference, spelled as diffusers' DDIM step (clip_sample, eta > 0), gives the same numbers."""
    torch.manual_seed(0)
    x, eps = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    a_t, a_prev, std = 0.4, 0.7, 0.05
    x0 = ((x - (1 - a_t) ** 0.5 * eps) / a_t**0.5).clamp(-1, 1)
    z = mridpm.ops.philox_randn(3, 0, tuple(x.shape))
    want = a_prev**0.5 * x0 + (1 - a_prev - std**2) ** 0.5 * eps + std * z
    got, got_x0 = fused_step([x, eps], [0.0, (1 - a_prev - std**2) ** 0.5], std, generator=mridpm.Generator(3),
                             x0_coeffs=[a_t**-0.5, -((1 - a_t) / a_t) ** 0.5], x0_weight=a_prev**0.5,
                             clamp=(-1, 1), return_x0=True, backend="ref")
    torch.testing.assert_close(got_x0, x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _diffusers_threshold(sample, ratio, max_value):
    """diffusers' DDPMScheduler._threshold_sample, written out."""
    batch = sample.shape[0]
    flat = sample.reshape(batch, -1).float()
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1, max=max_value).unsqueeze(1)
    return (torch.clamp(flat, -s, s) / s).reshape(sample.shape)


def test_dynamic_threshold_matches_diffusers(kernel):
    backend, device = kernel
    torch.manual_seed(1)
    x = torch.randn(3, 4, 9, 9) * torch.tensor([0.5, 2.0, 8.0]).view(3, 1, 1, 1)
    _, x0 = fused_step([x.to(device)], [0.0], x0_coeffs=[1.0], threshold=(0.95, 5.0), return_x0=True,
                       backend=backend)
    torch.testing.assert_close(x0.cpu(), _diffusers_threshold(x, 0.95, 5.0), rtol=1e-5, atol=1e-6)
    s = dynamic_threshold_scale(x, 0.95, 5.0)
    assert s[0] == 1.0 and 1.0 < s[1] < 5.0 and s[2] == 5.0


def test_non_contiguous_inputs(kernel):
    backend, device = kernel
    big = torch.randn(6, 5, 7, device=device)
    strided = big[::2]  # batch stride larger than a sample
    permuted = torch.randn(3, 7, 5, device=device).transpose(1, 2)  # inner dims not contiguous
    got = fused_step([strided, permuted], [0.5, -1.5], backend=backend)
    torch.testing.assert_close(got, 0.5 * strided - 1.5 * permuted, rtol=1e-6, atol=1e-6)


def test_in_place_update(kernel):
    backend, device = kernel
    x = torch.randn(3, 33, device=device)
    eps = torch.randn(3, 33, device=device)
    want = 0.9 * x + 0.1 * eps
    got = fused_step([x, eps], [0.9, 0.1], out=x, backend=backend)
    assert got is x
    torch.testing.assert_close(x, want, rtol=1e-6, atol=1e-6)


def test_empty_batch_and_empty_sample(kernel):
    backend, device = kernel
    g = mridpm.Generator(1)
    for shape in [(0, 5), (3, 0)]:
        out = fused_step(torch.zeros(shape, device=device), [1.0], 1.0, generator=g, backend=backend)
        assert out.shape == shape
        out, x0 = fused_step(torch.zeros(shape, device=device), [1.0], 1.0, generator=g, x0_coeffs=[1.0],
                             threshold=(0.9, 2.0), return_x0=True, backend=backend)
        assert out.shape == x0.shape == shape
    assert g.offset == 0


def test_autograd_goes_through_the_reference():
    x = torch.randn(2, 5, requires_grad=True)
    eps = torch.randn(2, 5)
    out = fused_step([x, eps], [torch.tensor([2.0, 3.0]), 1.0])  # auto picks 'ref' under autograd
    out.sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([[2.0] * 5, [3.0] * 5]))
    with pytest.raises(ValueError, match="gradients"):
        fused_step([x, eps], [1.0, 1.0], backend="cpu")


def test_use_backend_sets_the_default():
    from mridpm.ops import get_backend

    assert get_backend() == "auto"
    with mridpm.use_backend("ref"):
        assert get_backend() == "ref"
        out = fused_step(torch.ones(2, 3), [2.0])
    assert get_backend() == "auto"
    torch.testing.assert_close(out, torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="backend"):
        mridpm.use_backend("fast").__enter__()


CHECK_ISA = """
import torch
from mridpm.ops.step import CLAMP, HAS_X0, NOISE, WRITE_X0, as_rows, launch, step_reference
flags = HAS_X0 | CLAMP | WRITE_X0 | NOISE
for dtype, tol in [(torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]:
    inputs = [torch.randn(3, 1001).to(dtype) for _ in range(3)]
    params = torch.rand(3, 11) * 2 - 1
    out, x0 = torch.full_like(inputs[0], float("nan")), torch.full_like(inputs[0], float("nan"))
    launch("cpu", inputs, params, out, x0, 77, 2**32 - 500, flags)
    ref_out, ref_x0 = step_reference(inputs, params, 77, 2**32 - 500, flags)
    torch.testing.assert_close(out, ref_out, rtol=tol, atol=tol)
    torch.testing.assert_close(x0, ref_x0, rtol=tol, atol=tol)
print("isa ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_cpu_instruction_set_variant(isa):
    """Each compiled variant (chosen at run time) matches the reference; unsupported ones fall back."""
    import os
    import subprocess
    import sys

    from mridpm import _ext

    if not _ext.cpu_built():
        pytest.skip("extension not built")
    env = dict(os.environ, MRIDPM_CPU_ISA=isa)
    res = subprocess.run([sys.executable, "-c", CHECK_ISA], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert "isa ok" in res.stdout


def test_clamp_keeps_nan_and_inf_as_torch_does(kernel):
    backend, device = kernel
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.5, 3.0]] * 2, device=device)
    out, x0 = fused_step([x], [0.0], x0_coeffs=[1.0], x0_weight=1.0, clamp=(-1.0, 1.0), return_x0=True,
                         backend=backend)
    torch.testing.assert_close(x0.cpu(), torch.clamp(x.cpu(), -1.0, 1.0), equal_nan=True)
    torch.testing.assert_close(out.cpu(), 0.0 * x.cpu() + torch.clamp(x.cpu(), -1.0, 1.0), equal_nan=True)


@pytest.mark.parametrize("zero", [0.0, 0, -0.0, torch.tensor(0.0), torch.tensor([0.0])], ids=repr)
def test_zero_noise_scale_draws_nothing(kernel, zero):
    """A scalar zero noise scale is a step without noise: nothing drawn, the generator left where it
    is, the noise-free result (before, it drew noise, multiplied it by zero and moved the generator)."""
    backend, device = kernel
    x, eps = _inputs(2, 3, (5, 7), torch.float32, device, seed=6)
    kw = dict(x0_coeffs=[1.5, -0.5], x0_weight=0.7, clamp=(-1.0, 1.0), return_x0=True)
    for name in ("ref", backend):
        g = mridpm.Generator(11, 40)
        got = fused_step([x, eps], [0.9, 0.1], zero, generator=g, backend=name, **kw)
        want = fused_step([x, eps], [0.9, 0.1], backend=name, **kw)
        assert g.offset == 40
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
    g = mridpm.Generator(11, 40)
    fused_step([x, eps], [0.9, 0.1], torch.zeros(3), generator=g, backend=backend)  # per sample: not read, drawn
    assert g.offset == 40 + x.numel()


def test_zero_noise_scale_draws_nothing_when_compiled():
    torch._dynamo.reset()
    x, g = torch.randn(2, 9), mridpm.Generator(4, 3)
    compiled = torch.compile(lambda x: fused_step([x], [2.0], 0.0, generator=g), fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x), fused_step([x], [2.0]))
    assert g.offset == 3
