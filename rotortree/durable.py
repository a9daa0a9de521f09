"""Durable trees: a LeanIMT backed by a write-ahead log and checkpoints.

``RotorTree.open(path)`` opens a directory holding a tree (``create=True``
creates it). Every
insert is appended to a write-ahead log (WAL) before it reaches the in-memory
tree; a background thread (or you, with ``flush()``) fsyncs the log, and the
token an insert returns tells when its entry is on disk. Checkpoints write the
tree's new nodes to append-only level files plus a small metadata record, so
that reopening does not replay the whole history; levels below ``mmap_levels``
are then served from memory-mapped level files instead of RAM.

The file formats are described in :mod:`rotortree.storage`.

Guarantees
----------
* An entry whose token reported durable (``wait()`` returned True, or
  ``insert_durable`` / ``flush`` returned) survives a crash of the process or
  of the machine, provided fsync keeps its promise.
* Before an entry is reported durable, its sequence number is fsynced to
  the sync record (``synced``). Recovery replays the WAL after the last
  checkpoint and drops a torn tail (a frame cut short, damaged, or not the
  next entry, and everything after it) only if it lies beyond that record:
  acknowledged entries that are missing (a deleted, emptied or truncated
  segment, a damaged frame) raise :class:`~rotortree.CorruptionError`
  naming the file. What cannot be detected: the loss of entries never
  acknowledged (they may legitimately be torn), and an older copy of the
  sync record put back together with an older WAL.
* ``verify_checkpoint=True`` rehashes every stored level to the recorded
  root, so a changed node is caught even when its CRC was kept valid; the
  tree is never opened with a wrong root or a wrong stored node.
* A call that fails changes nothing: not the in-memory tree, not the data the
  files commit to, not the open descriptors (a failed insert's partial frame
  is truncated away; a failed checkpoint leaves the previous metadata record,
  the committed prefix of every level file and every WAL entry as they were,
  and deletes the WAL segment it started unless an insert already went
  there: it may leave bytes past the committed end of level files, which
  recovery ignores). The exception is ``insert_durable``,
  whose insert is done before its fsync fails. An fsync failure anywhere
  makes the tree refuse every later write (``DurabilityError``) until it is
  reopened, because after a failed fsync the kernel may have dropped the
  unsynced data ("fsyncgate"); a failed write whose partial frame could be
  truncated away does not.
* Interrupts: an exception at any point of an insert (a ``KeyboardInterrupt``
  raised as a long C call or pwrite returns, an asynchronous exception)
  leaves the batch either wholly applied, with its WAL entry and sequence
  number committed, or not applied at all, with its frame cut from the WAL;
  ``tree.size`` tells which. The append is recorded before its first side
  effect and resolved from the in-memory tree (the C insert is atomic) by
  the interrupted call, or, if that repair is interrupted too, by the next
  call, ``stats()``, ``close()`` or the finalizer. A long ``insert_many`` is
  not stopped midway: Ctrl-C is raised as soon as the current step returns.
  The entry of an interrupted call is not acknowledged; a later
  ``insert_durable`` or ``flush`` makes it durable with everything before.
* Fork: a forked child (a ``multiprocessing`` worker) closes its copies of
  the tree's descriptors at once, so the directory lock is the parent's
  alone; the child may read the tree as it was at the fork, and every write
  there raises :class:`~rotortree.ClosedTreeError`. All descriptors are
  close-on-exec.

Recovery (``RotorTree.open``)
-----------------------------
1. Lock the directory (``flock`` on ``LOCK`` and on the directory itself,
   which cannot be deleted away under an open tree); read ``meta``
   (CRC-checked always) and the sync record.
2. Map each level file; check its length; with ``verify_checkpoint`` check
   its CRC and rehash every level to the recorded root (``compute_root`` on
   the pool; level 0 and the files are read in place, a level above is
   copied once with its last node from ``meta``). Restore the tree from the
   files without hashing (levels below ``mmap_levels`` are served from the
   mappings, the rest copied).
3. Replay the WAL segments from ``wal_gen`` on, in order, frame after frame,
   while frames are valid and their sequence numbers and first indices
   continue exactly. The first bad frame (short, bad magic, bad CRC, not the
   next entry) is the torn tail; nothing after it in that segment is read.
   If the sync record (or a valid frame of a later segment, read from its
   header) says an entry beyond the replayed ones was acknowledged, that is
   :class:`~rotortree.CorruptionError`. Otherwise the torn tail is truncated
   away, later segments are deleted, and a warning is logged on the
   ``rotortree`` logger (as for every other repair). Replayed segments are
   fsynced (a crashed process may have left them in the page cache only),
   the sync record is advanced to them, and a new segment is started.

With ``read_only=True`` steps 1-3 write nothing: a shared lock on the
directory only, and a torn tail is ignored in memory (and logged), not cut.

Threads
-------
All methods may be called from any thread. Inserts are serialised by one lock
(the WAL append and the in-memory insert happen under it); fsyncs are
serialised by another, so concurrent ``insert_durable`` callers share fsyncs
(group commit); checkpoints are serialised by a third and run concurrently
with inserts (they write from a snapshot). The lock order is
checkpoint -> sync -> write.
"""

from __future__ import annotations

import errno as _errno
import fcntl
import logging
import os
import threading
import time
import weakref
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from . import _core, storage
from .storage import io as storage_io
from ._leaves import Leaves, leaf_batch, single_leaf
from ._native import check, ffi, lib, raise_status
from .errors import (
    ArgumentTypeError,
    ClosedTreeError,
    CorruptionError,
    DurabilityError,
    InvalidArgumentError,
    MaxDepthExceededError,
    NotATreeError,
    ReadOnlyTreeError,
    StorageMismatchError,
    TreeLockedError,
    TreeNotFoundError,
)
from .storage import (
    NODE,
    SEGMENT_HEADER_LEN,
    LevelRecord,
    Meta,
    level_file_name,
    level_lengths,
    segment_name,
    stored_count,
)
from .tree import LeanIMT

__all__ = ["RotorTree", "FlushPolicy", "CheckpointPolicy", "DurabilityToken"]

_LOCK_NAME = "LOCK"
# Every recovery that drops or repairs something says so here (besides
# ``tree.recovery``), so that an operator's log shows it.
_log = logging.getLogger("rotortree")
# errnos meaning "this storage cannot be written": a writable open turns them
# into ReadOnlyTreeError pointing at read_only=True.
_READ_ONLY_ERRNOS = frozenset({_errno.EROFS, _errno.EACCES, _errno.EPERM})
# What a creation interrupted before its metadata record was committed leaves.
_CREATION_LEFTOVERS = frozenset((_LOCK_NAME, storage.META_NAME + ".tmp", storage.SYNC_NAME,
                                 storage.SYNC_NAME + ".tmp"))
# WAL payload replayed into the tree per insert_many call during recovery.
_REPLAY_BATCH_BYTES = 32 << 20


# ---------------------------------------------------------------------------
# Policies


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
                _positive(name, value)
        if not isinstance(self.at_close, bool):
            raise ArgumentTypeError(f"at_close must be a bool, not "
                                    f"{type(self.at_close).__name__}")

    @classmethod
    def manual(cls) -> "CheckpointPolicy":
        return cls()

    @classmethod
    def every_entries(cls, n: int) -> "CheckpointPolicy":
        return cls(entries=_positive("n", n))

    @classmethod
    def memory_threshold(cls, nbytes: int) -> "CheckpointPolicy":
        return cls(nbytes=_positive("nbytes", nbytes))

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


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1:
        raise InvalidArgumentError(f"{name} must be >= 1, got {value}")
    return value


