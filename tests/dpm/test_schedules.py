"""Schedules and parameterizations: float64 math, diffusers' definitions, exact conversions."""

import itertools
import math

import numpy as np
import pytest
import torch

from mridpm.dpm import DiscreteSchedule, SubVPSchedule, VESchedule, VPSchedule, convert, karras_sigmas, make_betas
from mridpm.dpm import parameterization as param


def test_betas_match_their_definitions():
    lin = make_betas("linear", 1000, 1e-4, 0.02)
    assert lin.dtype == torch.float64 and lin[0] == 1e-4 and math.isclose(float(lin[-1]), 0.02)
    scaled = make_betas("scaled_linear", 1000, 0.00085, 0.012)
    assert math.isclose(float(scaled[0]), 0.00085) and math.isclose(float(scaled[-1]), 0.012)
    cos = make_betas("cosine", 1000)
    assert float(cos.max()) <= 0.999 and bool((cos > 0).all())
    abar = torch.cumprod(1 - cos, 0)
    t = 500
    want = math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    assert math.isclose(float(abar[t - 1]), want, rel_tol=1e-9)
    sig = make_betas("sigmoid", 1000, 1e-4, 0.02)
    assert bool((sig.diff() > 0).all()) and 1e-4 < float(sig[0]) < float(sig[-1]) < 0.02


def test_alphas_cumprod_stays_float64_near_one():
    """PITFALLS: a downcast cumulative alpha rounds to 1 near t = 0."""
    s = DiscreteSchedule.from_name("linear")
    assert s.alphas_cumprod.dtype == torch.float64
    assert s.alpha_bar(0) == 1 - 1e-4 and s.alpha_bar(-1) == 1.0
    assert s.alpha_sigma(0)[1] > 0


@pytest.mark.parametrize(("spacing", "steps", "expected"), [
    ("leading", 10, [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]),
    ("trailing", 10, [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]),
    ("linspace", 4, [999, 666, 333, 0]),
    ("leading", 3, [666, 333, 0]),  # 1000 is not a multiple of 3
    ("trailing", 3, [999, 666, 332]),
])
def test_timestep_spacings_match_diffusers(spacing, steps, expected):
    assert DiscreteSchedule.from_name("linear").timesteps(steps, spacing) == expected


def test_leading_offset_and_bad_requests():
    s = DiscreteSchedule.from_name("linear")
    assert s.timesteps(10, "leading", offset=1)[0] == 901
    with pytest.raises(ValueError, match="runs past"):
        s.timesteps(1000, "leading", offset=1)
    with pytest.raises(ValueError, match="training steps"):
        s.timesteps(1001)
    with pytest.raises(ValueError, match="spacing"):
        s.timesteps(10, "uniform")
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_betas("quadratic")
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        DiscreteSchedule(torch.tensor([0.1, 1.5]))
    with pytest.raises(ValueError, match="finite"):
        DiscreteSchedule(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        VPSchedule(20.0, 0.1)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESchedule(1.0, 0.5)


@pytest.mark.parametrize("schedule", [VPSchedule(), SubVPSchedule(), VESchedule()], ids=["vp", "subvp", "ve"])
def test_continuous_marginals_solve_their_sdes(schedule):
    """d/dt alpha = f alpha and d/dt sigma^2 = 2 f sigma^2 + g^2 for dx = f x dt + g dW."""
    for t in (0.05, 0.3, 0.9):
        h = 1e-6
        (a0, s0), (a1, s1) = schedule.alpha_sigma(t - h), schedule.alpha_sigma(t + h)
        a, s = schedule.alpha_sigma(t)
        f, g2 = schedule.sde(t)
        assert math.isclose((a1 - a0) / (2 * h), f * a, rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose((s1 * s1 - s0 * s0) / (2 * h), 2 * f * s * s + g2, rel_tol=1e-5)


def test_karras_sigmas():
    sig = karras_sigmas(10, 0.002, 80.0)
    assert math.isclose(sig[0], 80.0) and math.isclose(sig[-1], 0.002)
    assert all(b < a for a, b in itertools.pairwise(sig))
    ramp = np.linspace(0, 1, 10)
    want = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    np.testing.assert_allclose(sig, want, rtol=1e-12)


@pytest.mark.parametrize("source", param.PREDICTIONS)
@pytest.mark.parametrize("target", param.PREDICTIONS)
def test_conversions_are_exact(source, target):
    torch.manual_seed(0)
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    for alpha, sigma in [(0.8, 0.6), (1.0, 3.0), (0.3, 0.2)]:  # VP, VE and neither
        x = alpha * x0 + sigma * eps
        values = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}
        torch.testing.assert_close(convert(values[source], x, alpha, sigma, source, target), values[target])
        for fn, name in ((param.x0_coeffs, "x0"), (param.eps_coeffs, "eps"), (param.score_coeffs, "score")):
            a, b = fn(source, alpha, sigma)
            torch.testing.assert_close(a * x + b * values[source], values[name])
    with pytest.raises(ValueError, match="unknown prediction"):
        convert(eps, eps, 1.0, 1.0, "noise", target)
