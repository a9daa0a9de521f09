"""Checkpoints: level files and the metadata record written from a
snapshot, WAL rotation and truncation, memory-mapped levels."""

from __future__ import annotations

import os
import zlib
from typing import Any

from .. import _core, storage
from .._native import ffi
from ..errors import CorruptionError, DurabilityError
from ..storage import NODE, SEGMENT_HEADER_LEN, LevelRecord, Meta, level_lengths, stored_count
from .files import Segment
from .state import TreeState


class Checkpoints(TreeState):
    """RotorTree methods that write checkpoints."""

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

    def _undo_rotation(self, previous: Segment, segment: Segment) -> None:
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
        meta = Meta(self._arity, self._max_depth, snap.size, seq, gen, snap.root, records,
                    storage.META_FLAG_SYNC_RECORD | (old.flags & storage.META_FLAG_INDEX),
                    rule=self._rule)
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
