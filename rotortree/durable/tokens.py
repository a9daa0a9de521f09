"""What is durable: the state a tree shares with its tokens and finalizer,
and the tokens inserts return."""

from __future__ import annotations

import asyncio
import errno as _errno
import threading
import time
from typing import Any, Generator, Optional

from ..errors import ArgumentTypeError, DurabilityError, InvalidArgumentError


class SyncState:
    """What is durable, shared by a tree, its tokens and its finalizer."""

    __slots__ = ("cond", "synced", "written", "error", "closed", "reported", "leading")

    def __init__(self, synced: int) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.synced = synced      # every entry with seq <= synced is durable
        self.written = synced     # highest seq written to the WAL
        self.error: Optional[DurabilityError] = None
        self.closed = False
        self.reported = False     # the error was raised to a caller at least once
        self.leading = False      # an fsync round (group commit) is running

    def advance(self, seq: int) -> None:
        with self.cond:
            if seq > self.synced:
                self.synced = seq
            self.cond.notify_all()

    def fail(self, error: DurabilityError) -> None:
        with self.cond:
            if self.error is None:
                self.error = error
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

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
        raising as :meth:`wait` does. An entry already durable costs no
        thread; otherwise :meth:`wait` runs in the event loop's default
        executor, so the loop keeps serving other tasks (use
        ``asyncio.wait_for(token, seconds)`` for a deadline; a cancelled
        await leaves that thread waiting until the entry is durable or the
        tree closes)."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> bool:
        if self._state.synced >= self.seq:
            return True
        return await asyncio.get_running_loop().run_in_executor(None, self.wait)

    def __repr__(self) -> str:
        return f"<DurabilityToken seq={self.seq} durable={self.durable}>"
