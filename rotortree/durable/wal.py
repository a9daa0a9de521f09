"""Writes: WAL segments, appends (frame, C insert, bookkeeping, and the
repair of an interrupted append) and fsync rounds (group commit)."""

from __future__ import annotations

import os
from typing import Any, List, Tuple

from .. import _core, storage
from .._index import unique_flag
from .._leaves import Leaves, leaf_batch, single_leaf
from .._native import ffi, lib, raise_status
from ..errors import ClosedTreeError, DurabilityError, MaxDepthExceededError
from ..storage import FRAME_HEADER_LEN, NODE, SEGMENT_HEADER_LEN, segment_name
from ..storage import io as storage_io
from .files import Pending, Segment
from .tokens import DurabilityToken
from .state import TreeState


_SYS_PWRITE = storage_io.sys_pwrite
# rt_wal_reserve (a seam: tests replace it to make reservations fail).
reserve_blocks = lib.rt_wal_reserve
# Blocks reserved ahead of the write position of the live segment, at least;
# four frames ahead when frames are larger.
RESERVE_AHEAD = 4 << 20


def _immutable(leaves: object) -> bool:
    """Whether a buffer argument's memory can never change: bytes, or a
    memoryview (of a memoryview ...) of bytes."""
    while isinstance(leaves, memoryview):
        leaves = leaves.obj
    return type(leaves) is bytes


def leaf_bytes(leaf: object) -> bytes:
    value = single_leaf(leaf)
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return bytes(ffi.buffer(value, NODE))


