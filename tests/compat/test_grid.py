"""Every drop-in against its peer, step by step, over a grid of configs: every beta schedule the peer
accepts x every timestep spacing (or sigma grid) x every prediction type x clipping / thresholding on
and off x a step count that divides the 1000 training steps (4) and one that does not (7); for Euler
and DPM-Solver++ also interpolated sigmas x Karras sigmas x the other sigma grids (taking turns). The
other options (eta, set_alpha_to_one, steps_offset, variance types, solver order and type, SDE, churn, final
sigmas, zero-SNR rescaling, ...) take turns along the grid. Each step feeds both the same sample,
model output and noise; the outputs must agree to 1e-5 relative (max |ours - peer| / max |peer|).

The peers get our float64 tables (peer_check.float64_tables), so what is compared is the update rule.
Differences are relative to the larger of the peer's output and the step's input scale (peer_check.step_scale).
The configs where a peer crashes or returns NaN are tested one by one in test_schedulers.py.
"""

import itertools

import pytest
from peer_check import max_step_difference

from mridpm import compat

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:diffusers.*")  # diffusers' own numpy use

diffusers = pytest.importorskip("diffusers")
monai_schedulers = pytest.importorskip("monai.networks.schedulers")

STEPS = (4, 7)  # 4 divides the 1000 training steps, 7 does not
TOL = 1e-5
SPACINGS = ("linspace", "leading", "trailing")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
LIMITS = ({}, {"clip_sample": True}, {"thresholding": True, "sample_max_value": 1.5})
NO_LIMIT = {"clip_sample": False, "thresholding": False}
BETAS = {"linear": {}, "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012}, "squaredcos_cap_v2": {},
         "sigmoid": {}, "laplace": {}}
PEER_BETAS = ("linear", "scaled_linear", "squaredcos_cap_v2")  # what diffusers' DDIM, Euler, DPM-Solver take
WORST: dict[str, float] = {}  # the largest difference seen per scheduler (printed by -s runs)


def _turns(options: list[dict], k: int) -> dict:
    return options[k % len(options)]


def _check(name: str, cases: list[tuple[type, type, dict, int, dict]]) -> None:
    """Runs every case; collects those over the tolerance (or failing in either scheduler)."""
    failures, worst = [], 0.0
    for ours_cls, theirs_cls, config, steps, step_kwargs in cases:
        try:
            diff = max_step_difference(ours_cls(**config), theirs_cls(**config), config, steps, step_kwargs)
        except (IndexError, AssertionError, ValueError) as error:
            failures.append(f"{config} steps={steps} {step_kwargs}: {type(error).__name__}: {error}")
            continue
        worst = max(worst, diff)
        if diff > TOL:
            failures.append(f"{config} steps={steps} {step_kwargs}: {diff:.2e}")
    WORST[name] = max(WORST.get(name, 0.0), worst)
    assert not failures, f"{len(failures)} of {len(cases)} configs differ:\n" + "\n".join(failures[:20])


# ---------------------------------------------------------------------------------------------------
# DDIM and DDPM (diffusers)

DDIM_TURNS = [{"eta": 0.0}, {"eta": 0.5, "set_alpha_to_one": False}, {"eta": 1.0, "steps_offset": 1},
              {"use_clipped_model_output": True, "eta": 0.3, "clip_sample_range": 2.0},
              {"rescale_betas_zero_snr": True, "eta": 0.2}]


def _discrete_cases(ours: type, peer: type, beta: str, turns: list[dict], step_keys: tuple[str, ...] = ()) -> list:
    """DDIM/DDPM configs: the beta schedule x spacing x prediction x limits x steps, options taking turns."""
    cases = []
    axes = itertools.product(SPACINGS, PREDICTIONS, LIMITS, STEPS)
    for k, (spacing, prediction, limit, steps) in enumerate(axes):
        turn = dict(_turns(turns, k))
        if turn.get("rescale_betas_zero_snr") and prediction == "epsilon":
            turn.pop("rescale_betas_zero_snr")  # eps at abar = 0 is infinite in the peer: its own test
        step_kwargs = {key: turn.pop(key) for key in step_keys if key in turn}
        config = {"beta_schedule": beta, **BETAS[beta], "timestep_spacing": spacing, "prediction_type": prediction,
                  **NO_LIMIT, **limit, **turn}
        cases.append((ours, peer, config, steps, step_kwargs))
    return cases


def _ddim_cases(beta: str) -> list:
    return _discrete_cases(compat.DDIMScheduler, diffusers.DDIMScheduler, beta, DDIM_TURNS,
                           ("eta", "use_clipped_model_output"))


@pytest.mark.parametrize("beta", PEER_BETAS)
def test_ddim_grid_matches_diffusers(beta):
    _check("DDIMScheduler", _ddim_cases(beta))


DDPM_TURNS = [{"variance_type": v} for v in ("fixed_small", "fixed_large", "learned_range", "fixed_small_log",
                                             "learned")] + [{"steps_offset": 1, "rescale_betas_zero_snr": True}]


def _ddpm_cases(beta: str) -> list:
    return _discrete_cases(compat.DDPMScheduler, diffusers.DDPMScheduler, beta, DDPM_TURNS)


@pytest.mark.parametrize("beta", sorted(BETAS))
def test_ddpm_grid_matches_diffusers(beta):
    _check("DDPMScheduler", _ddpm_cases(beta))


# ---------------------------------------------------------------------------------------------------
# Euler and DPM-Solver++ (diffusers)

