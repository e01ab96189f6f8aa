"""Every sampler loop is free of host synchronisation, the condition for recording it as a CUDA graph
(mridpm.accelerate). Checked on the CPU: the loop runs while a graph is being "recorded" (so the final
NaN check is deferred, as it is on a GPU) under a dispatch mode that fails on every op that reads a
tensor back to the host (.item(), float(t), bool(t), .tolist()) or has a data-dependent shape
(nonzero, unique, masked_select)."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mridpm
from mridpm import _capture, dpm, mri
from mridpm.mri.coils import birdcage_maps
from mridpm.tasks import posterior as ps

SYNCS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
         torch.ops.aten._unique2.default, torch.ops.aten.unique_dim.default, torch.ops.aten.masked_select.default,
         torch.ops.aten.unique_consecutive.default}


class NoSync(TorchDispatchMode):
    """Fails on the first op that would synchronise a GPU stream with the host."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCS:
            raise AssertionError(f"host synchronisation inside the loop: {func}")
        return func(*args, **(kwargs or {}))


def linear_model(x: torch.Tensor, t: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
    """A denoiser with no host reads (its values do not matter here)."""
    return 0.3 * x


def recorded(fn):
    """fn() run as it runs while a CUDA graph is recorded, under NoSync; the deferred checks after."""
    rec = _capture.Recording(torch.device("cpu"))
    _capture.active = rec
    try:
        with NoSync():
            out = fn()
    finally:
        _capture.active = None
    rec.after_replay()
    return out


def test_the_detector_catches_reads():
    with pytest.raises(AssertionError, match="host synchronisation"):
        recorded(lambda: float(torch.ones(2).sum()))
    with pytest.raises(AssertionError, match="host synchronisation"):
        recorded(lambda: torch.arange(4).nonzero())


DISCRETE = dpm.DiscreteSchedule.from_name("linear", 1000)
X = torch.randn(2, 1, 6, 5)
SAMPLERS = [
    ("ddpm", lambda: dpm.sample_ddpm(linear_model, X, DISCRETE, steps=5, generator=mridpm.Generator(0))),
    ("ddim-eta1-clip", lambda: dpm.sample_ddim(linear_model, X, DISCRETE, steps=5, eta=1.0, clip=(-1.0, 1.0))),
    ("ddim-threshold", lambda: dpm.sample_ddim(linear_model, X, DISCRETE, steps=5, threshold=(0.9, 2.0))),
    ("analytic-dpm", lambda: dpm.sample_analytic_dpm(linear_model, X, DISCRETE, steps=5,
                                                 gamma=dict.fromkeys(range(1000), 0.5))),
    ("dpm-solver-3", lambda: dpm.sample_dpm_solver(linear_model, X, dpm.VPSchedule(), steps=6, order=3)),
    ("dpm++-2m", lambda: dpm.sample_dpmpp(linear_model, X, DISCRETE, steps=6)),
    ("euler-maruyama-vp", lambda: dpm.sample_euler_maruyama(linear_model, X, dpm.VPSchedule(), steps=5)),
    ("pc-subvp", lambda: dpm.sample_pc(linear_model, X, dpm.SubVPSchedule(), steps=50, prediction="eps")),
    ("smld", lambda: dpm.sample_smld(linear_model, X, dpm.VESchedule(), steps=3, steps_each=2)),
    ("ode-heun", lambda: dpm.sample_ode(linear_model, X, dpm.VPSchedule(), steps=5)),
]


@pytest.mark.parametrize("run", [s for _, s in SAMPLERS], ids=[n for n, _ in SAMPLERS])
def test_sampler_loop_has_no_host_synchronisation(run):
    out = recorded(run)
    assert out.shape == X.shape


def _problem(single_coil: bool = False):
    mask = torch.zeros(1, 1, 1, 6)
    mask[..., ::2] = 1
    op = mri.SingleCoil(mask[0, 0]) if single_coil else mri.Sense(birdcage_maps(3, (8, 6)).unsqueeze(0), mask)
    y = op(torch.randn(2, 8, 6, dtype=torch.complex64))
    return ps.Problem(y, op, 0.05)


DDIM = {"eta": 1.0, "clip": (-1.0, 1.0)}
POSTERIOR = [
    ("projection", ps.sample_projection, DDIM),
    ("pc", ps.sample_projection, {**DDIM, "corrector_steps": 1}),
    ("langevin", ps.sample_langevin, {}),
    ("dps", ps.sample_dps, DDIM),
    ("dds", ps.sample_dds, DDIM),
    ("kspace", ps.sample_kspace, {"eta": 1.0}),
]


@pytest.mark.parametrize(("sampler", "options"), [(s, o) for _, s, o in POSTERIOR], ids=[n for n, _, _ in POSTERIOR])
def test_posterior_sampler_loop_has_no_host_synchronisation(sampler, options):
    problem = _problem(sampler is ps.sample_kspace)
    model = ps.CountingModel(linear_model)
    x_T = ps.start(DISCRETE, ps.timesteps(DISCRETE, 4)[0], (2, 8, 6), problem.y, mridpm.Generator(0))
    x = recorded(lambda: sampler(model, x_T, DISCRETE, problem=problem, steps=4, **options))
    calls = model.calls
    assert x.shape == (2, 8, 6) and calls >= 4


@pytest.mark.parametrize("name", ["brain64c"])  # the complex-image prior
def test_dds_with_a_bundled_prior_has_no_host_synchronisation(name):
    """The reconstruction the acceleration target names: DDS with the bundled prior's UNet."""
    from mridpm.nets.priors import load_prior

    prior = load_prior(name, "cpu")
    mask = torch.zeros(1, 1, 1, 64)
    mask[..., ::3] = 1
    op = mri.Sense(birdcage_maps(4, (64, 64)).unsqueeze(0), mask)
    problem = ps.Problem(op(torch.randn(1, 64, 64, dtype=torch.complex64)), op, 0.01)
    model = ps.CountingModel(ps.ComplexDenoiser(prior.model))
    x_T = ps.start(prior.schedule, ps.timesteps(prior.schedule, 2)[0], (1, 64, 64), problem.y, mridpm.Generator(0))
    with torch.no_grad():
        x = recorded(lambda: ps.sample_dds(model, x_T, prior.schedule, problem=problem, steps=2, eta=1.0,
                                           clip=tuple(prior.info["data_range"]), prediction=prior.prediction))
    calls = model.calls
    assert x.shape == (1, 64, 64) and calls == 2
