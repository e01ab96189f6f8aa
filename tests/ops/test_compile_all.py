"""Every public op under torch.compile(fullgraph=True) (AOT autograd with the fake implementations;
inductor itself is exercised in test_registration, test_dc_kernels and test_attention): no graph
break, the eager result."""

import pytest
import torch

import mridpm
from mridpm.ops import attention as att
from mridpm.ops import dc
from mridpm.ops.step import dynamic_threshold_scale

g = torch.Generator().manual_seed(0)
X = torch.randn(3, 2, 5, 7, generator=g)
E = torch.randn(3, 2, 5, 7, generator=g)
C = torch.randn(2, 6, 6, dtype=torch.complex64, generator=g)
MAPS = torch.randn(1, 3, 6, 6, dtype=torch.complex64, generator=g)
Y = torch.randn(2, 3, 6, 6, dtype=torch.complex64, generator=g)
MASK = torch.tensor([1.0, 0, 1, 1, 0, 1])
Q = torch.randn(2, 9, 2, 8, generator=g)
QA = torch.randn(1, 3 * 4, 2, 8, generator=g)


def _step(x, e):
    return mridpm.fused_step([x, e], [0.9, -0.1], x0_coeffs=[1.2, -0.4], x0_weight=0.5, clamp=(-1.0, 1.0))


def _step_noise(x, e):
    return mridpm.fused_step([x, e], [0.9, -0.1], 0.3, generator=mridpm.Generator(5))


def _step_x0(x, e):
    out, x0 = mridpm.fused_step([x, e], [1.0, 0.0], x0_coeffs=[0.5, 0.5], x0_weight=0.0, return_x0=True)
    return out + x0


def _randn(x, e):
    return mridpm.randn((3, 2, 5, 7), generator=mridpm.Generator(1)) + x


def _threshold(x, e):
    return dynamic_threshold_scale(x * 3, 0.9, 2.0)


def _dc(x, e):
    v = dc.coil_expand(C, MAPS, sign=True)
    k = dc.kspace_blend(torch.fft.fftn(v, dim=(-2, -1), norm="ortho"), Y, MASK, lam=0.7, sign=True)
    out = dc.coil_combine(torch.fft.ifftn(k, dim=(-2, -1), norm="ortho"), MAPS, sign=True)
    return torch.view_as_real(out) + 0 * x.sum()


def _attention(x, e):
    return att.attention(Q, Q * 0.5, Q) + 0 * x.sum()


def _axial(x, e):
    return att.axial_attention(QA, QA, QA, (3, 4), 0) + 0 * x.sum()


@pytest.mark.parametrize("fn", [_step, _step_noise, _step_x0, _randn, _threshold, _dc, _attention, _axial],
                         ids=lambda f: f.__name__.strip("_"))
def test_public_op_compiles_without_graph_breaks(fn):
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(X, E), fn(X, E), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("compiler", ["aot_eager", "inductor"])
@pytest.mark.parametrize("backend", ["ref", "cpu", "triton"])
def test_compiled_noise_moves_on_without_recompiling(compiler, backend):
    """A compiled function drawing from an outer generator, called again and again: the generator's
    state is a graph input advanced inside the graph, so every call draws the next eager noise and
    nothing recompiles (before, each call baked its offset in and the ninth failed under fullgraph)."""
    from mridpm import _ext
    from mridpm.ops._backend import triton_available, triton_interpreted

    if (backend == "cpu" and not _ext.cpu_built()) or (backend == "triton" and not (
            triton_available() and triton_interpreted())):
        pytest.skip(f"backend {backend} not available here")
    gen, ref = mridpm.Generator(2**64 - 3, 5), mridpm.Generator(2**64 - 3, 5)

    def loop(x, generator):
        for s in (1.0, 0.5):
            x = mridpm.fused_step([x, E], [0.9, 0.1], s, generator=generator, backend=backend)
        return x

    torch._dynamo.reset()
    compiled = torch.compile(lambda x: loop(x, gen), fullgraph=True, backend=compiler)
    outs = [compiled(X)]
    with torch.compiler.set_stance("fail_on_recompile"):
        outs += [compiled(X) for _ in range(9)]
        gen.manual_seed(7)
        ref_reseeded = mridpm.Generator(7)
        reseeded = compiled(X)
    for out in outs:
        torch.testing.assert_close(out, loop(X, ref), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reseeded, loop(X, ref_reseeded), rtol=1e-5, atol=1e-5)
    assert gen.offset == ref_reseeded.offset == 2 * X.numel()