# The sigma grids: interpolated, Karras, and a third column where the others take turns
GRIDS = ({}, {"use_karras_sigmas": True}, "other")
OTHER_GRIDS = [{"interpolation_type": "log_linear"}, {"use_exponential_sigmas": True}, {"use_beta_sigmas": True}]
EULER_TURNS = [{}, {"final_sigmas_type": "sigma_min"}, {"s_churn": 4.0, "s_tmin": 0.05, "s_tmax": 20.0},
               {"timestep_type": "continuous", "steps_offset": 1}, {"sigma_min": 0.05, "sigma_max": 10.0},
               {"rescale_betas_zero_snr": True}, {"s_churn": 1.0}]


def _euler_cases(beta: str) -> list:
    cases = []
    for k, (grid, spacing, prediction, steps) in enumerate(itertools.product(GRIDS, SPACINGS, PREDICTIONS, STEPS)):
        grid = _turns(OTHER_GRIDS, k) if grid == "other" else grid
        turn = dict(_turns(EULER_TURNS, k))
        prediction = "original_sample" if prediction == "sample" and k % 2 else prediction  # diffusers' alias
        step_kwargs = {key: turn.pop(key) for key in ("s_churn", "s_tmin", "s_tmax") if key in turn}
        config = {"beta_schedule": beta, **BETAS[beta], "timestep_spacing": spacing, "prediction_type": prediction,
                  **grid, **turn}
        cases.append((compat.EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler, config, steps, step_kwargs))
    return cases


@pytest.mark.parametrize("beta", PEER_BETAS)
def test_euler_grid_matches_diffusers(beta):
    _check("EulerDiscreteScheduler", _euler_cases(beta))


DPM_GRIDS = (*({"timestep_spacing": s} for s in SPACINGS), {"use_karras_sigmas": True}, "other")
DPM_OTHER_GRIDS = [{"use_exponential_sigmas": True}, {"use_beta_sigmas": True}, {"use_lu_lambdas": True}]
DPM_TURNS = [{"solver_order": 2}, {"solver_order": 3}, {"solver_order": 1, "final_sigmas_type": "sigma_min"},
             {"algorithm_type": "sde-dpmsolver++"}, {"solver_type": "heun", "lower_order_final": False},
             {"algorithm_type": "sde-dpmsolver++", "solver_order": 3, "euler_at_final": True},
             {"solver_type": "heun", "algorithm_type": "sde-dpmsolver++", "final_sigmas_type": "sigma_min"},
             {"lambda_min_clipped": -5.1, "steps_offset": 1, "solver_order": 3},
             {"variance_type": "learned_range", "rescale_betas_zero_snr": True}]


def _dpm_cases(beta: str) -> list:
    cases = []
    limits = ({}, {"thresholding": True, "sample_max_value": 1.5})
    for k, (grid, prediction, limit, steps) in enumerate(itertools.product(DPM_GRIDS, PREDICTIONS, limits, STEPS)):
        grid = _turns(DPM_OTHER_GRIDS, k) if grid == "other" else grid
        config = {"beta_schedule": beta, **BETAS[beta], "prediction_type": prediction, **grid, **limit,
                  **_turns(DPM_TURNS, k)}
        cases.append((compat.DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler, config, steps, {}))
    return cases


@pytest.mark.parametrize("beta", PEER_BETAS)
def test_dpm_solver_grid_matches_diffusers(beta):
    _check("DPMSolverMultistepScheduler", _dpm_cases(beta))


# ---------------------------------------------------------------------------------------------------
# MONAI

MONAI_SCHEDULES = {"linear_beta": {}, "scaled_linear_beta": {"beta_start": 0.0015, "beta_end": 0.0195},
                   "sigmoid_beta": {"sig_range": 5.0}, "cosine": {"s": 0.01}}
MONAI_LIMITS = ({"clip_sample": False}, {"clip_sample": True}, {"clip_sample_min": -2.0, "clip_sample_max": 1.5})


@pytest.mark.parametrize("schedule", sorted(MONAI_SCHEDULES))
def test_monai_ddpm_grid_matches_monai(schedule):
    cases = []
    variances = ("fixed_small", "fixed_large", "learned", "learned_range")
    for k, (prediction, limit, steps) in enumerate(itertools.product(PREDICTIONS, MONAI_LIMITS, STEPS)):
        config = {"schedule": schedule, **MONAI_SCHEDULES[schedule], "prediction_type": prediction,
                  "variance_type": variances[k % 4], **limit}
        cases.append((compat.MonaiDDPMScheduler, monai_schedulers.DDPMScheduler, config, steps, {}))
    _check("MonaiDDPMScheduler", cases)


@pytest.mark.parametrize("schedule", sorted(MONAI_SCHEDULES))
def test_monai_ddim_grid_matches_monai(schedule):
    cases = []
    turns = [{"eta": 0.0}, {"eta": 0.6, "set_alpha_to_one": False}, {"eta": 1.0, "steps_offset": 3}]
    for k, (prediction, limit, steps) in enumerate(itertools.product(PREDICTIONS, MONAI_LIMITS, STEPS)):
        turn = dict(_turns(turns, k))
        step_kwargs = {"eta": turn.pop("eta")}
        config = {"schedule": schedule, **MONAI_SCHEDULES[schedule], "prediction_type": prediction, **limit, **turn}
        cases.append((compat.MonaiDDIMScheduler, monai_schedulers.DDIMScheduler, config, steps, step_kwargs))
    _check("MonaiDDIMScheduler", cases)
