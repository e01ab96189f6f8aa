"""Property-based fuzz of every entry point of mridpm._C, run as a script in its own process.

tests/ops/test_fuzz_extension.py runs it with fixed, derandomized draws (a crash then fails that test
instead of killing pytest); .ci/asan runs it against an AddressSanitizer build of the extension.
Hypothesis draws extents, strides, capacities, flags, dtype and op codes, thread counts, seeds,
offsets and scalars, valid and not, with real buffers: windows into byte arenas, with guard bytes
before and after each window (sometimes none, so that ASan sees the allocation end right there) and,
for strided rows, gap bytes between the rows. Input guards and gaps hold 0xFF bytes (NaN as floats,
-1 as int64), output bytes 0xA5. Every call must then

1. raise TypeError (an argument outside its C type) or ValueError (a bad status) exactly when the
   Python model below of the contract in csrc/ (common.h fits, step.h check_step, dc.h check_dc,
   cpu/poisson.cpp, bindings.cpp) says it is invalid, and return otherwise; never crash;
2. change no byte when it raises, and when it returns change bytes only in the rows it writes (out,
   and x0 with WRITE_X0): never a guard, a gap between rows, a capacity's tail, or an input;
3. when it returns, have written what the PyTorch reference computes from the inputs' rows alone
   (step_reference, dc_reference, dart_throw_reference): a read of a guard or gap shows up as NaN.

Buffers may also alias as callers alias them (out is an input of the step, out or y is k of the
blend) and, for poisson_disc, overlap arbitrarily: its indices are data, so there property 2 must
hold whatever the call reads back. *_cuda entries get device buffers when the extension has CUDA and
torch sees a GPU; without CUDA compiled in they must refuse every call.

    python tests/ops/_fuzz_worker.py [--examples N] [--seed S] [--ext PATH] [--only step,dc,poisson] [--trace]

--examples: draws per family (step, dc, poisson); --seed: draws from that seed instead of the fixed
derandomized ones; --ext (default $MRIDPM_FUZZ_EXT): fuzz the extension module at PATH (an ASan build)
instead of mridpm._C; --trace: print each call before it runs (after a crash the last line names it).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
from hypothesis import HealthCheck, Verbosity, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from mridpm.mri.masks import dart_throw_reference
from mridpm.ops._step_ref import step_reference
from mridpm.ops.dc import dc_reference

ENTRY_POINTS = ("step_cpu", "step_cuda", "dc_cpu", "dc_cuda", "poisson_disc")
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
INT64_MAX = INT64[1]
LIMIT = 1 << 18  # elements a buffer may really hold
IN_FILL, OUT_FILL = 0xFF, 0xA5
STEP_DTYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}
TOL = {torch.float32: (1e-5, 1e-4), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1.6e-2, 1e-2)}  # rtol, atol
EXT: ModuleType
TRACE = False
STATS: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


class Arena:
    """One allocation of bytes; the buffers of a call are windows into arenas."""

    def __init__(self, name: str, nbytes: int, device: str, fill: int):
        self.name = name
        self.bytes = torch.full((max(nbytes, 1),), fill, dtype=torch.uint8, device=device)
        self.writable: torch.Tensor | None = None  # bytes the call may write (none until marked)


@dataclass
class Buf:
    """A window of `real` elements at byte `offset` of an arena, and the (stride, capacity) passed for it."""

    arena: Arena
    offset: int
    dtype: torch.dtype
    real: int
    stride: int = 0
    capacity: int = 0
    null: bool = False

    @property
    def ptr(self) -> int:
        return 0 if self.null else self.arena.bytes.data_ptr() + self.offset

    def triple(self) -> tuple[int, int, int]:
        return self.ptr, self.stride, self.capacity

    def pair(self) -> tuple[int, int]:
        return self.ptr, self.capacity

    def elements(self, data: torch.Tensor | None = None) -> torch.Tensor:
        """The window as a typed 1-D tensor over the arena's bytes (or over a snapshot of them)."""
        data = self.arena.bytes if data is None else data
        return data[self.offset : self.offset + self.real * itemsize(self.dtype)].view(self.dtype)

    def describe(self) -> str:
        if self.null:
            return f"null(stride={self.stride}, cap={self.capacity})"
        return (f"{self.arena.name}@{self.offset}(stride={self.stride}, cap={self.capacity}, real={self.real}, "
                f"arena={self.arena.bytes.numel()})")


NO_BUFFER = (0, 0, 0)


def itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


