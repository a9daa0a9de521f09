"""The files an open durable tree owns (descriptors of the lock, WAL
segments, level files and sync record), and the finalizer that syncs and
closes them when a tree is collected without ``close()``."""

from __future__ import annotations

import errno as _errno
import logging
import os
import threading
from typing import Dict, List, Optional, Tuple

from .. import storage
from ..errors import DurabilityError
from ..tree import LeanIMT
from .tokens import SyncState


LOCK_NAME = "LOCK"
# Every recovery that drops or repairs something says so here (besides
# ``tree.recovery``), so that an operator's log shows it.
log = logging.getLogger("rotortree")
# errnos meaning "this storage cannot be written": a writable open turns them
# into ReadOnlyTreeError pointing at read_only=True.
READ_ONLY_ERRNOS = frozenset({_errno.EROFS, _errno.EACCES, _errno.EPERM})
# What a creation interrupted before its metadata record was committed leaves.
CREATION_LEFTOVERS = frozenset((LOCK_NAME, storage.META_NAME + ".tmp", storage.SYNC_NAME,
                                 storage.SYNC_NAME + ".tmp"))


class Segment:
    __slots__ = ("gen", "path", "fd", "offset", "synced", "reserved")

    def __init__(self, gen: int, path: str, fd: int, offset: int) -> None:
        self.gen = gen
        self.path = path
        self.fd = fd           # -1 when not open
        self.offset = offset   # where the next frame goes
        self.synced = fd < 0
        # Disk blocks are reserved (beyond the size) up to here: see
        # Wal._reserve.
        self.reserved = 0


# An append in progress: (LeanIMT, segment, frame offset, frame end, seq,
# size, entries since checkpoint, leaves since checkpoint), the last five
# being the values once the append is committed. A plain tuple: it is built
# on every insert.
Pending = Tuple[LeanIMT, "Segment", int, int, int, int, int, int]


class Files:
    """File descriptors of an open tree. The finalizer of a tree that is
    garbage-collected without close() fsyncs and closes them. ``pending``
    is the append in progress (see RotorTree._settle)."""

    __slots__ = ("lock_fd", "dir_lock_fd", "segment", "retired", "level_fds", "sync",
                 "pending", "record_lock")

    def __init__(self) -> None:
        self.lock_fd: Optional[int] = None
        self.dir_lock_fd: Optional[int] = None
        self.segment: Optional[Segment] = None
        self.retired: List[Segment] = []
        self.level_fds: Dict[int, int] = {}
        self.sync: Optional[storage.SyncRecord] = None
        self.pending: Optional[Pending] = None
        # Serialises writes of the sync record with its closing: with
        # acknowledge="wal" a recorder thread writes it while the finalizer
        # (or close) may run, and a write through a closed, reused
        # descriptor would land in another file.
        self.record_lock = threading.Lock()

    def write_record(self, seq: int) -> None:
        """Make the sync record claim ``seq`` (a no-op if it already does
        or is closed). The caller must know ``seq``'s WAL fsync completed."""
        with self.record_lock:
            record = self.sync
            if record is not None and record.fd >= 0:
                record.write(seq)

    def segments(self) -> List[Segment]:
        return self.retired + ([self.segment] if self.segment else [])

    def close_all(self) -> None:
        """Close every descriptor; the locks last, whatever fails before.
        Each descriptor is forgotten before it is closed: an interrupt
        between the two leaks it at worst, where the other order made the
        next close_all (the finalizer's) close it again, failing with EBADF
        before the locks were released (the directory stayed locked for the
        life of the process) or closing whatever file had reused the number."""
        try:
            for segment in self.segments():
                fd, segment.fd = segment.fd, -1
                if fd >= 0:
                    os.close(fd)
            while self.level_fds:
                os.close(self.level_fds.popitem()[1])
            if self.sync is not None:
                with self.record_lock:
                    self.sync.close()
        finally:
            try:
                dir_lock, self.dir_lock_fd = self.dir_lock_fd, None
                if dir_lock is not None:
                    os.close(dir_lock)   # releases the directory's flock
            finally:
                lock, self.lock_fd = self.lock_fd, None
                if lock is not None:
                    os.close(lock)   # releases the flock


def finalize(files: Files, state: SyncState) -> None:
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
                # The same fsync as every other path (F_FULLFSYNC on macOS).
                storage.fsync_fd(segment.fd, segment.path)
        if state.error is None:
            files.write_record(written)   # acknowledged from now on
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


def is_tree_file(name: str) -> bool:
    """A WAL segment or a level file (the metadata record aside)."""
    return (storage.parse_segment_name(name) is not None
            or (name.startswith("level-") and name.endswith(".dat")))
