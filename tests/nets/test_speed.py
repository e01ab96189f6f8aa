"""mridpm.nets.speed: each flag gives plain eager's output (exactly, or within the stated autocast
tolerance), bad flags are one-line errors, reconstruct_prior and the reconstruct command take them."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from torch import nn

from mridpm import cli
from mridpm.accelerate import AccelerateWarning
from mridpm.dpm import DiscreteSchedule
from mridpm.mri.operators import SingleCoil
from mridpm.nets import speed as sp
from mridpm.nets.priors import Prior
from mridpm.nets.speed import FastModel, Speed, fast_model
from mridpm.random import Generator
from mridpm.tasks.reconstruction import reconstruct_prior

# bf16 keeps 8 bits of mantissa, fp16 11: a few layers of rounding, relative to the output's peak
AUTOCAST_TOL = {"bf16": 3e-2, "fp16": 4e-3}


class Tiny(nn.Module):
    """A two-layer conv net on (batch, 2, H, W) with a timestep shift: model(x, t)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.nn.functional.silu(self.a(x) + t.float().view(-1, 1, 1, 1) / 1000)
        return self.b(h) + (0 if shift is None else shift)


@pytest.fixture
def net_xt() -> tuple[Tiny, torch.Tensor, torch.Tensor]:
    return Tiny().eval(), torch.randn(3, 2, 12, 10), torch.full((3,), 500)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("speed", [Speed(inference_mode=True), Speed(channels_last=True),
                                   Speed(inference_mode=True, channels_last=True)], ids=str)
def test_exact_flags_match_eager(net_xt, speed: Speed) -> None:
    net, x, t = net_xt
    with torch.no_grad():
        ref = net(x, t)
        out = fast_model(net, speed)(x, t)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    assert out.dtype == torch.float32 and out.is_contiguous() and not out.is_inference()
    assert x.is_contiguous()  # the caller's input is not changed


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_autocast_is_close_and_float32(net_xt, dtype: str) -> None:
    net, x, t = net_xt
    with torch.no_grad():
        ref = net(x, t)
        out = fast_model(net, Speed(autocast=dtype))(x, t)
    assert out.dtype == torch.float32
    assert 0 < _rel(out, ref) < AUTOCAST_TOL[dtype]  # it did run in low precision, and closely


