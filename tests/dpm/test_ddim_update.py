"""The one DDIM update (dpm.ddim_update) and its hook: without one it is sample_ddim's single fused
step, with an identity hook and direction "x0" the tasks' former DDIM step; samplers leave autograd on."""

import math

import pytest
import torch

import mridpm
from mridpm.dpm import DiscreteSchedule, ddim_update, sample_ddim
from mridpm.dpm import parameterization as param
from mridpm.dpm.discrete import ddim_coeffs

LINEAR = DiscreteSchedule.from_name("linear")
ABAR, ABAR_TO = LINEAR.alpha_bar(600), LINEAR.alpha_bar(400)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 1, 6, 5, generator=g), torch.randn(3, 1, 6, 5, generator=g)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("options", [{"eta": 0.0}, {"eta": 1.0, "clip": (-1.0, 1.0)}, {"threshold": (0.9, 2.0)}])
def test_without_a_hook_it_is_the_single_fused_step(prediction, options):
    """The step sample_ddim made before the hook existed, written out: one fused_step with x0 output."""
    x, out = _inputs()
    eta = options.get("eta", 0.0)
    coeffs, std, x0c, x0w = ddim_coeffs(prediction, ABAR, ABAR_TO, eta)
    want = mridpm.fused_step([x, out], coeffs, std if std > 0 else None, generator=mridpm.Generator(7),
                             x0_coeffs=x0c, x0_weight=x0w, clamp=options.get("clip"),
                             threshold=options.get("threshold"), return_x0=True)
    got = ddim_update(x, out, ABAR, ABAR_TO, prediction=prediction, generator=mridpm.Generator(7), **options)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def _old_task_step(x, out, abar, abar_to, prediction, eta, lo, hi, generator, correct=None):
    """tasks._common.ddim_step as it was (minus the model call): x0 clipped, corrected, eps re-derived."""
    _, std, x0c, _ = ddim_coeffs(prediction, abar, abar_to, eta)
    x0 = mridpm.fused_step([x, out], list(x0c)).clamp_(lo, hi)
    if correct is not None:
        x0 = correct(x0)
    a, s = math.sqrt(abar), math.sqrt(1 - abar)
    d = math.sqrt(max(1 - abar_to - std * std, 0.0))
    x_to = mridpm.fused_step([x0, x], [math.sqrt(abar_to) - d * a / s, d / s], std if std > 0 else None,
                             generator=generator)
    return x_to, x0


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("abar_to", [ABAR_TO, 1.0])
def test_identity_hook_with_x0_direction_is_the_former_task_step(eta, abar_to):
    x, out = _inputs(1)
    want = _old_task_step(x, out, ABAR, abar_to, "eps", eta, -0.5, 0.5, mridpm.Generator(3))
    got = ddim_update(x, out, ABAR, abar_to, eta=eta, clip=(-0.5, 0.5), generator=mridpm.Generator(3),
                      denoised=lambda x0: x0, direction="x0")
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    shift = _old_task_step(x, out, ABAR, abar_to, "eps", eta, -0.5, 0.5, mridpm.Generator(3), lambda u: u + 0.25)
    got = ddim_update(x, out, ABAR, abar_to, eta=eta, clip=(-0.5, 0.5), generator=mridpm.Generator(3),
                      denoised=lambda u: u + 0.25, direction="x0")
    torch.testing.assert_close(got[0], shift[0], rtol=1e-6, atol=1e-6)


def test_a_hook_with_the_model_direction_keeps_the_models_eps():
    """x_to = sqrt(abar_to) x0' + d eps_model: the replaced x0 enters, the direction stays the model's."""
    x, out = _inputs(2)
    new = torch.full_like(x, 0.3)
    x_to, x0 = ddim_update(x, out, ABAR, ABAR_TO, denoised=lambda u: new)
    assert torch.equal(x0, new)
    coeffs, _, _, x0w = ddim_coeffs("eps", ABAR, ABAR_TO, 0.0)
    torch.testing.assert_close(x_to, coeffs[0] * x + coeffs[1] * out + x0w * new, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="direction"):
        ddim_update(x, out, ABAR, ABAR_TO, direction="noise")


def test_sample_ddim_calls_the_hook_at_every_step_and_reports_its_x0():
    x, _ = _inputs(3)
    seen, hooked = [], []

    def hook(x0, t):
        hooked.append(t)
        return 0.5 * x0

    out = sample_ddim(lambda u, t: 0.2 * u, x, LINEAR, steps=5, denoised=hook, direction="x0", callback=seen.append)
    ts = LINEAR.timesteps(5, "leading")
    assert hooked == ts and [s["t"] for s in seen] == ts
    assert torch.equal(seen[-1]["x"], out) and torch.equal(seen[-1]["denoised"], out)  # abar_to = 1: x = x0
    plain = sample_ddim(lambda u, t: 0.2 * u, x, LINEAR, steps=5)
    assert not torch.allclose(out, plain)
    identity = sample_ddim(lambda u, t: 0.2 * u, x, LINEAR, steps=5, denoised=lambda x0, t: x0)
    torch.testing.assert_close(identity, plain, rtol=1e-5, atol=1e-6)  # the model's eps: the same update


class Scaled(torch.nn.Module):
    """A differentiable toy model: eps = w * x."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.3))

    def forward(self, x, t):
        return self.w * x


@pytest.mark.parametrize("direction", ["model", "x0"])
def test_samplers_leave_autograd_to_the_caller(direction):
    """No no_grad inside: gradients flow through the model, the hook and every update to x_T and w."""
    model = Scaled()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    out = sample_ddim(model, x, LINEAR, steps=3, eta=1.0, generator=mridpm.Generator(0),
                      denoised=lambda x0, t: x0 * torch.sigmoid(model.w), direction=direction)
    gx, gw = torch.autograd.grad(out.square().sum(), [x, model.w])
    assert gx.shape == x.shape and bool(torch.isfinite(gx).all()) and float(gx.abs().sum()) > 0
    assert math.isfinite(float(gw)) and float(gw) != 0
    with torch.no_grad():  # and the caller can still turn them off
        assert not sample_ddim(model, x, LINEAR, steps=3).requires_grad


def test_eps_direction_of_an_x0_model_is_rederived():
    """direction "x0" with an x0-predicting model and no hook: eps from the clipped x0."""
    x, out = _inputs(4)
    a, s = math.sqrt(ABAR), math.sqrt(1 - ABAR)
    x_to, x0 = ddim_update(x, out, ABAR, ABAR_TO, prediction="x0", clip=(-0.2, 0.2), direction="x0")
    assert torch.equal(x0, out.clamp(-0.2, 0.2))
    eps = (x - a * x0) / s
    torch.testing.assert_close(x_to, math.sqrt(ABAR_TO) * x0 + math.sqrt(1 - ABAR_TO) * eps, rtol=1e-5, atol=1e-5)
    assert param.eps_coeffs("x0", a, s) == (1 / s, -a / s)
