"""Recovery: restoring the checkpoint from the level files and replaying
the WAL after it (steps 2 and 3 of the recovery in :mod:`rotortree.durable`)."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from .. import _core, storage
from .._native import check, ffi, lib
from ..errors import CorruptionError, DurabilityError
from ..storage import NODE, SEGMENT_HEADER_LEN, Meta, segment_name
from .files import Segment, log
from .state import TreeState

# WAL payload replayed into the tree per insert_many call during recovery.
REPLAY_BATCH_BYTES = 32 << 20
# Index the checkpoint's leaves in the background while the rest of recovery
# runs (else all leaves after the replay); tests compare the two.
BACKGROUND_INDEX = True


class IndexBuild:
    """The leaf index of the checkpoint's leaves, built in C on a background
    thread (``rt_index_build_start``) from the mapped level-0 file while
    recovery verifies the checkpoint and replays the WAL; :meth:`adopt`
    then adds the replayed leaves and hands it to the tree, :meth:`discard`
    drops it when recovery fails. The build holds its own view of the
    mapping, so the file stays mapped while the C thread reads it whatever
    recovery releases meanwhile; a build that could not start gives its
    view up at once and leaves the mapping to the restore."""

    __slots__ = ("_mapping", "_view", "_handle")

    def __init__(self, mapping: Any, count: int, expected: int,
                 started: List["IndexBuild"]) -> None:
        """Start the build, after appending it to ``started``: a Ctrl-C as
        this constructor returns would otherwise lose the only reference to
        a running thread, and the garbage collector would unmap the file
        under it."""
        self._mapping = mapping
        self._view = None
        self._handle = None
        started.append(self)
        self._view = ffi.from_buffer("uint8_t[]", mapping)
        out = ffi.new("rt_index_build **")   # NULL until the thread runs
        try:
            status = lib.rt_index_build_start(self._view, count, expected, out)
            self._handle = out[0] if status == lib.RT_OK else None
        except BaseException:
            # A Ctrl-C raised as the call returns would otherwise leave the
            # thread running with nobody to join it or free its table.
            self._handle = None
            if out[0] != ffi.NULL:
                lib.rt_index_build_discard(out[0])
            self._release()
            raise
        if self._handle is None:   # no thread or memory now: built after the replay
            # Only the view: the restore goes on reading the mapping (its
            # checksum, the tree's copy) and releases it itself.
            view, self._view, self._mapping = self._view, None, None
            ffi.release(view)

    def adopt(self, tree: Any) -> None:
        """Make the build ``tree``'s index (a plain build if there is none)."""
        handle, self._handle = self._handle, None
        try:
            if handle is None:
                tree.enable_index()
            else:
                check(lib.rt_tree_index_adopt(_core.handle(tree), handle), "enable_index")
        finally:
            self._release()

    def discard(self) -> None:
        """Wait for the C thread and free what it built; idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            lib.rt_index_build_discard(handle)
        self._release()

    def _release(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            # Unmaps the file unless the tree serves it (its own view).
            storage.release_mapping(self._mapping, view)
        self._mapping = None


class Recovery(TreeState):
    """RotorTree methods that rebuild the tree from its files."""

    def _wal_leaf_bound(self, meta: Meta) -> int:
        """At most how many leaves the WAL after the checkpoint can add: its
        segments' bytes over 32 (an index sized for it needs no doubling)."""
        total = 0
        for name in os.listdir(self._dir):
            gen = storage.parse_segment_name(name)
            if gen is not None and gen >= meta.wal_gen:
                try:
                    total += os.path.getsize(os.path.join(self._dir, name))
                except OSError:
                    pass   # the replay reports it
        return total // NODE

    def _restore_checkpoint(self, meta: Meta, verify: bool,
                            builds: Optional[List[IndexBuild]] = None) -> None:
        """Restore the checkpoint into the tree; with ``builds`` (a list),
        also start building the leaf index of its leaves in the background,
        appending the build to ``builds`` as it starts: the caller must
        adopt or discard it, also when this raises (the list, not a return
        value, so that a Ctrl-C as this returns cannot lose it)."""
        self._seq = meta.last_seq
        self._size = meta.size
        if meta.size == 0:
            return
        started: List[IndexBuild] = [] if builds is None else builds
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
                    if (builds is not None and BACKGROUND_INDEX and level == 0
                            and needed >= meta.size * NODE):
                        # Before the checksum, which it overlaps: a mismatch
                        # discards the build (the except below).
                        IndexBuild(mapping, meta.size,
                                           meta.size + self._wal_leaf_bound(meta), started)
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
                    arity, meta.root, meta.rule)
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
            for build in started:   # first: its thread reads the level-0 mapping
                build.discard()
            for mapping, cdata in held:
                storage.release_mapping(mapping, cdata)
            raise
        tree = self._live()
        try:
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
        except BaseException:
            # Its C thread still reads the level-0 mapping. The mappings
            # stay: the restored tree borrows their nodes.
            for build in started:
                build.discard()
            raise

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
            log.warning("rotortree: %s: removed %d WAL segment(s) already covered by the "
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
                    if batch_bytes >= REPLAY_BATCH_BYTES:
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
                    self._files.retired.append(Segment(gen, path, -1, 0))
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
            log.warning("rotortree: %s: WAL segment %s has a torn tail at offset %d (%s); "
                         "ignoring %d bytes after entry %d (read-only: the files are left "
                         "as they are)", directory, first_path, offset, reason, dropped, replayed)
            return dropped
        log.warning("rotortree: %s: dropped the torn tail of WAL segment %s at offset %d (%s): "
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
