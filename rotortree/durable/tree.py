"""The durable tree class: opening, closing, delegated reads and
introspection; the rest of its methods come from one mixin per concern
(:mod:`.opening`, :mod:`.recovery`, :mod:`.wal`, :mod:`.checkpoints`)."""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, Optional

from .. import _core
from .._index import IndexReads
from ..errors import ArgumentTypeError, DurabilityError
from ..proofs import BytesLike, ConsistencyProof, InclusionProof
from ..snapshot import LATEST, ProofBatch, Snapshot
from .checkpoints import Checkpoints
from .opening import Opening
from .policies import CheckpointPolicy, FlushPolicy
from .recovery import Recovery
from .wal import Wal


class RotorTree(IndexReads, Opening, Recovery, Wal, Checkpoints):
    """A LeanIMT whose inserts survive crashes. Create with :meth:`open`.

    Reads (``root``, ``size``, ``len()``, ``depth``, ``level_len``,
    ``get_node``, ``snapshot()``, ``root_at``, proofs) behave as on :class:`LeanIMT` and
    see every insert at once, durable or not: the root an insert returns is
    the in-memory root; its token says when it is on disk.

    A tree opened with ``index=True`` keeps a leaf index (``has``, ``in``,
    ``index_of``, ``contains_many``, ``index_of_many``, ``unique=True``
    inserts) as :class:`LeanIMT` does; the metadata records it, and every
    open rebuilds it from the recovered leaves, so after any crash it
    agrees with them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ArgumentTypeError("use RotorTree.open(path, ...) to open or create a durable tree")

    # -- opening ------------------------------------------------------------

    @classmethod
    def open(cls, path: Any, arity: Optional[int] = None, max_depth: Optional[int] = None,
             *, create: bool = False,
             flush_policy: Optional[FlushPolicy] = None,
             checkpoint_policy: Optional[CheckpointPolicy] = None,
             verify_checkpoint: bool = True, mmap_levels: int = 0,
             read_only: bool = False, rule: Optional[str] = None,
             index: Optional[bool] = None) -> "RotorTree":
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
        ``rule`` is the hash rule (see :class:`~rotortree.LeanIMT`): a new
        tree gets it (default ``"rotortree-0.15"``), an existing tree keeps
        the rule it was created with and, if ``rule`` is given and differs,
        raises :class:`~rotortree.RuleMismatchError`.

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

        ``index``: None opens the tree with the leaf index if it was
        created or last opened with one; True adds it (recorded in the
        metadata unless read-only); False refuses a tree that has one
        (:class:`StorageMismatchError`). The index is never stored: it is
        rebuilt from the recovered leaves, in parallel, the checkpoint's
        leaves in the background while the checkpoint is verified and the
        WAL replayed, the replayed ones after (``recovery["index_seconds"]``:
        the time spent on it after the replay).
        """
        self = cls.__new__(cls)
        self._setup(path, arity, max_depth, create, flush_policy, checkpoint_policy,
                    verify_checkpoint, mmap_levels, read_only, rule, index)
        return self

    # -- closing ------------------------------------------------------------

    def close(self) -> None:
        """Stop the background threads, fsync the WAL and bring the sync record
        up to date (under either ``acknowledge`` setting; with
        ``acknowledge="wal"`` also after an fsync failure, up to what was
        acknowledged before it), checkpoint if the
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
        self._state.wake()   # the recorder thread waits on the sync state
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()
        error: Optional[BaseException] = None
        try:
            if self._failed is None and not self._read_only:
                self._sync_upto(self._seq)
                if self._lagged_record:
                    self._record_upto(self._state.synced)
                if self._checkpoint_policy.at_close:
                    self._checkpoint(closing=True)
        except BaseException as caught:
            error = caught
        finally:
            if self._lagged_record and self._failed is not None:
                self._record_after_failure()
            with self._ckpt_lock, self._sync_lock, self._lock:
                try:
                    self._settle()
                    if self._failed is None and not self._read_only:
                        self._release_reserved()
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
    def rule(self) -> str:
        """The hash rule, as recorded in the tree's metadata."""
        return self._rule

    @property
    def capacity(self) -> int:
        return self._capacity

    def level_len(self, level: int) -> int:
        return self._live().level_len(level)

    def get_node(self, level: int, index: int) -> bytes:
        return self._live().get_node(level, index)

    @property
    def indexed(self) -> bool:
        """Whether the tree keeps a leaf index."""
        return self._live().indexed

    def index_stats(self) -> Dict[str, int]:
        """The leaf index's size (see :meth:`LeanIMT.index_stats`)."""
        return self._live().index_stats()

    def _index_calls(self) -> Any:
        return _core.index_calls(self._live())

    def snapshot(self) -> Snapshot:
        """An immutable view of the in-memory tree (see :meth:`LeanIMT.snapshot`)."""
        return self._live().snapshot()

    def root_at(self, size: int) -> bytes:
        """See :meth:`LeanIMT.root_at`."""
        return self._live().root_at(size)

    def generate_proof(self, index: int, *, size: Optional[int] = None) -> InclusionProof:
        """See :meth:`LeanIMT.generate_proof`."""
        return self.snapshot().generate_proof(index, size=size)

    def generate_proofs(self, indices: Any, *, size: Optional[int] = None) -> ProofBatch:
        """See :meth:`Snapshot.generate_proofs` (any iterable of integers, or
        a 1-D integer array; ``size`` for the tree at that size)."""
        return self.snapshot().generate_proofs(indices, size=size)

    def generate_consistency_proof(self, old_size: int, new_size: object = LATEST, *,
                                   old_root: Optional[BytesLike] = None) -> ConsistencyProof:
        """See :meth:`LeanIMT.generate_consistency_proof`."""
        return self.snapshot().generate_consistency_proof(old_size, new_size, old_root=old_root)

    def leaves(self, start: int = 0, stop: Optional[int] = None, *, array: bool = False) -> Any:
        """See :meth:`LeanIMT.leaves` (every insert so far, durable or not)."""
        return self._live().leaves(start, stop, array=array)

    def __iter__(self) -> Iterator[bytes]:
        """The leaves as of the start of the iteration (see :meth:`LeanIMT.__iter__`)."""
        return iter(self.snapshot())

    # -- copies and pickles are refused ----------------------------------------

    def _refuse(self, what: str) -> ArgumentTypeError:
        self._live()  # a closed tree says so first
        return ArgumentTypeError(
            f"cannot {what} a RotorTree: it owns its directory and lock, and two objects "
            f"writing one WAL would corrupt it; save its contents with "
            f"tree.snapshot().save(path) (LeanIMT.load reads it back), or close it and "
            f"copy the directory")

    def __copy__(self) -> "RotorTree":
        raise self._refuse("copy")

    def __deepcopy__(self, memo: Any) -> "RotorTree":
        raise self._refuse("copy")

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise self._refuse("pickle")

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
        """Counters: sequence numbers (written, durable, claimed by the sync
        record, checkpointed), the
        checkpoint's size, checkpoints written by this handle, entries and
        leaves since the last checkpoint, WAL segments, and the nodes of each
        memory-mapped level served from its file."""
        record = self._files.sync
        with self._lock:
            self._settle()
            return {
                "seq": self._seq,
                "synced_seq": self._state.synced,
                # Behind synced_seq while the recorder thread lags
                # (acknowledge="wal"), and under either setting after a
                # checkpoint until the next round: the checkpoint covers
                # those entries, not the record.
                "recorded_seq": record.seq if record is not None else self._state.synced,
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
