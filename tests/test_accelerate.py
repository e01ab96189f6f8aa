"""mridpm.accelerate: CUDA graphs of whole sampler loops with fresh noise at every replay.

Without a GPU the recording itself cannot run; what is tested here on the CPU is every piece a replay
relies on: each backend's step kernel reads (seed, base offset) from a tensor at run time and then
draws what the host offset would give; the recording's bookkeeping (relative offsets, the generator
moved on after each replay, checks deferred to after the replay, warm-up rewound); a sampler run
against a recorded state draws exactly the eager sampler's noise; and the eager fallback. The GPU
class at the end records and replays real graphs where CUDA is present.
"""

import pytest
import torch

import mridpm
from mridpm import _capture, _ext
from mridpm.accelerate import AccelerateWarning, graph
from mridpm.dpm import DiscreteSchedule, sample_ddim, sample_ddpm
from mridpm.ops import step as step_ops
from mridpm.ops._backend import triton_available, triton_interpreted

BACKENDS = ["ref"] + (["cpu"] if _ext.cpu_built() else []) + (
    ["triton"] if triton_available() and triton_interpreted() else [])
CUDA = torch.cuda.is_available()


class IsoGaussian(torch.nn.Module):
    """The exact eps denoiser of data N(0, c I): eps = sqrt(1 - abar) x / (abar c + 1 - abar), looked up
    on the device (no host synchronisation, so it can be recorded)."""

    def __init__(self, schedule: DiscreteSchedule, c: float = 0.5) -> None:
        super().__init__()
        abar = schedule.alphas_cumprod.float()
        self.register_buffer("gain", (1 - abar).sqrt() / (abar * c + 1 - abar))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * self.gain[t].reshape(-1, *([1] * (x.dim() - 1)))


@pytest.fixture(autouse=True)
def no_capture_left():
    yield
    assert _capture.active is None
    _capture.active = None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.complex64])
@pytest.mark.parametrize("seed", [7, 2**64 - 5])  # a seed above 2**63 is a negative int64 in the state
def test_step_reads_seed_and_offset_at_run_time(backend, dtype, seed):
    """With a state tensor the kernels draw at counter state[1] + offset with key state[0]: the draw the
    host (seed, state[1] + offset) gives, on random odd-sized batched inputs."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 7, generator=g).to(dtype) if dtype != torch.complex64 else \
        torch.randn(3, 5, 7, dtype=dtype, generator=g)
    params = [0.5, 0.0, 0.0, 0.0, 0.0, 1.0, 0.75]
    base, rel = 123_456_789_012, 1001
    state = torch.tensor([int(mridpm.Generator(seed).state[0]), base], dtype=torch.int64)
    want, got = torch.empty_like(x), torch.empty_like(x)
    step_ops.launch(backend, [x], params, want, None, seed, base + rel, step_ops.NOISE)
    step_ops.launch(backend, [x], params, got, None, 99, rel, step_ops.NOISE, state)  # host seed ignored
    assert torch.equal(got, want)
    state[1] += 1  # the value at run time counts, not at the call's construction
    step_ops.launch(backend, [x], params, got, None, 99, rel, step_ops.NOISE, state)
    assert not torch.equal(got, want)


def test_recording_bookkeeping():
    cpu = torch.device("cpu")
    g, h = mridpm.Generator(5, 40), mridpm.Generator(2**64 - 1)
    rec = _capture.Recording(cpu)
    assert rec.reserve(g, 10, cpu)[:2] == (5, 0)
    assert rec.reserve(g, 6, cpu)[:2] == (5, 10)  # offsets relative to the replay's base
    _, _, state_h = rec.reserve(h, 3, cpu)
    assert rec.reserve(g, 1, cpu)[2] is rec.draws[id(g)][1] is not state_h
    assert g.offset == 40 and h.offset == 0  # recording does not move the host generators
    assert rec.reserve(g, 4, torch.device("meta")) == (5, 40, None)  # not the graph's device: runs now
    assert g.offset == 44
    rec.before_replay()
    assert rec.draws[id(g)][1].tolist() == [5, 44] and state_h.tolist() == [-1, 0]
    inner = mridpm.Generator(8)  # made by the recorded function: an eager call would make it anew
    rec.reserve(inner, 50, cpu)
    seen = []
    rec.checks.append(lambda: seen.append(g.offset))
    rec.after_replay()
    assert (g.offset, h.offset, inner.offset, seen) == (44 + 17, 3, 0, [61])


def test_warmup_is_rewound():
    g = mridpm.Generator(3, 8)
    warm = _capture.Warmup()
    _capture.active = warm
    try:
        mridpm.randn((2, 4), generator=g)
        mridpm.randn((2, 4), generator=g)
    finally:
        _capture.active = None
    assert g.offset == 24
    warm.rewind()
    assert g.offset == 8


@pytest.mark.parametrize("sampler", [sample_ddpm, sample_ddim])
def test_sampler_against_a_recorded_state_draws_the_eager_noise(sampler):
    """A whole sampler loop run while recording (on the CPU its kernels run at once, reading the state
    written by before_replay) returns the eager loop's sample, and moves the generator as far."""
    schedule = DiscreteSchedule.from_name("linear", 1000)
    model = IsoGaussian(schedule)
    x = mridpm.randn((3, 1, 5, 6), generator=mridpm.Generator(0))
    kwargs = {"steps": 6} | ({"eta": 1.0} if sampler is sample_ddim else {})
    eager_gen = mridpm.Generator(11, 1000)
    want = sampler(model, x, schedule, generator=eager_gen, **kwargs)
    g = mridpm.Generator(11, 1000)
    rec = _capture.Recording(torch.device("cpu"))
    rec.reserve(g, 0, torch.device("cpu"))  # the state exists (and is written) before the kernels run
    rec.before_replay()
    _capture.active = rec
    try:
        got = sampler(model, x, schedule, generator=g, **kwargs)
    finally:
        _capture.active = None
    assert g.offset == 1000
    rec.after_replay()
    assert torch.equal(got, want)
    assert g.offset == eager_gen.offset > 1000