class Draw:
    """One example's draws: Hypothesis for every choice that shapes the call, a seeded Random and torch
    Generator for guard sizes and values. Invalid variations come only in "wild" examples, so most tame
    ones run (and test the guards and the values) while wild ones test the refusals."""

    def __init__(self, data: st.DataObject):
        self.data = data
        self.wild = data.draw(st.integers(0, 99)) < 35
        self.rnd = random.Random(data.draw(st.integers(0, 2**32 - 1)))
        self.gen = torch.Generator().manual_seed(self.rnd.getrandbits(32))

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def pick(self, options: list):
        return self.data.draw(st.sampled_from(options))

    def chance(self, percent: int) -> bool:
        """A legitimate variation."""
        return self.int(0, 99) < percent

    def odd(self, percent: int) -> bool:
        """An invalid (or out-of-range) variation: in wild examples only."""
        return self.wild and self.chance(percent)

    def guard(self) -> int:
        """Guard elements beside a window: often none (ASan then watches the allocation's end), else a few."""
        return 0 if self.rnd.random() < 0.4 else self.rnd.randint(1, 24)

    def size(self, lo: int, hi: int, percent: int = 8) -> int:
        """A size in [lo, hi]; in wild examples sometimes negative, huge, or outside int64 (TypeError)."""
        if self.odd(percent):
            return self.pick([-1, -(2**63), 2**31, 2**32 + 1, 2**62, INT64_MAX, 2**63])
        return self.int(lo, hi)

    def capacity(self, need: int) -> int:
        """A capacity near the extent a call needs (a little below, exactly, above), or another one."""
        if 0 <= need <= LIMIT - 8:
            if not self.wild:
                return max(0, need + self.int(-1, 6))
            if not self.chance(25):
                return max(0, need + self.int(-3, 4))
        if self.odd(10):
            return self.pick([-1, -(2**63)])
        return self.int(0, 64)

    def stride(self, inner: int) -> int:
        if not self.wild:
            return inner if self.chance(70) else inner + self.int(1, 5)
        choice = self.int(0, 99)
        if choice < 50:
            return inner
        if choice < 70:
            return inner + self.int(1, 5)
        if choice < 85:
            return self.int(0, max(inner + 6, 0))
        return self.pick([0, -1, -3, 2**31, 2**62, INT64_MAX])

    def threads(self) -> int:
        """A *_cpu call's thread count: torch's usual ones, or odd ones (clamped by the kernels)."""
        if self.odd(3):
            return 2**31  # not an int: TypeError
        return self.pick([1, 2]) if not self.chance(40) else self.pick([INT32[1], 10**5, 64, 3, 0, -3])


def rows_index(batch: int, stride: int, inner: int, real: int) -> torch.Tensor | None:
    """Element indices of rows 0..batch-1 of `inner` elements `stride` apart, when they lie in [0, real)."""
    if batch <= 0 or inner <= 0 or stride < 0 or (batch - 1) * stride + inner > real or batch * inner > 4 * LIMIT:
        return None
    return (torch.arange(batch)[:, None] * stride + torch.arange(inner)[None, :]).reshape(-1)


def mark_writable(buf: Buf, index: torch.Tensor) -> None:
    arena = buf.arena
    if arena.writable is None:
        arena.writable = torch.zeros(arena.bytes.shape, dtype=torch.bool, device=arena.bytes.device)
    size = itemsize(buf.dtype)
    positions = buf.offset + index.to(arena.bytes.device)[:, None] * size + torch.arange(size,
                                                                                          device=arena.bytes.device)
    arena.writable[positions.reshape(-1)] = True


def new_window(d: Draw, name: str, dtype: torch.dtype, real: int, device: str, fill: int,
               arenas: list[Arena]) -> Buf:
    """A fresh arena holding one window of `real` elements between guards."""
    size = itemsize(dtype)
    lead, tail = d.guard(), d.guard()
    if lead == tail == real == 0:
        lead = 1  # an empty allocation has a null data pointer
    arena = Arena(name, (lead + real + tail) * size, device, fill)
    arenas.append(arena)
    return Buf(arena, lead * size, dtype, real)


def rows_buffer(d: Draw, name: str, dtype: torch.dtype, batch: int, inner: int, device: str, fill: int,
                arenas: list[Arena], stride: int | None = None) -> Buf:
    """A window for `batch` rows of `inner` elements: drawn stride and capacity, real memory of that capacity."""
    stride = d.stride(inner) if stride is None else stride
    need = (batch - 1) * stride + inner if batch > 0 and inner > 0 else 0
    capacity = d.capacity(need)
    real = capacity if capacity >= 0 else d.rnd.randint(0, 16)
    buf = new_window(d, name, dtype, real, device, fill, arenas)
    buf.stride, buf.capacity = stride, capacity
    buf.null = d.odd(3)
    return buf


def fill_input(buf: Buf, gen: torch.Generator, rows: torch.Tensor | None = None, kind: str = "randn") -> None:
    """Random values in the window (only in its rows when given; the gaps keep the 0xFF bytes)."""
    if buf.real == 0:
        return
    values = (torch.rand if kind == "rand" else torch.randn)(buf.real, generator=gen)
    view = buf.elements()
    if rows is None:
        view.copy_(values.to(buf.dtype))
    else:
        view[rows.to(view.device)] = values[rows].to(buf.dtype).to(view.device)  # rows may overlap (stride < inner)


