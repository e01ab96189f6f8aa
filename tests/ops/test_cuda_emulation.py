"""The CUDA kernels proven without a GPU (issue 19): their bodies and grid decomposition, compiled as host
code from the same source (csrc/cuda/*_kernel.h), run block by block and thread by thread by the
emulation (ops._launch.cuda_emulation) against the PyTorch reference, at sizes that cross tile, block
and grid boundaries, with small grid caps (grid-stride loops iterate), strided, broadcast and
misaligned inputs, every dtype; every memory access is checked against the call's buffers."""

import pytest
import torch

import mridpm
from mridpm import _ext
from mridpm.ops import dc, fused_step
from mridpm.ops._launch import cuda_emulation

pytestmark = pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")

TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float16: {"rtol": 2e-3, "atol": 2e-3},
       torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2}, torch.complex64: {"rtol": 1e-5, "atol": 1e-5}}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (batch, inner): one element; a tile (1024) less and more one; rows ending mid-block and mid-vector
SIZES = [(1, 1), (3, 1023), (2, 1025), (5, 4097), (19, 131)]
GRID_CAPS = [1, 3, 1 << 20]  # one block for the whole grid, a few, the device's cap


def emulated(fn, *args, grid_cap=1 << 20, **kw):
    """fn(*args, backend='cpu', **kw) with the CUDA kernels emulated; returns (result, launch reports)."""
    with cuda_emulation(grid_cap=grid_cap) as reports:
        out = fn(*args, backend="cpu", **kw)
    assert reports, "the emulation did not run"
    return out, reports


def step_call(vs, dtype_noise=True, **kw):
    """A DDIM-like step with clamp, x0 output and noise, per-sample coefficients for the first input."""
    batch = vs[0].shape[0]
    coeffs = [torch.linspace(0.5, 1.5, batch)] + [0.25] * (len(vs) - 1)
    return dict(coeffs=coeffs, noise_scale=0.3 if dtype_noise else None, x0_coeffs=[1.0] + [-0.5] * (len(vs) - 1),
                x0_weight=0.2, clamp=(-1.0, 1.0), return_x0=True, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("batch", "inner"), SIZES, ids=[f"{b}x{n}" for b, n in SIZES])
@pytest.mark.parametrize("grid_cap", GRID_CAPS)
def test_step_matches_the_reference(dtype, batch, inner, grid_cap):
    g = torch.Generator().manual_seed(batch * inner)
    vs = [(2 * torch.randn(batch, inner, generator=g)).to(dtype) for _ in range(3)]
    kw = step_call(vs)
    want = fused_step(vs, generator=mridpm.Generator(7, 2**32 - 100), backend="ref", **kw)  # counters cross 2^32
    got, reports = emulated(fused_step, vs, generator=mridpm.Generator(7, 2**32 - 100), grid_cap=grid_cap, **kw)
    assert reports[0]["grid"] == min(grid_cap, batch * -(-inner // 1024))
    assert reports[0]["vec"] == (inner % 4 == 0)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["strided", "broadcast", "misaligned", "transposed"])
def test_step_reads_strided_broadcast_and_misaligned_inputs(dtype, layout):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(12, 2052, generator=g).to(dtype)
    x = {"strided": base[::2, :2048],  # batch stride larger than a row: vector path
         "broadcast": base[:1, :2048].expand(6, 2048),  # batch stride 0, read in place
         "misaligned": base[:6, 1:2049],  # rows start one element past the vector alignment: scalar path
         "transposed": base[:8, :6].t()}[layout]  # copied to rows by the launcher
    eps = torch.randn(x.shape, generator=g).to(dtype)
    kw = step_call([x, eps], grid_cap=2)
    want = fused_step([x, eps], generator=mridpm.Generator(1), backend="ref", **{k: v for k, v in kw.items()
                                                                                  if k != "grid_cap"})
    got, reports = emulated(fused_step, [x, eps], generator=mridpm.Generator(1), **kw)
    assert reports[0]["vec"] == (layout != "misaligned")
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_rounding_is_bit_exact(dtype):
    """The host stand-ins of __float2half_rn / __float2bfloat16_rn round like torch (nearest even), down
    to subnormals and up to overflow: K = 1 without noise is one float32 product rounded once."""
    finfo = torch.finfo(dtype)
    values = torch.cat([torch.logspace(-9, 4.8, 3000), torch.tensor([finfo.tiny, finfo.max, 0.0, 1.0])])
    x = torch.cat([values, -values]).to(dtype).reshape(2, -1)
    for c in (1 / 3, 3.0, 0.999, -1.5):
        want = fused_step([x], [c], backend="ref")
        got, _ = emulated(fused_step, [x], [c])
        assert torch.equal(got.view(torch.int16), want.view(torch.int16)), c


@pytest.mark.parametrize("dtype", DTYPES)
def test_clamp_keeps_nan_and_inf(dtype):
    """fminf(fmaxf(x, lo), hi) made NaN into lo on CUDA; the reference, CPU and Triton keep NaN."""
    x = torch.tensor([[float("nan"), float("inf"), -float("inf"), 0.5, 3.0, -3.0, float("nan"), 0.0]] * 2).to(dtype)
    kw = dict(x0_coeffs=[1.0], x0_weight=1.0, clamp=(-1.0, 1.0), return_x0=True)
    want = fused_step([x], [0.0], backend="ref", **kw)
    got, _ = emulated(fused_step, [x], [0.0], **kw)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)
    assert torch.isnan(got[1][:, 0]).all()


