"""mridpm: diffusion probabilistic models for MRI, with fused kernels for every sampler step."""

from __future__ import annotations

from mridpm import accelerate
from mridpm._version import __version__
from mridpm.info import info
from mridpm.ops import fused_step, randn, use_backend
from mridpm.random import Generator, default_generator, manual_seed

__all__ = ["Generator", "__version__", "accelerate", "default_generator", "fused_step", "info", "manual_seed", "randn",
           "use_backend"]
