"""deepinv's network modules (the forward-pass peers of mridpm.nets.external) loaded without the
deepinv package's import chain, which imports torchvision; PyPI's torchvision does not import beside
the CPU torch build the tests use. Each module file is executed under a stub `deepinv` package that
holds only deepinv.models.{base, utils} and a stand-in deepinv.utils.io; no weights are downloaded."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import ModuleType

import pytest


def _root() -> Path:
    spec = importlib.util.find_spec("deepinv") if "deepinv" not in sys.modules else sys.modules["deepinv"].__spec__
    if spec is None or spec.origin is None:
        pytest.skip("deepinv is not installed (pip install --no-deps deepinv==0.5.0)")
    return Path(spec.origin).parent


def _load(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _package(name: str, path: Path) -> ModuleType:
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__spec__ = importlib.util.spec_from_file_location(name, path / "__init__.py")
        pkg.__path__ = [str(path)]  # type: ignore[attr-defined]
        sys.modules[name] = pkg
    return sys.modules[name]


def deepinv_model(module: str) -> ModuleType:
    """deepinv.models.<module> (e.g. "ncsnpp", "guided_diffusion", "diffunet", "precond")."""
    root = _root()
    _package("deepinv", root)
    _package("deepinv.utils", root / "utils")
    if "deepinv.utils.io" not in sys.modules:  # the real one imports torchvision; utils needs only this name
        io = types.ModuleType("deepinv.utils.io")
        io.DownloadError = type("DownloadError", (RuntimeError,), {})  # type: ignore[attr-defined]
        sys.modules["deepinv.utils.io"] = io
    models = _package("deepinv.models", root / "models")
    base = _load("deepinv.models.base", root / "models" / "base.py")
    models.Denoiser = base.Denoiser  # type: ignore[attr-defined]
    _load("deepinv.models.utils", root / "models" / "utils.py")
    return _load(f"deepinv.models.{module}", root / "models" / f"{module}.py")
