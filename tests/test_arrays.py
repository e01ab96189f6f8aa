"""Arrays from any framework (mridpm._arrays): every public function of mridpm.mri and mridpm.ops and
the reconstruction entry points give with NumPy inputs exactly what they give with torch tensors, as
NumPy arrays of the same dtype, without copies where promised; a generic DLPack producer and CuPy
(when a GPU and cupy are present) round trip too; torch callers see the functions untouched."""

from __future__ import annotations

import array
import dataclasses
import importlib
import inspect
import sys
import types

import numpy as np
import pytest
import torch

import mridpm.tasks
from mridpm import _arrays, mri, ops
from mridpm.dpm import DiscreteSchedule
from mridpm.mri import fft as fft_module
from mridpm.nets import priors
from mridpm.nets.analytic import gaussian_score
from mridpm.ops._contract import HAS_X0, NOISE
from mridpm.random import Generator
from mridpm.tasks import posterior as ps
from mridpm.tasks import reconstruction

SCHEDULE = DiscreteSchedule.from_name("linear", 1000)


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 16, dtype=torch.complex64, generator=g)
    maps = mri.birdcage_maps(4, (16, 16)).unsqueeze(0)
    mask = torch.zeros(1, 1, 1, 16)
    mask[..., ::2] = 1
    mask[..., 6:10] = 1
    k = mri.Sense(maps)(x)
    img = x.abs()
    return {"x": x, "maps": maps, "mask": mask, "k": k, "y": mri.Sense(maps, mask)(x), "img": img,
            "noisy": img + 0.1 * torch.rand(img.shape, generator=g),
            "vol": torch.randn(2, 4, 8, 8, dtype=torch.complex128, generator=g),
            "rows": torch.randn(3, 10, generator=g), "rows2": torch.randn(3, 10, generator=g)}


def _numpy(v: object) -> object:
    """v with every tensor as a NumPy array (inside tuples, lists and dicts too)."""
    if isinstance(v, torch.Tensor):
        return v.resolve_conj().numpy()
    if isinstance(v, (tuple, list)):
        return type(v)(_numpy(x) for x in v)
    if isinstance(v, dict):
        return {k: _numpy(x) for k, x in v.items()}
    return v


def _same(got: object, want: object) -> None:
    """got (from NumPy inputs) equals want (from torch inputs) exactly, tensors as NumPy arrays of one dtype."""
    if isinstance(want, torch.Tensor):
        assert type(got) is np.ndarray, type(got)
        w = want.detach().resolve_conj().numpy()
        assert got.dtype == w.dtype and got.shape == w.shape
        np.testing.assert_array_equal(got, w)
    elif isinstance(want, (tuple, list)):
        assert type(got) is type(want) and len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            _same(a, b)
    elif dataclasses.is_dataclass(want):
        assert type(got) is type(want)
        for f in dataclasses.fields(want):
            if f.name != "seconds":  # wall time
                _same(getattr(got, f.name), getattr(want, f.name))
    else:
        assert got == want, (got, want)


def _sense(d: dict) -> mri.Sense:
    return mri.Sense(d["maps"], d["mask"])


