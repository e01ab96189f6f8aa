"""Atomic file writes: a temporary file in the target directory, then one rename; inside
`all_or_none()` the renames of several files wait for the block to succeed, so a command leaves
all of its outputs or none."""

from __future__ import annotations

import contextlib
import contextvars
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file
_PENDING: contextvars.ContextVar[list[tuple[str, Path]] | None] = contextvars.ContextVar("_PENDING", default=None)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path next to `path`; renames it onto `path` when the block succeeds (inside
    `all_or_none()`: when that block does) and removes it when it fails, so readers never see a
    half-written file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _MODE)  # mkstemp makes files private; the result gets the usual permissions
    except BaseException:
        _unlink(tmp)
        raise
    pending = _PENDING.get()
    if pending is None:
        os.replace(tmp, target)
    else:
        pending.append((tmp, target))


@contextlib.contextmanager
def all_or_none() -> Iterator[None]:
    """Files written with `atomic_path` in this block appear together when it succeeds; when it fails
    (an error, Ctrl-C) their temporary files are removed and no target is touched."""
    pending: list[tuple[str, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            _unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    for tmp, target in pending:
        os.replace(tmp, target)