def check_close(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float,
                describe: Callable[[], str]) -> None:
    """got == want within rtol and atol, NaN nowhere (torch.testing.assert_close imports too much to start fast)."""
    got, want = got.cpu(), want.cpu()
    if got.is_complex():
        got, want = torch.view_as_real(got), torch.view_as_real(want)
    got, want = got.double(), want.double()
    close = (got - want).abs() <= atol + rtol * want.abs()  # False wherever either is NaN
    if not bool(close.all()):
        bad = torch.nonzero(~close.reshape(-1)).reshape(-1)
        j = int(bad[0])
        raise AssertionError(f"{what}: {bad.numel()} of {close.numel()} values differ from the reference, first at "
                             f"{j}: {float(got.reshape(-1)[j])} vs {float(want.reshape(-1)[j])}\n{describe()}")


def snapshot(arenas: list[Arena]) -> dict[int, torch.Tensor]:
    return {id(a): a.bytes.clone() for a in arenas}


def check_bytes(arenas: list[Arena], before: dict[int, torch.Tensor], what: str) -> None:
    for arena in arenas:
        changed = arena.bytes != before[id(arena)]
        if not bool(changed.any()):
            continue
        bad = changed if arena.writable is None else changed & ~arena.writable
        if bool(bad.any()):
            where = torch.nonzero(bad).reshape(-1)
            allowed = 0 if arena.writable is None else int(arena.writable.sum())
            raise AssertionError(f"{what} changed {where.numel()} byte(s) of {arena.name} it may not write, "
                                 f"first at byte {int(where[0])} of {arena.bytes.numel()} (writable bytes: {allowed})")


def in_range(value: object, bounds: tuple[int, int]) -> bool:
    return isinstance(value, int) and bounds[0] <= value <= bounds[1]


def triples_in_range(triples: list[tuple[int, ...]]) -> bool:
    """Every (pointer, stride, capacity) element fits the int64 the bindings take."""
    return all(in_range(v, INT64) for t in triples for v in t)


def in_last(entry: str, value: object) -> bool:
    """The last argument: an int thread count for *_cpu, a uintptr_t stream for *_cuda."""
    return in_range(value, UINT64 if entry.endswith("_cuda") else INT32)


def device_for(entry: str) -> str | None:
    """Where an entry's buffers live; None: skip it (CUDA compiled in, but no GPU for its pointers)."""
    if not entry.endswith("_cuda") or not EXT.cuda_built:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def runs_kernels(entry: str) -> bool:
    return not entry.endswith("_cuda") or bool(EXT.cuda_built)


def last_argument(d: Draw, entry: str, device: str) -> int:
    if entry.endswith("_cuda"):
        return torch.cuda.current_stream().cuda_stream if device == "cuda" else 0
    return d.threads()


def call(entry: str, args: tuple, describe: Callable[[], str], expect: str | None, arenas: list[Arena],
         before: dict[int, torch.Tensor]) -> bool:
    """Runs one call and checks properties 1 and 2; True when it returned (then property 3 is checked)."""
    if TRACE:
        print(f"{entry} expect={expect or 'ok'} {describe()}", flush=True)
    cuda = entry.endswith("_cuda") and EXT.cuda_built
    try:
        getattr(EXT, entry)(*args)
        if cuda:
            torch.cuda.synchronize()
    except (TypeError, ValueError) as err:
        got = "type" if isinstance(err, TypeError) else "value"
        if got != expect:
            raise AssertionError(f"{entry} raised {err!r}, expected {expect or 'success'}: {describe()}") from err
        STATS[entry][f"refused ({type(err).__name__})"] += 1
        for a in arenas:  # a refused call writes nothing
            a.writable = None
        check_bytes(arenas, before, f"{entry} (refused)")
        return False
    if expect is not None:
        raise AssertionError(f"{entry} returned, expected a {expect} error: {describe()}")
    STATS[entry]["ran"] += 1
    check_bytes(arenas, before, entry)
    return True


# ---------------------------------------------------------------------------------------------------
# The fused step: step_cpu / step_cuda(dtype, flags, batch, inner, out, x0, inputs, params, uniform,
# seed, offset, rng, nthreads or stream)


def fits(buf: Buf, batch: int, inner: int) -> bool:
    """common.h fits(): rows 0..batch-1 of inner elements lie within the capacity."""
    if batch == 0 or inner == 0:
        return True
    if buf.ptr == 0 or buf.stride < 0 or buf.capacity < 0 or (batch > 1 and buf.stride < inner):
        return False
    return (batch - 1) * buf.stride + inner <= buf.capacity