CASES = {  # name: (function, arguments from the data)
    "fft2c": (mri.fft2c, lambda d: (d["x"],)),
    "ifft2c": (mri.ifft2c, lambda d: (d["x"],)),
    "fftnc": (mri.fftnc, lambda d: (d["x"], 2)),
    "ifftnc": (mri.ifftnc, lambda d: (d["vol"], 3)),
    "fft3c complex128": (mri.fft3c, lambda d: (d["vol"],)),
    "ifft3c": (mri.ifft3c, lambda d: (d["vol"],)),
    "acceleration": (mri.acceleration, lambda d: (d["mask"],)),
    "acs_lines": (mri.acs_lines, lambda d: (d["mask"],)),
    "rss": (mri.rss, lambda d: (d["k"],)),
    "sense_combine": (mri.sense_combine, lambda d: (mri.ifft2c(d["k"]), d["maps"])),
    "coil_compression": (mri.coil_compression, lambda d: (d["k"], 2)),
    "compress": (mri.compress, lambda d: (d["k"], mri.coil_compression(d["k"], 2))),
    "espirit_maps": (mri.espirit_maps, lambda d: (d["k"][:1],), {"calib_width": 8, "kernel_width": 3, "max_iter": 5}),
    "resize_center": (mri.resize_center, lambda d: (d["x"], (10, 20))),
    "haar": (mri.haar, lambda d: (d["x"], 2)),
    "ihaar": (mri.ihaar, lambda d: (d["x"], 2)),
    "zero_filled": (mri.zero_filled, lambda d: (d["y"], _sense(d))),
    "cg_sense": (mri.cg_sense, lambda d: (d["y"], _sense(d)), {"iters": 5}),
    "l1_wavelet": (mri.l1_wavelet, lambda d: (d["y"], _sense(d), 0.01), {"iters": 3}),
    "project": (mri.project, lambda d: (d["x"], d["y"], _sense(d))),
    "gradient": (mri.gradient, lambda d: (d["x"], d["y"], _sense(d))),
    "conjugate_gradient": (mri.conjugate_gradient, lambda d: (_sense(d).N, d["x"]), {"iters": 3}),
    "nmse": (mri.nmse, lambda d: (d["img"], d["noisy"])),
    "psnr": (mri.psnr, lambda d: (d["img"], d["noisy"])),
    "ssim": (mri.ssim, lambda d: (d["img"], d["noisy"])),
    "ssim_batch": (mri.ssim_batch, lambda d: (d["img"], d["noisy"])),
    "fused_step": (ops.fused_step, lambda d: ([d["rows"], d["rows2"]], [0.5, -1.0])),
    "fused_step x0": (ops.fused_step, lambda d: ([d["rows"], d["rows2"]], [0.5, -1.0]),
                      {"x0_coeffs": [1.0, 0.0], "x0_weight": 0.5, "clamp": (-1.0, 1.0), "return_x0": True}),
    "dynamic_threshold_scale": (ops.dynamic_threshold_scale, lambda d: (d["rows"], 0.9, 2.0)),
    "step_reference": (ops.step_reference, lambda d: ([d["rows"]], torch.ones(3, 7), 0, 0, HAS_X0 | NOISE)),
    "philox_randn state": (ops.philox_randn, lambda d: (0, 0, (3, 4)), {"state": torch.tensor([5, 7])}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_numpy_round_trip_equals_torch(name: str) -> None:
    fn, make, *kw = CASES[name]
    kwargs = kw[0] if kw else {}
    args = make(_data())
    want = fn(*args, **kwargs)
    got = fn(*_numpy(args), **_numpy(kwargs))
    _same(got, want)


OPERATORS = {
    "Sense": lambda d: mri.Sense(d["maps"], d["mask"]),
    "Sense no mask": lambda d: mri.Sense(d["maps"]),
    "SingleCoil": lambda d: mri.SingleCoil(d["mask"][0, 0]),
    "CoilExpand": lambda d: mri.CoilExpand(d["maps"]),
    "FFT": lambda d: mri.FFT(),
    "Identity": lambda d: mri.Identity(),
    "Mask": lambda d: mri.Mask(d["mask"][0, 0]),
}


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operators_take_numpy(name: str) -> None:
    """Built from NumPy (maps, mask) and applied to NumPy: forward, adjoint, normal, call, .H, .N, @."""
    d = _data()
    a, a_np = OPERATORS[name](d), OPERATORS[name](_numpy(d))
    x = d["x"]
    y = a(x)
    for op in (a, a_np):
        _same(op.forward(x.numpy()), y)
        _same(op(x.numpy()), y)
        _same(op.adjoint(y.numpy()), a.adjoint(y))
        _same(op.H(y.numpy()), a.H(y))
        _same(op.normal(x.numpy()), a.normal(x))
        _same(op.N(x.numpy()), a.N(x))
        _same((op.H @ op)(x.numpy()), (a.H @ a)(x))
        assert type(op.forward(x)) is torch.Tensor  # torch in, torch out, also from a NumPy-built operator


def _model() -> ps.ComplexDenoiser:
    return ps.ComplexDenoiser(gaussian_score(torch.zeros(2 * 16 * 16), torch.ones(2 * 16 * 16), SCHEDULE))


def test_reconstruct_with_numpy_equals_torch() -> None:
    d = _data()
    for y, op in ((d["y"], _sense(d)), (d["y"].numpy(), _sense(_numpy(d)))):
        r = mridpm.tasks.reconstruct(y, op, _model(), SCHEDULE, method="dds", samples=2, steps=3,
                                     generator=Generator(0))
        if isinstance(y, torch.Tensor):
            want = r
    _same(r, want)
    assert r.mean.dtype == np.complex64 and r.std.dtype == np.float32


@pytest.mark.skipif("brain64c" not in priors.available(), reason="prior not bundled")
def test_reconstruct_prior_with_numpy_equals_torch() -> None:
    d = _data()
    p = priors.load_prior("brain64c")
    want = mridpm.tasks.reconstruct_prior(d["y"], _sense(d), p, steps=2, generator=Generator(0))
    got = mridpm.tasks.reconstruct_prior(d["y"].numpy(), _sense(d), p, steps=2, generator=Generator(0))
    _same(got, want)
    assert type(got) is reconstruction.Reconstruction


def test_numpy_views_without_copies() -> None:
    d = _data()
    x = d["x"].numpy()
    assert _arrays.to_tensor(x).data_ptr() == x.ctypes.data
    assert mri.Sense(d["maps"].numpy()).maps.data_ptr() == d["maps"].numpy().ctypes.data
    assert np.shares_memory(mri.Identity()(x), x)  # a returned view of the input
    out = np.zeros((3, 10), np.float32)
    r = ops.fused_step([d["rows"].numpy()], [2.0], out=out)  # written in place, returned as a view of it
    assert np.shares_memory(r, out)
    np.testing.assert_array_equal(out, 2 * d["rows"].numpy())


@pytest.mark.parametrize("kind", ["negative strides", "big-endian", "read-only"])
def test_arrays_torch_cannot_view_are_copied(kind: str) -> None:
    x = _data()["x"].numpy()
    a = {"negative strides": x[:, ::-1], "big-endian": x.astype(">c8"), "read-only": x.copy()}[kind]
    a.flags.writeable = kind != "read-only"
    got = mri.fft2c(a)
    assert got.dtype == np.complex64
    np.testing.assert_array_equal(got, mri.fft2c(torch.from_numpy(np.array(a, np.complex64))).numpy())


def test_mixed_inputs_return_numpy() -> None:
    d = _data()
    got = mri.project(d["x"], d["y"].numpy(), _sense(d))
    _same(got, mri.project(d["x"], d["y"], _sense(d)))


def test_torch_callers_see_the_functions_untouched() -> None:
    d = _data()
    assert type(mri.fft2c(d["x"])) is torch.Tensor
    out = torch.empty(3, 10)
    assert ops.fused_step([d["rows"]], [1.0], out=out) is out
    assert inspect.signature(mri.fft2c) == inspect.signature(fft_module.fft2c)
    assert mri.fft2c.__doc__ == fft_module.fft2c.__doc__ and mri.fft2c.__wrapped__ is fft_module.fft2c
    assert list(inspect.signature(mri.Sense).parameters) == ["maps", "mask", "ndim"]
    for name, module in mridpm.tasks.ENTRY_POINTS.items():  # loaded on first use, wrapped once
        fn = getattr(mridpm.tasks, name)
        assert fn.__wrapped__ is getattr(importlib.import_module(f"mridpm.tasks.{module}"), name)
        assert getattr(mridpm.tasks, name) is fn and name in dir(mridpm.tasks)
    with pytest.raises(AttributeError):
        mridpm.tasks.no_such_entry_point  # noqa: B018
    assert isinstance(mri.Sense(d["maps"]), mri.operators.Sense)


class Producer:
    """Any DLPack producer: here one holding a torch tensor."""

    def __init__(self, t: torch.Tensor) -> None:
        self.t = t

    def __dlpack__(self, **kwargs: object) -> object:
        return self.t.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple:
        return self.t.__dlpack_device__()


def test_dlpack_producer_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    """Zero-copy in; back as torch tensors, or as the producer's type when its package has from_dlpack."""
    x = _data()["x"]
    assert _arrays.to_tensor(Producer(x)).data_ptr() == x.data_ptr()
    got = mri.fft2c(Producer(x))
    assert type(got) is torch.Tensor and torch.equal(got, mri.fft2c(x))
    package = types.ModuleType("fakearrays")
    package.from_dlpack = lambda t: Producer(torch.from_dlpack(t))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fakearrays", package)
    monkeypatch.setattr(Producer, "__module__", "fakearrays.core")
    got = mri.fft2c(Producer(x))
    assert type(got) is Producer and torch.equal(got.t, mri.fft2c(x))


def test_bad_arrays_are_refused_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="argument 'x': a NumPy array of dtype object") as e:
        mri.fft2c(np.array([[1, "a"]], dtype=object))
    assert "\n" not in str(e.value)
    with pytest.raises(TypeError, match=r"argument 'inputs'\[1\]"):
        ops.fused_step([np.zeros((2, 3), np.float32), np.zeros((2, 3), object)], [1.0, 1.0])
    with pytest.raises(TypeError, match="x must be a tensor, got array"):
        mri.fft2c(array.array("f", [1.0, 2.0]))

    class Broken(Producer):
        def __dlpack__(self, **kwargs: object) -> object:
            raise BufferError("no export")

    with pytest.raises(TypeError, match="argument 'maps': a Broken could not be read through DLPack"):
        mri.Sense(Broken(_data()["maps"]))


def test_cupy_round_trips() -> None:
    cupy = pytest.importorskip("cupy")
    if not torch.cuda.is_available() or not cupy.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    d = {k: v.cuda() for k, v in _data().items()}
    x = cupy.asarray(d["x"])
    assert _arrays.to_tensor(x).data_ptr() == x.data.ptr
    got = mri.fft2c(x)
    assert type(got) is cupy.ndarray and got.dtype == cupy.complex64
    np.testing.assert_array_equal(cupy.asnumpy(got), mri.fft2c(d["x"]).cpu().numpy())
    op = mri.Sense(cupy.asarray(d["maps"]), cupy.asarray(d["mask"]))
    got = mri.cg_sense(op(x), op, iters=3)
    assert type(got) is cupy.ndarray
    want = mri.cg_sense(_sense(d)(d["x"]), _sense(d), iters=3)
    np.testing.assert_allclose(cupy.asnumpy(got), want.cpu().numpy(), rtol=0, atol=1e-5)
