"""Drop-in schedulers for diffusers and MONAI pipelines: change one import line, get the same images.

Each class takes its peer's arguments and reproduces its peer's timesteps and update rule (see
docs/compat.md for what is matched and to what tolerance); the update runs as one fused kernel.
"""

from mridpm.compat._base import SchedulerOutput
from mridpm.compat.ddim import DDIMScheduler, MonaiDDIMScheduler
from mridpm.compat.ddpm import DDPMScheduler, MonaiDDPMScheduler
from mridpm.compat.dpm_solver import DPMSolverMultistepScheduler
from mridpm.compat.euler import EulerDiscreteScheduler

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "MonaiDDIMScheduler",
    "MonaiDDPMScheduler",
    "SchedulerOutput",
]
