"""The data-consistency kernels: every backend against the reference; the C++ guards; bad input."""

import pytest
import torch

from mridpm import _ext, mri
from mridpm.mri.coils import birdcage_maps
from mridpm.ops import dc

G = torch.Generator().manual_seed(0)


def crandn(*shape):
    return torch.randn(*shape, generator=G, dtype=torch.complex64)


CASES = [  # (batch, coils, spatial, maps batch, mask shape)
    (1, 1, (8, 10), 1, (10,)),
    (3, 15, (9, 7), 1, (1, 1, 9, 7)),
    (3, 15, (8, 6), 3, (3, 1, 1, 6)),
    (1, 15, (7, 11), 1, (1, 15, 7, 11)),
    (3, 4, (4, 6, 5), 3, (6, 1)),
    (3, 2, (4, 6, 8), 1, (3, 2, 4, 6, 8)),
]


@pytest.mark.parametrize(("batch", "coils", "spatial", "maps_batch", "mask_shape"), CASES,
                         ids=[f"{c[0]}x{c[1]}x{'x'.join(map(str, c[2]))}" for c in CASES])
@pytest.mark.parametrize("sign", [False, True])
def test_every_backend_matches_the_reference(kernel, tol, batch, coils, spatial, maps_batch, mask_shape, sign):
    backend, device = kernel
    x, maps = crandn(batch, *spatial).to(device), crandn(maps_batch, coils, *spatial).to(device)
    k, y = crandn(batch, coils, *spatial).to(device), crandn(batch, coils, *spatial).to(device)
    mask = (torch.rand(mask_shape, generator=G) < 0.5).float().to(device)
    t = tol[torch.complex64]
    for fn, args, kw in [
        (dc.coil_expand, (x, maps), {}),
        (dc.kspace_blend, (k, y, mask), {"lam": 0.7, "keep": 1.0, "ysign": -1.0}),
        (dc.kspace_blend, (k, y, mask + 0.5), {"lam": 1.0, "keep": 0.0}),
        (dc.coil_combine, (k, maps), {}),
    ]:
        want = fn(*args, sign=sign, backend="ref", **kw)
        got = fn(*args, sign=sign, backend=backend, **kw)
        torch.testing.assert_close(got, want, **t)


@pytest.mark.parametrize("spatial", [(2, 4, 3, 6), (2, 2, 2, 2, 2), (3, 4, 2, 5)])
def test_sign_of_four_and_more_dimensions_is_the_sum_of_indices(kernel, spatial):
    """The kernels split the flat index as (n / (h w), h, w): wrong from 4 dimensions on when a non-last
    size is even (issue 19). Every backend now uses the sum of all indices, as the reference does."""
    backend, device = kernel
    x, maps = crandn(2, *spatial).to(device), crandn(1, 3, *spatial).to(device)
    k, y = crandn(2, 3, *spatial).to(device), crandn(2, 3, *spatial).to(device)
    mask = torch.ones(spatial[-1], device=device)
    for fn, args in [(dc.coil_expand, (x, maps)), (dc.kspace_blend, (k, y, mask)), (dc.coil_combine, (k, maps))]:
        torch.testing.assert_close(fn(*args, sign=True, backend=backend), fn(*args, sign=True, backend="ref"))


def test_in_place_blend_refuses_an_expanded_k():
    k = crandn(1, 2, 4, 4).expand(3, 2, 4, 4)
    with pytest.raises(ValueError, match="k is written but is expanded"):
        dc.kspace_blend(k, crandn(3, 2, 4, 4), torch.ones(4), in_place=True, backend="ref")


def test_sign_grid_is_minus_one_to_the_sum_of_indices():
    g = dc.sign_grid((3, 5, 4))  # odd sizes too: the kernels' (-1)^(d + h + w)
    for d, h, w in [(0, 0, 0), (0, 0, 1), (1, 2, 3), (2, 4, 3), (2, 1, 0)]:
        assert float(g[d, h, w]) == (-1.0) ** (d + h + w)
    torch.testing.assert_close(mri.fft.checkerboard((6, 8)), dc.sign_grid((6, 8)))


