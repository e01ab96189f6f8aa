"""Counter-based noise state: draws are keyed by (seed, offset), as Triton's tl.randn."""

from __future__ import annotations

import torch

_U64 = 1 << 64
_U63 = 1 << 63


class Generator:
    """A Philox seed in [0, 2**64) and an element offset that advances by the number of elements drawn.

    Element i of a draw is the normal that Philox4x32-10 and Box-Muller give for the
    counter offset + i, so the same (seed, offset) yields the same noise on every backend.
    The state lives in a CPU int64 tensor (seed as its 64 bits, offset): eager code reads and
    writes it through a NumPy view (no tensor-op overhead), torch.compile'd code takes it as a
    graph input and advances it inside the graph, so a compiled loop neither bakes the offset
    in nor recompiles as it moves on.
    """

    created = 0  # generators made so far: a graph recording tells those made inside the recorded function

    def __init__(self, seed: int = 0, offset: int = 0) -> None:
        self.serial = Generator.created
        Generator.created += 1
        self.state = torch.zeros(2, dtype=torch.int64)
        self._view = self.state.numpy()
        self.manual_seed(seed)
        self.offset = offset

    @property
    def seed(self) -> int:
        return int(self._view[0]) % _U64

    @property
    def offset(self) -> int:
        return int(self._view[1])

    @offset.setter
    def offset(self, value: int) -> None:
        value = _as_int("offset", value)
        if not 0 <= value < _U63:
            raise ValueError(f"offset must lie in [0, 2**63), got {value}")
        self._view[1] = value

    def manual_seed(self, seed: int) -> Generator:
        """Sets the seed (an integer in [0, 2**64), refused outside: no silent wrapping) and rewinds the offset."""
        seed = _as_int("seed", seed)
        if not 0 <= seed < _U64:
            raise ValueError(f"seed must lie in [0, 2**64), got {seed}")
        self._view[0] = seed - _U64 if seed >= _U63 else seed
        self._view[1] = 0
        return self

    def reserve(self, n: int) -> tuple[int, int]:
        """Returns (seed, offset) for a draw of n elements and advances the offset past them."""
        if type(n) is not int:
            n = _as_int("n", n)
        if n < 0:
            raise ValueError(f"cannot reserve a negative number of elements ({n})")
        view = self._view
        start = int(view[1])
        if start + n >= _U63:
            raise ValueError(f"cannot reserve {n} elements at offset {start}: offsets must stay below 2**63")
        view[1] = start + n
        return int(view[0]) % _U64, start

    def reserve_state(self, n: int) -> torch.Tensor:
        """(seed, offset) of a draw of n elements as a new int64 tensor, the state advanced past them
        by tensor ops: the form torch.compile traces (values stay out of the graph's constants)."""
        start = self.state.clone()
        self.state[1:].add_(n)
        return start

    def state_dict(self) -> dict[str, int]:
        """The state, for checkpoints."""
        return {"seed": self.seed, "offset": self.offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restores a state from state_dict()."""
        self.manual_seed(state["seed"])
        self.offset = state["offset"]

    def clone(self) -> Generator:
        """An independent copy at the same position."""
        return Generator(self.seed, self.offset)

    def __reduce__(self) -> tuple[type[Generator], tuple[int, int]]:
        """copy, deepcopy and pickle rebuild the state (a copied view would not alias it)."""
        return Generator, (self.seed, self.offset)

    def __repr__(self) -> str:
        return f"mridpm.Generator(seed={self.seed}, offset={self.offset})"


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)  # type: ignore[call-overload]


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Seeds the default generator used when an op is given none."""
    return default_generator.manual_seed(seed)
