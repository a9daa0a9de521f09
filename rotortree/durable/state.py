"""The state every part of a durable tree shares: the attributes that
:mod:`.opening` and :mod:`.recovery` set and the other mixins use, declared
once so that each mixin is type-checked on its own."""

from __future__ import annotations

import errno as _errno
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from ..errors import ClosedTreeError, DurabilityError, ReadOnlyTreeError
from ..storage import Meta, level_file_name
from ..tree import LeanIMT
from .files import Files, Segment
from .policies import CheckpointPolicy, FlushPolicy
from .tokens import SyncState

if TYPE_CHECKING:
    from .recovery import IndexBuild


class TreeState:
    """Attributes of a RotorTree (set by ``Opening._setup`` and recovery),
    and the checks every write and read path makes on them."""

    _dir: str
    _read_only: bool
    _flush_policy: FlushPolicy
    _lagged_record: bool         # _flush_policy.lagged_record, read on every round
    _checkpoint_policy: CheckpointPolicy
    _mmap_levels: int
    _imt: Optional[LeanIMT]
    _lock: threading.Lock        # WAL appends + in-memory inserts
    _sync_lock: threading.Lock   # fsync rounds
    _ckpt_lock: threading.Lock   # checkpoints, close
    _files: Files
    _state: SyncState
    _failed: Optional[DurabilityError]
    _background_error: Optional[BaseException]
    _closing: bool
    _closed: bool
    _forked: bool                # this object is a forked child's copy
    _maps: Dict[int, Tuple[Any, Any, int]]
    _cold: Dict[int, int]
    _entries_since: int
    _leaves_since: int
    _checkpoints: int
    _threads: List[threading.Thread]
    _stop: threading.Event
    _wake_checkpointer: threading.Event
    _finalizer: Any              # weakref.finalize
    _meta: Meta
    _arity: int
    _rule: str
    _max_depth: int
    _capacity: int
    _due_entries: float
    _due_leaves: float
    _root_out: Any
    _errno_out: Any              # errno of a failed rt_wal_append write
    _next_gen: int
    _seq: int
    _size: int
    recovery: Dict[str, Any]

    # -- state checks -------------------------------------------------------

    def _current_segment(self) -> Segment:
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

    def _level_path(self, level: int) -> str:
        return os.path.join(self._dir, level_file_name(level))

    if TYPE_CHECKING:
        # Provided by the mixins (.wal, .recovery) and called across them.
        def _create_segment(self, gen: int) -> Segment: ...
        def _settle(self) -> None: ...
        def _release_reserved(self) -> None: ...
        def _restore_checkpoint(self, meta: Meta, verify: bool,
                                builds: Optional[List[IndexBuild]] = None) -> None: ...
        def _replay_wal(self, meta: Meta, acknowledged: int) -> Dict[str, Any]: ...
        def _make_cold(self, level: int, cdata: Any, count: int) -> int: ...