@dataclass
class StepCase:
    entry: str
    dtype: int
    flags: int
    batch: int
    inner: int
    out: Buf | None
    x0: Buf | None
    inputs: list[Buf]
    params: Buf | None
    uniform: list[float]
    seed: int
    offset: int
    rng: Buf | None
    last: int  # thread count or stream

    def args(self) -> tuple:
        t = [NO_BUFFER if b is None else b.triple() for b in (self.out, self.x0, self.params, self.rng)]
        return (self.dtype, self.flags, self.batch, self.inner, t[0], t[1], [b.triple() for b in self.inputs], t[2],
                self.uniform, self.seed, self.offset, t[3], self.last)

    def describe(self) -> str:
        def d(b: Buf | None) -> str:
            return "none" if b is None else b.describe()

        return (f"dtype={self.dtype} flags={self.flags} batch={self.batch} inner={self.inner} out={d(self.out)} "
                f"x0={d(self.x0)} inputs=[{', '.join(d(b) for b in self.inputs)}] params={d(self.params)} "
                f"uniform={len(self.uniform)} seed={self.seed} offset={self.offset} rng={d(self.rng)} "
                f"last={self.last}")

    def expect(self) -> str | None:
        """'type', 'value' or None (success) by csrc/bindings.cpp and step.h check_step."""
        args = self.args()
        if not (in_range(self.dtype, INT32) and in_range(self.flags, INT32) and in_last(self.entry, self.last)
                and in_range(self.batch, INT64) and in_range(self.inner, INT64)
                and in_range(self.seed, UINT64) and in_range(self.offset, UINT64)
                and triples_in_range([*args[4:6], *args[6], args[7], args[11]])):
            return "type"
        if self.entry == "step_cuda" and not EXT.cuda_built:
            return "value"
        K, P = len(self.inputs), 2 * len(self.inputs) + 5
        if not 1 <= K <= 4 or (self.uniform and len(self.uniform) != P) or self.dtype not in STEP_DTYPES:
            return "value"
        if self.flags & ~15 or (self.flags & 4 and not self.flags & 1) or self.batch < 0 or self.inner < 0:
            return "value"
        if self.batch == 0 or self.inner == 0:
            return None
        out, params = self.out, self.params
        if out is None or out.ptr == 0 or (not self.uniform and (params is None or params.ptr == 0)):
            return "value"
        if not fits(out, self.batch, self.inner) or not all(fits(b, self.batch, self.inner) for b in self.inputs):
            return "value"
        if self.flags & 4 and (self.x0 is None or not fits(self.x0, self.batch, self.inner)):
            return "value"
        if not self.uniform and params is not None:
            if params.stride == 0 and params.capacity < P:
                return "value"
            if params.stride != 0 and not fits(params, self.batch, P):
                return "value"
        if self.rng is not None and self.rng.ptr != 0 and self.rng.capacity < 2:
            return "value"
        count = self.batch * self.inner
        return "value" if count > INT64_MAX or self.offset > UINT64[1] - count else None


def draw_step(d: Draw) -> tuple[StepCase | None, list[Arena]]:
    entry = d.pick(["step_cpu"] * 4 + ["step_cuda"])
    device = device_for(entry)
    if device is None:
        STATS[entry]["skipped (no GPU)"] += 1
        return None, []
    dtype = d.pick([0, 0, 1, 2]) if not d.odd(5) else d.pick([-1, 3, 255, INT32[1], 2**31])
    K = d.int(1, 4) if not d.odd(5) else d.pick([0, 5])
    flags = d.int(0, 15) if not d.odd(6) else d.pick([16, 64, -1, INT32[1], INT32[0], 2**31])
    if not d.wild and flags & 4:
        flags |= 1  # WRITE_X0 needs HAS_X0
    if d.chance(8):  # the OpenMP path: batch * inner >= 64 Ki, or 8 Ki with noise
        batch, inner = 2, d.int(4096, 36000)
        flags |= 8 if inner < 32768 else 0
    else:
        batch, inner = d.size(0, 4), d.size(0, 40)
    el = STEP_DTYPES.get(dtype, torch.float32)
    arenas: list[Arena] = []
    inputs = []
    for k in range(K):
        buf = rows_buffer(d, f"inputs[{k}]", el, batch, inner, device, IN_FILL, arenas)
        fill_input(buf, d.gen, rows_index(batch, buf.stride, inner, buf.real))
        inputs.append(buf)
    if K and d.chance(15):  # in place: out is one of the inputs
        out = inputs[d.int(0, K - 1)]
    else:
        out = rows_buffer(d, "out", el, batch, inner, device, OUT_FILL, arenas)
    x0 = None if d.chance(25) else rows_buffer(d, "x0", el, batch, inner, device, OUT_FILL, arenas)
    P = 2 * K + 5
    params, uniform = None, []
    if d.chance(40):
        uniform = torch.randn(P, generator=d.gen).tolist()
        if d.odd(8):
            uniform = uniform[:-1] if d.chance(50) else [*uniform, 0.5]
    else:
        stride = 0 if d.chance(40) else (P if not d.odd(40) else d.stride(P))
        rows = 1 if stride == 0 else batch
        params = rows_buffer(d, "params", torch.float32, rows, P, device, IN_FILL, arenas, stride=stride)
        fill_input(params, d.gen, rows_index(rows, stride, P, params.real))
    rng = None
    if d.chance(20):
        rng = new_window(d, "rng", torch.int64, d.int(0, 3) if d.wild else d.int(2, 3), device, IN_FILL, arenas)
        rng.capacity = rng.real
        rng.null = d.chance(10)
        if rng.real:
            values = [d.int(0, INT64_MAX), d.int(0, 2**20), 7][: rng.real]
            rng.elements().copy_(torch.tensor(values, dtype=torch.int64))
    seed = d.int(*UINT64) if not d.odd(3) else d.pick([-1, 2**64])
    count = max(batch, 0) * max(inner, 0)
    if d.chance(6):  # the last counters before 2**64, and past it
        offset = d.pick([UINT64[1] - count + delta for delta in (-2, -1, 0, 1, 2)])
    else:
        offset = d.int(0, 2**40) if not d.odd(3) else d.pick([-1, 2**64])
    last = last_argument(d, entry, device)
    return StepCase(entry, dtype, flags, batch, inner, out, x0, inputs, params, uniform, seed, offset, rng,
                    last), arenas


