"""What the ops need to know while mridpm.accelerate records a CUDA graph (or warms one up).

During capture nothing runs, and a replay re-runs the recorded kernels with the arguments they
were recorded with. So every noise draw is recorded against a device tensor (seed, base offset)
per generator, filled from the host generator before each replay; host buffers the graph copies
from are kept alive with it; checks that would read the device back run after each replay.
During warm-up the generators are only noted, so they can be rewound before capture.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mridpm.random import Generator

_U63 = 1 << 63


class Recording:
    """The state of one capture: a device (seed, offset) pair per generator, the numbers drawn
    from it per replay, the host buffers the graph reads, the checks to run after a replay."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.first_inner = Generator.created  # generators from here on are made by the recorded function
        self.draws: dict[int, tuple[Generator, torch.Tensor, list[int]]] = {}
        self.keep: list[torch.Tensor] = []
        self.checks: list[Callable[[], None]] = []

    def reserve(self, generator: Generator, n: int, device: torch.device) -> tuple[int, int, torch.Tensor | None]:
        """(seed, offset relative to the replay's base, the device state) for a draw of n numbers on
        the capture's device; work elsewhere is not recorded (it runs now) and draws from the host."""
        if device != self.device:
            return (*generator.reserve(n), None)
        entry = self.draws.get(id(generator))
        if entry is None:
            # empty, not zeros: a fill recorded here would run at every replay, after before_replay's
            entry = (generator, torch.empty(2, dtype=torch.int64, device=self.device), [0])
            self.draws[id(generator)] = entry
        drawn = entry[2]
        start = drawn[0]
        if n < 0 or start + n >= _U63:
            raise ValueError(f"cannot reserve {n} numbers after {start} in one graph")
        drawn[0] = start + n
        return generator.seed, start, entry[1]

    def upload(self, host: torch.Tensor) -> torch.Tensor:
        """host on the capture's device: a pinned copy the graph reads at every replay, kept alive."""
        pinned = host.pin_memory()
        self.keep.append(pinned)
        return pinned.to(self.device, non_blocking=True)

    def before_replay(self) -> None:
        """Writes each generator's current seed and offset to its device state (stream-ordered fills,
        which do not wait for the previous replay as a copy from pageable memory would)."""
        for generator, state, _ in self.draws.values():
            seed_bits, offset = generator.state.tolist()  # the int64 pair the kernels read
            state[0].fill_(seed_bits)
            state[1].fill_(offset)

    def after_replay(self) -> None:
        """Advances each generator past the replay's draws, then runs the deferred checks. A generator
        the recorded function made itself stays where it started: each eager call would make it anew."""
        for generator, _, drawn in self.draws.values():
            if generator.serial < self.first_inner:
                generator.offset = generator.offset + drawn[0]
        for check in self.checks:
            check()


class Warmup:
    """Notes each generator's state at its first draw, so warm-up runs can be undone."""

    def __init__(self) -> None:
        self.saved: dict[int, tuple[Generator, dict[str, int]]] = {}

    def reserve(self, generator: Generator, n: int, device: torch.device) -> tuple[int, int, None]:
        self.saved.setdefault(id(generator), (generator, generator.state_dict()))
        return (*generator.reserve(n), None)

    def rewind(self) -> None:
        for generator, state in self.saved.values():
            generator.load_state_dict(state)


active: Recording | Warmup | None = None


def reserve(generator: Generator, n: int, device: torch.device) -> tuple[int, int, torch.Tensor | None]:
    """(seed, offset, device state or None) for a draw of n numbers from generator on device."""
    if active is None:
        return (*generator.reserve(n), None)
    return active.reserve(generator, n, device)


def recording() -> Recording | None:
    """The capture in progress, if any."""
    return active if isinstance(active, Recording) else None


def to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor on device; from the host to a GPU through a pinned buffer without blocking the host
    (kept alive with the graph while one is recorded, since every replay copies from it)."""
    if device.type != "cuda" or host.device.type != "cpu":
        return host.to(device)
    rec = recording()
    if rec is not None:
        return rec.upload(host)
    return host.pin_memory().to(device, non_blocking=True)


def defer(check: Callable[[], None]) -> bool:
    """Runs check after each replay when a graph is being recorded (True), else leaves it to the caller."""
    rec = recording()
    if rec is None:
        return False
    rec.checks.append(check)
    return True
