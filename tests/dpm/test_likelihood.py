"""The adaptive integrator and the probability-flow likelihood against closed forms."""

import math

import pytest
import torch

import mridpm
from mridpm.dpm import VESchedule, VPSchedule, log_likelihood, sample_ode
from mridpm.dpm.ode_solvers import dopri5
from mridpm.nets.analytic import gaussian_score

D = 16


def test_dopri5_solves_known_odes_both_ways():
    y0 = [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)]

    def fun(t, y):
        return [-2.0 * y[0], torch.tensor(math.cos(t), dtype=torch.float64)]

    (y, s), nfe = dopri5(fun, y0, 0.0, 1.5, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(y, y0[0] * math.exp(-3.0), rtol=1e-7, atol=0)
    assert abs(float(s) - math.sin(1.5)) < 1e-8 and nfe < 2000
    (back, _), _ = dopri5(fun, [y, s], 1.5, 0.0, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(back, y0[0], rtol=1e-7, atol=0)
    with pytest.raises(ValueError, match="positive"):
        dopri5(fun, y0, 0.0, 1.0, rtol=0.0)


@pytest.mark.parametrize("schedule", [VPSchedule(), VESchedule()], ids=["vp", "ve"])
def test_exact_trace_likelihood_matches_the_gaussian_nll(target, schedule):
    mean, cov = target
    model = gaussian_score(mean, cov, schedule, "score")
    x = model.sample(200, torch.Generator().manual_seed(1))
    nll, bpd = log_likelihood(model, x, schedule, estimator="exact")
    a, s = schedule.alpha_sigma(1e-5)  # x is read as a sample of p at t_min
    exact = -torch.distributions.MultivariateNormal(a * mean, a * a * cov + s * s * torch.eye(D, dtype=cov.dtype)
                                                    ).log_prob(x)
    assert float(((nll - exact).abs() / exact.abs()).max()) < 0.01
    torch.testing.assert_close(bpd, nll / (D * math.log(2)))


@pytest.mark.parametrize("estimator", ["gaussian", "rademacher"])
def test_hutchinson_likelihood_is_unbiased(target, estimator):
    mean, cov = target
    schedule = VPSchedule()
    model = gaussian_score(mean, cov, schedule, "score")
    x = model.sample(1000, torch.Generator().manual_seed(2))
    nll, _ = log_likelihood(model, x, schedule, estimator=estimator, generator=torch.Generator().manual_seed(3))
    a, s = schedule.alpha_sigma(1e-5)
    exact = -torch.distributions.MultivariateNormal(a * mean, a * a * cov + s * s * torch.eye(D, dtype=cov.dtype)
                                                    ).log_prob(x)
    assert abs(float(nll.mean() / exact.mean()) - 1) < 0.01


def test_likelihood_bad_arguments(target):
    mean, cov = target
    model = gaussian_score(mean, cov, VPSchedule(), "score")
    with pytest.raises(ValueError, match="estimator"):
        log_likelihood(model, torch.zeros(2, D), VPSchedule(), estimator="skilling")
    with pytest.raises(TypeError, match="real"):
        log_likelihood(model, torch.zeros(2, D, dtype=torch.complex64), VPSchedule())


@pytest.mark.parametrize("schedule", [VPSchedule(), VESchedule()], ids=["vp", "ve"])
def test_adaptive_ode_sampler(target, schedule):
    mean, cov = target
    model = gaussian_score(mean, cov, schedule, "score")
    x = mridpm.randn((20_000, D), generator=mridpm.Generator(1)) * schedule.prior_std
    info = {}
    out = sample_ode(model, x, schedule, method="rk45", callback=info.update).double()
    assert float((torch.cov(out.T) - cov).norm() / cov.norm()) < 0.05
    assert 10 < info["nfe"] < 1000
