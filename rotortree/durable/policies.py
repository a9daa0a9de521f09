"""Flush and checkpoint policies of a durable tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .._validate import positive_int
from ..errors import ArgumentTypeError, InvalidArgumentError


# What an entry waits for before it is acknowledged (FlushPolicy.acknowledge).
ACKNOWLEDGE = ("record", "wal")


class FlushPolicy:
    """When the WAL is fsynced.

    * ``FlushPolicy.interval(seconds=0.010)`` (the default): a background
      thread fsyncs every ``seconds`` if anything was written, so tokens
      become durable on their own within about one interval.
    * ``FlushPolicy.manual()``: nothing is fsynced until ``flush()``,
      ``insert_durable``, a checkpoint or ``close()``; ``token.wait()`` blocks
      until one of those runs (in another thread).

    ``insert_durable`` and ``flush`` fsync immediately under both policies.

    ``acknowledge`` says what an entry waits for before it is reported
    durable (its token, ``insert_durable``, ``flush``):

    * ``"record"`` (the default): the WAL fsync, then the write and
      fdatasync of the sync record claiming the entry; two flushes in series
      per fsync round. From the moment an entry is acknowledged, its loss
      (a deleted, emptied or truncated segment) is reported by recovery as
      :class:`~rotortree.CorruptionError`.
    * ``"wal"``: the WAL fsync alone; a recorder thread writes the sync
      record afterwards, off the callers' path, at most every 10 ms (more
      often, its flush would compete with the next rounds' WAL fsyncs). The
      entry survives crashes exactly as under ``"record"``, and the record
      never claims an entry whose WAL fsync has not completed, so a crash
      never makes recovery report damage. What is weaker: until the record
      catches up (within about 10 ms plus one record write of the
      acknowledgement; ``stats()["recorded_seq"]``), losing the
      most recent acknowledged entries to damage of the WAL (not to a
      crash) is taken for a torn tail: dropped with a warning on the
      ``rotortree`` logger instead of raising. ``flush()`` and ``close()``
      return only once the record has caught up.
    """

    __slots__ = ("_interval", "_acknowledge")

    def __init__(self, interval: Optional[float], acknowledge: str = "record") -> None:
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
        if not isinstance(acknowledge, str):
            raise ArgumentTypeError(f"acknowledge must be a str, not "
                                    f"{type(acknowledge).__name__}")
        if acknowledge not in ACKNOWLEDGE:
            raise InvalidArgumentError(f"acknowledge must be one of "
                                       f"{', '.join(map(repr, ACKNOWLEDGE))}, got {acknowledge!r}")
        self._interval = interval
        self._acknowledge = acknowledge

    @classmethod
    def interval(cls, seconds: float = 0.010, *, acknowledge: str = "record") -> "FlushPolicy":
        return cls(seconds, acknowledge)

    @classmethod
    def manual(cls, *, acknowledge: str = "record") -> "FlushPolicy":
        return cls(None, acknowledge)

    @property
    def seconds(self) -> Optional[float]:
        """The interval, or None for the manual policy."""
        return self._interval

    @property
    def acknowledge(self) -> str:
        """What an entry waits for before it is reported durable: "record"
        or "wal" (see the class documentation)."""
        return self._acknowledge

    @property
    def lagged_record(self) -> bool:
        """Whether the sync record is written after acknowledging, off the
        callers' path (``acknowledge="wal"``)."""
        return self._acknowledge == "wal"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FlushPolicy) and other._interval == self._interval
                and other._acknowledge == self._acknowledge)

    def __hash__(self) -> int:
        return hash((self._interval, self._acknowledge))

    def __repr__(self) -> str:
        extra = "" if self._acknowledge == "record" else f"acknowledge={self._acknowledge!r}"
        if self._interval is None:
            return f"FlushPolicy.manual({extra})"
        return f"FlushPolicy.interval({self._interval}{', ' + extra if extra else ''})"


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