def gather_rows(buf: Buf, snap: torch.Tensor, batch: int, inner: int) -> torch.Tensor:
    index = rows_index(batch, buf.stride, inner, buf.real)
    assert index is not None
    return buf.elements(snap)[index.to(snap.device)].reshape(batch, inner)


def fuzz_step(data: st.DataObject) -> None:
    c, arenas = draw_step(Draw(data))
    if c is None:
        return
    expect = c.expect()
    valid = expect is None and runs_kernels(c.entry) and c.batch > 0 and c.inner > 0
    if valid:
        mark_writable(c.out, rows_index(c.batch, c.out.stride, c.inner, c.out.real))
        if c.flags & 4:
            mark_writable(c.x0, rows_index(c.batch, c.x0.stride, c.inner, c.x0.real))
    snaps = snapshot(arenas)
    if not call(c.entry, c.args(), c.describe, expect, arenas, snaps) or not valid:
        return
    # property 3: the reference, from the inputs' rows as they were before the call
    rows = [gather_rows(b, snaps[id(b.arena)], c.batch, c.inner) for b in c.inputs]
    P = 2 * len(c.inputs) + 5
    if c.uniform:
        params = torch.tensor([c.uniform], dtype=torch.float32, device=rows[0].device).expand(c.batch, P)
    elif c.params.stride == 0:
        params = c.params.elements(snaps[id(c.params.arena)])[:P][None].expand(c.batch, P)
    else:
        params = gather_rows(c.params, snaps[id(c.params.arena)], c.batch, P)
    seed, offset = c.seed, c.offset
    if c.rng is not None and c.rng.ptr != 0:
        r = c.rng.elements().tolist()
        seed, offset = r[0] % 2**64, offset + r[1]
    if c.flags & 8 and offset + c.batch * c.inner >= 2**63:
        STATS[c.entry]["ran (noise counters past the reference's int64)"] += 1
        return
    want, want_x0 = step_reference(rows, params, seed, offset, c.flags)
    tol = TOL[rows[0].dtype]
    got = gather_rows(c.out, c.out.arena.bytes, c.batch, c.inner)
    check_close(f"{c.entry} out", got, want, *tol, c.describe)
    if c.flags & 4:
        got_x0 = gather_rows(c.x0, c.x0.arena.bytes, c.batch, c.inner)
        check_close(f"{c.entry} x0", got_x0, want_x0, *tol, c.describe)


# ---------------------------------------------------------------------------------------------------
# Data consistency: dc_cpu / dc_cuda(op, flags, sizes[8], buffers[6], scalars[3], nthreads or stream)

DC_ROLES = ("x", "maps", "k", "y", "mask", "out")