@pytest.mark.parametrize("spatial", [(10, 12), (9, 7)])
@pytest.mark.parametrize("coils", [1, 15])
def test_fused_projection_and_gradient_equal_the_plain_operator_math(spatial, coils):
    maps = birdcage_maps(coils, spatial).unsqueeze(0)
    mask = (torch.rand(spatial[-1], generator=G) < 0.4).float()
    mask[spatial[-1] // 2] = 1
    A = mri.Sense(maps, mask)
    x, y = crandn(3, *spatial), A(crandn(3, *spatial))
    k = mri.fft2c(maps * x.unsqueeze(1))
    want = (maps.conj() * mri.ifft2c(k + 0.6 * mask * (y - k))).sum(1)
    torch.testing.assert_close(mri.project(x, y, A, lam=0.6), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mri.gradient(x, y, A), A.H(y - A(x)), rtol=1e-5, atol=1e-5)
    single = mri.SingleCoil(mask)
    ys = single(crandn(3, *spatial))
    torch.testing.assert_close(mri.gradient(x, ys, single), single.H(ys - single(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
class TestExtensionGuards:
    """The C++ layer checks sizes again and never touches memory outside the buffers it is given."""

    def setup_method(self):
        self.buf = torch.zeros(2 * 64)

    def call(self, op=0, flags=0, sizes=None, buffers=None, spatial=()):
        p = (self.buf.data_ptr(), 0, self.buf.numel())  # (pointer, batch stride unused, capacity in floats)
        sizes = sizes or [1, 2, 16, 4, 4, 1, 1, 1]  # batch, coils, n, h, w, maps_batch, mask_batch, mask_coils
        buffers = buffers or [p, p, p, p, p, p]
        _ext.extension().dc_cpu(op, flags, sizes, buffers, [1.0, 1.0, 1.0], 1, spatial=list(spatial))

    def test_valid_calls_run(self):
        for op in (0, 1, 2):
            self.call(op=op)

    @pytest.mark.parametrize(("kw", "match"), [
        ({"op": 3}, "flag"),
        ({"flags": 2}, "flag"),
        ({"sizes": [1, 2, 64, 4, 4, 1, 1, 1]}, "smaller than the extent"),
        ({"sizes": [1, 2, 16, 4, 4, 2, 1, 1]}, "non-negative"),
        ({"sizes": [1, 2, 16, 4, 4, 1, 3, 1], "op": 1}, "non-negative"),
        ({"sizes": [-1, 2, 16, 4, 4, 1, 1, 1]}, "non-negative"),
        ({"sizes": [1, 2, 15, 4, 4, 1, 1, 1], "flags": 1}, "non-negative"),
        ({"sizes": [2**40, 2**20, 2**20, 4, 4, 1, 1, 1]}, "smaller than the extent"),
        ({"buffers": [(0, 0, 0)] * 6}, "smaller than the extent"),
        ({"flags": 1, "spatial": [2, 3, 4]}, "checkerboard sign"),  # product 24 is not n
        ({"flags": 1, "spatial": [0, 4, 4]}, "checkerboard sign"),
    ])
    def test_bad_arguments_raise(self, kw, match):
        with pytest.raises(ValueError, match=match):
            self.call(**kw)

    def test_sign_splits_the_given_spatial_sizes(self):
        self.call(flags=1, spatial=[4, 4])
        self.call(flags=1, spatial=[1, 2, 1, 2, 4])
        self.call(flags=1, spatial=[1] * 100 + [2, 2, 2, 2])


BAD = [
    (TypeError, "complex64", lambda: dc.coil_expand(torch.randn(1, 4, 4), crandn(1, 2, 4, 4))),
    (TypeError, "complex64", lambda: dc.coil_combine(crandn(1, 2, 4, 4).to(torch.complex128), crandn(1, 2, 4, 4))),
    (ValueError, "coils", lambda: dc.coil_combine(crandn(1, 3, 4, 4), crandn(1, 2, 4, 4))),
    (ValueError, "maps must have shape", lambda: dc.coil_expand(crandn(2, 4, 4), crandn(3, 2, 4, 4))),
    (ValueError, "broadcast", lambda: dc.kspace_blend(crandn(1, 2, 4, 4), crandn(1, 2, 4, 4), torch.ones(3, 4))),
    (TypeError, "real", lambda: dc.kspace_blend(crandn(1, 2, 4, 4), crandn(1, 2, 4, 4), crandn(4))),
    (ValueError, "finite", lambda: dc.kspace_blend(crandn(1, 2, 4, 4), crandn(1, 2, 4, 4), torch.ones(4),
                                                   lam=float("nan"))),
    (ValueError, "same shape|one shape", lambda: dc.kspace_blend(crandn(1, 2, 4, 4), crandn(1, 3, 4, 4),
                                                                 torch.ones(4))),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_input(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_autograd_goes_through_the_reference():
    x = crandn(2, 6, 6).requires_grad_()
    out = dc.coil_expand(x, crandn(1, 3, 6, 6), sign=True)
    out.abs().sum().backward()
    assert x.grad is not None


def test_in_place_blend_writes_into_k(kernel):
    backend, device = kernel
    k, y = crandn(2, 3, 6, 5).to(device), crandn(2, 3, 6, 5).to(device)
    mask = torch.tensor([1.0, 0, 1, 0, 1]).to(device)
    want = dc.kspace_blend(k, y, mask, lam=0.5, sign=True, backend="ref")
    got = dc.kspace_blend(k, y, mask, lam=0.5, sign=True, backend=backend, in_place=True)
    assert got.data_ptr() == k.data_ptr()
    torch.testing.assert_close(k, want, rtol=1e-5, atol=1e-5)
    same = crandn(1, 2, 4, 4).to(device)  # y may be k itself
    expected = dc.kspace_blend(same, same, torch.ones(4), keep=0.0, lam=-1.0, ysign=0.0, backend="ref")
    dc.kspace_blend(same, same, torch.ones(4).to(device), keep=0.0, lam=-1.0, ysign=0.0, backend=backend,
                    in_place=True)
    torch.testing.assert_close(same, expected)


def test_fused_normal_equals_the_composed_one():
    maps = birdcage_maps(6, (10, 12)).unsqueeze(0)
    mask = (torch.rand(12, generator=G) < 0.5).float()
    A = mri.Sense(maps, mask)
    x = crandn(2, 10, 12)
    torch.testing.assert_close(A.normal(x), A.adjoint(A.forward(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["expand", "blend", "combine"])
def test_opcheck(kernel, op):
    backend, device = kernel
    a = crandn(2, 3, 4, 6).to(device) if op != "expand" else crandn(2, 4, 6).to(device)
    b = crandn(2, 3, 4, 6).to(device) if op == "blend" else crandn(1, 3, 4, 6).to(device)
    mask = torch.ones(1, 1, 4, 6, device=device) if op == "blend" else None
    torch.library.opcheck(torch.ops.mridpm.dc_kernel.default, (op, a, b, mask, 1.0, 0.5, -1.0, True, backend))


def test_compiled_projection_matches_eager():
    torch._dynamo.reset()
    maps = birdcage_maps(4, (8, 10)).unsqueeze(0)
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1, 0, 1, 1, 0])

    def step(x, y):
        v = dc.coil_expand(x, maps, sign=True)
        k = dc.kspace_blend(torch.fft.fftn(v, dim=(-2, -1), norm="ortho"), y, mask, lam=0.8, sign=True)
        return dc.coil_combine(torch.fft.ifftn(k, dim=(-2, -1), norm="ortho"), maps, sign=True)

    x, y = crandn(2, 8, 10), crandn(2, 4, 8, 10)
    torch.testing.assert_close(torch.compile(step, fullgraph=True)(x, y), step(x, y), rtol=1e-5, atol=1e-5)


def test_in_place_blend_with_y_overlapping_k(kernel):
    """y a shifted view of k's storage: the kernel once overwrote y while reading it (max error 0.68)."""
    backend, device = kernel
    shape = (2, 3, 6, 5)
    n = 2 * 3 * 6 * 5
    base = crandn(n + 7).to(device)
    k, y = base[7:].view(shape), base[:n].view(shape)  # k ahead of y: a write lands on y before it is read
    mask = torch.tensor([1.0, 0, 1, 0, 1]).to(device)
    want = dc.kspace_blend(k.clone(), y.clone(), mask, lam=0.5, backend="ref")
    got = dc.kspace_blend(k, y, mask, lam=0.5, backend=backend, in_place=True)
    assert got.data_ptr() == k.data_ptr()
    torch.testing.assert_close(k, want, rtol=1e-5, atol=1e-5)


def test_in_place_blend_on_a_non_contiguous_k_writes_into_k(kernel):
    """in_place means in place: a non-contiguous k once got a new tensor back and stayed unchanged."""
    backend, device = kernel
    k = crandn(2, 3, 6, 8).to(device)[..., :5]
    y = crandn(2, 3, 6, 5).to(device)
    mask = torch.tensor([1.0, 0, 1, 0, 1]).to(device)
    want = dc.kspace_blend(k.clone(), y, mask, lam=0.5, backend="ref")
    got = dc.kspace_blend(k, y, mask, lam=0.5, backend=backend, in_place=True)
    assert got is k
    torch.testing.assert_close(k, want, rtol=1e-5, atol=1e-5)


_HUGE_EXTENTS_SCRIPT = r"""
import numpy as np
from mridpm import _ext

ext = _ext.extension()
buf = np.zeros(256, np.float32)
p = (buf.ctypes.data, 0, buf.size)
big = [2**31, 2**32, 2**62, 2**63 - 1]
calls = []
for op in (0, 1, 2):
    for flags in (0, 1):
        sizes = [  # h and w matter with the sign flag only
            [1, 1, 16, 2**32, 2**32, 1, 1, 1], [1, 1, 16, 2**62, 4, 1, 1, 1], [1, 1, 16, 4, 2**62, 1, 1, 1],
            [1, 1, 16, 2**62, 2**62, 1, 1, 1], [1, 1, 16, 2**63 - 1, 2**63 - 1, 1, 1, 1]] if flags else []
        sizes += [
            [2**32, 2**32, 2**32, 1, 1, 1, 1, 1], [2**62, 2**62, 2**62, 2**62, 2**62, 2**62, 2**62, 2**62],
            [2**63 - 1, 2, 2, 1, 1, 1, 1, 1], [3, 2**62, 3, 1, 1, 1, 1, 1], [1, 1, 2**63 - 1, 2**32, 2**31, 1, 1, 1],
            [1, 1, 16, 4, 4, 0, 1, 1], [1, 1, 16, 4, 4, 1, -1, 1], [1, 1, 16, 4, 4, 1, 1, 0],
            [1, 1, 16, 0, 4, 1, 1, 1], [1, 1, 16, -4, -4, 1, 1, 1],
            [2**62, 2**62, 2**62, 4, 4, 2**62, 2**62, 2**62], [1, 1, 16, 4, 4, 2**62, 2**62, 2**62],
        ]
        for s in sizes:
            calls.append(("dc_cpu", lambda s=s, op=op, flags=flags: ext.dc_cpu(op, flags, s, [p] * 6, [1.0] * 3, 1)))
            calls.append(("dc_cuda", lambda s=s, op=op, flags=flags: ext.dc_cuda(op, flags, s, [p] * 6, [1.0] * 3, 0)))
for batch in [1, 2, 3] + big:
    for inner in [1, 3] + big:
        for stride in (0, 1, 2**32, 2**62, 2**63 - 1):
            if batch in (1, 2, 3) and inner in (1, 3):
                continue
            b = (buf.ctypes.data, stride, buf.size)
            for name in ("step_cpu", "step_cuda"):
                calls.append((name, lambda b=b, batch=batch, inner=inner, name=name: getattr(ext, name)(
                    0, 8, batch, inner, b, b, [b, b], (buf.ctypes.data, stride, buf.size), [], 0, 2**63, (0, 0, 0),
                    1)))
for h in [-1, 0, 1] + big:
    for w in [-1, 0, 2] + big:
        if h == 1 and w == 2:
            continue
        calls.append(("poisson_disc", lambda h=h, w=w: ext.poisson_disc(
            h, w, (buf.ctypes.data, 4), (buf.ctypes.data, 4), (buf.ctypes.data, 4))))
for name, call in calls:
    try:
        call()
    except ValueError:
        continue
    raise SystemExit(f"{name}: a call with huge or non-positive extents did not raise")
print("ok", len(calls))
"""


@pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
def test_huge_and_non_positive_extents_raise_on_every_entry_point():
    """Products of extents that overflow int64 are refused with ValueError, never a crash (run in a subprocess,
    so a SIGFPE or SIGSEGV fails this test instead of killing pytest)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _HUGE_EXTENTS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    assert proc.stdout.startswith("ok")


BAD_MASKS = [  # a mask value the blend would carry into every sample without a word
    ("nan", torch.tensor([1.0, float("nan"), 0, 1])),
    ("inf", torch.tensor([1.0, float("inf"), 0, 1])),
    ("-inf", torch.tensor([1.0, 0, float("-inf"), 1])),
    ("negative", torch.tensor([1.0, 0, -1.0, 1])),
    ("float64 nan", torch.tensor([[1.0, 0, 1, float("nan")]], dtype=torch.float64)),
    ("int negative", torch.tensor([1, 0, -2, 1])),
]


@pytest.mark.parametrize("backend", ["ref", "cpu"])
@pytest.mark.parametrize("mask", [m for _, m in BAD_MASKS], ids=[n for n, _ in BAD_MASKS])
def test_blend_refuses_a_non_finite_or_negative_mask(mask, backend):
    if backend == "cpu" and not _ext.cpu_built():
        pytest.skip("extension not built")
    k, y = crandn(1, 2, 4, 4), crandn(1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"mask must be finite and non-negative \(0/1 or sampling weights\), "
                                         r"got NaN, Inf or a negative value"):
        dc.kspace_blend(k, y, mask, backend=backend)
    with pytest.raises(ValueError, match="mask must be finite and non-negative"):
        dc.kspace_blend(k, y, mask, lam=1.0, keep=0.0, backend=backend, in_place=True)


def test_blend_accepts_bool_integer_and_weight_masks():
    k, y = crandn(1, 2, 4, 4), crandn(1, 2, 4, 4)
    want = dc.kspace_blend(k, y, torch.tensor([1.0, 0, 1, 1]), backend="ref")
    for mask in (torch.tensor([True, False, True, True]), torch.tensor([1, 0, 1, 1], dtype=torch.uint8)):
        torch.testing.assert_close(dc.kspace_blend(k, y, mask, backend="ref"), want)
    dc.kspace_blend(k, y, torch.tensor([0.5, 0, 2.0, 1]), keep=0.0, backend="ref")  # weights: fine


def test_blend_rereads_a_mask_written_in_place_after_a_clean_call():
    """Values are read once per version of the mask: a sampler's fixed mask is checked once, an edited one again."""
    k, y = crandn(1, 2, 4, 4), crandn(1, 2, 4, 4)
    mask = torch.tensor([1.0, 0, 1, 1])
    dc.kspace_blend(k, y, mask, backend="ref")
    dc.kspace_blend(k, y, mask, backend="ref")
    mask[1] = float("nan")
    with pytest.raises(ValueError, match="mask must be finite and non-negative"):
        dc.kspace_blend(k, y, mask, backend="ref")
    with torch.inference_mode():  # inference tensors keep no version: read on every call
        m = torch.tensor([1.0, 0, 1, 1])
        dc.kspace_blend(k, y, m, backend="ref")
        m[0] = -1.0
        with pytest.raises(ValueError, match="mask must be finite and non-negative"):
            dc.kspace_blend(k, y, m, backend="ref")


def test_blend_refuses_a_meta_mask():
    with pytest.raises(ValueError, match="mask: tensors on the meta device hold no data"):
        dc.kspace_blend(crandn(1, 2, 4, 4), crandn(1, 2, 4, 4), torch.ones(4, device="meta"))