def test_cuda_graph_on_cpu_warns_and_runs_eagerly(net_xt) -> None:
    net, x, t = net_xt
    fast = fast_model(net, Speed(cuda_graph=True))
    with torch.no_grad():
        with pytest.warns(AccelerateWarning, match="CUDA graphs record CUDA work only"):
            out = fast(x, t, shift=torch.ones(()))
        torch.testing.assert_close(out, net(x, t) + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fast(x, t, shift=torch.ones(()))  # the same shapes: no second recording, no second warning
        assert len(fast._graphs) == 1
        with pytest.warns(AccelerateWarning):
            fast(x[:1], t[:1])  # a new shape: its own entry
    assert len(fast._graphs) == 2
    with pytest.raises(ValueError, match="without gradients"):
        fast(x, t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graph_replays_on_a_gpu(net_xt) -> None:
    net, x, t = (v.cuda() for v in net_xt)
    fast = fast_model(net, Speed(cuda_graph=True, channels_last=True, inference_mode=True))
    with torch.no_grad():
        for _ in range(3):  # each replay reads the new input
            x = torch.randn_like(x)
            torch.testing.assert_close(fast(x, t), net(x, t), rtol=1e-4, atol=1e-5)
    assert [g.captured for g in fast._graphs.values()] == [True]


def test_compile_matches_eager(net_xt, monkeypatch) -> None:
    """Through dynamo (its eager backend: inductor's C++ build takes minutes on a small CPU)."""
    monkeypatch.setattr(sp.torch, "compile", functools.partial(torch.compile, backend="eager"))
    net, x, t = net_xt
    with torch.no_grad():
        torch.testing.assert_close(fast_model(net, Speed(compile=True, channels_last=True))(x, t), net(x, t))


def test_compile_failure_is_one_line(net_xt, monkeypatch) -> None:
    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here\nsecond line")

    monkeypatch.setattr(sp.torch, "compile", functools.partial(torch.compile, backend=broken))
    net, x, t = net_xt
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"^torch.compile of the network failed .*no compiler here\); run without"):
        with torch.no_grad():
            fast_model(net, Speed(compile=True))(x, t)


def test_off_is_the_model_itself(net_xt) -> None:
    net = net_xt[0]
    assert fast_model(net, None) is net and fast_model(net, Speed()) is net
    assert isinstance(fast_model(net, Speed(compile=False, autocast="bf16")), FastModel)
    assert Speed(autocast="fp16", cuda_graph=True).enabled == ["autocast=fp16", "cuda_graph"]


@pytest.mark.parametrize("kwargs, match", [
    ({"autocast": "fp32"}, "autocast must be None, 'bf16' or 'fp16'"),
    ({"autocast": torch.bfloat16}, "autocast must be"),
    ({"compile": 1}, "compile must be True or False"),
    ({"channels_last": "yes"}, "channels_last must be True or False"),
])
def test_bad_flags_are_one_line_errors(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        Speed(**kwargs)
    assert "\n" not in str(err.value)


def test_differentiating_methods_refuse_graph_cutting_flags(net_xt) -> None:
    net = net_xt[0]
    for speed in (Speed(inference_mode=True), Speed(cuda_graph=True, autocast="bf16")):
        with pytest.raises(ValueError, match="cannot run this method, which differentiates through the network"):
            fast_model(net, speed, differentiable=True)
    fast_model(net, Speed(channels_last=True, autocast="bf16"), differentiable=True)  # these keep gradients
    with pytest.raises(ValueError, match=r"speed must be a mridpm\.nets\.speed\.Speed"):
        fast_model(net, {"compile": True})  # type: ignore[arg-type]


def _problem() -> tuple[torch.Tensor, SingleCoil, Prior]:
    torch.manual_seed(1)
    x = torch.randn(1, 12, 10, dtype=torch.complex64)
    mask = (torch.rand(1, 12, 10) < 0.5).float()
    op = SingleCoil(mask)
    prior = Prior(Tiny().eval(), DiscreteSchedule.from_name("linear", 1000), "eps",
                  {"data_range": [-1.0, 1.0], "size_multiple": 1})
    return op.forward(x), op, prior


@pytest.mark.parametrize("method", ["dds", "dps"])
def test_reconstruct_prior_with_speed_equals_without(method: str) -> None:
    y, op, prior = _problem()
    run = functools.partial(reconstruct_prior, y, op, prior, method=method, steps=4, noise_std=0.01)
    ref = run(generator=Generator(0)).mean
    fast = Speed(channels_last=True) if method == "dps" else Speed(inference_mode=True, channels_last=True)
    torch.testing.assert_close(run(generator=Generator(0), speed=fast).mean, ref, rtol=1e-4, atol=1e-5)
    low = run(generator=Generator(0), speed=Speed(autocast="bf16")).mean
    assert _rel(low, ref) < 0.1
    if method == "dps":
        with pytest.raises(ValueError, match="inference_mode cannot run dps"):
            run(speed=Speed(inference_mode=True))


def test_reconstruct_command_parses_the_flags(monkeypatch, tmp_path) -> None:
    import mridpm.tasks.recon_file as rf

    seen = {}
    monkeypatch.setattr(rf, "reconstruct_file", lambda path, out, **kw: seen.update(kw) or {})
    base = ["reconstruct", str(tmp_path / "a.h5"), "--out", str(tmp_path / "o.h5")]
    assert cli.main(base) == 0 and "speed" not in seen  # none on: nothing passed, settings as before
    assert cli.main([*base, "--channels-last", "--autocast", "bf16", "--compile", "--cuda-graph",
                     "--inference-mode"]) == 0
    assert seen["speed"] == Speed(channels_last=True, autocast="bf16", compile=True, cuda_graph=True,
                                  inference_mode=True)
    assert cli.main([*base, "--autocast", "fp32"]) == 2


def test_file_settings_keep_only_autocast() -> None:
    """Resuming a file with other speed flags reuses its slices; autocast changes the numbers, so it counts."""
    from mridpm.tasks.recon_file import file_settings

    def settings(speed):
        return file_settings("a.h5", method="dds", accel=None, center=None, mask_kind="lines", samples=1, steps=None,
                             seed=0, prior="p", noise_std=None, maps=None, batch=1, prior_format=None,
                             options={} if speed is None else {"speed": speed})

    assert settings(None) == settings(Speed(compile=True, channels_last=True))
    assert settings(Speed(autocast="bf16"))["autocast"] == "bf16"


def test_file_runs_check_the_speed_before_reading() -> None:
    from mridpm.tasks.recon_file import check_options

    check_options("dds", 1, None, 0, None, {"speed": Speed(cuda_graph=True)})
    with pytest.raises(ValueError, match="cuda_graph cannot run dps"):
        check_options("dps", 1, None, 0, None, {"speed": Speed(cuda_graph=True)})
    with pytest.raises(ValueError, match="speed must be"):
        check_options("dds", 1, None, 0, None, {"speed": "fast"})