@dataclass
class DcCase:
    entry: str
    op: int
    flags: int
    sizes: list[int]  # batch, coils, n, h, w, maps_batch, mask_batch, mask_coils
    bufs: dict[str, Buf | None]
    scalars: list[float]
    last: int

    def args(self) -> tuple:
        triples = [NO_BUFFER if self.bufs[r] is None else self.bufs[r].triple() for r in DC_ROLES]
        return self.op, self.flags, self.sizes, triples, self.scalars, self.last

    def describe(self) -> str:
        bufs = ", ".join(f"{r}={'none' if b is None else b.describe()}" for r, b in self.bufs.items())
        return f"op={self.op} flags={self.flags} sizes={self.sizes} {bufs} scalars={self.scalars} last={self.last}"

    def needs(self) -> dict[str, int]:
        """Floats each buffer must hold (dc.h check_dc), for the roles the op reads and writes."""
        batch, coils, n, _, _, mb, mkb, mkc = self.sizes
        if self.op == 0:
            return {"x": batch * n * 2, "maps": mb * coils * n * 2, "out": batch * coils * n * 2}
        if self.op == 2:
            return {"k": batch * coils * n * 2, "maps": mb * coils * n * 2, "out": batch * n * 2}
        full = batch * coils * n * 2
        return {"k": full, "y": full, "mask": mkb * mkc * n, "out": full}

    def expect(self) -> str | None:
        if not (in_range(self.op, INT32) and in_range(self.flags, INT32) and in_last(self.entry, self.last)
                and all(in_range(s, INT64) for s in self.sizes) and triples_in_range(self.args()[3])):
            return "type"
        if self.entry == "dc_cuda" and not EXT.cuda_built:
            return "value"
        batch, coils, n, h, w, mb, mkb, mkc = self.sizes
        if self.op not in (0, 1, 2) or self.flags & ~1:
            return "value"
        if batch < 0 or coils < 0 or n < 0 or h < 1 or w < 1 or mb < 1 or mkb < 1 or mkc < 1:
            return "value"
        if batch == 0 or coils == 0 or n == 0:
            return None
        if self.flags & 1 and (h * w > n or n % (h * w)):
            return "value"
        if batch * coils * n > INT64_MAX // 4:
            return "value"
        if self.op != 1 and mb not in (1, batch):
            return "value"
        if self.op == 1 and (mkb not in (1, batch) or mkc not in (1, coils)):
            return "value"
        for role, need in self.needs().items():
            b = self.bufs[role]
            if b is None or b.ptr == 0 or b.capacity < need:
                return "value"
        return None


def draw_dc(d: Draw) -> tuple[DcCase | None, list[Arena]]:
    entry = d.pick(["dc_cpu"] * 4 + ["dc_cuda"])
    device = device_for(entry)
    if device is None:
        STATS[entry]["skipped (no GPU)"] += 1
        return None, []
    op = d.int(0, 2) if not d.odd(5) else d.pick([-1, 3, INT32[1], 2**31])
    flags = d.int(0, 1) if not d.odd(5) else d.pick([2, 3, -1, 2**31])
    if d.chance(5):  # the OpenMP path: batch * coils * n >= 32 Ki
        spatial: tuple[int, ...] = (64, d.int(64, 72))
        batch, coils = 2, 4
    else:
        spatial = tuple(d.data.draw(st.lists(st.integers(1, 7), min_size=1, max_size=3)))
        batch, coils = d.size(0, 3, 4), d.size(0, 4, 4)
    n = math.prod(spatial)
    h, w = (spatial[-2], spatial[-1]) if len(spatial) >= 2 else (1, spatial[-1])
    if d.chance(15):  # other line sizes: without the sign any h, w >= 1 are valid
        h, w = (d.int(-1, 9), d.int(-1, 12)) if d.wild else (d.int(1, 9), d.int(1, 12))
    if d.odd(5):
        n = d.size(0, 3 * n, 50)

    def broadcast(full: int) -> int:
        return d.pick([1, max(full, 1)]) if not d.odd(6) else d.int(-1, 5)

    sizes = [batch, coils, n, h, w, broadcast(batch), broadcast(batch), broadcast(coils)]
    scalars = [d.data.draw(st.floats(-3, 3, width=32)) for _ in range(3)]
    case = DcCase(entry, op, flags, sizes, dict.fromkeys(DC_ROLES), scalars, last_argument(d, entry, device))
    needs = case.needs() if op in (0, 1, 2) else {"x": 0, "maps": 0, "out": 0}
    arenas: list[Arena] = []
    for role in DC_ROLES:
        if role not in needs and not d.chance(10):  # a buffer the op does not use: it must stay as it is
            continue
        if role == "out" and op == 1 and case.bufs["k"] is not None and d.chance(20):
            case.bufs["out"] = case.bufs["k"]  # in place
            continue
        if role == "y" and case.bufs["k"] is not None and d.chance(10):
            case.bufs["y"] = case.bufs["k"]  # y is k
            continue
        need = needs.get(role, 0)
        capacity = d.capacity(need if need <= LIMIT else -1)
        real = capacity if capacity >= 0 else d.rnd.randint(0, 16)
        buf = new_window(d, role, torch.float32, real, device, OUT_FILL if role == "out" else IN_FILL, arenas)
        buf.capacity = capacity
        buf.stride = d.rnd.choice([0, 0, 1, -1, INT64_MAX])  # unused by the DC kernels
        buf.null = d.odd(3)
        if role != "out":
            fill_input(buf, d.gen, kind="rand" if role == "mask" else "randn")
        case.bufs[role] = buf
    return case, arenas


