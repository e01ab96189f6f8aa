"""Loads the compiled extension once; without it mridpm falls back to the PyTorch reference."""

from __future__ import annotations

import functools
import warnings
from types import ModuleType


@functools.cache
def extension() -> ModuleType | None:
    """The module mridpm._C, or None (with one RuntimeWarning) when it cannot be imported."""
    try:
        from mridpm import _C
    except ImportError as err:
        warnings.warn(
            f"mridpm._C could not be imported ({err}); every op falls back to the PyTorch reference",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return _C


def cpu_built() -> bool:
    """True when the C++ CPU kernels are available."""
    return extension() is not None


def cuda_built() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    ext = extension()
    return bool(ext is not None and ext.cuda_built)
