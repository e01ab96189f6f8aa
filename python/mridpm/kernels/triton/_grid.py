"""Launch grids within CUDA's limits. Every kernel here launches a flat axis-0 grid (up to 2**31 - 1
programs) and splits its program id into (row, tile) in int64, never putting a count on axes 1 and 2
(65535 programs each): a 512x512x256 volume, or axial attention over many lines, would not launch."""

from __future__ import annotations

import triton
import triton.language as tl

# The most programs per grid axis a CUDA launch takes (x, y, z); tests lower these to reach the checks.
MAX_PROGRAMS = (2**31 - 1, 65535, 65535)


def flat_grid(rows: int, n: int, block: int) -> tuple[int]:
    """The one-axis grid of rows * cdiv(n, block) programs, refused with a ValueError (not a driver
    error) past axis 0's limit."""
    programs = rows * triton.cdiv(n, block)
    if programs > MAX_PROGRAMS[0]:
        raise ValueError(f"{rows} rows of {n} elements in tiles of {block} need {programs} Triton programs; "
                         f"a launch takes at most {MAX_PROGRAMS[0]}")
    return (programs,)


def within_limits(grid: tuple[int, ...]) -> bool:
    """True when every axis of grid is within MAX_PROGRAMS."""
    return len(grid) <= 3 and all(0 <= n <= cap for n, cap in zip(grid, MAX_PROGRAMS[: len(grid)], strict=True))


@triton.jit
def row_and_tile(tiles):
    """This program's (row, tile) on a flat_grid of `tiles` tiles per row, both int64 so that offsets
    built from them cannot overflow 32 bits."""
    pid = tl.program_id(0).to(tl.int64)
    return pid // tiles, pid % tiles
