"""argparse types that refuse nonsense at parse time (exit 2, one line): counts, finite numbers, seeds."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

SEED_MAX = 2**64 - 1


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit 2), pointing at --help for the usage."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, text: str) -> float | int:
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An int in [lo, hi] (either bound may be open)."""
    def parse(text: str) -> int:
        v = int(_number(int, text))
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            want = f">= {lo}" if hi is None else f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be an integer {want}, got {v}")
        return v
    parse.__name__ = "integer"
    return parse


def real(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False) -> Callable[[str], float]:
    """A finite float in [lo, hi] ((lo, hi] with open_lo); NaN and Inf are refused."""
    def parse(text: str) -> float:
        v = float(_number(float, text))
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if lo is not None and (v <= lo if open_lo else v < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if open_lo else '>='} {lo}, got {v}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be <= {hi}, got {v}")
        return v
    parse.__name__ = "number"
    return parse


positive = integer(1)
count = integer(0)
seed = integer(0, SEED_MAX)
