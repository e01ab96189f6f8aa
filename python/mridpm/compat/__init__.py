"""Drop-in schedulers for diffusers and MONAI pipelines: change one import line."""

from mridpm.compat.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    MonaiDDIMScheduler,
    MonaiDDPMScheduler,
    SchedulerOutput,
)

__all__ = [
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "MonaiDDIMScheduler",
    "MonaiDDPMScheduler",
    "SchedulerOutput",
]
