"""MRI tasks built on the samplers, operators and networks: reconstruction first.

The entry points are also here, loaded on first use, accepting NumPy, CuPy and DLPack arrays
besides torch tensors and returning the caller's type (mridpm._arrays): mridpm.tasks.reconstruct
and the rest of ENTRY_POINTS. Their own modules' functions take tensors."""

from __future__ import annotations

import importlib
from typing import Any

from mridpm import _arrays

ENTRY_POINTS = {"reconstruct": "reconstruction", "reconstruct_prior": "reconstruction", "generate": "generation",
                "translate": "translation", "segment": "segmentation", "detect": "anomaly", "denoise": "enhancement",
                "super_resolve": "enhancement", "inpaint": "enhancement", "correct_motion": "motion"}


def __getattr__(name: str) -> Any:
    """An entry point, imported from its module and wrapped on first access."""
    if name not in ENTRY_POINTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    fn = _arrays.accepts_arrays(getattr(importlib.import_module(f"{__name__}.{ENTRY_POINTS[name]}"), name))
    globals()[name] = fn
    return fn


def __dir__() -> list[str]:
    return sorted([*globals(), *ENTRY_POINTS])
