"""mridpm: diffusion probabilistic models for MRI, with fused kernels for every sampler step."""

from __future__ import annotations

from importlib import metadata

from mridpm import accelerate
from mridpm.info import info
from mridpm.ops import fused_step, randn, use_backend
from mridpm.random import Generator, default_generator, manual_seed

try:
    __version__ = metadata.version("mridpm")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

__all__ = ["Generator", "__version__", "accelerate", "default_generator", "fused_step", "info", "manual_seed", "randn",
           "use_backend"]
