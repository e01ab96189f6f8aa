"""Counter-based noise state: draws are keyed by (seed, offset), as Triton's tl.randn."""

from __future__ import annotations

_U64 = 1 << 64


class Generator:
    """A Philox seed and an element offset that advances by the number of elements drawn.

    Element i of a draw is the normal that Philox4x32-10 and Box-Muller give for the
    counter offset + i, so the same (seed, offset) yields the same noise on every backend.
    """

    def __init__(self, seed: int = 0, offset: int = 0) -> None:
        self.manual_seed(seed)
        self.offset = offset

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def offset(self) -> int:
        return self._offset

    @offset.setter
    def offset(self, value: int) -> None:
        value = _as_int("offset", value)
        if not 0 <= value < 1 << 63:
            raise ValueError(f"offset must lie in [0, 2**63), got {value}")
        self._offset = value

    def manual_seed(self, seed: int) -> Generator:
        """Sets the seed (any integer, taken modulo 2**64) and rewinds the offset to 0."""
        self._seed = _as_int("seed", seed) % _U64
        self._offset = 0
        return self

    def reserve(self, n: int) -> tuple[int, int]:
        """Returns (seed, offset) for a draw of n elements and advances the offset past them."""
        n = _as_int("n", n)
        if n < 0:
            raise ValueError(f"cannot reserve a negative number of elements ({n})")
        start = self._offset
        self.offset = start + n
        return self._seed, start

    def state_dict(self) -> dict[str, int]:
        """The state, for checkpoints."""
        return {"seed": self._seed, "offset": self._offset}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Restores a state from state_dict()."""
        self.manual_seed(state["seed"])
        self.offset = state["offset"]

    def clone(self) -> Generator:
        """An independent copy at the same position."""
        return Generator(self._seed, self._offset)

    def __repr__(self) -> str:
        return f"mridpm.Generator(seed={self._seed}, offset={self._offset})"


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)  # type: ignore[call-overload]


default_generator = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Seeds the default generator used when an op is given none."""
    return default_generator.manual_seed(seed)