def complex_rows(buf: Buf, snap: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    floats = buf.elements(snap)[: 2 * math.prod(shape)].clone()
    return torch.view_as_complex(floats.reshape(*shape, 2))


def fuzz_dc(data: st.DataObject) -> None:
    c, arenas = draw_dc(Draw(data))
    if c is None:
        return
    expect = c.expect()
    batch, coils, n, h, w, mb, mkb, mkc = c.sizes
    valid = expect is None and runs_kernels(c.entry) and batch > 0 and coils > 0 and n > 0
    if valid:
        mark_writable(c.bufs["out"], torch.arange(c.needs()["out"]))
    snaps = snapshot(arenas)
    if not call(c.entry, c.args(), c.describe, expect, arenas, snaps) or not valid:
        return
    # the kernels' sign is (-1)^(d + h + w) of the flat index split as (n / (h w), h, w): that grid's
    spatial = (n // (h * w), h, w) if c.flags & 1 else (n,)
    s = {r: snaps[id(b.arena)] for r, b in c.bufs.items() if b is not None}
    b = c.bufs
    keep, lam, ysign = c.scalars
    sign = bool(c.flags & 1)
    if c.op == 0:
        want = dc_reference("expand", complex_rows(b["x"], s["x"], (batch, *spatial)),
                            complex_rows(b["maps"], s["maps"], (mb, coils, *spatial)), None, 1, 1, 1, sign)
    elif c.op == 2:
        want = dc_reference("combine", complex_rows(b["k"], s["k"], (batch, coils, *spatial)),
                            complex_rows(b["maps"], s["maps"], (mb, coils, *spatial)), None, 1, 1, 1, sign)
    else:
        mask = b["mask"].elements(s["mask"])[: mkb * mkc * n].reshape(mkb, mkc, *spatial)
        want = dc_reference("blend", complex_rows(b["k"], s["k"], (batch, coils, *spatial)),
                            complex_rows(b["y"], s["y"], (batch, coils, *spatial)), mask, keep, lam, ysign, sign)
    got = complex_rows(b["out"], b["out"].arena.bytes, tuple(want.shape))
    check_close(c.entry, got, want, 1e-5, 1e-4, c.describe)


# ---------------------------------------------------------------------------------------------------
# Poisson-disc dart throwing: poisson_disc(h, w, radius, order, out), buffers as (pointer, capacity)


def fuzz_poisson(data: st.DataObject) -> None:
    d = Draw(data)
    h, w = d.size(1, 20), d.size(1, 20)
    if d.odd(10):
        h, w = d.int(-1, 1), d.int(-1, 3)
    n = h * w if h > 0 and w > 0 else 0
    arenas: list[Arena] = []
    caps = [d.capacity(n if n <= LIMIT else -1) for _ in range(3)]
    reals = [c if c >= 0 else d.rnd.randint(0, 16) for c in caps]
    overlap = d.chance(20)
    if overlap:  # one arena; the windows at drawn offsets (order 8-aligned, radius 4-aligned) may overlap
        span = 4 * reals[0] + 8 * reals[1] + reals[2]
        offsets = [4 * d.int(0, span // 4), 8 * d.int(0, span // 8), d.int(0, span)]
        ends = [offsets[0] + 4 * reals[0], offsets[1] + 8 * reals[1], offsets[2] + reals[2]]
        lead = 8 * d.guard()
        arena = Arena("shared", lead + max(ends) + d.guard(), "cpu", IN_FILL)
        arenas.append(arena)
        radius, order, out = (Buf(arena, lead + o, dt, r) for o, dt, r in
                              zip(offsets, (torch.float32, torch.int64, torch.uint8), reals, strict=True))
    else:
        radius = new_window(d, "radius", torch.float32, reals[0], "cpu", IN_FILL, arenas)
        order = new_window(d, "order", torch.int64, reals[1], "cpu", IN_FILL, arenas)
        out = new_window(d, "out", torch.uint8, reals[2], "cpu", OUT_FILL, arenas)
    for buf, cap in zip((radius, order, out), caps, strict=True):
        buf.capacity = cap
        buf.null = d.odd(3)
    if radius.real:
        values = d.pick([0.0, 0.5, 1.0, 2.0, 4.0, 1e30]) * (1 + torch.rand(radius.real, generator=d.gen))
        if d.odd(25):
            values[d.rnd.randrange(radius.real)] = d.pick([float("nan"), -1.0, float("inf"), -0.0, 3.4e38])
        radius.elements().copy_(values)
    if order.real:
        top = min(max(n, 1), 2**62)  # n past int64 is refused before any value is read
        values = torch.randint(0, top, (order.real,), generator=d.gen)  # repeats are valid
        if order.real >= n and d.chance(80):
            values[:n] = torch.randperm(n, generator=d.gen)
        if d.odd(25):
            values[d.rnd.randrange(order.real)] = d.pick([-1, top, top + 5, 2**40])
        order.elements().copy_(values)

    def describe() -> str:
        windows = f"radius={radius.describe()} order={order.describe()} out={out.describe()}"
        return f"h={h} w={w} {windows}" + (" (overlapping)" if overlap else "")

    if not (in_range(h, INT64) and in_range(w, INT64) and triples_in_range([b.pair() for b in (radius, order, out)])):
        expect: str | None = "type"
    elif h < 1 or w < 1 or h > INT32[1] or w > INT32[1] or h * w > INT64_MAX:
        expect = "value"
    elif any(b.ptr == 0 for b in (radius, order, out)) or min(caps) < n:
        expect = "value"
    else:
        r, o = radius.elements()[:n], order.elements()[:n]
        ok = bool(((o >= 0) & (o < n)).all()) and bool((torch.isfinite(r) & (r >= 0)).all())
        expect = None if ok else "value"
        mark_writable(out, torch.arange(n))
    args = (h, w, radius.pair(), order.pair(), out.pair())
    before = snapshot(arenas)
    if overlap and expect is None:  # the kernel reads back what it writes: either outcome, but only out's n bytes
        if TRACE:
            print(f"poisson_disc expect=either {describe()}", flush=True)
        STATS["poisson_disc"]["overlapping windows"] += 1
        try:
            EXT.poisson_disc(*args)
        except ValueError:
            STATS["poisson_disc"]["refused (ValueError)"] += 1
        else:
            STATS["poisson_disc"]["ran"] += 1
        check_bytes(arenas, before, "poisson_disc (overlapping windows)")
        return
    if not call("poisson_disc", args, describe, expect, arenas, before) or expect is not None:
        return
    with np.errstate(over="ignore"):  # radius**2 of a huge radius is inf in float32, as in the kernel
        want = dart_throw_reference(h, w, radius.elements()[:n].numpy(), order.elements()[:n].numpy())
    got = out.elements()[:n].numpy()
    if not np.array_equal(got, want):
        raise AssertionError(f"poisson_disc kept {got.sum()} points, the reference {want.sum()}: {describe()}")


# ---------------------------------------------------------------------------------------------------


def load_extension(path: str | None) -> ModuleType:
    if path is None:
        from mridpm import _C

        return _C
    spec = importlib.util.spec_from_file_location("_C", path)  # the module's init function is PyInit__C
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load an extension module from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FAMILIES = {"step": fuzz_step, "dc": fuzz_dc, "poisson": fuzz_poisson}


def main(argv: list[str] | None = None) -> int:
    global EXT, TRACE
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="draws per family")
    parser.add_argument("--seed", type=int, default=None, help="draw from this seed (default: fixed draws)")
    parser.add_argument("--ext", default=os.environ.get("MRIDPM_FUZZ_EXT") or None,
                        help="path of the extension module to fuzz (default: $MRIDPM_FUZZ_EXT, else mridpm._C)")
    parser.add_argument("--only", default=",".join(FAMILIES), help="comma-separated families: step,dc,poisson")
    parser.add_argument("--trace", action="store_true", help="print every call before it runs")
    args = parser.parse_args(argv)
    EXT, TRACE = load_extension(args.ext), args.trace
    torch.set_num_threads(1)  # the worker's own tensor work is small; the kernels get their thread counts drawn
    # Hypothesis caches in ./.hypothesis (even without a database) unless told otherwise: not in the checkout
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "mridpm-fuzz-hypothesis"))
    entries = sorted(name for name in dir(EXT) if not name.startswith("_") and callable(getattr(EXT, name)))
    if entries != sorted(ENTRY_POINTS):
        raise SystemExit(f"mridpm._C has entry points {entries}, the fuzz covers {sorted(ENTRY_POINTS)}: update it")
    print(f"fuzzing {EXT.__file__} (cuda_built={EXT.cuda_built}, GPU={torch.cuda.is_available()})", flush=True)
    for name in args.only.split(","):
        body = FAMILIES[name]
        test = given(st.data())(body)
        test = settings(max_examples=args.examples, deadline=None, database=None, derandomize=args.seed is None,
                        print_blob=False, verbosity=Verbosity.normal,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                               HealthCheck.filter_too_much, HealthCheck.large_base_example])(test)
        if args.seed is not None:
            test = hypothesis_seed(args.seed)(test)
        start = time.perf_counter()
        test()
        print(f"{name}: {args.examples} examples in {time.perf_counter() - start:.1f} s", flush=True)
    for entry in ENTRY_POINTS:
        if STATS[entry]:
            print(f"fuzzed {entry}: " + ", ".join(f"{v} {k}" for k, v in sorted(STATS[entry].items())))
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
