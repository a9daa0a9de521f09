"""Flush and checkpoint policies of a durable tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .._validate import positive_int
from ..errors import ArgumentTypeError, InvalidArgumentError


class FlushPolicy:
    """When the WAL is fsynced.

    * ``FlushPolicy.interval(seconds=0.010)`` (the default): a background
      thread fsyncs every ``seconds`` if anything was written, so tokens
      become durable on their own within about one interval.
    * ``FlushPolicy.manual()``: nothing is fsynced until ``flush()``,
      ``insert_durable``, a checkpoint or ``close()``; ``token.wait()`` blocks
      until one of those runs (in another thread).

    ``insert_durable`` and ``flush`` fsync immediately under both policies.
    """

    __slots__ = ("_interval",)

    def __init__(self, interval: Optional[float]) -> None:
        # Checked here, not only in interval(): a policy built directly with
        # a bad value would otherwise fail only inside the flusher thread.
        if interval is not None:
            if isinstance(interval, bool) or not isinstance(interval, (int, float)):
                raise ArgumentTypeError(f"interval must be a number, not "
                                        f"{type(interval).__name__}")
            if not 0 < interval <= 3600:   # also refuses NaN
                raise InvalidArgumentError(f"interval must be in (0, 3600] seconds, "
                                           f"got {interval}")
            interval = float(interval)
        self._interval = interval

    @classmethod
    def interval(cls, seconds: float = 0.010) -> "FlushPolicy":
        return cls(seconds)

    @classmethod
    def manual(cls) -> "FlushPolicy":
        return cls(None)

    @property
    def seconds(self) -> Optional[float]:
        """The interval, or None for the manual policy."""
        return self._interval

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FlushPolicy) and other._interval == self._interval

    def __hash__(self) -> int:
        return hash(self._interval)

    def __repr__(self) -> str:
        if self._interval is None:
            return "FlushPolicy.manual()"
        return f"FlushPolicy.interval({self._interval})"


@dataclass(frozen=True)
class CheckpointPolicy:
    """When checkpoints are written (besides explicit ``checkpoint()`` calls).

    * ``CheckpointPolicy.manual()``: never automatically.
    * ``CheckpointPolicy.every_entries(n)``: after every ``n`` WAL entries
      (insert / insert_many calls) since the last checkpoint.
    * ``CheckpointPolicy.memory_threshold(nbytes)``: when the nodes added
      since the last checkpoint take about ``nbytes`` of RAM (estimated as
      32 * new leaves * arity / (arity - 1)).
    * ``CheckpointPolicy.on_close()``: when the tree is closed.

    Policies combine with ``|``: ``CheckpointPolicy.every_entries(10_000) |
    CheckpointPolicy.on_close()`` checkpoints on whichever comes first, and
    on close. Automatic checkpoints run on a background thread, so inserts
    are not delayed; a failed background checkpoint is reported by the next
    write call (insert, flush, checkpoint) and retried later.

    The default of ``RotorTree.open`` is
    ``memory_threshold(64 MiB) | on_close()``.
    """

    entries: Optional[int] = None
    nbytes: Optional[int] = None
    at_close: bool = False

    def __post_init__(self) -> None:
        # Validated at construction: a bad threshold found only when an
        # insert compares against it would fail after the insert committed.
        for name in ("entries", "nbytes"):
            value = getattr(self, name)
            if value is not None:
                # Stored as a plain int: a numpy integer is accepted like
                # everywhere else, and compared and printed as an int.
                object.__setattr__(self, name, positive_int(name, value))
        if not isinstance(self.at_close, bool):
            raise ArgumentTypeError(f"at_close must be a bool, not "
                                    f"{type(self.at_close).__name__}")

    @classmethod
    def manual(cls) -> "CheckpointPolicy":
        return cls()

    @classmethod
    def every_entries(cls, n: int) -> "CheckpointPolicy":
        return cls(entries=positive_int("n", n))

    @classmethod
    def memory_threshold(cls, nbytes: int) -> "CheckpointPolicy":
        return cls(nbytes=positive_int("nbytes", nbytes))

    @classmethod
    def on_close(cls) -> "CheckpointPolicy":
        return cls(at_close=True)

    def __or__(self, other: "CheckpointPolicy") -> "CheckpointPolicy":
        if not isinstance(other, CheckpointPolicy):
            return NotImplemented

        def least(a: Optional[int], b: Optional[int]) -> Optional[int]:
            return b if a is None else a if b is None else min(a, b)

        return CheckpointPolicy(least(self.entries, other.entries),
                                least(self.nbytes, other.nbytes),
                                self.at_close or other.at_close)

    @property
    def automatic(self) -> bool:
        return self.entries is not None or self.nbytes is not None

    def __repr__(self) -> str:
        parts = []
        if self.entries is not None:
            parts.append(f"CheckpointPolicy.every_entries({self.entries})")
        if self.nbytes is not None:
            parts.append(f"CheckpointPolicy.memory_threshold({self.nbytes})")
        if self.at_close:
            parts.append("CheckpointPolicy.on_close()")
        return " | ".join(parts) or "CheckpointPolicy.manual()"


DEFAULT_CHECKPOINT_POLICY = CheckpointPolicy.memory_threshold(64 << 20) | CheckpointPolicy.on_close()
