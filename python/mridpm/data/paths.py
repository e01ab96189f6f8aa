"""Output paths checked before any work: never an input, never a directory, device or other
non-regular file, never an existing file without overwrite, always in a directory we can write."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

PathLike = str | os.PathLike


def _same(a: Path, b: Path) -> bool:
    """Whether a and b name the same file (through links too), or would once a is created."""
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _writable_dir(path: Path) -> None:
    """Refuses when no file can be created at `path` (its nearest existing ancestor must be a
    directory we can create a file in; tried with a real temporary file, as root ignores modes)."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise ValueError(f"cannot write {path}: {parent} is a dangling link")
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {path}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mridpm-probe.", dir=parent)
    except OSError:
        raise ValueError(f"cannot write {path}: the directory {parent} is not writable") from None
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike] = (), *, overwrite: bool = False
                  ) -> list[Path]:
    """The outputs as paths, refused (ValueError) when one is an input (also through links), a
    directory or anything but a regular file, an existing file without overwrite, or unwritable;
    called before a command does any work, so a bad --out costs nothing and touches nothing."""
    ins = [Path(p) for p in inputs if p is not None]
    outs = [Path(p) for p in outputs]
    for out in outs:
        for inp in ins:
            if _same(out, inp):
                raise ValueError(f"the output {out} is the input {inp}; name a new file")
        if out.exists() or out.is_symlink():
            try:
                mode = out.stat().st_mode
            except OSError:
                raise ValueError(f"the output {out} is a dangling link; name a new file") from None
            if stat.S_ISDIR(mode):
                raise ValueError(f"the output {out} is a directory; name a file")
            if not stat.S_ISREG(mode):
                raise ValueError(f"the output {out} is not a regular file (a device, pipe or socket); name a new file")
            if not overwrite:
                raise ValueError(f"the output {out} exists; pass --overwrite to replace it")
        _writable_dir(out)
    seen: dict[str, Path] = {}
    for out in outs:
        key = os.path.realpath(out)
        if key in seen:
            raise ValueError(f"two outputs resolve to the same file: {seen[key]} and {out}")
        seen[key] = out
    return outs


def check_output_dir(directory: PathLike, names: Iterable[str], inputs: Iterable[PathLike] = (), *,
                     overwrite: bool = False) -> list[Path]:
    """The files `names` inside `directory`, checked as check_outputs does; the directory itself must
    be a directory or a new path."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"the output directory {d} is an existing file; name a directory")
    return check_outputs([d / n for n in names], inputs, overwrite=overwrite)
