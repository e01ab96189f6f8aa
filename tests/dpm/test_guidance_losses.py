"""Guidance and training losses, against exact Gaussian-mixture quantities."""

import pytest
import torch

import mridpm
from mridpm.dpm import (
    PREDICTIONS,
    DiscreteSchedule,
    VPSchedule,
    classifier_free,
    classifier_guidance,
    convert,
    diffusion_loss,
    drop_condition,
    dsm_loss,
    sample_ddim,
)
from mridpm.nets.analytic import GaussianMixtureScore, gaussian_score

LINEAR = DiscreteSchedule.from_name("linear")
D = 4


def _mixture(prediction="eps", schedule=LINEAR):
    means = torch.tensor([[-3.0] * D, [3.0] * D], dtype=torch.float64)
    return GaussianMixtureScore([0.5, 0.5], means, torch.full((2, D), 0.25, dtype=torch.float64), schedule, prediction)


def test_classifier_free_mixes_in_one_batched_call():
    calls = []

    def model(x, t, y):
        calls.append(x.shape[0])
        return x * 0 + y.float().reshape(-1, 1)  # output = the label

    guided = classifier_free(model, 3.0, {"y": torch.tensor(10)})
    out = guided(torch.zeros(5, D), torch.zeros(5, dtype=torch.long), y=torch.arange(5))
    assert calls == [10]
    torch.testing.assert_close(out, (10 + 3.0 * (torch.arange(5.0) - 10)).reshape(-1, 1).expand(5, D))
    with pytest.raises(ValueError, match="keys"):
        guided(torch.zeros(5, D), torch.zeros(5, dtype=torch.long), label=torch.arange(5))


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_classifier_guidance_adds_scale_times_the_gradient_to_the_score(prediction):
    model = _mixture(prediction)
    w = torch.randn(2, D, dtype=torch.float64)

    def classifier(x, t):
        return x.double() @ w.T

    scale = 2.5
    guided = classifier_guidance(model, classifier, scale, LINEAR, prediction)
    x = torch.randn(6, D)
    t = torch.tensor([10, 10, 400, 400, 900, 900])
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    out = guided(x, t, y=y)
    p = torch.softmax(x.double() @ w.T, -1)
    grad = w[y] - p @ w  # d/dx log softmax(x w^T)[y]
    for i, ti in enumerate(t.tolist()):
        alpha, sigma = LINEAR.alpha_sigma(ti)
        xi = x[i : i + 1].double()
        got = convert(out[i : i + 1].double(), xi, alpha, sigma, prediction, "score")
        want = convert(model(xi, t[i : i + 1]), xi, alpha, sigma, prediction, "score")
        torch.testing.assert_close(got, want + scale * grad[i : i + 1], rtol=1e-4, atol=1e-4 / sigma)


def test_guidance_with_the_exact_classifier_samples_one_component():
    """grad log p_t(x) + grad log p_t(y | x) = grad log p_t(x | y): guided samples come from component y."""
    model = _mixture("eps")

    def classifier(x, t):
        alpha, sigma = LINEAR.alpha_sigma(int(t[0]))
        return model.score_at(x.double(), alpha, sigma)[1].T.log()  # log responsibilities

    guided = classifier_guidance(model, classifier, 1.0, LINEAR, "eps")
    g = mridpm.Generator(0)
    x = mridpm.randn((2000, D), generator=g)
    out = sample_ddim(guided, x, LINEAR, steps=50, model_kwargs={"y": torch.ones(2000, dtype=torch.long)})
    assert float((out.mean(1) > 0).double().mean()) > 0.99
    torch.testing.assert_close(out.mean(0).double(), model.means[1], atol=0.05, rtol=0)


def test_discrete_loss_is_smallest_for_the_exact_model():
    for prediction in ("eps", "x0", "v"):
        exact = gaussian_score(torch.zeros(D), torch.ones(D) * 0.5, LINEAR, prediction)
        x0 = exact.sample(4096, torch.Generator().manual_seed(0)).float()
        good = diffusion_loss(exact, x0, LINEAR, prediction=prediction, generator=torch.Generator().manual_seed(1))
        bad = diffusion_loss(lambda x, t, m=exact: m(x, t) * 1.2, x0, LINEAR, prediction=prediction,
                             generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(good) and good < bad
    with pytest.raises(ValueError, match="dsm_loss"):
        diffusion_loss(exact, x0, LINEAR, prediction="score")


@pytest.mark.parametrize("weighting", [False, True])
def test_dsm_loss_trains_a_score_model(weighting):
    """A linear score model s(x, t) = -x * c(t) fitted by DSM approaches the exact score of N(0, v I)."""
    schedule, v = VPSchedule(), 0.3
    x0 = torch.randn(2048, D, generator=torch.Generator().manual_seed(0)) * v**0.5
    log_c = torch.nn.Parameter(torch.zeros(()))

    def model(x, t):
        return -x * log_c.exp()

    def held_out():  # the same times and noise before and after training
        return float(dsm_loss(model, x0, schedule, likelihood_weighting=weighting, t_min=0.3,
                              generator=torch.Generator().manual_seed(99)).detach())

    before = held_out()
    opt = torch.optim.Adam([log_c], lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(150):
        loss = dsm_loss(model, x0, schedule, likelihood_weighting=weighting, t_min=0.3, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert held_out() < before
    # the best single c over t in [0.3, 1] lies between the exact 1 / var_t at the ends
    ends = [1 / (a * a * v + s * s) for a, s in (schedule.alpha_sigma(0.3), schedule.alpha_sigma(1.0))]
    assert min(ends) < float(log_c.detach().exp()) < max(ends)


def test_drop_condition():
    labels = torch.arange(10_000) % 7
    dropped = drop_condition(labels, 0.2, 7, generator=torch.Generator().manual_seed(0))
    frac = float((dropped == 7).double().mean())
    assert abs(frac - 0.2) < 0.02
    assert bool(((dropped == labels) | (dropped == 7)).all())
    with pytest.raises(ValueError, match="p must"):
        drop_condition(labels, 1.5, 7)
