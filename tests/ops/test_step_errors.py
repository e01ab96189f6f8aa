"""Bad input to the fused step is refused with a clear error, at the Python and at the C++ layer."""

import pytest
import torch

import mridpm
from mridpm import _ext
from mridpm.ops import fused_step

X = torch.zeros(2, 3)
BAD_CALLS = [
    (TypeError, "inputs must be a tensor", lambda: fused_step("x", [1.0])),
    (TypeError, r"inputs\[1\] must be a tensor", lambda: fused_step([X, 3], [1.0, 1.0])),
    (ValueError, "1 to 4 tensors", lambda: fused_step([], [])),
    (ValueError, "1 to 4 tensors", lambda: fused_step([X] * 5, [1.0] * 5)),
    (TypeError, "dtype torch.int64", lambda: fused_step([torch.zeros(2, 3, dtype=torch.long)], [1.0])),
    (TypeError, "dtype torch.float64", lambda: fused_step([X.double()], [1.0])),
    (TypeError, r"inputs\[1\] has dtype", lambda: fused_step([X, X.half()], [1.0, 1.0])),
    (ValueError, r"inputs\[1\] has shape", lambda: fused_step([X, torch.zeros(2, 4)], [1.0, 1.0])),
    (ValueError, r"inputs\[1\] is on meta", lambda: fused_step([X, torch.zeros(2, 3, device="meta")], [1.0, 1.0])),
    (ValueError, "batch dimension", lambda: fused_step([torch.tensor(1.0)], [1.0])),
    (ValueError, "must hold 2 coefficients", lambda: fused_step([X, X], [1.0])),
    (ValueError, r"coeffs\[0\] must be finite", lambda: fused_step([X], [float("nan")])),
    (ValueError, r"coeffs\[1\] must be a scalar or have shape \(2,\)", lambda: fused_step([X, X], [1.0, [1, 2, 3]])),
    (TypeError, "coeffs must be a sequence", lambda: fused_step([X], object())),
    (ValueError, r"coeffs must have shape \(2, 1\)", lambda: fused_step([X], torch.ones(3, 1))),
    (ValueError, "noise_scale must be finite", lambda: fused_step([X], [1.0], float("inf"))),
    (TypeError, "generator must be a mridpm.Generator",
     lambda: fused_step([X], [1.0], 1.0, generator=torch.Generator())),
    (ValueError, "give x0_coeffs too", lambda: fused_step([X], [1.0], clamp=(-1, 1))),
    (ValueError, "return_x0 needs x0_coeffs", lambda: fused_step([X], [1.0], return_x0=True)),
    (ValueError, "low <= high", lambda: fused_step([X], [1.0], x0_coeffs=[1.0], clamp=(1, -1))),
    (TypeError, "clamp must be a pair", lambda: fused_step([X], [1.0], x0_coeffs=[1.0], clamp=1.0)),
    (ValueError, "clamp or threshold", lambda: fused_step([X], [1.0], x0_coeffs=[1.0], clamp=(-1, 1),
                                                       threshold=(0.9, 2.0))),
    (ValueError, "ratio must lie in", lambda: fused_step([X], [1.0], x0_coeffs=[1.0], threshold=(1.5, 2.0))),
    (ValueError, "max_value must be at least 1", lambda: fused_step([X], [1.0], x0_coeffs=[1.0], threshold=(0.9, 0.5))),
    (ValueError, "backend must be one of", lambda: fused_step([X], [1.0], backend="gpu")),
    (ValueError, "out must match", lambda: fused_step([X], [1.0], out=torch.zeros(3, 2))),
    (ValueError, "out must be contiguous", lambda: fused_step([X], [1.0], out=torch.zeros(3, 2).t())),
    (ValueError, "backend 'cuda' needs CUDA tensors", lambda: fused_step([X], [1.0], backend="cuda")),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD_CALLS, ids=[m for _, m, _ in BAD_CALLS])
