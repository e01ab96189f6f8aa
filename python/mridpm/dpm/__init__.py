"""DPM families: schedules, parameterizations, samplers, guidance and losses on the fused step."""

from mridpm.dpm.discrete import (
    analytic_dpm_gamma,
    ddim_update,
    invert_ddim,
    sample_analytic_dpm,
    sample_ddim,
    sample_ddpm,
)
from mridpm.dpm.dpm_solver import sample_dpm_solver, sample_dpmpp, time_of_log_snr
from mridpm.dpm.guidance import classifier_free, classifier_guidance
from mridpm.dpm.likelihood import log_likelihood
from mridpm.dpm.losses import diffusion_loss, drop_condition, dsm_loss
from mridpm.dpm.parameterization import PREDICTIONS, convert
from mridpm.dpm.schedules import (
    DiscreteSchedule,
    SubVPSchedule,
    VESchedule,
    VPSchedule,
    karras_sigmas,
    make_betas,
    time_grid,
)
from mridpm.dpm.sde import langevin_step, sample_euler_maruyama, sample_ode, sample_pc, sample_smld

__all__ = [
    "PREDICTIONS",
    "DiscreteSchedule",
    "SubVPSchedule",
    "VESchedule",
    "VPSchedule",
    "analytic_dpm_gamma",
    "classifier_free",
    "classifier_guidance",
    "convert",
    "ddim_update",
    "diffusion_loss",
    "drop_condition",
    "dsm_loss",
    "invert_ddim",
    "karras_sigmas",
    "langevin_step",
    "log_likelihood",
    "make_betas",
    "sample_analytic_dpm",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpm_solver",
    "sample_dpmpp",
    "sample_euler_maruyama",
    "sample_ode",
    "sample_pc",
    "sample_smld",
    "time_grid",
    "time_of_log_snr",
]