DEFAULT_CHECKPOINT_POLICY = CheckpointPolicy.memory_threshold(64 << 20) | CheckpointPolicy.on_close()


# ---------------------------------------------------------------------------
# Durability tokens


class _SyncState:
    """What is durable, shared by a tree, its tokens and its finalizer."""

    __slots__ = ("cond", "synced", "written", "error", "closed", "reported")

    def __init__(self, synced: int) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.synced = synced      # every entry with seq <= synced is durable
        self.written = synced     # highest seq written to the WAL
        self.error: Optional[DurabilityError] = None
        self.closed = False
        self.reported = False     # the error was raised to a caller at least once

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

    def __init__(self, state: _SyncState, seq: int) -> None:
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

    def __repr__(self) -> str:
        return f"<DurabilityToken seq={self.seq} durable={self.durable}>"


# ---------------------------------------------------------------------------
# Files owned by an open tree (shared with its finalizer)


class _Segment:
    __slots__ = ("gen", "path", "fd", "offset", "synced")

    def __init__(self, gen: int, path: str, fd: int, offset: int) -> None:
        self.gen = gen
        self.path = path
        self.fd = fd           # -1 when not open
        self.offset = offset   # where the next frame goes
        self.synced = fd < 0


# An append in progress: (LeanIMT, segment, frame offset, frame end, seq,
# size, entries since checkpoint, leaves since checkpoint), the last five
# being the values once the append is committed. A plain tuple: it is built
# on every insert.
_Pending = Tuple[LeanIMT, "_Segment", int, int, int, int, int, int]


class _Files:
    """File descriptors of an open tree. The finalizer of a tree that is
    garbage-collected without close() fsyncs and closes them. ``pending``
    is the append in progress (see RotorTree._settle)."""

    __slots__ = ("lock_fd", "dir_lock_fd", "segment", "retired", "level_fds", "sync",
                 "pending")

    def __init__(self) -> None:
        self.lock_fd: Optional[int] = None
        self.dir_lock_fd: Optional[int] = None
        self.segment: Optional[_Segment] = None
        self.retired: List[_Segment] = []
        self.level_fds: Dict[int, int] = {}
        self.sync: Optional[storage.SyncRecord] = None
        self.pending: Optional[_Pending] = None

    def segments(self) -> List[_Segment]:
        return self.retired + ([self.segment] if self.segment else [])

    def close_all(self) -> None:
        for segment in self.segments():
            if segment.fd >= 0:
                os.close(segment.fd)
                segment.fd = -1
        for fd in self.level_fds.values():
            os.close(fd)
        self.level_fds.clear()
        if self.sync is not None:
            self.sync.close()
        if self.dir_lock_fd is not None:
            os.close(self.dir_lock_fd)   # releases the directory's flock
            self.dir_lock_fd = None
        if self.lock_fd is not None:
            os.close(self.lock_fd)   # releases the flock
            self.lock_fd = None


def _finalize(files: _Files, state: _SyncState) -> None:
    """A tree was collected (or the interpreter exits) without close()."""
    try:
        pending = files.pending
        if pending is not None and pending[0].size != pending[5]:
            # An interrupted append whose batch never reached the tree: its
            # frame must not be made durable and replayed.
            files.pending = None
            storage.truncate_fd(pending[1].fd, pending[2], pending[1].path)
        written = state.written
        for segment in files.segments():
            if segment.fd >= 0 and not segment.synced:
                os.fsync(segment.fd)
        if state.error is None:
            if files.sync is not None:
                files.sync.write(written)   # acknowledged from now on
            state.advance(written)
    except DurabilityError as error:
        state.fail(error)
    except OSError as error:
        state.fail(storage.io_error("fsync", "WAL", error))
    finally:
        try:
            files.close_all()
        finally:
            state.close()


# ---------------------------------------------------------------------------
# Forked children


# Trees opened by this process. A forked child inherits their descriptors,
# and with them the directory lock: flock (and OFD) locks belong to the open
# file description, which fork shares, so a multiprocessing worker that
# outlived the parent's close() kept the tree locked. Close-on-exec does not
# help (fork does not exec), so the child drops the descriptors at once.
_open_trees: "weakref.WeakSet[RotorTree]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for tree in list(_open_trees):
        try:
            tree._detach_forked_copy()
        except Exception:   # an at-fork hook must not fail the fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------------------
# Background threads (they hold only a weak reference to the tree)