def test_bad_input_is_refused(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_partial_overlap_of_out_and_input_is_refused():
    buf = torch.zeros(10)
    with pytest.raises(ValueError, match="partially overlaps"):
        fused_step([buf[2:8].view(2, 3)], [1.0], out=buf[0:6].view(2, 3))


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        fused_step([X], [1.0], backend="triton")


@pytest.mark.skipif(not _ext.cpu_built(), reason="extension not built")
class TestExtensionGuards:
    """The C++ layer checks sizes again and never touches memory outside the buffers it is given."""

    def setup_method(self):
        self.buf = torch.zeros(64)
        self.params = torch.zeros(16)

    def call(self, **kw):
        b = (self.buf.data_ptr(), 8, 64)
        args = dict(dtype=0, flags=0, batch=8, inner=8, out=b, x0=(0, 0, 0), inputs=[b],
                    params=(self.params.data_ptr(), 0, 16), uniform=[], seed=0, offset=0, rng=(0, 0, 0), nthreads=1)
        args.update(kw)
        _ext.extension().step_cpu(*args.values())

    def test_valid_call_runs(self):
        self.call()

    def test_shared_rows_reads_an_input_expanded_along_the_batch(self):
        row = torch.arange(8.0)
        self.call(inputs=[(row.data_ptr(), 0, 8)], params=(0, 0, 0), uniform=[2.0, 0, 0, 0, 0, 0, 0], shared_rows=True)
        assert torch.equal(self.buf.view(8, 8), 2 * row.expand(8, 8))

    def test_uniform_row_replaces_the_params_buffer(self):
        self.buf.fill_(2.0)
        self.call(params=(0, 0, 0), uniform=[1.5, 0, 0, 0, 0, 0, 0])  # out = 1.5 * in
        assert torch.equal(self.buf, torch.full((64,), 3.0))

    @pytest.mark.parametrize(("kw", "match"), [
        ({"dtype": 7}, "dtype"),
        ({"inputs": []}, "1 to 4"),
        ({"flags": 64}, "flag"),
        ({"flags": 4}, "flag"),  # writing x0 without computing it
        ({"batch": -1}, "non-negative"),
        ({"batch": 9}, "smaller than the extent"),
        ({"inner": 9}, "rows would overlap"),  # out rows 8 apart
        ({"out": (0, 8, 64)}, "null"),
        ({"out": (1, 4, 64)}, "rows would overlap"),
        ({"out": (1, 0, 64)}, "0 for an expanded tensor"),  # an output expanded along the batch
        ({"flags": 5, "x0": (1, 0, 64)}, "rows would overlap"),
        ({"inputs": [(1, 0, 64)]}, "smaller than the extent"),  # shared input rows need shared_rows=True
        ({"inputs": [(1, 0, 7)], "shared_rows": True}, "smaller than the extent"),
        ({"params": (0, 0, 16)}, "null"),
        ({"params": (1, 0, 4)}, "smaller than the extent"),
        ({"params": (0, 0, 0), "uniform": [1.0] * 6}, "params row"),  # K = 1 needs 7
        ({"params": (0, 0, 0), "uniform": [1.0] * 14}, "params row"),
        ({"flags": 5, "x0": (0, 0, 0)}, "smaller than the extent"),
        ({"batch": 2**62, "inner": 2**62}, "rows would overlap"),  # out rows 8 apart
        ({"offset": 2**64 - 1, "flags": 8}, "smaller than the extent"),
        ({"rng": (1, 0, 1), "flags": 8}, "smaller than the extent"),  # the run-time state holds 2 values
    ])
    def test_bad_arguments_raise(self, kw, match):
        with pytest.raises(ValueError, match=match):
            self.call(**kw)

    def test_cuda_entry_without_cuda_build_or_device(self):
        ext = _ext.extension()
        if ext.cuda_built and torch.cuda.is_available():
            pytest.skip("a GPU is present")
        b = (0, 0, 0)
        with pytest.raises(ValueError):
            ext.step_cuda(0, 0, 1, 1, b, b, [b], b, [], 0, 0, b, 0)


def test_an_input_expanded_along_the_batch_is_read_in_place(kernel):
    """A batch stride of 0 was refused by the C++ layer ("a buffer is smaller than the extent") while the
    reference and Triton took it; every backend reads it now (the kernels never write inputs)."""
    backend, device = kernel
    x = torch.randn(1, 3, 40, device=device).expand(5, 3, 40)
    eps = torch.randn(5, 3, 40, device=device)
    kw = dict(x0_coeffs=[1.0, -0.5], x0_weight=0.3, clamp=(-1.0, 1.0))
    want = fused_step([x, eps], [0.9, 0.2], 0.5, generator=mridpm.Generator(3), backend="ref", **kw)
    got = fused_step([x, eps], [0.9, 0.2], 0.5, generator=mridpm.Generator(3), backend=backend, **kw)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_an_expanded_out_is_refused():
    x = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="out must be contiguous"):
        fused_step([x], [1.0], out=torch.zeros(1, 3).expand(4, 3))


def test_generator_is_only_advanced_by_valid_calls():
    g = mridpm.Generator(1)
    with pytest.raises(ValueError):
        fused_step([X], [float("nan")], 1.0, generator=g)
    assert g.offset == 0
