"""Samplers against exact scores: a 16-dimensional Gaussian and a Gaussian mixture."""

import pytest
import torch

import mridpm
from mridpm.dpm import (
    DiscreteSchedule,
    SubVPSchedule,
    VESchedule,
    VPSchedule,
    analytic_dpm_gamma,
    invert_ddim,
    sample_analytic_dpm,
    sample_ddim,
    sample_ddpm,
    sample_dpm_solver,
    sample_dpmpp,
    sample_euler_maruyama,
    sample_ode,
    sample_pc,
    sample_smld,
)
from mridpm.nets.analytic import GaussianMixtureScore, gaussian_score

D, N = 16, 20_000
LINEAR = DiscreteSchedule.from_name("linear")


def _prior(schedule, seed=1):
    g = mridpm.Generator(seed)
    return mridpm.randn((N, D), generator=g) * getattr(schedule, "prior_std", 1.0), g


def _rel(a, b):
    return float((a - b).norm() / b.norm())


CASES = [  # (id, sampler, schedule, prediction, options): "enough steps" for each
    ("ddpm-beta_tilde", sample_ddpm, LINEAR, "eps", {"steps": 1000}),
    ("ddpm-beta-skipped", sample_ddpm, LINEAR, "v", {"steps": 500, "variance": "beta"}),
    ("ddim-eta0", sample_ddim, LINEAR, "eps", {"steps": 500}),
    ("ddim-eta1-trailing", sample_ddim, LINEAR, "x0", {"steps": 500, "eta": 1.0, "spacing": "trailing"}),
    ("em-vp", sample_euler_maruyama, VPSchedule(), "score", {"steps": 1000}),
    ("em-subvp", sample_euler_maruyama, SubVPSchedule(), "eps", {"steps": 1000}),
    ("em-ve", sample_euler_maruyama, VESchedule(), "score", {"steps": 1000}),
    ("pc-ve", sample_pc, VESchedule(), "score", {"steps": 1000, "snr": 0.16}),
    ("pc-vp", sample_pc, VPSchedule(), "eps", {"steps": 1000, "snr": 0.16}),
    ("ode-heun-vp", sample_ode, VPSchedule(), "v", {"steps": 100}),
    ("ode-heun-ve", sample_ode, VESchedule(), "score", {"steps": 100}),
    ("ode-euler-subvp", sample_ode, SubVPSchedule(), "x0", {"steps": 500, "method": "euler"}),
    ("dpm-solver-3-vp", sample_dpm_solver, VPSchedule(), "v", {"steps": 10, "order": 3}),
    ("dpm-solver-2-ve", sample_dpm_solver, VESchedule(), "score", {"steps": 20, "order": 2}),
    ("dpm-solver-1-subvp", sample_dpm_solver, SubVPSchedule(), "eps", {"steps": 200, "order": 1, "skip": "time"}),
    ("dpmpp-2m-discrete", sample_dpmpp, LINEAR, "eps", {"steps": 100, "order": 2}),
    ("dpmpp-3m-discrete", sample_dpmpp, LINEAR, "v", {"steps": 100, "order": 3}),
    ("dpmpp-3m-vp", sample_dpmpp, VPSchedule(), "x0", {"steps": 20, "order": 3}),
    ("dpmpp-2m-ve", sample_dpmpp, VESchedule(), "score", {"steps": 20, "order": 2}),
]


