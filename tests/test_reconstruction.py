"""Posterior sampling for MRI against the exact Gaussian posterior, data consistency, warm starts,
3D with TV along slices, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from mridpm.dpm import DiscreteSchedule
from mridpm.mri.coils import birdcage_maps
from mridpm.mri.operators import Sense, SingleCoil
from mridpm.nets.analytic import gaussian_score
from mridpm.random import Generator
from mridpm.tasks import posterior as ps
from mridpm.tasks.reconstruction import METHODS, check_problem, per_coil, reconstruct

H, W, N = 6, 8, 3000
SIGMA = 0.05
SCHEDULE = DiscreteSchedule.from_name("linear", 1000)


def _real(x: torch.Tensor) -> torch.Tensor:
    """Complex images (..., H, W) -> real vectors (..., 2HW): real plane, then imaginary plane."""
    return torch.cat([x.real.flatten(-2), x.imag.flatten(-2)], -1).double()


def _prior(lengthscale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A stationary Gaussian prior on the torus (circulant covariance) with a varying mean."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1).double()
    d = (pos[:, None] - pos[None]).abs()
    d = torch.minimum(d, torch.tensor([H, W]).double() - d)
    cov1 = 0.25 * torch.exp(-(d**2).sum(-1) / (2 * lengthscale**2)) + 0.02 * torch.eye(H * W)
    mean = torch.cat([0.5 + 0.3 * torch.cos(pos[:, 1] / 2), 0.2 * torch.sin(pos[:, 0] / 2)])
    return mean, torch.block_diag(cov1, cov1)


class Gaussian:
    """y = A x + n with x ~ N(mean, cov) on real/imaginary pairs; the exact posterior in closed form."""

    def __init__(self, coils: int, lengthscale: float = 1.0, columns: tuple[int, ...] = (0, 4), seed: int = 1):
        self.mean, self.cov = _prior(lengthscale)
        mask = torch.zeros(1, 1, 1, W)
        mask[..., list(columns)] = 1
        self.op = Sense(birdcage_maps(coils, (H, W)).unsqueeze(0), mask) if coils else SingleCoil(mask[0])
        n = H * W
        basis = torch.eye(2 * n, dtype=torch.float64)
        k = self.op.forward(torch.complex(basis[:, :n], basis[:, n:]).reshape(2 * n, H, W).to(torch.complex64))
        self.A = torch.cat([k.real.reshape(2 * n, -1), k.imag.reshape(2 * n, -1)], 1).T.double()
        g = torch.Generator().manual_seed(seed)
        x = self.mean + torch.linalg.cholesky(self.cov) @ torch.randn(2 * n, dtype=torch.float64, generator=g)
        yr = self.A @ x + SIGMA * torch.randn(self.A.shape[0], dtype=torch.float64, generator=g)
        m = self.A.shape[0] // 2
        self.y = (torch.complex(yr[:m], yr[m:]).reshape(k.shape[1:]) * (k.abs().sum(0) > 0)).unsqueeze(0)
        self.y = self.y.to(torch.complex64)
        self.yr = _real(self.y.reshape(1, -1, 1)).reshape(-1)  # with the unmeasured entries zeroed
        prec = torch.linalg.inv(self.cov) + self.A.T @ self.A / SIGMA**2
        self.post_cov = torch.linalg.inv(prec)
        self.post_mean = self.post_cov @ (torch.linalg.solve(self.cov, self.mean) + self.A.T @ self.yr / SIGMA**2)
        self.model = ps.ComplexDenoiser(gaussian_score(self.mean, self.cov, SCHEDULE))

    def errors(self, samples: torch.Tensor) -> tuple[float, float]:
        """(relative error of the sample mean, ratio of the total sample variance to the exact one)."""
        flat = _real(samples.reshape(samples.shape[0], H, W))
        err = float((flat.mean(0) - self.post_mean).norm() / self.post_mean.norm())
        return err, float(flat.var(0).sum() / self.post_cov.diag().sum())


@pytest.fixture(scope="module")
def single() -> Gaussian:
    return Gaussian(coils=0)


def _kspace_model(g: Gaussian) -> ps.ComplexDenoiser:
    """The exact conditional denoiser of the unmeasured k-space given y (what MC-DDPM trains)."""
    n = H * W
    mask = g.op.mask.mask.expand(1, H, W).reshape(-1).bool()
    basis = torch.eye(2 * n, dtype=torch.float64)
    k = SingleCoil(torch.ones(1, W)).forward(torch.complex(basis[:, :n], basis[:, n:]).reshape(2 * n, H, W))
    F = torch.cat([k.real.reshape(2 * n, -1), k.imag.reshape(2 * n, -1)], 1).T  # orthogonal (2n, 2n)
    meas = torch.cat([mask, mask])
    Phi, Psi = F[~meas], F[meas]
    s_uu, s_um, s_mm = Phi @ g.cov @ Phi.T, Phi @ g.cov @ Psi.T, Psi @ g.cov @ Psi.T
    gain = s_um @ torch.linalg.inv(s_mm + SIGMA**2 * torch.eye(len(s_mm)))
    ym = Psi @ (g.A.T @ g.yr)  # the measured coordinates of y (A^T y = Psi^T y_m for a 0/1 mask)
    cond = gaussian_score(Phi @ g.mean + gain @ (ym - Psi @ g.mean), s_uu - gain @ s_um.T, SCHEDULE)

    class Model(torch.nn.Module):
        def forward(self, x: torch.Tensor, t: torch.Tensor, cond_image: torch.Tensor | None = None) -> torch.Tensor:
            u = x.double().reshape(x.shape[0], -1) @ Phi.T
            return (cond(u, t).double() @ Phi).reshape(x.shape).float()

    model = Model()
    return ps.ComplexDenoiser(lambda x, t, cond: model(x, t, cond))


EXACT = {  # method: options; each exact in theory for a single-coil stationary prior
    "projection": {},
    "pc": {},
    "langevin": {"step_size": 0.5, "langevin_steps": 5},
    "dds": {"steps": 100},
    "kspace": {},
}


@pytest.mark.parametrize("method", sorted(EXACT))
def test_exact_gaussian_posterior_single_coil(single: Gaussian, method: str) -> None:
    model = _kspace_model(single) if method == "kspace" else single.model
    r = reconstruct(single.y, single.op, model, SCHEDULE, method=method, samples=N, noise_std=SIGMA,
                    generator=Generator(0), final_dc=False, **EXACT[method])
    err, ratio = single.errors(r.samples[:, 0])
    floor = math.sqrt(float(single.post_cov.diag().sum()) / N) / float(single.post_mean.norm())
    print(f"{method}: posterior mean error {err:.4f} (Monte-Carlo floor {floor:.4f}), variance ratio {ratio:.3f}")
    assert err < 0.05
    assert 0.8 < ratio < 1.2


def test_dps_bias_is_measured(single: Gaussian) -> None:
    """DPS is not exact (its x0 gradient step has no variance model): its bias is measured here."""
    r = reconstruct(single.y, single.op, single.model, SCHEDULE, method="dps", samples=N, noise_std=SIGMA,
                    generator=Generator(0), final_dc=False)
    err, ratio = single.errors(r.samples[:, 0])
    print(f"dps single-coil: posterior mean error {err:.4f}, variance ratio {ratio:.3f}")
    assert err < 0.1 and 0.5 < ratio < 1.5


@pytest.fixture(scope="module")
def multi() -> Gaussian:
    return Gaussian(coils=2, lengthscale=0.3)


MULTI_EXACT = {  # multi-coil: the methods whose update is the exact posterior one in the many-step limit
    "dds": {"direction": "x0", "steps": 100},
    "langevin": {"step_size": 1.0, "langevin_steps": 5, "steps": 250},
}


@pytest.mark.parametrize("method", sorted(MULTI_EXACT))
def test_exact_gaussian_posterior_multicoil(multi: Gaussian, method: str) -> None:
    r = reconstruct(multi.y, multi.op, multi.model, SCHEDULE, method=method, samples=2000, noise_std=SIGMA,
                    generator=Generator(0), final_dc=False, **MULTI_EXACT[method])
    err, ratio = multi.errors(r.samples[:, 0])
    print(f"{method} 2-coil: posterior mean error {err:.4f}, variance ratio {ratio:.3f}")
    assert err < 0.05
    assert 0.8 < ratio < 1.2


def test_multicoil_approximate_methods(multi: Gaussian) -> None:
    """Multi-coil (2 coils, 4x), the methods that are approximate by construction: per-coil k-space
    replacement followed by the SENSE combination (projection, PC) is not the posterior update when
    coils overlap; DDS with the network's eps and DPS's unweighted x0 step neither. Their measured
    errors are pinned so that a regression shows (docs/reconstruction.md states the bounds)."""
    bounds = {"dps": (0.06, 0.2), "dds": (0.08, 0.3), "pc": (0.14, 0.1), "projection": (0.15, 0.15)}
    for method, (max_err, max_dev) in bounds.items():
        r = reconstruct(multi.y, multi.op, multi.model, SCHEDULE, method=method, samples=2000, noise_std=SIGMA,
                        generator=Generator(0), final_dc=False)
        err, ratio = multi.errors(r.samples[:, 0])
        print(f"{method} 2-coil: posterior mean error {err:.4f}, variance ratio {ratio:.3f}")
        assert err < max_err and abs(ratio - 1) < max_dev, (method, err, ratio)


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("pc-rss", "kspace")])
def test_noiseless_reconstructions_are_consistent(method: str) -> None:
    torch.manual_seed(0)
    maps = birdcage_maps(4, (8, 10)).unsqueeze(0)
    mask = torch.zeros(1, 1, 1, 10)
    mask[..., ::3] = 1
    op = Sense(maps, mask)
    x = torch.randn(3 if method == "tv3d" else 2, 8, 10, dtype=torch.complex64)
    y = op.forward(x)
    model = ps.ComplexDenoiser(gaussian_score(torch.zeros(160), torch.ones(160), SCHEDULE))
    r = reconstruct(y, op, model, SCHEDULE, method=method, samples=2, steps=10, generator=Generator(1))
    assert r.samples.shape == (2, *x.shape) and r.mean.shape == x.shape and r.std.shape == x.shape
    assert float((op.forward(r.samples.reshape(-1, 8, 10)) - y.repeat(2, 1, 1, 1)).abs().max()) < 1e-4 * float(
        y.abs().max())
    assert float(r.std.max()) > 0  # two different posterior samples


def test_kspace_and_rss_keep_measured_kspace(single: Gaussian) -> None:
    r = reconstruct(single.y, single.op, _kspace_model(single), SCHEDULE, method="kspace", samples=2, steps=10,
                    generator=Generator(0))
    assert float((single.op.forward(r.samples[:, 0]) - single.y).abs().max()) < 1e-4
    maps = birdcage_maps(3, (H, W)).unsqueeze(0)
    mask = torch.zeros(1, 1, 1, W)
    mask[..., ::2] = 1
    op = Sense(maps, mask)
    x = torch.randn(1, H, W, dtype=torch.complex64)
    per = per_coil(check_problem(op.forward(x), op))
    model = ps.ComplexDenoiser(gaussian_score(torch.zeros(2 * H * W), torch.ones(2 * H * W), SCHEDULE))
    g = Generator(0)
    x_T = ps.start(SCHEDULE, ps.timesteps(SCHEDULE, 10)[0], (3, H, W), per.y, g)
    xc = ps.sample_projection(model, x_T, SCHEDULE, problem=per, steps=10, generator=g)
    xc = per.project(xc, 1.0)
    assert float((per.op.forward(xc) - per.y).abs().max()) < 1e-4
    r = reconstruct(op.forward(x), op, model, SCHEDULE, method="pc-rss", samples=2, steps=10, generator=Generator(0))
    assert r.mean.shape == (1, H, W) and not r.mean.is_complex() and float(r.mean.min()) >= 0


def test_warm_start_starts_late_and_stays_exact(single: Gaussian) -> None:
    r = reconstruct(single.y, single.op, single.model, SCHEDULE, method="dds", samples=N, noise_std=SIGMA,
                    warm_start="cg", t_start=500, steps=100, generator=Generator(0), final_dc=False)
    assert r.evaluations == 51  # timesteps 500, 490, ..., 0
    err, ratio = single.errors(r.samples[:, 0])
    # approximate: the zero-filled start noised to t = 500 is not a draw from p_500 (measured here)
    print(f"dds warm start at t = 500: posterior mean error {err:.4f}, variance ratio {ratio:.3f}")
    assert err < 0.06 and 0.7 < ratio < 1.3
    with pytest.raises(ValueError, match="t_start"):
        reconstruct(single.y, single.op, single.model, SCHEDULE, warm_start="cg")
    with pytest.raises(ValueError, match="warm-start image"):
        reconstruct(single.y, single.op, single.model, SCHEDULE, warm_start=torch.zeros(1, 3, 3,
                    dtype=torch.complex64), t_start=100)


SAMPLERS = {  # every posterior sampler, with the options that exercise all of its step
    "projection": (ps.sample_projection, {"corrector_steps": 1}),
    "langevin": (ps.sample_langevin, {"langevin_steps": 2}),
    "dps": (ps.sample_dps, {}),
    "dds": (ps.sample_dds, {"direction": "x0"}),
    "kspace": (ps.sample_kspace, {}),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_posterior_samplers_report_each_step(single: Gaussian, name: str) -> None:
    """The dpm sampler shape: x in, x out, callback({"x", "i", "t", "denoised"}) once per timestep."""
    sampler, options = SAMPLERS[name]
    problem = check_problem(single.y, single.op, SIGMA)
    model = ps.CountingModel(_kspace_model(single) if name == "kspace" else single.model)
    ts = ps.timesteps(SCHEDULE, 6)
    g = Generator(0)
    x = ps.start(SCHEDULE, ts[0], (1, H, W), problem.y, g)
    seen: list[dict] = []
    out = sampler(model, x, SCHEDULE, problem=problem, timesteps=ts, generator=g, callback=seen.append,
                  progress=True, **options)
    assert [s["i"] for s in seen] == list(range(len(ts))) and [s["t"] for s in seen] == ts
    for s in seen:
        assert set(s) == {"x", "i", "t", "denoised"}
        assert s["x"].shape == s["denoised"].shape == x.shape and s["denoised"].is_complex()
    last = seen[-1]["x"] + (problem.op.adjoint(problem.y) if name == "kspace" else 0)  # kspace reports x_u
    torch.testing.assert_close(out, last, rtol=0, atol=1e-6)
    assert model.calls == {"projection": 2 * len(ts) - 1, "langevin": 2 * len(ts)}.get(name, len(ts))


def test_evaluations_count_every_model_call(single: Gaussian) -> None:
    r = reconstruct(single.y, single.op, single.model, SCHEDULE, method="pc", steps=10, generator=Generator(0))
    assert r.evaluations == 19  # 10 predictor steps, a corrector step after each but the last


def test_tv_along_slices_smooths_the_volume() -> None:
    torch.manual_seed(0)
    maps = birdcage_maps(2, (H, W)).unsqueeze(0)
    mask = torch.zeros(1, 1, 1, W)
    mask[..., ::4] = 1
    op = Sense(maps, mask)
    base = torch.randn(1, H, W, dtype=torch.complex64)
    vol = base + 0.05 * torch.randn(5, H, W, dtype=torch.complex64)  # nearly constant along the slices
    y = op.forward(vol)
    model = ps.ComplexDenoiser(gaussian_score(torch.zeros(2 * H * W), torch.ones(2 * H * W), SCHEDULE))

    def jumps(tv: float) -> float:
        r = reconstruct(y, op, model, SCHEDULE, method="tv3d", steps=20, tv=tv, rho=1.0, noise_std=0.01,
                        generator=Generator(0), final_dc=False)
        return float((r.mean[1:] - r.mean[:-1]).abs().mean())

    assert jumps(0.5) < 0.7 * jumps(0.0)


def test_bad_inputs_are_refused(single: Gaussian) -> None:
    m = single.model
    with pytest.raises(ValueError, match="unknown method"):
        reconstruct(single.y, single.op, m, SCHEDULE, method="magic")
    with pytest.raises(ValueError, match="all zeros"):
        reconstruct(torch.zeros_like(single.y), single.op, m, SCHEDULE)
    bad = single.y.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(bad, single.op, m, SCHEDULE)
    with pytest.raises(ValueError, match="0/1"):
        reconstruct(single.y, SingleCoil(torch.full((1, W), 0.5)), m, SCHEDULE)
    with pytest.raises(ValueError, match="does not fit"):
        reconstruct(single.y, SingleCoil(torch.ones(1, W + 2)), m, SCHEDULE)
    with pytest.raises(TypeError, match="complex"):
        reconstruct(single.y.real, single.op, m, SCHEDULE)
    with pytest.raises(ValueError, match="samples"):
        reconstruct(single.y, single.op, m, SCHEDULE, samples=0)
    op = Sense(birdcage_maps(3, (H, W)).unsqueeze(0), torch.ones(1, 1, 1, W))
    with pytest.raises(ValueError, match="coil maps"):
        reconstruct(torch.ones(1, 4, H, W, dtype=torch.complex64), op, m, SCHEDULE)
    with pytest.raises(TypeError, match="SingleCoil"):
        reconstruct(torch.ones(1, 3, H, W, dtype=torch.complex64), op, m, SCHEDULE, method="kspace")
    with pytest.raises(TypeError, match="Sense"):
        reconstruct(single.y, single.op, m, SCHEDULE, method="pc-rss")


def test_nonsense_is_refused_with_clear_errors(single: Gaussian) -> None:
    """Meta tensors, empty batches, steps 0 (once the default), a t_start outside the schedule or
    without a warm start, misshapen or NaN warm-start images, and k-space too large for float32."""
    m, y, op = single.model, single.y, single.op
    with pytest.raises(ValueError, match=r"^y is a meta tensor \(a shape without data\)"):
        reconstruct(y.to("meta"), op, m, SCHEDULE)
    with pytest.raises(ValueError, match=r"^y \(the measured k-space\) is empty: shape \(0, 6, 8\)$"):
        reconstruct(y[:0], op, m, SCHEDULE)
    for steps in (0, -3):
        with pytest.raises(ValueError, match=rf"^steps must be a positive integer \(None: the method's default\), "
                                             rf"got {steps}$"):
            reconstruct(y, op, m, SCHEDULE, steps=steps)
    for t_start in (-1, 1000):
        with pytest.raises(ValueError, match=rf"^t_start must be an integer timestep in \[0, 999\], got {t_start}$"):
            reconstruct(y, op, m, SCHEDULE, warm_start="cg", t_start=t_start)
    with pytest.raises(ValueError, match=r"^t_start needs a warm start"):
        reconstruct(y, op, m, SCHEDULE, t_start=100)
    image = torch.zeros(2, H, W, dtype=torch.complex64)  # two images for one measurement
    with pytest.raises(ValueError, match=r"^the warm-start image must have shape \(1, 6, 8\) \(batch, \*spatial\), "
                                         r"got \(2, 6, 8\)$"):
        reconstruct(y, op, m, SCHEDULE, warm_start=image, t_start=100, samples=2)
    with pytest.raises(ValueError, match=r"must have shape \(1, 6, 8\) \(batch, \*spatial\), got \(\)$"):
        reconstruct(y, op, m, SCHEDULE, warm_start=torch.tensor(1 + 0j), t_start=100)
    with pytest.raises(ValueError, match=r"^the warm-start image contains NaN or Inf$"):
        reconstruct(y, op, m, SCHEDULE, warm_start=torch.full((1, H, W), math.nan, dtype=torch.complex64),
                    t_start=100)
    with pytest.raises(ValueError, match=r"^the warm-start image must be a complex or real image, got torch.int64$"):
        reconstruct(y, op, m, SCHEDULE, warm_start=torch.zeros(1, H, W, dtype=torch.long), t_start=100)
    big = y / y.abs().max() * 1e30
    with pytest.raises(ValueError, match=r"^y \(the measured k-space\) has values up to 1e\+30, which overflow "
                                         r"float32 arithmetic; rescale the data"):
        reconstruct(big, op, m, SCHEDULE)
    inf = y.clone()
    inf[0, 0, 0] = complex(math.inf, 0)
    with pytest.raises(ValueError, match=r"^y \(the measured k-space\) contains NaN or Inf$"):
        reconstruct(inf, op, m, SCHEDULE)
    r = reconstruct(y, op, m, SCHEDULE, warm_start=torch.zeros(1, H, W), t_start=100, steps=10)  # a real image
    assert r.evaluations == 2  # timesteps 100 and 0 of the leading spacing 900, 800, ..., 0
