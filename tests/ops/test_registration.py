"""The op is a torch.library custom op: opcheck passes, torch.compile(fullgraph=True) accepts it."""

import pytest
import torch

import mridpm
from mridpm.ops import fused_step
from mridpm.ops.step import CLAMP, HAS_X0, NOISE, WRITE_X0


@pytest.mark.parametrize("flags", [0, HAS_X0 | CLAMP | WRITE_X0 | NOISE])
def test_opcheck(kernel, flags):
    backend, device = kernel
    inputs = [torch.randn(3, 5, 7, device=device), torch.randn(3, 5, 7, device=device)]
    params = torch.rand(3, 9, device=device)
    torch.library.opcheck(torch.ops.mridpm.fused_step.default, (inputs, params, -5, 11, flags, backend))


def test_opcheck_reference():
    inputs = [torch.randn(2, 9, dtype=torch.complex64)]
    torch.library.opcheck(torch.ops.mridpm.fused_step.default, (inputs, torch.rand(1, 7), 3, 0, NOISE, "ref"))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()

    def ddim(x, eps, g):
        return fused_step([x, eps], [0.0, 0.3], 0.1, generator=g, x0_coeffs=[1.5, -0.5], x0_weight=0.9,
                          clamp=(-1.0, 1.0))

    x, eps = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    compiled = torch.compile(ddim, fullgraph=True)
    got = compiled(x, eps, mridpm.Generator(8))
    want = ddim(x, eps, mridpm.Generator(8))
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