@pytest.mark.parametrize(("sampler", "schedule", "prediction", "options"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_gaussian_mean_and_covariance(target, sampler, schedule, prediction, options):
    mean, cov = target
    model = gaussian_score(mean, cov, schedule, prediction)
    x, g = _prior(schedule)
    out = sampler(model, x, schedule, generator=g, prediction=prediction, **options).double()
    assert out.shape == (N, D) and bool(torch.isfinite(out).all())
    assert _rel(out.mean(0), mean) < 0.03
    assert _rel(torch.cov(out.T), cov) < 0.05


def test_smld_reaches_the_last_noise_level_marginal(target):
    """Annealed Langevin ends at p_sigma_min = N(mean, cov + sigma_min^2 I), before denoising."""
    mean, cov = target
    schedule = VESchedule(sigma_min=0.3, sigma_max=20.0)
    model = gaussian_score(mean, cov, schedule, "score")
    x, g = _prior(schedule)
    out = sample_smld(model, x, schedule, steps=10, steps_each=100, step_lr=0.04, generator=g, denoise=False).double()
    assert _rel(out.mean(0), mean) < 0.03
    assert _rel(torch.cov(out.T), cov + 0.09 * torch.eye(D, dtype=torch.float64)) < 0.05


MIXTURE_CASES = [
    ("ddpm", sample_ddpm, LINEAR, "eps", {"steps": 1000}),
    ("ddim", sample_ddim, LINEAR, "v", {"steps": 500}),
    ("em-ve", sample_euler_maruyama, VESchedule(), "eps", {"steps": 1000}),
    ("ode-vp", sample_ode, VPSchedule(), "x0", {"steps": 200}),
    ("dpm-solver-3", sample_dpm_solver, VPSchedule(), "eps", {"steps": 15, "order": 3}),
    ("dpmpp-2m", sample_dpmpp, LINEAR, "eps", {"steps": 100, "order": 2}),
]


@pytest.mark.parametrize(("sampler", "schedule", "prediction", "options"), [c[1:] for c in MIXTURE_CASES],
                         ids=[c[0] for c in MIXTURE_CASES])
def test_gaussian_mixture_weights(sampler, schedule, prediction, options):
    g = torch.Generator().manual_seed(3)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    means = torch.randn(3, D, dtype=torch.float64, generator=g) * 2
    covs = torch.rand(3, D, dtype=torch.float64, generator=g) * 0.3 + 0.05
    model = GaussianMixtureScore(weights, means, covs, schedule, prediction)
    x, gen = _prior(schedule, seed=2)
    out = sampler(model, x, schedule, generator=gen, prediction=prediction, **options).double()
    _, resp = model.score_at(out, 1.0, 0.0)  # responsibilities under the clean mixture
    frac = torch.bincount(resp.argmax(0), minlength=3).double() / N
    assert float((frac - weights).abs().max()) < 0.02, frac.tolist()


def test_ddim_eta0_is_deterministic_and_inverts(target):
    mean, cov = target
    model = gaussian_score(mean, cov, LINEAR, "eps")
    noise = mridpm.randn((64, D), generator=mridpm.Generator(4))
    a = sample_ddim(model, noise, LINEAR, steps=100, generator=mridpm.Generator(5))
    b = sample_ddim(model, noise, LINEAR, steps=100, generator=mridpm.Generator(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    x0 = model.sample(256, torch.Generator().manual_seed(0)).float()
    z = invert_ddim(model, x0, LINEAR, steps=100, iterations=3)
    assert _rel(sample_ddim(model, z, LINEAR, steps=100), x0) < 1e-3
    one_call = sample_ddim(model, invert_ddim(model, x0, LINEAR, steps=100), LINEAR, steps=100)
    assert _rel(one_call, x0) < 0.05  # the usual one-call inversion: close, not exact


def test_ddpm_with_skipped_steps_samples_the_exact_posterior():
    """PITFALLS: with skipped steps beta_t = 1 - abar_t / abar_prev, not betas[t]. With a perfect
    x0 model, one step from t to t_prev must draw from q(x_prev | x_t, x0)."""
    x0 = torch.full((N, 1), 0.7)
    ts = LINEAR.timesteps(4, "leading")  # [750, 500, 250, 0]: 250 training steps per step
    abar, abar_prev = LINEAR.alpha_bar(ts[0]), LINEAR.alpha_bar(ts[1])
    g = mridpm.Generator(9)
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * mridpm.randn(x0.shape, generator=g)
    seen = []
    last = sample_ddpm(lambda x, t: x0.expand_as(x), x_t, LINEAR, steps=4, prediction="x0", generator=g,
                       callback=seen.append)
    beta = 1 - abar / abar_prev
    mean = abar_prev**0.5 * beta / (1 - abar) * x0 + (1 - beta) ** 0.5 * (1 - abar_prev) / (1 - abar) * x_t
    var = beta * (1 - abar_prev) / (1 - abar)
    resid = seen[0]["x"].double() - mean.double()
    assert abs(float(resid.mean())) < 4 * (var / N) ** 0.5
    assert abs(float(resid.var()) / var - 1) < 0.05
    torch.testing.assert_close(last, x0)  # the final step lands on the x0 prediction


def test_analytic_dpm_variance_beats_ddpm_with_few_steps(target):
    """Analytic-DPM's optimal variance (Gamma from 5k data samples) matches the target at 50 steps
    and is far closer than DDPM's at 25."""
    mean, cov = target
    model = gaussian_score(mean, cov, LINEAR, "eps")
    data = model.sample(5000, torch.Generator().manual_seed(5)).float()
    errors = {}
    for steps in (25, 50):
        gamma = analytic_dpm_gamma(model, data, LINEAR, LINEAR.timesteps(steps), generator=mridpm.Generator(7))
        x, g = _prior(LINEAR)
        errors[steps] = _rel(torch.cov(sample_analytic_dpm(model, x, LINEAR, steps=steps, gamma=gamma,
                                                           generator=g).double().T), cov)
    x, g = _prior(LINEAR)
    ddpm = _rel(torch.cov(sample_ddpm(model, x, LINEAR, steps=25, generator=g).double().T), cov)
    assert errors[50] < 0.05
    assert errors[25] < ddpm / 3, (errors, ddpm)
    with pytest.raises(ValueError, match="no estimate"):
        sample_analytic_dpm(model, x, LINEAR, steps=10, gamma={})


def test_first_order_dpm_solver_pp_is_ddim(target):
    """DPM-Solver++(1) and DDIM (eta = 0) are the same update."""
    mean, cov = target
    model = gaussian_score(mean, cov, LINEAR, "eps")
    x = mridpm.randn((64, D), generator=mridpm.Generator(3))
    a = sample_dpmpp(model, x, LINEAR, steps=25, order=1, spacing="trailing")
    b = sample_ddim(model, x, LINEAR, steps=25, spacing="trailing")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dpm_solver_orders_converge_faster(target):
    """At a fixed budget of 30 model calls the error falls with the order."""
    mean, cov = target
    schedule = VPSchedule()
    model = gaussian_score(mean, cov, schedule, "eps")
    z = mridpm.randn((2000, D), generator=mridpm.Generator(1))
    ref = sample_dpm_solver(model, z, schedule, steps=200, order=3, denoise=False)
    errors = [_rel(sample_dpm_solver(model, z, schedule, steps=30 // k, order=k, denoise=False), ref)
              for k in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2], errors


def test_progress_and_callback_report_each_step(target, capsys):
    mean, cov = target
    model = gaussian_score(mean, cov, LINEAR, "eps")
    seen = []
    sample_ddim(model, torch.zeros(2, D), LINEAR, steps=7, callback=seen.append, progress=True)
    assert [s["i"] for s in seen] == list(range(7))
    assert {"x", "t", "denoised"} <= set(seen[0])
    assert seen[-1]["t"] == 0


BAD = [
    (TypeError, "DiscreteSchedule", lambda m: sample_ddim(m, torch.zeros(2, D), VPSchedule())),
    (TypeError, "continuous schedule", lambda m: sample_ode(m, torch.zeros(2, D), LINEAR)),
    (ValueError, "unknown prediction", lambda m: sample_ddim(m, torch.zeros(2, D), LINEAR, prediction="noise")),
    (ValueError, "training steps", lambda m: sample_ddpm(m, torch.zeros(2, D), LINEAR, steps=2000)),
    (ValueError, "strictly decrease", lambda m: sample_ddim(m, torch.zeros(2, D), LINEAR, timesteps=[5, 10])),
    (ValueError, "eta", lambda m: sample_ddim(m, torch.zeros(2, D), LINEAR, eta=-1.0)),
    (ValueError, "variance", lambda m: sample_ddpm(m, torch.zeros(2, D), LINEAR, variance="large")),
    (ValueError, "method", lambda m: sample_ode(m, torch.zeros(2, D), VPSchedule(), method="rk4")),
    (ValueError, "iterations", lambda m: invert_ddim(m, torch.zeros(2, D), LINEAR, iterations=0)),
    (ValueError, "order", lambda m: sample_dpmpp(m, torch.zeros(2, D), LINEAR, order=4)),
    (ValueError, "order", lambda m: sample_dpm_solver(m, torch.zeros(2, D), VPSchedule(), order=0)),
    (ValueError, "skip", lambda m: sample_dpm_solver(m, torch.zeros(2, D), VPSchedule(), skip="karras")),
    (ValueError, "snr", lambda m: sample_pc(m, torch.zeros(2, D), VPSchedule(), snr=0.0)),
    (ValueError, "too few for the corrector", lambda m: sample_pc(m, torch.zeros(2, D), VPSchedule(), steps=5)),
    (TypeError, "VESchedule", lambda m: sample_smld(m, torch.zeros(2, D), VPSchedule())),
    (ValueError, "step_lr", lambda m: sample_smld(m, torch.zeros(2, D), VESchedule(), step_lr=-1.0)),
]


@pytest.mark.parametrize(("error", "match", "call"), BAD, ids=[b[1] for b in BAD])
def test_bad_arguments(target, error, match, call):
    mean, cov = target
    with pytest.raises(error, match=match):
        call(gaussian_score(mean, cov, LINEAR, "eps"))


def test_model_output_of_the_wrong_shape_is_reported():
    with pytest.raises(ValueError, match="shape"):
        sample_ddim(lambda x, t: x[:, :3], torch.zeros(2, D), LINEAR, steps=3)


NAN_CASES = [
    (sample_ddpm, LINEAR, {"steps": 10}),
    (sample_ddim, LINEAR, {"steps": 10}),
    (sample_dpmpp, LINEAR, {"steps": 10}),
    (sample_euler_maruyama, VPSchedule(), {"steps": 10}),
    (sample_pc, VESchedule(), {"steps": 10}),
    (sample_ode, VPSchedule(), {"steps": 10}),
    (sample_dpm_solver, VPSchedule(), {"steps": 4}),
]


@pytest.mark.parametrize(("sampler", "schedule", "options"), NAN_CASES, ids=[c[0].__name__ for c in NAN_CASES])
def test_nan_in_the_model_output_is_reported_with_its_step(sampler, schedule, options):
    calls = []

    def broken(x, t):
        calls.append(1)
        out = torch.zeros_like(x)
        return out.fill_(float("nan")) if len(calls) == 3 else out

    with pytest.raises(ValueError, match=r"NaN or Inf at call 2 of \d+ \(t = "):
        sampler(broken, torch.zeros(2, D), schedule, generator=mridpm.Generator(0), **options)
