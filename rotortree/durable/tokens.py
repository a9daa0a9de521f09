"""What is durable: the state a tree shares with its tokens and finalizer,
and the tokens inserts return."""

from __future__ import annotations

import asyncio
import errno as _errno
import threading
import time
from typing import Any, Generator, List, Optional, Tuple

from .._native import ffi, lib
from ..errors import ArgumentTypeError, DurabilityError, InvalidArgumentError

# Gates of forked children's parents: never freed, since destroying a
# condition a parent thread waited on at the fork can block for good.
_FORKED_GATES: List[Any] = []


# The longest a new fsync round's leader waits for the last round's
# followers to queue again (see rt_sync_gate_wait), in nanoseconds; half
# the last round bounds it first, so this only caps the latency it adds
# where flushes take milliseconds.
GATHER_MAX_NS = 2_000_000


def _new_gate(synced: int) -> Any:
    gate = lib.rt_sync_gate_new(synced, GATHER_MAX_NS)
    if gate == ffi.NULL:
        raise MemoryError("cannot allocate the group commit gate")
    return ffi.gc(gate, lib.rt_sync_gate_free)


class _StateCondition(threading.Condition):
    """The sync state's condition: every notification also settles the
    coroutines awaiting tokens (SyncState.settle_awaiting), so they need no
    thread each; all changes to the state notify under this lock."""

    def __init__(self, state: "SyncState") -> None:
        super().__init__(threading.Lock())
        self._sync_state = state

    def notify_all(self) -> None:
        super().notify_all()
        self._sync_state.settle_awaiting()


class SyncState:
    """What is durable, shared by a tree, its tokens and its finalizer."""

    __slots__ = ("cond", "synced", "written", "error", "closed", "reported", "gate",
                 "awaiting")

    def __init__(self, synced: int) -> None:
        self.cond: threading.Condition = _StateCondition(self)
        # (seq, loop, future) of coroutines awaiting tokens: settled from
        # whichever thread changes the state, through the loop's own queue.
        self.awaiting: List[Tuple[int, Any, Any]] = []
        self.synced = synced      # every entry with seq <= synced is durable
        self.written = synced     # highest seq written to the WAL
        self.error: Optional[DurabilityError] = None
        self.closed = False
        self.reported = False     # the error was raised to a caller at least once
        # The fsync rounds' leader and followers (group commit, see
        # Wal._sync_upto); its durable point trails ``synced`` (raised after it).
        self.gate = _new_gate(synced)

    @property
    def leading(self) -> bool:
        """An fsync round (group commit) is running."""
        return lib.rt_sync_gate_leading(self.gate) != 0

    def advance(self, seq: int) -> None:
        with self.cond:
            if seq > self.synced:
                self.synced = seq
            self.cond.notify_all()
        lib.rt_sync_gate_end(self.gate, seq)

    def wake(self) -> None:
        """Wake every thread waiting on the condition (to see a stop)."""
        with self.cond:
            self.cond.notify_all()
        lib.rt_sync_gate_end(self.gate, 0)

    def fail(self, error: DurabilityError) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()
        lib.rt_sync_gate_fail(self.gate)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        lib.rt_sync_gate_end(self.gate, 0)

    def reset_after_fork(self) -> None:
        """In a forked child: a fresh condition and gate (a parent thread may
        have held the old ones' locks) and no awaiting coroutines (their loops
        live in the parent)."""
        self.cond = _StateCondition(self)
        self.awaiting = []
        _FORKED_GATES.append(self.gate)
        self.gate = _new_gate(self.synced)
        if self.error is not None:
            lib.rt_sync_gate_fail(self.gate)

    def settle_awaiting(self) -> None:
        """Resolve the futures of awaited tokens that are now durable or can
        no longer become durable (called with self.cond held)."""
        if not self.awaiting:
            return
        pending = []
        for seq, loop, future in self.awaiting:
            outcome: Any
            if self.synced >= seq:
                outcome = True
            elif self.error is not None or self.closed:
                outcome = self.failure(f"WAL entry {seq} is not durable")
            else:
                pending.append((seq, loop, future))
                continue
            try:
                loop.call_soon_threadsafe(_settle_future, future, outcome)
            except RuntimeError:  # the loop is closed: nobody awaits any more
                pass
        self.awaiting = pending

    def failure(self, what: str) -> DurabilityError:
        """A fresh DurabilityError for ``what``, caused by the recorded error."""
        self.reported = True
        cause = self.error
        error = DurabilityError(getattr(cause, "errno", None) or _errno.EIO,
                                f"{what}: {cause.strerror if cause else 'tree closed'}")
        error.operation = getattr(cause, "operation", None)
        error.filename = getattr(cause, "filename", None)
        error.__cause__ = cause
        return error


class DurabilityToken:
    """Returned by ``RotorTree.insert`` / ``insert_many``: tells when that
    entry is on disk. Tokens are cheap, hold no reference to the tree, and
    may be waited on from any thread."""

    __slots__ = ("_state", "seq")

    def __init__(self, state: SyncState, seq: int) -> None:
        self._state = state
        self.seq = seq  # the entry's WAL sequence number

    @property
    def durable(self) -> bool:
        """True if the entry is known to be on disk (never blocks or raises)."""
        return self._state.synced >= self.seq

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the entry is fsynced: True; False if ``timeout``
        seconds pass first. Raises :class:`DurabilityError` if the entry can
        no longer become durable (an fsync failed, or the tree was closed or
        collected without syncing it)."""
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float))):
            raise ArgumentTypeError(f"timeout must be a number of seconds or None, not "
                                    f"{type(timeout).__name__}")
        if timeout is not None and timeout != timeout:  # NaN would never expire
            raise InvalidArgumentError("timeout must not be NaN")
        state = self._state
        # Past TIMEOUT_MAX (about 292 years) is forever; inf and huge ints
        # would overflow the clock arithmetic or Condition.wait.
        deadline = (None if timeout is None
                    else time.monotonic() + min(timeout, threading.TIMEOUT_MAX))
        with state.cond:
            while True:
                if state.synced >= self.seq:
                    return True
                if state.error is not None or state.closed:
                    raise state.failure(f"WAL entry {self.seq} is not durable")
                if deadline is None:
                    state.cond.wait()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    state.cond.wait(min(remaining, threading.TIMEOUT_MAX))

    def __await__(self) -> Generator[Any, None, bool]:
        """``await token`` in a coroutine: True once the entry is fsynced,
        raising as :meth:`wait` does. No thread waits for it: the thread
        that makes the entry durable (or fails or closes the tree) resolves
        the await through the loop, so any number of awaits leave the loop's
        executor free for ``asyncio.to_thread`` calls such as ``flush``. Use
        ``asyncio.wait_for(token, seconds)`` for a deadline; cancelling an
        await is safe."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> bool:
        state = self._state
        if state.synced >= self.seq:
            return True
        future = asyncio.get_running_loop().create_future()
        with state.cond:
            if state.synced >= self.seq:
                return True
            if state.error is not None or state.closed:
                raise state.failure(f"WAL entry {self.seq} is not durable")
            state.awaiting.append((self.seq, asyncio.get_running_loop(), future))
        result: bool = await future
        return result

    def __repr__(self) -> str:
        return f"<DurabilityToken seq={self.seq} durable={self.durable}>"


def _settle_future(future: Any, outcome: Any) -> None:
    """On the awaiting loop: deliver an outcome unless the await was
    cancelled meanwhile."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