def test_noise_matches_the_reference_philox():
    """The step kernel's Philox normals (philox.h, the same source as on the device) are the reference's."""
    for seed, offset in [(0, 0), (2**63 + 5, 2**40 - 3), (123, 2**32 - 2)]:
        zeros = torch.zeros(3, 1029)
        want = fused_step([zeros], [0.0], 1.0, generator=mridpm.Generator(seed, offset), backend="ref")
        got, _ = emulated(fused_step, [zeros], [0.0], 1.0, generator=mridpm.Generator(seed, offset), grid_cap=2)
        torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def crandn(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.complex64)


DC_CASES = [  # (batch, coils, spatial, maps batch, mask shape)
    (1, 1, (8, 10), 1, (10,)),
    (3, 5, (9, 7), 3, (1, 1, 9, 7)),
    (2, 3, (4, 6, 5), 1, (2, 3, 4, 6, 5)),
    (2, 2, (2, 4, 3, 6), 1, (1, 2, 2, 4, 3, 6)),  # 4D, even non-last sizes: the sign's sum of indices
    (1, 2, (3, 2, 4, 2, 5), 1, (5,)),
    (2, 1, (300,), 2, (300,)),  # 1D, several blocks per row
]


@pytest.mark.parametrize(("batch", "coils", "spatial", "maps_batch", "mask_shape"), DC_CASES,
                         ids=[f"{c[0]}x{c[1]}x{'x'.join(map(str, c[2]))}" for c in DC_CASES])
@pytest.mark.parametrize("grid_cap", [1, 3, 1 << 20])
@pytest.mark.parametrize("sign", [False, True])
def test_dc_matches_the_reference(batch, coils, spatial, maps_batch, mask_shape, grid_cap, sign):
    g = torch.Generator().manual_seed(len(spatial))
    x, maps = crandn(batch, *spatial, g=g), crandn(maps_batch, coils, *spatial, g=g)
    k, y = crandn(batch, coils, *spatial, g=g), crandn(batch, coils, *spatial, g=g)
    mask = (torch.rand(mask_shape, generator=g) < 0.5).float()
    for fn, args, kw in [(dc.coil_expand, (x, maps), {}),
                         (dc.kspace_blend, (k, y, mask), {"lam": 0.7, "keep": 1.0, "ysign": -1.0}),
                         (dc.kspace_blend, (k[:, :, ::1], y, mask + 0.5), {"lam": 1.0, "keep": 0.0}),
                         (dc.coil_combine, (k, maps), {})]:
        want = fn(*args, sign=sign, backend="ref", **kw)
        got, reports = emulated(fn, *args, sign=sign, grid_cap=grid_cap, **kw)
        assert reports[0]["grid"] <= grid_cap
        torch.testing.assert_close(got, want, **TOL[torch.complex64])


def test_dc_reads_broadcast_inputs():
    """Inputs expanded along the batch (stride 0) give the reference's result."""
    g = torch.Generator().manual_seed(5)
    x = crandn(1, 6, 8, g=g).expand(3, 6, 8)
    maps = crandn(1, 4, 6, 8, g=g).expand(3, 4, 6, 8)
    want = dc.coil_expand(x, maps, sign=True, backend="ref")
    got, _ = emulated(dc.coil_expand, x, maps, sign=True, grid_cap=2)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(dc.coil_expand(x, maps, sign=True, backend="cpu"), want)
