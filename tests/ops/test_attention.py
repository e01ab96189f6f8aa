"""The attention op: every backend against the naive math, forward and backward; axial attention."""

import math

import pytest
import torch

from mridpm.ops._backend import triton_available, triton_interpreted
from mridpm.ops.attention import attention, attention_reference, axial_attention


def _backends():
    pairs = [("cpu", "cpu")]
    if triton_available() and triton_interpreted():
        pairs.append(("triton", "cpu"))
    if torch.cuda.is_available():
        pairs += [("cuda", "cuda"), ("triton", "cuda")] if triton_available() else [("cuda", "cuda")]
    return pairs


BACKENDS = _backends()
TRITON_DEVICES = [d for b, d in BACKENDS if b == "triton"]
REL = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _packed(b, n, h, d, dtype, device, seed=0):
    """q, k, v as strided views of one (batch, tokens, 3, heads, head_dim) tensor, as a qkv projection makes."""
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(b, n, 3, h, d, generator=g).to(device, dtype).requires_grad_()
    return qkv, qkv.unbind(2)


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(("backend", "device"), BACKENDS, ids=[f"{b}-{d}" for b, d in BACKENDS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("b", "n", "h", "d"), [(2, 37, 3, 20), (1, 1, 1, 32), (3, 65, 2, 64)])
def test_forward_and_backward_match_the_naive_math(backend, device, dtype, b, n, h, d):
    qkv, (q, k, v) = _packed(b, n, h, d, dtype, device)
    out = attention(q, k, v, backend=backend)
    assert out.shape == (b, n, h, d) and out.dtype == dtype
    ref_qkv = qkv.detach().double().requires_grad_()
    rq, rk, rv = ref_qkv.unbind(2)
    ref = attention_reference(rq, rk, rv, 1 / math.sqrt(d))
    assert _rel(out, ref) < REL[dtype]
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g).to(device, dtype)
    (grad,) = torch.autograd.grad(out, qkv, dout)
    (want,) = torch.autograd.grad(ref, ref_qkv, dout.double())
    assert _rel(grad, want) < (1e-4 if dtype == torch.float32 else 3e-2)


@pytest.mark.parametrize(("backend", "device"), BACKENDS, ids=[f"{b}-{d}" for b, d in BACKENDS])
def test_cross_attention_with_other_token_counts_and_scale(backend, device):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 19, 2, 16, generator=g).to(device)
    k, v = torch.randn(2, 5, 2, 16, generator=g).to(device), torch.randn(2, 5, 2, 16, generator=g).to(device)
    got = attention(q, k, v, scale=0.3, backend=backend)
    assert _rel(got, attention_reference(q.double(), k.double(), v.double(), 0.3)) < 1e-5


def test_axial_attention_attends_along_one_axis_only():
    g = torch.Generator().manual_seed(3)
    spatial = (3, 4, 5)
    q, k, v = (torch.randn(2, 60, 2, 8, generator=g) for _ in range(3))
    got = axial_attention(q, k, v, spatial, axis=0, backend="ref")
    grid = [t.reshape(2, *spatial, 2, 8) for t in (q, k, v)]
    want = torch.empty_like(grid[0])
    for y in range(4):
        for x in range(5):
            want[:, :, y, x] = attention_reference(*(t[:, :, y, x] for t in grid), 1 / math.sqrt(8))
    torch.testing.assert_close(got, want.reshape(2, 60, 2, 8))
    torch.testing.assert_close(axial_attention(q, k, v, spatial, axis=-1, backend="cpu"),
                               axial_attention(q, k, v, spatial, axis=2, backend="ref"), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (triton_available() and triton_interpreted()), reason="needs the Triton interpreter")
def test_torch_compile_keeps_the_triton_kernels():
    torch._dynamo.reset()
    _, (q, k, v) = _packed(2, 17, 2, 16, torch.float32, "cpu")

    def block(q, k, v):
        return attention(q, k, v, backend="triton").square().sum()

    compiled = torch.compile(block, fullgraph=True)
    got, want = compiled(q, k, v), block(q, k, v)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(got, q)[0]
    g2 = torch.autograd.grad(want, q)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)


BAD = [
    (ValueError, "tokens, heads", lambda: attention(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4))),
    (TypeError, "dtype", lambda: attention(*(torch.zeros(1, 2, 1, 4, dtype=torch.float64),) * 3)),
    (ValueError, "match q", lambda: attention(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 2, 4),
                                              torch.randn(1, 2, 2, 4))),
    (ValueError, "at least one", lambda: attention(*(torch.randn(1, 0, 1, 4),) * 3)),
    (ValueError, "backends", lambda: attention(*(torch.randn(1, 2, 1, 4),) * 3, backend="cuda")),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_reads_head_dim_through_its_stride(device):
    """q, k, v with head_dim stride 3 (a view of every third channel) give the contiguous result."""
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 9, 2, 3 * 20, generator=g).to(device)[..., ::3] for _ in range(3))
    assert q.stride(-1) == 3
    got = attention(q, k, v, backend="triton")
    assert _rel(got, attention_reference(q.double(), k.double(), v.double(), 1 / math.sqrt(20))) < 1e-5
    (grad,) = torch.autograd.grad(attention(q.requires_grad_(), k, v, backend="triton").sum(), q)
    (want,) = torch.autograd.grad(attention(q.contiguous(), k, v, backend="ref").sum(), q)
    assert _rel(grad, want) < 1e-4


@pytest.mark.parametrize("device", TRITON_DEVICES)
def test_triton_offsets_past_32_bits(device):
    """A batch stride of 2**30 elements (an int32 itself): batch 2's tile lies at 2**31, past what int32
    offsets reach. On the CPU the storage is reserved, not touched: only the pages written take memory."""
    storage = torch.empty(2 * 2**30 + 5 * 16, dtype=torch.float16, device=device)
    q = storage.as_strided((3, 5, 1, 16), (2**30, 16, 16, 1))
    q.copy_(torch.randn(3, 5, 1, 16, generator=torch.Generator().manual_seed(5)))
    got = attention(q, q, q, backend="triton")
    assert _rel(got, attention_reference(*(q.clone().double(),) * 3, 0.25)) < 1e-2
