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


def _version(v: int) -> str | None:
    return f"{v // 1000}.{v % 1000 // 10}" if v > 0 else None


def cuda_versions() -> dict[str, str | None]:
    """The CUDA version this machine's driver supports and the runtime mridpm._C was built with, as
    "major.minor" (None: no driver found, or no CUDA build): a wheel's CUDA runtime needs a driver at
    least as new as its major version (README.md, "Running the CUDA kernels")."""
    if _EXTENSION is None:
        return {"driver": None, "runtime": None}
    driver, runtime = _EXTENSION._cuda_versions()
    return {"driver": _version(driver), "runtime": _version(runtime)}


def cuda_driver_problem() -> str | None:
    """Why this machine's driver cannot run the CUDA kernels, naming both versions; None when it can
    (or CUDA is not built). Every CUDA call raises RuntimeError with this message meanwhile."""
    if _EXTENSION is None or not _EXTENSION.cuda_built:
        return None
    return _EXTENSION._cuda_driver_problem(*_EXTENSION._cuda_versions()) or None