def test_nan_check_is_deferred_to_after_the_replay():
    schedule = DiscreteSchedule.from_name("linear", 1000)
    rec = _capture.Recording(torch.device("cpu"))
    _capture.active = rec
    try:
        sample_ddim(lambda x, t: x * float("nan"), torch.ones(2, 3), schedule, steps=3)  # no raise while recording
    finally:
        _capture.active = None
    with pytest.raises(ValueError, match="NaN or Inf at call 0 of 3"):
        rec.after_replay()


class TestFallback:
    """Where no graph can be recorded the callable runs fn eagerly, says why once, checks inputs alike."""

    def test_cpu_inputs_run_eagerly_with_the_same_noise(self):
        schedule = DiscreteSchedule.from_name("linear", 1000)
        model, g, ref = IsoGaussian(schedule), mridpm.Generator(4), mridpm.Generator(4)
        x = torch.randn(2, 1, 4, 4)
        with pytest.warns(AccelerateWarning, match="inputs are on cpu, and CUDA graphs record CUDA work only"):
            run = graph(lambda x: sample_ddpm(model, x, schedule, steps=4, generator=g), x)
        assert not run.captured and g.offset == 0  # nothing ran yet
        for _ in range(2):
            assert torch.equal(run(x), sample_ddpm(model, x, schedule, steps=4, generator=ref))
        assert g.offset == ref.offset

    def test_disabled(self):
        with pytest.warns(AccelerateWarning, match=r"disabled \(enabled=False\)"):
            run = graph(lambda x: x + 1, torch.zeros(2), enabled=False)
        assert run.reason == "graphs are disabled (enabled=False)"
        assert torch.equal(run(torch.ones(2)), torch.full((2,), 2.0))

    def test_no_inputs(self):
        with pytest.warns(AccelerateWarning, match="no input tensors"):
            assert graph(lambda: 3)() == 3

    @pytest.mark.parametrize(("call", "error", "match"), [
        (lambda run: run(torch.zeros(3)), ValueError, r"input 0 must match the example .*\(\(2,\)"),
        (lambda run: run(torch.zeros(2, dtype=torch.float64)), ValueError, "must match the example"),
        (lambda run: run(torch.zeros(2), torch.zeros(2)), TypeError, "expected 1 input tensors, got 2"),
        (lambda run: run([0.0, 0.0]), TypeError, "input 0 must be a tensor"),
    ])
    def test_bad_calls(self, call, error, match):
        with pytest.warns(AccelerateWarning):
            run = graph(lambda x: x * 2, torch.zeros(2))
        with pytest.raises(error, match=match):
            call(run)

    @pytest.mark.parametrize(("kwargs", "error", "match"), [
        ({"fn": 3}, TypeError, "fn must be callable"),
        ({"example": (1.0,)}, TypeError, "input 0 must be a tensor"),
        ({"warmup": 0}, ValueError, "warmup must be an integer >= 1"),
    ])
    def test_bad_construction(self, kwargs, error, match):
        args = {"fn": lambda x: x, "example": (torch.zeros(1),)} | kwargs
        with pytest.raises(error, match=match):
            graph(args["fn"], *args["example"], warmup=kwargs.get("warmup", 2))


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
class TestCudaGraphs:
    """Real recordings and replays (run where a GPU is present)."""

    def setup_method(self):
        self.schedule = DiscreteSchedule.from_name("linear", 1000)
        self.model = IsoGaussian(self.schedule).cuda()

    @pytest.mark.parametrize("backend", ["cuda", "triton", "ref"])
    def test_replays_draw_fresh_noise_as_eager_calls_would(self, backend):
        if backend == "cuda" and not _ext.cuda_built():
            pytest.skip("CUDA kernels not built")
        if backend == "triton" and (not triton_available() or triton_interpreted()):
            pytest.skip("compiled Triton needed (TRITON_INTERPRET=0): the interpreter cannot be recorded")
        x = torch.randn(4, 1, 33, 31, device="cuda")
        g, ref = mridpm.Generator(9), mridpm.Generator(9)
        with mridpm.use_backend(backend):
            run = graph(lambda x: sample_ddpm(self.model, x, self.schedule, steps=8, generator=g), x)
            assert run.captured, run.reason
            assert g.offset == 0  # warm-up rewound
            outs = [run(x) for _ in range(3)]
            want = [sample_ddpm(self.model, x, self.schedule, steps=8, generator=ref) for _ in range(3)]
        for o, w in zip(outs, want, strict=True):
            torch.testing.assert_close(o, w, rtol=1e-5, atol=1e-5)
        assert not torch.equal(outs[0], outs[1])
        assert g.offset == ref.offset

    def test_reseeding_between_replays_is_followed(self):
        x = torch.randn(2, 1, 16, 16, device="cuda")
        g = mridpm.Generator(1)
        run = graph(lambda x: sample_ddim(self.model, x, self.schedule, steps=5, eta=1.0, generator=g), x)
        first = run(x)
        g.manual_seed(1)
        assert torch.equal(run(x), first)

    def test_per_sample_coefficients_from_the_host(self):
        """Per-sample host coefficients reach the graph through pinned buffers kept alive with it."""
        x = torch.randn(3, 1000, device="cuda")
        g, ref = mridpm.Generator(2), mridpm.Generator(2)
        coeffs = [torch.tensor([0.5, 1.0, 2.0])]
        run = graph(lambda x: mridpm.fused_step(x, coeffs, torch.tensor([0.1, 0.2, 0.3]), generator=g), x)
        assert run.captured, run.reason
        torch.cuda.empty_cache()
        for _ in range(2):
            want = mridpm.fused_step(x, coeffs, torch.tensor([0.1, 0.2, 0.3]), generator=ref)
            torch.testing.assert_close(run(x), want)

    def test_host_synchronisation_falls_back_and_says_why(self):
        def fn(x):
            return x * float(x.sum())  # reads the device back: not recordable

        x = torch.ones(4, device="cuda")
        with pytest.warns(AccelerateWarning, match="could not be recorded as a CUDA graph"):
            run = graph(fn, x)
        assert not run.captured
        torch.testing.assert_close(run(x), x * 4)

    def test_nan_is_reported_after_the_replay(self):
        x = torch.ones(2, 1, 8, 8, device="cuda")
        scale = torch.ones((), device="cuda")
        run = graph(lambda x: sample_ddim(lambda u, t: u * scale, x, self.schedule, steps=3), x)
        run(x)
        scale.fill_(float("nan"))
        with pytest.raises(ValueError, match="NaN or Inf"):
            run(x)

    def test_a_generator_made_inside_gives_the_same_noise_each_call(self):
        x = torch.randn(2, 1, 8, 8, device="cuda")
        run = graph(lambda u: sample_ddpm(self.model, u, self.schedule, steps=4, generator=mridpm.Generator(5)), x)
        assert torch.equal(run(x), run(x))

    def test_cpu_and_gpu_give_the_same_sample(self):
        x = mridpm.randn((2, 1, 17, 19), generator=mridpm.Generator(0))
        cpu = sample_ddpm(IsoGaussian(self.schedule), x, self.schedule, steps=10, generator=mridpm.Generator(5))
        run = graph(lambda u: sample_ddpm(self.model, u, self.schedule, steps=10, generator=mridpm.Generator(5)),
                    x.cuda())
        torch.testing.assert_close(run(x.cuda()).cpu(), cpu, rtol=1e-4, atol=1e-5)

    def test_dds_reconstruction_replays_match_eager(self):
        """The DDS loop (model, fused steps, CG on the SENSE normal equations) as one graph, y its input."""
        from mridpm import mri
        from mridpm.mri.coils import birdcage_maps
        from mridpm.tasks import posterior as ps

        maps = birdcage_maps(4, (24, 20)).unsqueeze(0).cuda()
        mask = torch.zeros(1, 1, 1, 20, device="cuda")
        mask[..., ::2] = 1
        op = mri.Sense(maps, mask)
        y = op(torch.randn(2, 24, 20, dtype=torch.complex64, device="cuda"))
        g, ref = mridpm.Generator(3), mridpm.Generator(3)

        def dds(y, generator):
            x = ps.start(self.schedule, ps.timesteps(self.schedule, 6)[0], (2, 24, 20), y, generator)
            return ps.sample_dds(self.model, x, self.schedule, problem=ps.Problem(y, op, 0.05), steps=6, eta=1.0,
                                 generator=generator)

        run = graph(lambda y: dds(y, g), y)
        assert run.captured, run.reason
        for scale in (1.0, 0.5):  # a new y is copied in
            torch.testing.assert_close(run(scale * y), dds(scale * y, ref), rtol=1e-4, atol=1e-5)
