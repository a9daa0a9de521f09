"""Opening a durable tree: argument checks, the directory lock, creation,
and the forked-child detach; recovery itself is in :mod:`.recovery`."""

from __future__ import annotations

import errno as _errno
import fcntl
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, List, Optional, cast

from .. import storage
from .._native import ffi, lib
from ..errors import (
    ArgumentTypeError,
    CorruptionError,
    InvalidArgumentError,
    NotATreeError,
    ReadOnlyTreeError,
    RotorTreeError,
    StorageMismatchError,
    TreeLockedError,
    TreeNotFoundError,
)
from ..rules import DEFAULT_RULE, check_same_rule, known_rule, rule_arg
from ..storage import NODE, Meta
from ..storage import io as storage_io
from ..tree import LeanIMT
from .background import checkpointer_main, flusher_main, open_trees, recorder_main
from .files import (
    CREATION_LEFTOVERS,
    LOCK_NAME,
    READ_ONLY_ERRNOS,
    Files,
    finalize,
    is_tree_file,
    log,
)
from .policies import DEFAULT_CHECKPOINT_POLICY, CheckpointPolicy, FlushPolicy
from .recovery import IndexBuild
from .tokens import SyncState
from .state import TreeState

if TYPE_CHECKING:
    from .tree import RotorTree


