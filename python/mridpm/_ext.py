"""Loads the compiled extension at import; without it mridpm falls back to the PyTorch reference."""

from __future__ import annotations

import warnings
from types import ModuleType


def _load() -> ModuleType | None:
    try:
        from mridpm import _C
    except ImportError as err:
        warnings.warn(
            f"mridpm._C could not be imported ({err}); every op falls back to the PyTorch reference",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _C


_EXTENSION = _load()


def extension() -> ModuleType | None:
    """The module mridpm._C, or None when it could not be imported."""
    return _EXTENSION


def cpu_built() -> bool:
    """True when the C++ CPU kernels are available."""
    return _EXTENSION is not None


def cuda_built() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return bool(_EXTENSION is not None and _EXTENSION.cuda_built)
