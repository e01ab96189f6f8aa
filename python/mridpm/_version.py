"""The installed package's version, in a module of its own so that any module can read it without
importing the package's __init__ (which imports those modules)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("mridpm")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