class Wal(TreeState):
    """RotorTree methods that append to the WAL and make entries durable."""

    def _create_segment(self, gen: int) -> Segment:
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
        return Segment(gen, path, fd, SEGMENT_HEADER_LEN)

    # -- writes -------------------------------------------------------------

    def insert(self, leaf: bytes, unique: bool = False) -> Tuple[bytes, DurabilityToken]:
        """Append one 32-byte leaf: (new root, token), where the in-memory
        :meth:`LeanIMT.insert` returns the root alone; the token (``wait()``,
        ``durable``, ``await token``) tells when the leaf is on disk. The
        entry is in the WAL (written, not yet fsynced) and in the tree when
        this returns.
        ``unique``: as for :meth:`insert_many`."""
        return self._append(leaf_bytes(leaf), 1, unique_flag(unique))

    def insert_many(self, leaves: Leaves,
                    unique: bool = False) -> Tuple[bytes, DurabilityToken]:
        """Append a batch atomically, as one WAL entry: (new root, token)
        (:meth:`LeanIMT.insert_many` returns the root alone).
        Accepts what :meth:`LeanIMT.insert_many` accepts. The frame is
        written (by a writer thread for large batches) while the batch is
        hashed, and the batch is published only once its frame is written.
        Leaves in ``bytes`` (or a view of bytes) are written and hashed in
        place; any other buffer is copied once first, so that another thread
        changing it cannot make the WAL and the tree disagree; either way the
        caller may reuse its buffer once this returns. If Ctrl-C (or any
        exception) interrupts it, the batch is wholly in the tree and the
        WAL, or in neither: compare ``tree.size`` (see "Interrupts" in the
        module documentation).

        ``unique=True`` (trees opened with ``index=True``): a batch holding
        a leaf already in the tree, or one leaf twice, raises
        :class:`~rotortree.DuplicateLeafError` before anything is logged;
        the check and the append hold the tree's write lock together."""
        unique = unique_flag(unique)
        buffer, count = leaf_batch(leaves)
        if type(buffer) is not bytes and not _immutable(leaves):
            buffer = bytes(ffi.buffer(buffer, count * NODE))
        return self._append(buffer, count, unique)

    def insert_new(self, leaves: Leaves) -> Tuple[bytes, DurabilityToken, List[int]]:
        """Append the leaves of a batch that are not in the tree yet, each
        once, in order, as one WAL entry (trees opened with ``index=True``):
        (root, token, dropped), ``dropped`` being the positions in the batch
        skipped as already in the tree or repeated earlier in it. The check
        and the append hold the tree's write lock together, so concurrent
        calls never both add a leaf. If every leaf is dropped nothing is
        logged: the root is the current one and the token that of the last
        entry (the dropped leaves are in the tree up to it)."""
        buffer, count = leaf_batch(leaves)
        payload = buffer if type(buffer) is bytes else bytes(ffi.buffer(buffer, count * NODE))
        return self._append(payload, count, False, skip=True)  # type: ignore[return-value]

    def insert_durable(self, leaves: Leaves) -> bytes:
        """Insert one leaf (32 bytes) or a batch and return the new root once
        it is durable: fsynced, and recorded in the sync record unless the
        flush policy acknowledges after the WAL fsync alone
        (``acknowledge="wal"``: the record follows off this call's path).
        Concurrent callers share both: one fsync round covers every entry
        written before it starts. If the fsync fails the entry stays in the
        in-memory tree, is not durable, this raises :class:`DurabilityError`,
        and the tree refuses further writes; if only writing the sync record
        fails, the same except that the tree stays writable and the next
        flush retries. Under ``acknowledge="wal"`` the record's failures
        never fail this call (the entry is durable): a failed write is
        retried by the recorder thread and raised by ``flush``/``close``, a
        failed fdatasync makes the tree refuse later writes."""
        root, token = self.insert_many(leaves)
        self._sync_upto(token.seq)
        return root

    def _append(self, payload: Any, count: int, unique: bool = False,
                skip: bool = False) -> Tuple[bytes, DurabilityToken]:
        """Log and insert a batch. ``payload``: ``count`` leaves, bytes or a
        cffi buffer nobody changes. ``unique``: refuse duplicates; ``skip``:
        drop them instead, and return (root, token, dropped positions)."""
        imt = self._live()
        with self._lock:
            if self._files.pending is not None:
                self._settle()
            if (self._closing or self._failed is not None or self._background_error is not None
                    or self._read_only):
                self._check_writable()
            if skip:
                payload, count, dropped = _core.new_leaves(imt, payload, count)
                if count == 0:
                    return (imt.root, DurabilityToken(self._state, self._seq),  # type: ignore
                            dropped)
            if self._size + count > self._capacity:
                raise MaxDepthExceededError(
                    f"inserting {count} leaves into a tree of {self._size} would exceed "
                    f"arity ** max_depth = {self._capacity} leaves")
            if unique:
                _core.check_unique(imt, payload, count)   # before the log write
            seq = self._seq + 1
            segment = self._current_segment()
            offset = segment.offset
            if offset + FRAME_HEADER_LEN + count * NODE > segment.reserved:
                self._reserve(segment, FRAME_HEADER_LEN + count * NODE)
            # Recorded before the first side effect. An exception (an I/O
            # error, or a KeyboardInterrupt raised after any call returns)
            # may then strike anywhere up to the commit; _settle resolves it
            # from the tree itself: the batch is in the tree -> commit the
            # bookkeeping, else cut the frame. Without this, a Ctrl-C right
            # after the C insert left the batch in the tree but not in the
            # sequence and offset, and the next insert overwrote its frame.
            # The C append publishes the batch only after its frame is
            # written, so "in the tree" implies "frame complete".
            pending = (imt, segment, offset, offset + FRAME_HEADER_LEN + count * NODE, seq,
                       self._size + count, self._entries_since + 1, self._leaves_since + count)
            self._files.pending = pending
            try:
                root = self._root_out
                if storage_io.sys_pwrite is _SYS_PWRITE:
                    header = storage.encode_frame_prefix(seq, self._size, count,
                                                         self._state.synced)
                    status = _core.wal_append(imt, segment.fd, offset, header, payload, count,
                                              root, self._errno_out)
                    if status == lib.RT_ERR_IO:
                        code = self._errno_out[0]
                        raise storage.io_error("write", segment.path,
                                               OSError(code, os.strerror(code)))
                else:
                    # A test replaced the write seam: the frame goes through
                    # it, then the insert (the same outcomes, not overlapped).
                    self._write_frame_seam(segment, offset, seq, count, payload)
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
        if skip:
            return new_root, DurabilityToken(self._state, seq), dropped  # type: ignore
        return new_root, DurabilityToken(self._state, seq)

    @staticmethod
    def _reserve(segment: Segment, frame_len: int) -> None:
        """Reserve the segment's blocks ahead of its end, without changing
        its size. Appends past the end of an ext4 file allocate blocks at
        writeback, under the lock that the background fsync of the same file
        holds, so frame writes (and with them the inserts waiting for their
        frames) stalled behind it; writes into reserved blocks do not, and
        cost about 40% less. The size, and so everything recovery reads, is
        unchanged: a failure (no space, a file system without fallocate)
        only costs the speed-up, and the write itself reports a full disk.
        Not retried before the next stretch either way."""
        length = max(RESERVE_AHEAD, 4 * frame_len)
        reserve_blocks(segment.fd, segment.offset, length)
        segment.reserved = segment.offset + length

    def _release_reserved(self) -> None:
        """Give back the blocks reserved beyond the live segment's end (at
        close, with every lock held and no append pending): truncating to
        the size frees them and changes no byte. Only when the size is the
        bookkept end, so that nothing written is ever cut here; best effort."""
        segment = self._files.segment
        if segment is None or segment.fd < 0 or segment.reserved <= segment.offset:
            return
        try:
            if os.fstat(segment.fd).st_size == segment.offset:
                os.ftruncate(segment.fd, segment.offset)
                segment.reserved = segment.offset
        except OSError:
            pass

    def _write_frame_seam(self, segment: Segment, offset: int, seq: int, count: int,
                          payload: Any) -> None:
        data = payload if type(payload) is bytes else ffi.buffer(payload, count * NODE)
        header = storage.encode_frame_header(seq, self._size, count, self._state.synced, data)
        try:
            storage.write_all(segment.fd, header + bytes(data), offset, segment.path)
        except OSError as error:
            if isinstance(error, DurabilityError):
                raise
            raise storage.io_error("write", segment.path, error) from error

    def _commit(self, pending: Pending) -> None:
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

    def _rollback(self, segment: Segment, offset: int) -> None:
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
        record; returns when both are done, under either ``acknowledge``
        setting of the flush policy (see :meth:`insert_durable` for
        failures)."""
        with self._lock:
            self._settle()
            self._check_writable()
            seq = self._seq
        self._sync_upto(seq)
        if self._lagged_record:
            self._record_upto(seq)

    def _record_upto(self, seq: int) -> None:
        """Make the sync record claim ``seq``, whose WAL fsync has completed
        (an fsync round acknowledged it). A failed fdatasync of the record
        poisons the tree as a failed WAL fsync does; a failed write does
        not (it is retried)."""
        try:
            self._files.write_record(seq)
        except DurabilityError as error:
            self._poison_on_fsync(error)
            raise

    def _record_after_failure(self) -> None:
        """close() of a tree that refuses writes, acknowledge="wal": make the
        record claim what rounds acknowledged before the failure, which the
        lagging recorder may not have written yet. Their fsyncs completed
        (the failure concerns later writes), so the claim is true, and
        without it their loss to damage would pass for a torn tail for
        good, where "record" would detect it. Skipped when the failure was
        the record's own flush (its file's state is unknown); best effort,
        since the failure was reported already."""
        record = self._files.sync
        failed = self._failed
        if record is None or failed is None or failed.filename == record.path:
            return
        try:
            self._files.write_record(self._state.synced)
        except DurabilityError:
            pass

    def _sync_upto(self, seq: int, report: bool = True) -> None:
        """fsync the WAL up to at least ``seq``. ``report``: the caller will
        see the error (False for the background flusher).

        Group commit: one caller at a time (the leader) runs an fsync round,
        which covers every entry written before it starts; the others
        (followers) wait for the round to end, return if it covered them,
        and otherwise one of them leads the next round for all the rest.
        Leader and followers meet at the sync state's gate (C, waited on
        without the GIL): the end of a round wakes every follower at once,
        and each takes the GIL once, to return, where followers of a Python
        condition each took the GIL and the condition's lock again in turn
        (a convoy of context switches per round, the bound on rounds per
        second with many writers). The sync state's condition is still
        notified for token.wait() and awaited tokens, before the gate."""
        state = self._state
        if state.synced >= seq:
            return
        cond = state.cond
        gate = state.gate
        # Set before every wait: the gate may make this thread the leader,
        # and an interrupt can strike as the wait returns, before its
        # outcome is seen; the finally block then gives the lead up
        # (rt_sync_gate_end releases it only if this thread holds it), so a
        # stuck lead never blocks later callers.
        may_lead = False
        # True from the acknowledgement until the wake-up has run: an
        # interrupt in between (at the entry of notify_all, or between its
        # notify and the settling of awaited tokens) must not leave threads
        # in token.wait() or awaiting coroutines asleep with nothing left to
        # wake them, so the finally block wakes everyone then.
        waking = False
        target = 0
        try:
            while True:
                may_lead = True
                # The timeout lets a waiting main thread see Ctrl-C.
                outcome = lib.rt_sync_gate_wait(gate, seq, 50)
                if outcome != lib.RT_SYNC_LEAD:
                    may_lead = False
                if state.synced >= seq:
                    return
                if outcome != lib.RT_SYNC_TIMEOUT:
                    break   # leading, or failed: the round below reports it
            with self._sync_lock:
                target = self._sync_round(seq, report)
                with cond:
                    waking = True
                    if target > state.synced:
                        state.synced = target
                    cond.notify_all()
                    waking = False
                lib.rt_sync_gate_end(gate, target)   # gives up the lead, wakes the followers
                may_lead = False
        finally:
            if may_lead:
                try:
                    lib.rt_sync_gate_end(gate, 0)
                finally:
                    with cond:
                        cond.notify_all()
            elif waking:
                with cond:
                    cond.notify_all()

    def _sync_round(self, seq: int, report: bool) -> int:
        """An fsync round (called with self._sync_lock held): the sequence
        number it made durable, for the caller to acknowledge; 0 if there
        was nothing to do."""
        state = self._state
        if state.synced >= seq:
            return 0
        if state.error is not None:
            if not report:
                raise state.error
            raise state.failure(f"WAL entry {seq} of {self._dir} is not durable")
        files = self._files
        with self._lock:
            if self._closed:
                raise ClosedTreeError(f"durable tree {self._dir} is closed")
            if files.pending is not None:
                self._settle()
            target = self._seq
            segments = [s for s in files.retired if s.fd >= 0 and not s.synced]
            segments.append(self._current_segment())
        try:
            for segment in segments:
                storage.fsync_fd(segment.fd, segment.path)
            if not self._lagged_record:
                # Strict: the record claims the round before anyone is told.
                # Lagged: the recorder thread writes it once _sync_upto has
                # acknowledged the round, so never before this fsync.
                self._files.write_record(target)
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
        return target