def _flusher_main(ref: "weakref.ref[RotorTree]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        tree = ref()
        if tree is None:
            return
        try:
            if tree._seq > tree._state.synced:
                tree._sync_upto(tree._seq, report=False)
        except ClosedTreeError:
            return
        except DurabilityError:
            if tree._failed is not None:
                return  # failed: tokens and the next call report it
            # A write of the sync record failed, which poisons nothing:
            # retried at the next interval, so tokens still become durable.
        finally:
            del tree


def _checkpointer_main(ref: "weakref.ref[RotorTree]", wake: threading.Event,
                       stop: threading.Event) -> None:
    while True:
        wake.wait()
        if stop.is_set():
            return
        wake.clear()
        tree = ref()
        if tree is None:
            return
        failed = False
        try:
            while not stop.is_set() and tree._checkpoint_due():
                tree._checkpoint(automatic=True)
        except ClosedTreeError:
            return
        except Exception as error:  # reported by the next write call
            failed = True
            if tree._failed is None:
                tree._background_error = error
        finally:
            del tree
        if failed and stop.wait(1.0):  # back off before retrying
            return


# ---------------------------------------------------------------------------
# The durable tree


def _is_tree_file(name: str) -> bool:
    """A WAL segment or a level file (the metadata record aside)."""
    return (storage.parse_segment_name(name) is not None
            or (name.startswith("level-") and name.endswith(".dat")))


def _leaf_bytes(leaf: object) -> bytes:
    value = single_leaf(leaf)
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return bytes(ffi.buffer(value, NODE))


class RotorTree:
    """A LeanIMT whose inserts survive crashes. Create with :meth:`open`.

    Reads (``root``, ``size``, ``len()``, ``depth``, ``level_len``,
    ``get_node``, ``snapshot()``, proofs) behave as on :class:`LeanIMT` and
    see every insert at once, durable or not: the root an insert returns is
    the in-memory root; its token says when it is on disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use RotorTree.open(path, ...) to open or create a durable tree")

    # -- opening ------------------------------------------------------------

    @classmethod
    def open(cls, path: Any, arity: Optional[int] = None, max_depth: Optional[int] = None,
             *, create: bool = False,
             flush_policy: Optional[FlushPolicy] = None,
             checkpoint_policy: Optional[CheckpointPolicy] = None,
             verify_checkpoint: bool = True, mmap_levels: int = 0,
             read_only: bool = False) -> "RotorTree":
        """Open the tree stored in directory ``path`` (str, bytes or
        os.PathLike).

        Arity and max_depth are read from the stored tree; if given, they
        must match it (:class:`StorageMismatchError` otherwise). Without a
        tree at ``path`` (the directory is missing or empty) this raises
        :class:`TreeNotFoundError` (a ``FileNotFoundError``) unless
        ``create=True``, which creates the directory and a tree of ``arity``
        (default 4) and ``max_depth`` (default 32); ``create=True`` opens an
        existing tree as it is. A directory that holds other files but no
        tree is refused (:class:`NotATreeError`, a ``FileExistsError``).

        ``flush_policy`` defaults to ``FlushPolicy.interval(0.010)``,
        ``checkpoint_policy`` to ``memory_threshold(64 MiB) | on_close()``.
        With ``verify_checkpoint`` the checkpoint's level files are
        checksummed and every level rehashed to the recorded root (in
        parallel), so any changed node is caught whatever its checksum.
        ``mmap_levels=L`` serves the checkpointed prefix of levels 0..L-1
        from memory-mapped level files instead of RAM. Every argument is
        checked before anything is created.

        ``read_only=True`` serves reads and proofs of an existing tree
        without writing anything: no lock file, no new WAL segment, no
        truncation of a torn tail (it is left on disk, ignored, and logged),
        no background threads; every write raises
        :class:`ReadOnlyTreeError`. Read-only opens share the directory
        (a shared ``flock`` on it) and exclude writable ones.

        Raises :class:`TreeLockedError` if the tree is open elsewhere (for
        writing, or for reading when opening for writing),
        :class:`CorruptionError` if its files are damaged,
        :class:`ReadOnlyTreeError` if a writable open cannot write to the
        directory (a read-only filesystem, no permission).
        """
        self = cls.__new__(cls)
        self._setup(path, arity, max_depth, create, flush_policy, checkpoint_policy,
                    verify_checkpoint, mmap_levels, read_only)
        return self

    def _setup(self, path: Any, arity: Optional[int], max_depth: Optional[int], create: bool,
               flush_policy: Optional[FlushPolicy],
               checkpoint_policy: Optional[CheckpointPolicy],
               verify_checkpoint: bool, mmap_levels: int, read_only: bool) -> None:
        for name, value in (("arity", arity), ("max_depth", max_depth)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ArgumentTypeError(f"{name} must be an int or None, not "
                                        f"{type(value).__name__}")
        # A truthy string such as "no" must not silently mean True.
        for name, flag in (("create", create), ("verify_checkpoint", verify_checkpoint),
                           ("read_only", read_only)):
            if not isinstance(flag, bool):
                raise ArgumentTypeError(f"{name} must be a bool, not {type(flag).__name__}")
        if isinstance(mmap_levels, bool) or not isinstance(mmap_levels, int):
            raise ArgumentTypeError(f"mmap_levels must be an int, not {type(mmap_levels).__name__}")
        if not 0 <= mmap_levels <= lib.RT_MAX_DEPTH_LIMIT + 1:
            raise InvalidArgumentError(f"mmap_levels must be 0..{lib.RT_MAX_DEPTH_LIMIT + 1}, "
                                       f"got {mmap_levels}")
        if flush_policy is None:
            flush_policy = FlushPolicy.interval()
        if checkpoint_policy is None:
            checkpoint_policy = DEFAULT_CHECKPOINT_POLICY
        if not isinstance(flush_policy, FlushPolicy):
            raise ArgumentTypeError(f"flush_policy must be a FlushPolicy, not "
                                    f"{type(flush_policy).__name__}")
        if not isinstance(checkpoint_policy, CheckpointPolicy):
            raise ArgumentTypeError(f"checkpoint_policy must be a CheckpointPolicy, not "
                                    f"{type(checkpoint_policy).__name__}")
        if create and read_only:
            raise InvalidArgumentError("create=True and read_only=True exclude each other: a "
                                       "read-only open never creates a tree")
        if arity is not None or max_depth is not None:
            storage.check_arity(4 if arity is None else arity,
                                32 if max_depth is None else max_depth)
        directory = os.path.abspath(storage_io.file_path(path))
        self._dir = directory
        self._read_only = read_only
        self._flush_policy = flush_policy
        self._checkpoint_policy = checkpoint_policy
        self._mmap_levels = mmap_levels
        self._imt: Optional[LeanIMT] = None
        self._lock = threading.Lock()        # WAL appends + in-memory inserts
        self._sync_lock = threading.Lock()   # fsync rounds
        self._ckpt_lock = threading.Lock()   # checkpoints, close
        self._files = _Files()
        self._state = _SyncState(0)
        self._failed: Optional[DurabilityError] = None
        self._background_error: Optional[BaseException] = None
        self._closing = False
        self._closed = False
        self._forked = False     # this object is a forked child's copy
        self._maps: Dict[int, Tuple[Any, Any, int]] = {}
        self._cold: Dict[int, int] = {}
        self._entries_since = 0
        self._leaves_since = 0
        self._checkpoints = 0
        self._threads: List[threading.Thread] = []
        self._stop = threading.Event()
        self._wake_checkpointer = threading.Event()
        self.recovery: Dict[str, Any] = {}
        try:
            self._open_files(arity, max_depth, create, verify_checkpoint)
        except BaseException as error:
            self._files.close_all()
            self._imt = None
            if (not read_only and isinstance(error, OSError)
                    and not isinstance(error, TreeLockedError)
                    and error.errno in _READ_ONLY_ERRNOS):
                raise ReadOnlyTreeError(
                    error.errno,
                    f"cannot open durable tree {directory} for writing: "
                    f"{error.strerror or error} ({error.filename or directory}); open it with "
                    f"RotorTree.open(path, read_only=True) to serve reads and proofs from "
                    f"read-only storage", error.filename or directory) from error
            raise
        self._finalizer = weakref.finalize(self, _finalize, self._files, self._state)
        _open_trees.add(self)
        if not read_only:
            self._start_threads()

    def _detach_forked_copy(self) -> None:
        """Runs in a forked child: the copy keeps the in-memory tree as of
        the fork for reads, but owns no file and refuses writes. Only the
        process that opened the tree may write its files; the child's
        fsyncs, truncates or finalizer would race with the parent's."""
        # Locks and the condition may have been held by parent threads that
        # do not exist here; they would never be released.
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._ckpt_lock = threading.Lock()
        self._state.cond = threading.Condition(threading.Lock())
        self._state.closed = True
        self._threads = []
        self._forked = True
        self._closing = True
        self._finalizer.detach()
        self._files.pending = None
        try:
            # Only this process's copies of the descriptors: the parent's stay
            # open, and the locks are released once the parent closes too.
            self._files.close_all()
        except OSError:
            pass

    def _open_files(self, arity: Optional[int], max_depth: Optional[int], create: bool,
                    verify: bool) -> None:
        started = time.perf_counter()
        directory = self._dir
        read_only = self._read_only
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise InvalidArgumentError(f"{directory} exists and is not a directory")
        # Looked at before anything is created: a mistyped path must neither
        # become a new tree nor get a LOCK file in an unrelated folder.
        if self._holds_no_tree() and not create:
            raise self._not_found()
        if read_only:
            self._files.dir_lock_fd = self._hold_directory_lock(shared=True)
        else:
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
                storage.fsync_dir(os.path.dirname(directory) or "/")
            self._lock_directory()
            tmp = os.path.join(directory, storage.META_NAME + ".tmp")
            if os.path.exists(tmp):
                _log.warning("rotortree: %s: removed %s left by an interrupted checkpoint",
                             directory, tmp)
                storage.unlink_quietly(tmp)

        meta = storage.read_meta(directory)
        if meta is None:
            strays = [n for n in os.listdir(directory) if _is_tree_file(n)]
            if strays:
                raise CorruptionError(
                    f"{directory}: the checkpoint metadata file '{storage.META_NAME}' is "
                    f"missing but tree files exist ({', '.join(sorted(strays)[:3])})",
                    os.path.join(directory, storage.META_NAME))
            # Checked again under the lock: another process may have created
            # the tree (or removed it) since _holds_no_tree looked.
            if not create:
                raise self._not_found()
            meta = Meta(4 if arity is None else arity, 32 if max_depth is None else max_depth)
            # The sync record first: the meta's flag then never promises a
            # record that is not there.
            storage.SyncRecord.create(directory, 0)
            storage.atomic_write(os.path.join(directory, storage.META_NAME), meta.encode())
        else:
            if arity is not None and arity != meta.arity:
                raise StorageMismatchError(
                    f"{directory} holds a tree of arity {meta.arity}; opened with arity {arity}")
            if max_depth is not None and max_depth != meta.max_depth:
                raise StorageMismatchError(
                    f"{directory} holds a tree of max_depth {meta.max_depth}; opened with "
                    f"max_depth {max_depth}")
        self._meta = meta
        self._arity = meta.arity
        self._max_depth = meta.max_depth
        self._capacity: int = meta.arity ** meta.max_depth
        # Checkpoint thresholds in entries and leaves (inf: never), and the
        # buffer inserts write roots into (used under self._lock only).
        policy = self._checkpoint_policy
        self._due_entries = float("inf") if policy.entries is None else policy.entries
        self._due_leaves = float("inf") if policy.nbytes is None else \
            -(-policy.nbytes * (meta.arity - 1) // (NODE * meta.arity))
        self._root_out = ffi.new("uint8_t[32]")
        self._imt = LeanIMT(meta.arity, meta.max_depth)
        record = storage.read_sync_record(directory)
        if record is None and meta.flags & storage.META_FLAG_SYNC_RECORD:
            path = os.path.join(directory, storage.SYNC_NAME)
            raise CorruptionError(
                f"sync record {path} is missing: the WAL's acknowledged end is unknown, so "
                f"acknowledged entries may have been lost", path)
        self._restore_checkpoint(meta, verify)
        loaded = time.perf_counter()
        replay = self._replay_wal(meta, 0 if record is None else record[0])
        self._state = _SyncState(self._seq)
        self._next_gen = replay["next_gen"]
        if not read_only:
            # Everything replayed is fsynced now and new entries build on
            # it: record it as acknowledged, so that losing it is detected.
            if record is None:   # a tree written before the record existed
                storage.SyncRecord.create(directory, self._seq)
                record = (self._seq, 0)
            self._files.sync = storage.SyncRecord(directory, record[0], record[1])
            self._files.sync.write(self._seq)
            self._files.segment = self._create_segment(self._next_gen)
            self._next_gen += 1
        self.recovery = {
            "checkpoint_size": meta.size,
            "checkpoint_seq": meta.last_seq,
            "verified": bool(verify and meta.size),
            "checkpoint_seconds": loaded - started,
            "replay_seconds": time.perf_counter() - loaded,
            **{k: v for k, v in replay.items() if k != "next_gen"},
        }

    def _not_found(self) -> TreeNotFoundError:
        advice = ("read_only=True never creates one" if self._read_only
                  else "pass create=True to create one")
        return TreeNotFoundError(_errno.ENOENT, f"no durable tree in this directory ({advice})",
                                 self._dir)

    def _holds_no_tree(self) -> bool:
        """True if the directory is missing or holds nothing but what an
        interrupted creation leaves (the lock file, a temporary metadata
        file). Raises NotATreeError for a folder holding other files."""
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return True
        if storage.META_NAME in names or any(_is_tree_file(n) for n in names):
            return False   # a tree, or a damaged one that recovery reports
        others = sorted(n for n in names if n not in _CREATION_LEFTOVERS)
        if others:
            raise NotATreeError(
                _errno.EEXIST, f"the directory holds no durable tree but other files "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); refusing to "
                f"use it", self._dir)
        return True

    def _lock_directory(self) -> None:
        path = os.path.join(self._dir, _LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TreeLockedError(
                _errno.EWOULDBLOCK,
                f"durable tree {self._dir} is already open (its lock file {path} is held by "
                f"another RotorTree, in this or another process)") from None
        except OSError:
            os.close(fd)
            raise
        self._files.lock_fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # diagnostics only
        self._files.dir_lock_fd = self._hold_directory_lock(shared=False)

    def _hold_directory_lock(self, shared: bool) -> int:
        """flock the directory itself. The LOCK file can be deleted (or
        replaced) under an open tree, and the next opener would lock a new
        inode; the directory cannot be swapped that way while our
        descriptor holds it, so a second writer is refused even then.
        Read-only opens take the lock shared: they need no write access
        (LOCK cannot be created on read-only storage) and exclude writers,
        which would truncate and delete files under them."""
        fd = os.open(self._dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TreeLockedError(
                _errno.EWOULDBLOCK,
                f"durable tree {self._dir} is already open "
                f"{'for writing' if shared else 'for reading or writing'} (the directory is "
                f"locked by another RotorTree, in this or another process)") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- recovery -------------------------------------------------------------

    def _level_path(self, level: int) -> str:
        return os.path.join(self._dir, level_file_name(level))

    def _restore_checkpoint(self, meta: Meta, verify: bool) -> None:
        self._seq = meta.last_seq
        self._size = meta.size
        if meta.size == 0:
            return
        arity = meta.arity
        count = len(meta.levels)
        sources = ffi.new("struct rt_level_source[]", count)
        held: List[Tuple[Any, Any]] = []   # (mapping, cdata) per level
        lasts = []
        try:
            for level, record in enumerate(meta.levels):
                path = self._level_path(level)
                last = ffi.from_buffer("uint8_t[]", record.last)
                lasts.append(last)
                mapping = cdata = None
                if record.stored:
                    needed = record.stored * NODE
                    try:
                        mapping = storage.map_file(path)
                    except DurabilityError as error:
                        if isinstance(error.__cause__, FileNotFoundError):
                            raise CorruptionError(
                                f"level file {path} is missing; the checkpoint needs "
                                f"{record.stored} nodes from it", path) from None
                        raise
                    have = 0 if mapping is None else len(mapping)
                    if have < needed:
                        storage.release_mapping(mapping)
                        raise CorruptionError(
                            f"level file {path} is truncated: {have} bytes, the checkpoint "
                            f"needs {needed}", path)
                    if verify:
                        if storage.crc_of(mapping, needed) != record.crc:
                            storage.release_mapping(mapping)
                            raise CorruptionError(
                                f"level file {path}: checksum mismatch over its first "
                                f"{record.stored} nodes (the data is damaged)", path)
                    cdata = ffi.from_buffer("uint8_t[]", mapping)
                held.append((mapping, cdata))
                sources[level].nodes = cdata if cdata is not None else last
                sources[level].borrow = record.stored if level < self._mmap_levels else 0
                sources[level].last = last if level > 0 else ffi.NULL
            if verify:
                leaves_map = held[0][0]
                path = self._level_path(0)
                if leaves_map[(meta.size - 1) * NODE: meta.size * NODE] != meta.levels[0].last:
                    raise CorruptionError(
                        f"level file {path}: the last leaf differs from the one recorded in "
                        f"{storage.META_NAME}", path)
                assert meta.root is not None
                bad = storage.first_bad_level(
                    [(mapping if mapping is not None else b"", record.stored,
                      record.last if level else None)
                     for level, ((mapping, _), record) in enumerate(zip(held, meta.levels))],
                    arity, meta.root)
                if bad == 0:
                    raise CorruptionError(
                        f"level file {path}: the root recomputed from its {meta.size} leaves "
                        f"differs from the root recorded in {storage.META_NAME} "
                        f"({meta.root.hex()})", path)
                if bad is not None:
                    path = self._level_path(bad)
                    raise CorruptionError(
                        f"level file {path}: its {meta.levels[bad].stored} nodes (with the "
                        f"level's last node from {storage.META_NAME}) do not hash to the root "
                        f"of the leaves: the level is damaged (its checksum was kept valid)",
                        path)
            status = _core.restore(self._live(), meta.size, sources, count)
            if status == lib.RT_ERR_INVALID_ARGUMENT:
                raise CorruptionError(f"{self._dir}: the checkpoint's levels do not form a tree",
                                      os.path.join(self._dir, storage.META_NAME))
            check(status, f"restore {self._dir}")
        except BaseException:
            for mapping, cdata in held:
                storage.release_mapping(mapping, cdata)
            raise
        tree = self._live()
        for level, (mapping, cdata) in enumerate(held):
            if mapping is None:
                continue
            if level < self._mmap_levels:
                _core.keep_alive(tree, mapping, cdata)
                self._maps[level] = (mapping, cdata, len(mapping))
                if verify:
                    storage.drop_resident_pages(mapping)
                self._cold[level] = self._make_cold(level, cdata, meta.levels[level].stored)
            else:
                storage.release_mapping(mapping, cdata)
        _core.keep_alive(tree, lasts)

    def _make_cold(self, level: int, cdata: Any, count: int) -> int:
        cold = _core.make_cold(self._live(), level, cdata, count)
        return cold if cold is not None else self._cold.get(level, 0)

    def _replay_wal(self, meta: Meta, acknowledged: int) -> Dict[str, Any]:
        """Replay the WAL after the checkpoint. ``acknowledged``: the sync
        record's seq; entries up to it were reported durable and must all be
        found, or the WAL is damaged (not torn)."""
        directory = self._dir
        read_only = self._read_only
        gens = sorted(g for g in (storage.parse_segment_name(n) for n in os.listdir(directory))
                      if g is not None)
        stale = [g for g in gens if g < meta.wal_gen]
        if stale and not read_only:
            # Covered by the checkpoint; their deletion was interrupted.
            _log.warning("rotortree: %s: removed %d WAL segment(s) already covered by the "
                         "checkpoint (an interrupted clean-up)", directory, len(stale))
            for gen in stale:
                storage.unlink_quietly(os.path.join(directory, segment_name(gen)))
        live = [g for g in gens if g >= meta.wal_gen]
        expected, size = meta.last_seq + 1, meta.size
        batch: List[bytes] = []
        batch_bytes = 0
        entries = leaves = 0
        tear: Optional[Tuple[int, int, str]] = None   # (index in live, offset, reason)

        def apply() -> None:
            nonlocal batch, batch_bytes
            if batch:
                data = b"".join(batch)
                root = ffi.new("uint8_t[32]")
                check(_core.insert_batch(self._live(), data, len(data) // NODE, root),
                      "WAL replay")
                batch, batch_bytes = [], 0

        empty = set()   # segments holding no entry: deleted once recovery is done
        for index, gen in enumerate(live):
            path = os.path.join(directory, segment_name(gen))
            mapping = storage.map_file(path)
            empty.add(gen)
            try:
                if mapping is None or len(mapping) <= SEGMENT_HEADER_LEN:
                    try:
                        header_ok = mapping is not None and bool(
                            storage.decode_segment_header(mapping, path))
                    except CorruptionError:
                        header_ok = False
                    if not header_ok:  # created, but the header never reached the disk
                        tear = (index, 0, "segment header incomplete")
                        break
                    continue
                self._check_segment_header(mapping, path, gen, meta)
                # Strictly in order: a frame ends where the next begins, so
                # once one is invalid (torn, damaged, or not the next entry)
                # nothing after it in this segment is read as a frame; the
                # leaves of a torn frame may hold frame-like bytes.
                for frame, reason in storage.iter_frames(mapping):
                    if not reason and frame.seq > expected and frame.first_index > size:
                        reason = f"entries {expected}..{frame.seq - 1} are missing"
                    elif not reason and (frame.seq != expected or frame.first_index != size):
                        reason = (f"frame has sequence {frame.seq} at leaf {frame.first_index}, "
                                  f"expected sequence {expected} at leaf {size}")
                    if reason:
                        tear = (index, frame.offset, reason)
                        break
                    if size + frame.count > self._capacity:
                        raise CorruptionError(
                            f"WAL segment {path}: frame at offset {frame.offset} takes the "
                            f"tree past arity ** max_depth leaves", path)
                    batch.append(mapping[frame.payload_offset:frame.end])
                    batch_bytes += frame.end - frame.payload_offset
                    if batch_bytes >= _REPLAY_BATCH_BYTES:
                        apply()
                    expected += 1
                    size += frame.count
                    entries += 1
                    leaves += frame.count
                    empty.discard(gen)
            finally:
                storage.release_mapping(mapping)
            if tear is not None:
                break
        apply()

        replayed = expected - 1
        claim, source = acknowledged, os.path.join(directory, storage.SYNC_NAME)
        if tear is not None:
            later, later_source = self._acknowledged_after(live, tear, meta)
            if later > claim:
                claim, source = later, later_source
        if claim > replayed:
            where = (f"WAL segment {os.path.join(directory, segment_name(live[tear[0]]))} "
                     f"ends at offset {tear[1]} ({tear[2]})" if tear is not None
                     else "the WAL segment that held them is missing or was truncated")
            raise CorruptionError(
                f"{directory}: entries up to {claim} had been acknowledged as durable ({source} "
                f"says so) but the WAL holds entries only up to {replayed}: {where}; this is "
                f"corruption, not a torn tail",
                os.path.join(directory, segment_name(live[tear[0]])) if tear is not None
                else source)

        dropped = 0
        if tear is not None:
            dropped = self._drop_torn_tail(live, tear, replayed)
        if not read_only:
            # Make what was replayed durable before anything is acknowledged
            # on top of it: a crashed process may have left it in the page
            # cache only.
            for gen in live:
                path = os.path.join(directory, segment_name(gen))
                if gen in empty:
                    storage.unlink_quietly(path)
                elif os.path.exists(path):
                    fd = storage.open_fd(path, os.O_RDONLY)
                    try:
                        storage.fsync_fd(fd, path)
                    finally:
                        os.close(fd)
                    self._files.retired.append(_Segment(gen, path, -1, 0))
            if tear is not None:
                storage.fsync_dir(directory)
        self._seq = replayed
        self._size = size
        return {
            "replayed_entries": entries,
            "replayed_leaves": leaves,
            "torn_tail": tear[2] if tear else None,
            "dropped_bytes": dropped,
            "next_gen": max(gens + [meta.wal_gen - 1]) + 1,
        }

    @staticmethod
    def _check_segment_header(mapping: Any, path: str, gen: int, meta: Meta) -> None:
        seg_arity, seg_depth, seg_gen = storage.decode_segment_header(mapping, path)
        if (seg_arity, seg_depth, seg_gen) != (meta.arity, meta.max_depth, gen):
            raise CorruptionError(
                f"WAL segment {path}: header says arity {seg_arity}, max_depth "
                f"{seg_depth}, generation {seg_gen}; expected {meta.arity}, "
                f"{meta.max_depth}, {gen}", path)

    def _acknowledged_after(self, live: List[int], tear: Tuple[int, int, str],
                            meta: Meta) -> Tuple[int, str]:
        """The highest durable seq recorded by frames in the segments after
        the torn one (each read strictly from its header: a segment starts
        at a known boundary, unlike the bytes after a tear), and the file
        saying so. Catches lost acknowledged entries of trees whose sync
        record is older than the WAL (written before the record existed)."""
        best, source = 0, ""
        for gen in live[tear[0] + 1:]:
            path = os.path.join(self._dir, segment_name(gen))
            mapping = storage.map_file(path)
            if mapping is None:
                continue
            try:
                if len(mapping) <= SEGMENT_HEADER_LEN:
                    continue
                self._check_segment_header(mapping, path, gen, meta)
                for frame, reason in storage.iter_frames(mapping):
                    if reason:
                        break
                    if frame.synced > best:
                        best, source = frame.synced, f"frame {frame.seq} in {path}"
            finally:
                storage.release_mapping(mapping)
        return best, source

    def _drop_torn_tail(self, live: List[int], tear: Tuple[int, int, str], replayed: int) -> int:
        """Cut the WAL at the tear (nothing beyond it was acknowledged: the
        caller checked) and log it; a read-only open leaves the files alone."""
        index, offset, reason = tear
        directory = self._dir
        first_path = os.path.join(directory, segment_name(live[index]))
        later = [os.path.join(directory, segment_name(gen)) for gen in live[index + 1:]]
        dropped = os.path.getsize(first_path) - max(offset, 0) + \
            sum(os.path.getsize(path) for path in later)
        if self._read_only:
            _log.warning("rotortree: %s: WAL segment %s has a torn tail at offset %d (%s); "
                         "ignoring %d bytes after entry %d (read-only: the files are left "
                         "as they are)", directory, first_path, offset, reason, dropped, replayed)
            return dropped
        _log.warning("rotortree: %s: dropped the torn tail of WAL segment %s at offset %d (%s): "
                     "%d bytes after entry %d, never acknowledged as durable%s", directory,
                     first_path, offset, reason, dropped, replayed,
                     f"; deleted {len(later)} later segment(s)" if later else "")
        if offset <= 0:
            os.unlink(first_path)
        else:
            fd = storage.open_fd(first_path, os.O_WRONLY)
            try:
                storage.truncate_fd(fd, offset, first_path)
                storage.fsync_fd(fd, first_path)
            finally:
                os.close(fd)
        for path in later:
            os.unlink(path)
        return dropped

    def _create_segment(self, gen: int) -> _Segment:
        path = os.path.join(self._dir, segment_name(gen))
        fd = storage.open_fd(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            storage.write_all(fd, storage.encode_segment_header(self._arity, self._max_depth, gen),
                              0, path)
            storage.fsync_fd(fd, path)
            storage.fsync_dir(self._dir)
        except BaseException:
            os.close(fd)
            storage.unlink_quietly(path)
            raise
        return _Segment(gen, path, fd, SEGMENT_HEADER_LEN)

    def _start_threads(self) -> None:
        ref = weakref.ref(self)
        if self._flush_policy.seconds is not None:
            thread = threading.Thread(target=_flusher_main,
                                      args=(ref, self._stop, self._flush_policy.seconds),
                                      name=f"rotortree-flush {self._dir}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._checkpoint_policy.automatic:
            thread = threading.Thread(target=_checkpointer_main,
                                      args=(ref, self._wake_checkpointer, self._stop),
                                      name=f"rotortree-checkpoint {self._dir}", daemon=True)
            thread.start()
            self._threads.append(thread)

    # -- state checks -------------------------------------------------------

    def _current_segment(self) -> _Segment:
        segment = self._files.segment
        assert segment is not None, "the WAL segment is set up before the tree is usable"
        return segment

    def _live(self) -> LeanIMT:
        imt = self._imt
        if imt is None or self._closed:
            raise ClosedTreeError(f"durable tree {self._dir} is closed")
        return imt

    def _check_writable(self, closing: bool = False, background: bool = True) -> None:
        """Called with self._lock held. ``background``: also report (once) a
        failed background checkpoint."""
        if self._forked:
            raise ClosedTreeError(
                f"durable tree {self._dir} was opened by the parent of this forked process; "
                f"a forked copy reads the tree as it was at the fork but cannot write it "
                f"(open the directory here once the parent has closed it)")
        if self._closed or (self._closing and not closing):
            raise ClosedTreeError(f"durable tree {self._dir} is closed")
        if self._read_only:
            raise ReadOnlyTreeError(_errno.EROFS, f"durable tree {self._dir} was opened with "
                                    f"read_only=True: it serves reads and proofs only",
                                    self._dir)
        if self._failed is not None:
            raise self._state.failure(
                f"durable tree {self._dir} refuses writes after an fsync failure; reopen it")
        error = self._background_error
        if background and error is not None:
            self._background_error = None
            raise DurabilityError(getattr(error, "errno", None) or _errno.EIO,
                                  f"a background checkpoint of {self._dir} failed (nothing "
                                  f"was changed; it will be retried): {error}") from error

    def _poison(self, error: DurabilityError) -> None:
        with self._lock:
            if self._failed is None:
                self._failed = error
        self._state.fail(error)

    def _poison_on_fsync(self, error: BaseException) -> None:
        if isinstance(error, DurabilityError) and error.operation == "fsync":
            self._poison(error)

    # -- writes -------------------------------------------------------------

    def insert(self, leaf: bytes) -> Tuple[bytes, DurabilityToken]:
        """Append one 32-byte leaf: (new root, token). The entry is in the WAL
        (written, not yet fsynced) and in the tree when this returns."""
        return self._append(_leaf_bytes(leaf), 1)

    def insert_many(self, leaves: Leaves) -> Tuple[bytes, DurabilityToken]:
        """Append a batch atomically, as one WAL entry: (new root, token).
        Accepts what :meth:`LeanIMT.insert_many` accepts; the leaves are
        copied once, so the caller may reuse its buffer at once. If Ctrl-C
        (or any exception) interrupts it, the batch is wholly in the tree
        and the WAL, or in neither: compare ``tree.size`` (see "Interrupts"
        in the module documentation)."""
        buffer, count = leaf_batch(leaves)
        payload = buffer if type(buffer) is bytes else bytes(ffi.buffer(buffer, count * NODE))
        return self._append(payload, count)

    def insert_durable(self, leaves: Leaves) -> bytes:
        """Insert one leaf (32 bytes) or a batch and return the new root once
        it is fsynced and recorded in the sync record (concurrent callers
        share both). If the fsync fails the entry stays in the in-memory
        tree, is not durable, this raises :class:`DurabilityError`, and the
        tree refuses further writes; if only writing the sync record fails,
        the same except that the tree stays writable and the next flush
        retries."""
        root, token = self.insert_many(leaves)
        self._sync_upto(token.seq)
        return root

    def _append(self, payload: bytes, count: int) -> Tuple[bytes, DurabilityToken]:
        imt = self._live()
        with self._lock:
            if self._files.pending is not None:
                self._settle()
            if (self._closing or self._failed is not None or self._background_error is not None
                    or self._read_only):
                self._check_writable()
            if self._size + count > self._capacity:
                raise MaxDepthExceededError(
                    f"inserting {count} leaves into a tree of {self._size} would exceed "
                    f"arity ** max_depth = {self._capacity} leaves")
            seq = self._seq + 1
            segment = self._current_segment()
            header = storage.encode_frame_header(seq, self._size, count, self._state.synced,
                                                 payload)
            offset = segment.offset
            # Recorded before the first side effect. An exception (an I/O
            # error, or a KeyboardInterrupt raised after any call returns)
            # may then strike anywhere up to the commit; _settle resolves it
            # from the tree itself: the batch is in the tree -> commit the
            # bookkeeping, else cut the frame. Without this, a Ctrl-C right
            # after the C insert left the batch in the tree but not in the
            # sequence and offset, and the next insert overwrote its frame.
            pending = (imt, segment, offset, offset + len(header) + len(payload), seq,
                       self._size + count, self._entries_since + 1, self._leaves_since + count)
            self._files.pending = pending
            try:
                try:
                    if count <= 128:
                        frame = header + payload
                        written = storage_io.sys_pwrite(segment.fd, frame, offset)   # usually all
                        if written != len(frame):
                            storage.write_all(segment.fd, memoryview(frame)[max(written, 0):],
                                              offset + max(written, 0), segment.path)
                    else:
                        storage.write_all(segment.fd, header, offset, segment.path)
                        storage.write_all(segment.fd, payload, offset + len(header),
                                          segment.path)
                except OSError as error:
                    if isinstance(error, DurabilityError):
                        raise
                    raise storage.io_error("write", segment.path, error) from error
                root = self._root_out
                status = _core.insert_batch(imt, payload, count, root)
                if status != lib.RT_OK:
                    raise_status(status, "insert")
                new_root = ffi.buffer(root)[:]
                self._commit(pending)
            except BaseException:
                self._settle()
                raise
            due = (self._entries_since >= self._due_entries
                   or self._leaves_since >= self._due_leaves)
        if due:
            self._wake_checkpointer.set()
        return new_root, DurabilityToken(self._state, seq)

    def _commit(self, pending: _Pending) -> None:
        """Make the bookkeeping say the pending append is done (called with
        self._lock held). Assignments only, so running it again after an
        interruption gives the same state."""
        _, segment, _, end, seq, size, entries, leaves = pending
        segment.offset = end
        segment.synced = False
        self._seq = seq
        self._size = size
        self._entries_since = entries
        self._leaves_since = leaves
        if self._state.written < seq:
            self._state.written = seq
        self._files.pending = None

    def _settle(self) -> None:
        """Resolve an append that an exception interrupted (called with
        self._lock held, by the append itself and before anything else reads
        or changes the bookkeeping). The in-memory tree decides: it holds the
        batch (the C insert is atomic) -> commit; it does not -> cut the
        frame. Idempotent: if this is interrupted too, the next call redoes it."""
        pending = self._files.pending
        if pending is None:
            return
        if pending[0].size == pending[5]:
            self._commit(pending)
        else:
            self._rollback(pending[1], pending[2])
            self._files.pending = None

    def _rollback(self, segment: _Segment, offset: int) -> None:
        """Cut a partly or wholly written frame (called with self._lock held)."""
        try:
            storage.truncate_fd(segment.fd, offset, segment.path)
        except DurabilityError as error:
            # The WAL's tail is unknown: refuse writes from now on.
            if self._failed is None:
                self._failed = error
            self._state.fail(error)

    # -- fsync --------------------------------------------------------------

    def flush(self) -> None:
        """fsync everything written so far and record it in the sync
        record; returns when it is durable (see :meth:`insert_durable` for
        failures)."""
        with self._lock:
            self._settle()
            self._check_writable()
            seq = self._seq
        self._sync_upto(seq)

    def _sync_upto(self, seq: int, report: bool = True) -> None:
        """fsync the WAL up to at least ``seq``. ``report``: the caller will
        see the error (False for the background flusher)."""
        state = self._state
        with self._sync_lock:
            if state.synced >= seq:
                return
            if state.error is not None:
                if not report:
                    raise state.error
                raise state.failure(f"WAL entry {seq} of {self._dir} is not durable")
            with self._lock:
                if self._closed:
                    raise ClosedTreeError(f"durable tree {self._dir} is closed")
                self._settle()
                target = self._seq
                segments = [s for s in self._files.retired if s.fd >= 0 and not s.synced]
                segments.append(self._current_segment())
            try:
                for segment in segments:
                    storage.fsync_fd(segment.fd, segment.path)
                record = self._files.sync
                assert record is not None, "writable trees keep their sync record open"
                record.write(target)
            except DurabilityError as error:
                self._poison_on_fsync(error)
                if report:
                    state.reported = True
                raise
            for segment in segments[:-1]:
                # Retired: nothing is written to it any more, so its
                # descriptor is done with (recovery reads it by name).
                segment.synced = True
                os.close(segment.fd)
                segment.fd = -1
            state.advance(target)

    # -- checkpoints --------------------------------------------------------

    def _checkpoint_due_locked(self) -> bool:
        return (self._entries_since >= self._due_entries
                or self._leaves_since >= self._due_leaves)

    def _checkpoint_due(self) -> bool:
        with self._lock:
            self._settle()
            return (not self._closing and self._failed is None
                    and self._checkpoint_due_locked())

    def checkpoint(self) -> bool:
        """Write a checkpoint now: new level nodes, then the metadata record
        (atomically), then delete WAL segments it covers. Inserts continue
        meanwhile. Returns False if there was nothing new to write."""
        self._live()
        return self._checkpoint()

    def _checkpoint(self, automatic: bool = False, closing: bool = False) -> bool:
        with self._ckpt_lock:
            with self._lock:
                # The checkpoint's size and sequence must describe the same
                # entries: an unresolved append would pair the tree's size
                # with an older sequence, and recovery would refuse the WAL.
                self._settle()
                # A failed background checkpoint is reported to callers, not
                # to the retry (automatic) or the final checkpoint (closing).
                self._check_writable(closing, background=not (automatic or closing))
                if self._seq == self._meta.last_seq:
                    return False
                gen = self._next_gen
                self._next_gen += 1
            try:
                segment = self._create_segment(gen)
            except DurabilityError as error:
                self._poison_on_fsync(error)
                raise
            with self._lock:
                try:
                    self._check_writable(closing, background=False)
                    self._settle()
                except BaseException:
                    os.close(segment.fd)
                    storage.unlink_quietly(segment.path)
                    raise
                snap = self._live().snapshot()
                seq = self._seq
                previous = self._current_segment()
                self._files.retired.append(previous)
                self._files.segment = segment
                entries, leaves = self._entries_since, self._leaves_since
                self._entries_since = self._leaves_since = 0
            try:
                meta = self._write_checkpoint(snap, seq, gen)
            except BaseException as error:
                with self._lock:
                    self._entries_since += entries
                    self._leaves_since += leaves
                self._poison_on_fsync(error)
                self._undo_rotation(previous, segment)
                raise
            self._meta = meta
            self._checkpoints += 1
            self._state.advance(seq)   # everything up to seq is in the checkpoint
            self._retire_segments(gen)
            self._serve_levels_from_files(meta)
            return True

    def _undo_rotation(self, previous: _Segment, segment: _Segment) -> None:
        """A checkpoint failed: if no entry went to its new WAL segment,
        delete that segment and write to ``previous`` again, so that a failed
        checkpoint leaves the files and descriptors as they were (repeated
        failures must not pile up open segments). Not done when the new
        metadata may be on disk (it names the new segment as the start of
        the WAL, so entries written to ``previous`` would be discarded as
        covered by it) or when the tree refuses writes anyway."""
        if self._failed is not None:
            return
        try:
            current = storage.read_meta(self._dir)
        except (OSError, CorruptionError):
            return
        if current is None or current.wal_gen >= segment.gen:
            return
        with self._sync_lock, self._lock:
            if (self._files.segment is not segment or segment.offset != SEGMENT_HEADER_LEN
                    or previous.fd < 0 or not self._files.retired
                    or self._files.retired[-1] is not previous):
                return
            self._files.retired.pop()
            self._files.segment = previous
            self._next_gen = segment.gen
            os.close(segment.fd)
            segment.fd = -1
        # Not fsyncing the directory is safe: an empty segment that comes
        # back after a crash holds no entry, and recovery deletes it.
        storage.unlink_quietly(segment.path)

    def _level_fd(self, level: int) -> int:
        fd = self._files.level_fds.get(level)
        if fd is None:
            fd = storage.open_fd(self._level_path(level), os.O_RDWR | os.O_CREAT)
            self._files.level_fds[level] = fd
        return fd

    def _write_checkpoint(self, snap: Any, seq: int, gen: int) -> Meta:
        old = self._meta
        records = []
        for level, length in enumerate(level_lengths(snap.size, self._arity)):
            stored = stored_count(level, length)
            previous = old.levels[level] if level < len(old.levels) else LevelRecord(0, 0, b"")
            crc = previous.crc
            if stored > previous.stored:
                path = self._level_path(level)
                fd = self._level_fd(level)
                if level < self._mmap_levels:
                    self._preallocate(fd, path, stored * NODE)
                offset = previous.stored * NODE
                for piece in _core.snapshot_pieces(snap, level, previous.stored, stored):
                    crc = zlib.crc32(piece, crc)
                    storage.write_all(fd, piece, offset, path)
                    offset += piece.nbytes
                storage.fsync_fd(fd, path)
            records.append(LevelRecord(stored, crc, _core.snapshot_node(snap, level, length - 1)))
        meta = Meta(self._arity, self._max_depth, snap.size, seq, gen, snap.root, records)
        if self._failed is not None:
            raise self._state.failure(f"checkpoint of {self._dir} abandoned")
        storage.atomic_write(os.path.join(self._dir, storage.META_NAME), meta.encode())
        return meta

    @staticmethod
    def _preallocate(fd: int, path: str, needed: int) -> None:
        """Grow a memory-mapped level's file geometrically (sparse), so that
        one mapping serves several checkpoints: each new mapping stays alive
        as long as the tree and its snapshots, so they must be few."""
        size = os.fstat(fd).st_size
        if size >= needed:
            return
        target = max(needed, 2 * size, 1 << 20)
        target = -(-target // (1 << 16)) * (1 << 16)
        storage.truncate_fd(fd, target, path)

    def _retire_segments(self, keep_from: int) -> None:
        """Close and delete WAL segments older than ``keep_from`` (all their
        entries are in the committed checkpoint)."""
        with self._sync_lock:
            with self._lock:
                old = [s for s in self._files.retired if s.gen < keep_from]
                self._files.retired = [s for s in self._files.retired if s.gen >= keep_from]
            for segment in old:
                if segment.fd >= 0:
                    os.close(segment.fd)
                    segment.fd = -1
        # Not fsyncing the directory is safe: recovery ignores (and deletes)
        # segments older than the metadata's wal_gen.
        for name in os.listdir(self._dir):
            gen = storage.parse_segment_name(name)
            if gen is not None and gen < keep_from:
                storage.unlink_quietly(os.path.join(self._dir, name))

    def _serve_levels_from_files(self, meta: Meta) -> None:
        tree = self._imt
        if tree is None:
            return
        for level in range(min(self._mmap_levels, len(meta.levels))):
            stored = meta.levels[level].stored
            if stored == 0:
                continue
            entry = self._maps.get(level)
            if entry is None or entry[2] < stored * NODE:
                try:
                    mapping = storage.map_file(self._level_path(level), self._level_fd(level))
                except (OSError, ValueError):
                    continue  # stays in RAM; correct, just not smaller
                if mapping is None:
                    continue
                cdata = ffi.from_buffer("uint8_t[]", mapping)
                _core.keep_alive(tree, mapping, cdata)
                entry = self._maps[level] = (mapping, cdata, len(mapping))
            self._cold[level] = self._make_cold(level, entry[1], stored)

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """Stop the background threads, fsync the WAL, checkpoint if the
        policy says so, and release the files and the lock. Idempotent.
        Raises :class:`DurabilityError` if the final fsync or checkpoint
        fails, or if an earlier fsync failure was never reported to a
        caller; the tree is closed either way."""
        with self._lock:
            if self._closing:
                return
            self._settle()   # so that the final fsync covers an interrupted batch's entry
            self._closing = True
        self._stop.set()
        self._wake_checkpointer.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        error: Optional[BaseException] = None
        try:
            if self._failed is None and not self._read_only:
                self._sync_upto(self._seq)
                if self._checkpoint_policy.at_close:
                    self._checkpoint(closing=True)
        except BaseException as caught:
            error = caught
        finally:
            with self._ckpt_lock, self._sync_lock, self._lock:
                try:
                    self._settle()
                finally:
                    self._closed = True
                    self._files.close_all()
            self._state.close()
            self._finalizer.detach()
            self._imt = None
            self._maps.clear()
        if error is None and self._failed is not None and not self._state.reported:
            error = self._state.failure(f"durable tree {self._dir} lost unsynced entries")
        if error is not None:
            raise error

    def __enter__(self) -> "RotorTree":
        self._live()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.close()
        except DurabilityError:
            if exc_type is None:
                raise  # otherwise the exception in flight says more

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def read_only(self) -> bool:
        """True if opened with ``read_only=True`` (writes raise)."""
        return self._read_only

    # -- reads (delegated to the in-memory tree) ----------------------------

    @property
    def root(self) -> Optional[bytes]:
        return self._live().root

    @property
    def size(self) -> int:
        return self._live().size

    def __len__(self) -> int:
        return len(self._live())

    @property
    def depth(self) -> int:
        return self._live().depth

    @property
    def arity(self) -> int:
        return self._arity

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def capacity(self) -> int:
        return self._capacity

    def level_len(self, level: int) -> int:
        return self._live().level_len(level)

    def get_node(self, level: int, index: int) -> bytes:
        return self._live().get_node(level, index)

    def snapshot(self) -> Any:
        """An immutable view of the in-memory tree (see :meth:`LeanIMT.snapshot`)."""
        return self._live().snapshot()

    def generate_proof(self, index: int) -> Any:
        return self.snapshot().generate_proof(index)

    def generate_proofs(self, indices: Any) -> Any:
        return self.snapshot().generate_proofs(indices)

    def generate_consistency_proof(self, old_size: int, old_root: bytes) -> Any:
        return self.snapshot().generate_consistency_proof(old_size, old_root)

    # -- introspection ------------------------------------------------------

    @property
    def path(self) -> str:
        return self._dir

    @property
    def flush_policy(self) -> FlushPolicy:
        return self._flush_policy

    @property
    def checkpoint_policy(self) -> CheckpointPolicy:
        return self._checkpoint_policy

    @property
    def mmap_levels(self) -> int:
        return self._mmap_levels

    def stats(self) -> Dict[str, Any]:
        """Counters: sequence numbers (written, durable, checkpointed), the
        checkpoint's size, checkpoints written by this handle, entries and
        leaves since the last checkpoint, WAL segments, and the nodes of each
        memory-mapped level served from its file."""
        with self._lock:
            self._settle()
            return {
                "seq": self._seq,
                "synced_seq": self._state.synced,
                "checkpoint_seq": self._meta.last_seq,
                "checkpoint_size": self._meta.size,
                "checkpoints": self._checkpoints,
                "uncheckpointed_entries": self._entries_since,
                "uncheckpointed_leaves": self._leaves_since,
                "wal_segments": len(self._files.segments()),
                "cold_nodes": dict(self._cold),
                "failed": self._failed is not None,
            }

    def __repr__(self) -> str:
        if self._closed or self._imt is None:
            return f"<RotorTree {self._dir} closed>"
        root = self._imt.root
        return (f"RotorTree({self._dir!r}, arity={self._arity}, max_depth={self._max_depth}, "
                f"size={self._imt.size}, root={root.hex() if root else None})")