class Opening(TreeState):
    """RotorTree methods that open the directory."""

    def _setup(self, path: Any, arity: Optional[int], max_depth: Optional[int], create: bool,
               flush_policy: Optional[FlushPolicy],
               checkpoint_policy: Optional[CheckpointPolicy],
               verify_checkpoint: bool, mmap_levels: int, read_only: bool,
               rule: Optional[str] = None, index: Optional[bool] = None) -> None:
        for name, value in (("arity", arity), ("max_depth", max_depth)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ArgumentTypeError(f"{name} must be an int or None, not "
                                        f"{type(value).__name__}")
        # A truthy string such as "no" must not silently mean True.
        for name, flag in (("create", create), ("verify_checkpoint", verify_checkpoint),
                           ("read_only", read_only)):
            if not isinstance(flag, bool):
                raise ArgumentTypeError(f"{name} must be a bool, not {type(flag).__name__}")
        if index is not None and not isinstance(index, bool):
            raise ArgumentTypeError(f"index must be a bool or None, not {type(index).__name__}")
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
        if rule is not None:
            # rfc6962's arity is checked here only if an arity is given; an
            # existing tree's is checked against its stored arity below.
            rule = known_rule(rule) if arity is None else rule_arg(rule, arity)
        directory = os.path.abspath(storage_io.file_path(path))
        self._dir = directory
        self._read_only = read_only
        self._flush_policy = flush_policy
        self._lagged_record = flush_policy.lagged_record
        self._checkpoint_policy = checkpoint_policy
        self._mmap_levels = mmap_levels
        self._imt = None
        self._lock = threading.Lock()        # WAL appends + in-memory inserts
        self._sync_lock = threading.Lock()   # fsync rounds
        self._ckpt_lock = threading.Lock()   # checkpoints, close
        self._files = Files()
        self._state = SyncState(0)
        self._failed = None
        self._background_error = None
        self._closing = False
        self._closed = False
        self._forked = False     # this object is a forked child's copy
        self._maps = {}
        self._cold = {}
        self._entries_since = 0
        self._leaves_since = 0
        self._checkpoints = 0
        self._threads = []
        self._stop = threading.Event()
        self._wake_checkpointer = threading.Event()
        self.recovery = {}
        try:
            self._open_files(arity, max_depth, create, verify_checkpoint, rule, index)
        except BaseException as error:
            self._files.close_all()
            self._imt = None
            if (not read_only and isinstance(error, OSError)
                    and not isinstance(error, TreeLockedError)
                    and error.errno in READ_ONLY_ERRNOS):
                raise ReadOnlyTreeError(
                    error.errno,
                    f"cannot open durable tree {directory} for writing: "
                    f"{error.strerror or error} ({error.filename or directory}); open it with "
                    f"RotorTree.open(path, read_only=True) to serve reads and proofs from "
                    f"read-only storage", error.filename or directory) from error
            if isinstance(error, OSError) and not isinstance(error, RotorTreeError):
                raise storage_io.io_error("open", error.filename or directory, error) from error
            raise
        self._finalizer = weakref.finalize(self, finalize, self._files, self._state)
        open_trees.add(cast("RotorTree", self))   # the mixin is only ever a RotorTree
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
        self._files.record_lock = threading.Lock()
        self._state.reset_after_fork()
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
                    verify: bool, rule: Optional[str] = None,
                    index: Optional[bool] = None) -> None:
        started = time.perf_counter()
        directory = self._dir
        read_only = self._read_only
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise InvalidArgumentError(f"{directory} exists and is not a directory")
        # Looked at before anything is created: a mistyped path must neither
        # become a new tree nor get a LOCK file in an unrelated folder.
        if self._holds_no_tree():
            if not create:
                raise self._not_found()
            if rule is not None:  # a new tree: its default arity must suit the rule
                rule_arg(rule, 4 if arity is None else arity)
        if read_only:
            self._files.dir_lock_fd = self._hold_directory_lock(shared=True)
        else:
            if not os.path.isdir(directory):
                os.makedirs(directory, exist_ok=True)
                storage.fsync_dir(os.path.dirname(directory) or "/")
            self._lock_directory()
            tmp = os.path.join(directory, storage.META_NAME + ".tmp")
            if os.path.exists(tmp):
                log.warning("rotortree: %s: removed %s left by an interrupted checkpoint",
                             directory, tmp)
                storage.unlink_quietly(tmp)

        meta = storage.read_meta(directory)
        if meta is None:
            strays = [n for n in os.listdir(directory) if is_tree_file(n)]
            if strays:
                raise CorruptionError(
                    f"{directory}: the checkpoint metadata file '{storage.META_NAME}' is "
                    f"missing but tree files exist ({', '.join(sorted(strays)[:3])})",
                    os.path.join(directory, storage.META_NAME))
            acknowledged = _acknowledged(directory)
            if acknowledged:
                raise CorruptionError(
                    f"{directory}: the checkpoint metadata file '{storage.META_NAME}' and the "
                    f"WAL are missing but the sync record says entries up to {acknowledged} "
                    f"were acknowledged as durable", os.path.join(directory, storage.META_NAME))
            # Checked again under the lock: another process may have created
            # the tree (or removed it) since _holds_no_tree looked.
            if not create:
                raise self._not_found()
            new_arity = 4 if arity is None else arity
            meta = Meta(new_arity, 32 if max_depth is None else max_depth,
                        rule=rule_arg(DEFAULT_RULE if rule is None else rule, new_arity))
            if index:
                meta.flags |= storage.META_FLAG_INDEX
            # The sync record first: the meta's flag then never promises a
            # record that is not there.
            storage.SyncRecord.create(directory, 0)
            storage.atomic_write(os.path.join(directory, storage.META_NAME), meta.encode())
        else:
            if arity is not None and arity != meta.arity:
                raise StorageMismatchError(
                    f"{directory} holds a tree of arity {meta.arity}; opened with arity {arity}")
            if rule is not None:
                check_same_rule(rule, meta.rule, f"durable tree {directory}")
            if max_depth is not None and max_depth != meta.max_depth:
                raise StorageMismatchError(
                    f"{directory} holds a tree of max_depth {meta.max_depth}; opened with "
                    f"max_depth {max_depth}")
            if index is False and meta.flags & storage.META_FLAG_INDEX:
                raise StorageMismatchError(
                    f"{directory} holds a tree with a leaf index; opened with index=False")
        self._meta = meta
        self._arity = meta.arity
        self._rule = meta.rule
        self._max_depth = meta.max_depth
        self._capacity = meta.arity ** meta.max_depth
        # Checkpoint thresholds in entries and leaves (inf: never), and the
        # buffer inserts write roots into (used under self._lock only).
        policy = self._checkpoint_policy
        self._due_entries = float("inf") if policy.entries is None else policy.entries
        self._due_leaves = float("inf") if policy.nbytes is None else \
            -(-policy.nbytes * (meta.arity - 1) // (NODE * meta.arity))
        self._root_out = ffi.new("uint8_t[32]")
        self._errno_out = ffi.new("int *")
        self._imt = LeanIMT(meta.arity, meta.max_depth, rule=meta.rule)
        record = storage.read_sync_record(directory)
        if record is None and meta.flags & storage.META_FLAG_SYNC_RECORD:
            path = os.path.join(directory, storage.SYNC_NAME)
            raise CorruptionError(
                f"sync record {path} is missing: the WAL's acknowledged end is unknown, so "
                f"acknowledged entries may have been lost", path)
        wanted = bool(index) or bool(meta.flags & storage.META_FLAG_INDEX)
        builds: List[IndexBuild] = []   # filled as the build starts
        try:
            self._restore_checkpoint(meta, verify, builds if wanted else None)
            loaded = time.perf_counter()
            replay = self._replay_wal(meta, 0 if record is None else record[0])
            replay["index_seconds"] = self._rebuild_index(meta, wanted,
                                                          builds[0] if builds else None)
        finally:
            for build in builds:   # recovery failed before adopting it (else a no-op)
                build.discard()
        self._state = SyncState(self._seq)
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

    def _rebuild_index(self, meta: Meta, wanted: bool, build: Optional[IndexBuild]) -> float:
        """Give the tree its leaf index after the replay, and record a newly
        asked-for index in the metadata: ``build`` (the checkpoint's leaves,
        indexed in the background meanwhile) with the replayed leaves added
        in one parallel pass, or without it a build from all the recovered
        leaves. The index is never stored: a stored table would have to be
        written at each checkpoint and checked against the leaves at open,
        which costs as much as this build, and a rebuilt one cannot disagree
        with the leaves after a crash. Seconds recovery spent on the index
        after the replay (waiting for the background build included), 0.0
        without an index."""
        if not wanted:
            return 0.0
        started = time.perf_counter()
        assert self._imt is not None
        if build is not None:
            build.adopt(self._imt)
        else:
            self._imt.enable_index()
        if not meta.flags & storage.META_FLAG_INDEX and not self._read_only:
            meta.flags |= storage.META_FLAG_INDEX
            storage.atomic_write(os.path.join(self._dir, storage.META_NAME), meta.encode())
        return time.perf_counter() - started

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
        except (FileNotFoundError, NotADirectoryError):   # missing, or under a file
            return True
        if storage.META_NAME in names or any(is_tree_file(n) for n in names):
            return False   # a tree, or a damaged one that recovery reports
        if storage.SYNC_NAME in names and _acknowledged(self._dir):
            return False   # a tree whose other files are gone: recovery reports it
        others = sorted(n for n in names if n not in CREATION_LEFTOVERS)
        if others:
            raise NotATreeError(
                _errno.EEXIST, f"the directory holds no durable tree but other files "
                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); refusing to "
                f"use it", self._dir)
        return True

    def _lock_directory(self) -> None:
        path = os.path.join(self._dir, LOCK_NAME)
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

    def _start_threads(self) -> None:
        ref = weakref.ref(cast("RotorTree", self))
        if self._flush_policy.seconds is not None:
            thread = threading.Thread(target=flusher_main,
                                      args=(ref, self._stop, self._flush_policy.seconds),
                                      name=f"rotortree-flush {self._dir}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._flush_policy.lagged_record:
            thread = threading.Thread(target=recorder_main,
                                      args=(ref, self._stop, self._state, self._files),
                                      name=f"rotortree-record {self._dir}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if self._checkpoint_policy.automatic:
            thread = threading.Thread(target=checkpointer_main,
                                      args=(ref, self._wake_checkpointer, self._stop),
                                      name=f"rotortree-checkpoint {self._dir}", daemon=True)
            thread.start()
            self._threads.append(thread)


def _acknowledged(directory: str) -> int:
    """The sequence number a valid sync record says was acknowledged; 0
    when there is none or it is unreadable. Creation writes a record of 0
    (atomically) before the metadata, so a higher one is a tree's, never
    what an interrupted creation leaves."""
    try:
        record = storage.read_sync_record(directory)
    except (OSError, CorruptionError):
        return 0
    return 0 if record is None else record[0]
