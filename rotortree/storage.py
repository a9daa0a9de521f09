"""On-disk formats of durable trees, and ``LeanIMT.save`` / ``LeanIMT.load``.

All integers are little-endian. Every checksum is CRC-32 as computed by
``zlib.crc32``. Nodes and leaves are 32 raw bytes.

Durable tree directory (``RotorTree.open(path)``)
-------------------------------------------------

``LOCK``
    Empty-ish lock file (it holds the owner's pid, for diagnostics only).
    ``fcntl.flock(LOCK_EX | LOCK_NB)`` on it and on the directory itself
    makes a directory single-owner; the directory lock still holds if
    ``LOCK`` is deleted. Read-only opens take only a shared lock on the
    directory.

``synced``
    The sync record: the highest WAL sequence number ever reported durable.
    Two 32-byte slots at offsets 0 and 512, written alternately (a torn
    write spoils one slot only; the valid slot with the higher seq counts)::

        magic "RTSY" | version u16 (=1) | slot u16 | seq u64 | 0 u64 |
        crc32 u32 over the previous 24 bytes | 0 u32

    Each group commit fsyncs the WAL, then writes and fdatasyncs the record,
    then reports the entries durable; recovery that finds fewer entries than
    the record names reports corruption instead of a torn tail.

``meta``
    The checkpoint record, replaced atomically (written to ``meta.tmp``,
    fsynced, renamed over ``meta``, directory fsynced)::

        magic "RTMD" | version u16 (=1) | arity u16 | max_depth u16 |
        level_count u16 | flags u32 | size u64 | last_seq u64 |
        wal_gen u64 | root[32] (zeros when empty)                      72 bytes
        level_count times:  stored u64 | crc32 u32 | 0 u32 | last[32]  48 bytes
        crc32 u32 over everything before it

    ``level_count`` is ``depth(size) + 1`` (0 for the empty tree).
    ``stored`` is how many leading nodes of the level its level file holds:
    ``size`` for level 0 (leaves never change), ``len_l - 1`` for levels
    l >= 1, whose last node may still change on later inserts and therefore
    lives in the record (``last``) instead of the file. ``crc32`` covers the
    file's first ``stored * 32`` bytes. ``last_seq`` is the sequence number of
    the last WAL entry the checkpoint contains; ``wal_gen`` the first WAL
    segment that may hold later entries (older segments are garbage).
    A fresh directory gets a record with size 0 before anything else, so
    arity and max_depth are always on disk. ``flags`` bit 0: the directory
    keeps a sync record (a missing one is damage, not a tree written before
    the record existed); other bits are 0.

``level-LL.dat`` (LL = two decimal digits, the level)
    Raw nodes, node i at byte offset 32 * i, no header (so the file can be
    memory-mapped and read in place). Append-only: bytes before
    ``stored * 32`` of the committed record are never rewritten. The file
    may be longer than that (nodes of a checkpoint that did not commit, or
    zeros preallocated with ftruncate for memory-mapped levels); those
    bytes mean nothing.

``wal-GGGGGGGGGGGGGGGG.log`` (G = 16 hex digits, the generation)
    Write-ahead log segment. A 32-byte header::

        magic "RTWS" | version u16 (=1) | arity u16 | max_depth u16 | 0 u16 |
        gen u64 | 0 u64 | crc32 u32 over the previous 28 bytes

    then frames, back to back (each a multiple of 8 bytes)::

        magic "RTWF" | 0 u32 | seq u64 | first_index u64 | count u64 |
        synced u64 | crc32 u32 | 0 u32 | leaves[32 * count]

    ``seq`` numbers entries 1, 2, 3, ... over the life of the tree (one entry
    per insert / insert_many call), ``first_index`` is the tree size before
    the entry, ``synced`` is the highest seq already known durable when the
    frame was written (a frame of a segment after a tear that says so shows
    the tear is damage to acknowledged data), and the crc covers the first
    40 header bytes and the leaves. Frames are read strictly one after the
    other: a frame's leaves are never searched for frames. A
    checkpoint starts a new segment, so that segments wholly covered by a
    committed checkpoint can be deleted ("WAL truncation").

Exported in-memory tree (``LeanIMT.save(path)``)
------------------------------------------------

One file, written atomically (``<path>.tmp-<pid>``, fsync, rename, directory
fsync)::

    magic "RTSV" | version u16 (=1) | arity u16 | max_depth u16 |
    level_count u16 | 0 u32 | size u64 | root[32] (zeros when empty)  56 bytes
    level_count times: count u64 | crc32 u32 | 0 u32                  16 bytes
    crc32 u32 | 0 u32 over the header and table                        8 bytes
    level 0 nodes, level 1 nodes, ..., level depth nodes (all nodes)

``load(verify=True)`` checks every level's crc and rehashes every level to
the root (in parallel, ``compute_root``; see :func:`first_bad_level`), so
any change to a stored node is caught, whatever its crc; ``verify=False``
checks only the header's crc, the file's length and that the top node is
the root. Neither
rehashes the tree to rebuild it: the nodes are copied into the tree, or with
``mmap=True`` served in place from a shared read-only mapping of the file.

I/O hooks
---------

Every write, fsync, rename and truncate of this package's files goes through
the module-level functions ``_pwrite``, ``_fsync``, ``_fdatasync`` (the sync
record only), ``_rename`` and ``_truncate``, looked up at call time, so tests
can inject failures by replacing them. Failures are reported as
:class:`DurabilityError` with ``operation`` set to ``"write"``, ``"fsync"``
(also for fdatasync), ``"rename"``, ``"truncate"`` or ``"open"``.
"""

from __future__ import annotations

import errno as _errno
import mmap
import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, List, Optional, Tuple, Type

from ._native import check, ffi, lib
from .errors import ArgumentTypeError, CorruptionError, DurabilityError, InvalidArgumentError

if TYPE_CHECKING:
    from .tree import LeanIMT

NODE = 32
_ZERO32 = bytes(32)

# --------------------------------------------------------------------------
# I/O hooks (replace in tests to inject failures)


def _pwrite(fd: int, data: Any, offset: int) -> int:
    return os.pwrite(fd, data, offset)


def _fsync(fd: int) -> None:
    os.fsync(fd)


def _fdatasync(fd: int) -> None:
    getattr(os, "fdatasync", os.fsync)(fd)


def _rename(src: str, dst: str) -> None:
    os.rename(src, dst)


def _truncate(fd: int, length: int) -> None:
    os.ftruncate(fd, length)


def io_error(operation: str, path: str, error: BaseException) -> DurabilityError:
    """A DurabilityError for a failed ``operation`` on ``path``."""
    code = getattr(error, "errno", None) or _errno.EIO
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    result = DurabilityError(code, f"{operation} of {path} failed: {reason}")
    result.filename = path
    result.operation = operation
    result.__cause__ = error
    return result


def write_all(fd: int, data: Any, offset: int, path: str) -> None:
    """pwrite all of ``data`` at ``offset`` (looping over short writes)."""
    view = memoryview(data).cast("B")
    try:
        while view.nbytes:
            written = _pwrite(fd, view, offset)
            if written <= 0:
                raise OSError(_errno.EIO, "short write")
            view = view[written:]
            offset += written
    except OSError as error:
        raise io_error("write", path, error) from error
    finally:
        view.release()


def fsync_fd(fd: int, path: str) -> None:
    try:
        _fsync(fd)
    except OSError as error:
        raise io_error("fsync", path, error) from error


def fdatasync_fd(fd: int, path: str) -> None:
    """fsync for a file overwritten in place (its size never changes): the
    data without the timestamps, which spares a journal commit."""
    try:
        _fdatasync(fd)
    except OSError as error:
        raise io_error("fsync", path, error) from error


def truncate_fd(fd: int, length: int, path: str) -> None:
    try:
        _truncate(fd, length)
    except OSError as error:
        raise io_error("truncate", path, error) from error


def rename(src: str, dst: str) -> None:
    try:
        _rename(src, dst)
    except OSError as error:
        raise io_error("rename", dst, error) from error


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise io_error("open", path, error) from error
    try:
        fsync_fd(fd, path)
    finally:
        os.close(fd)


def open_fd(path: str, flags: int, mode: int = 0o644) -> int:
    try:
        return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as error:
        raise io_error("open", path, error) from error


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``: write a temporary file, fsync it,
    rename it over ``path``, fsync the directory. On failure the old file is
    untouched (the temporary is removed); a failed directory fsync leaves
    either version in place, both complete."""
    directory = os.path.dirname(path) or "."
    tmp = path + ".tmp"
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        try:
            write_all(fd, data, 0, tmp)
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(directory)


# --------------------------------------------------------------------------
# Tree shape helpers


def depth_of(size: int, arity: int) -> int:
    depth, capacity = 0, 1
    while capacity < size:
        capacity *= arity
        depth += 1
    return depth


def level_lengths(size: int, arity: int) -> List[int]:
    """Node counts of levels 0..depth(size) ([] for the empty tree)."""
    if size == 0:
        return []
    lengths = [size]
    while lengths[-1] > 1:
        lengths.append(-(-lengths[-1] // arity))
    return lengths


def stored_count(level: int, length: int) -> int:
    """Nodes a level file holds for a level of ``length`` nodes."""
    return length if level == 0 else length - 1


# --------------------------------------------------------------------------
# Checkpoint metadata record

META_NAME = "meta"
META_MAGIC = b"RTMD"
META_VERSION = 1
_META_HEAD = struct.Struct("<4sHHHHIQQQ32s")
_META_LEVEL = struct.Struct("<QI4x32s")
_CRC = struct.Struct("<I")


@dataclass
class LevelRecord:
    stored: int
    crc: int
    last: bytes


# Meta flag: the directory keeps a sync record (SYNC_NAME); its absence is
# then damage, not an older tree that never had one.
META_FLAG_SYNC_RECORD = 1
_META_KNOWN_FLAGS = META_FLAG_SYNC_RECORD


@dataclass
class Meta:
    arity: int
    max_depth: int
    size: int = 0
    last_seq: int = 0
    wal_gen: int = 1
    root: Optional[bytes] = None
    levels: List[LevelRecord] = field(default_factory=list)
    flags: int = META_FLAG_SYNC_RECORD

    def encode(self) -> bytes:
        head = _META_HEAD.pack(META_MAGIC, META_VERSION, self.arity, self.max_depth,
                               len(self.levels), self.flags, self.size, self.last_seq,
                               self.wal_gen, self.root or _ZERO32)
        body = head + b"".join(_META_LEVEL.pack(r.stored, r.crc, r.last) for r in self.levels)
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def decode(cls, data: bytes, path: str) -> "Meta":
        def bad(what: str) -> CorruptionError:
            return CorruptionError(f"checkpoint metadata {path}: {what}", path)

        if len(data) < _META_HEAD.size + _CRC.size:
            raise bad(f"truncated ({len(data)} bytes)")
        (magic, version, arity, max_depth, level_count, flags, size, last_seq, wal_gen,
         root) = _META_HEAD.unpack_from(data)
        if magic != META_MAGIC:
            raise bad(f"bad magic {magic!r} (not a rotortree metadata file)")
        expected_len = _META_HEAD.size + level_count * _META_LEVEL.size + _CRC.size
        if len(data) != expected_len:
            raise bad(f"length {len(data)} bytes, expected {expected_len} for "
                      f"{level_count} levels")
        (crc,) = _CRC.unpack_from(data, expected_len - _CRC.size)
        if zlib.crc32(data[:expected_len - _CRC.size]) != crc:
            raise bad("checksum mismatch (the record is damaged)")
        if version != META_VERSION:
            raise bad(f"unsupported version {version}")
        if not 2 <= arity <= 255 or not 1 <= max_depth <= 64 or flags & ~_META_KNOWN_FLAGS:
            raise bad(f"invalid header (arity {arity}, max_depth {max_depth}, flags {flags:#x})")
        levels = []
        offset = _META_HEAD.size
        for _ in range(level_count):
            stored, level_crc, last = _META_LEVEL.unpack_from(data, offset)
            levels.append(LevelRecord(stored, level_crc, last))
            offset += _META_LEVEL.size
        meta = cls(arity, max_depth, size, last_seq, wal_gen,
                   root if size else None, levels, flags)
        lengths = level_lengths(size, arity)
        if len(lengths) != level_count:
            raise bad(f"{level_count} levels recorded, a tree of {size} leaves has "
                      f"{len(lengths)}")
        for level, (record, length) in enumerate(zip(levels, lengths)):
            if record.stored != stored_count(level, length):
                raise bad(f"level {level} records {record.stored} stored nodes, expected "
                          f"{stored_count(level, length)}")
        if size and levels[-1].last != root:
            raise bad("the root differs from the top level's node")
        if size > arity ** max_depth or wal_gen < 1:
            raise bad(f"size {size} exceeds the capacity or wal_gen {wal_gen} invalid")
        return meta


def read_meta(directory: str) -> Optional[Meta]:
    path = os.path.join(directory, META_NAME)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        return None
    return Meta.decode(data, path)


def level_file_name(level: int) -> str:
    return f"level-{level:02d}.dat"


# --------------------------------------------------------------------------
# WAL segments and frames

SEGMENT_MAGIC = b"RTWS"
SEGMENT_VERSION = 1
_SEG_HEAD = struct.Struct("<4sHHHHQQI")
SEGMENT_HEADER_LEN = _SEG_HEAD.size  # 32
FRAME_MAGIC = b"RTWF"
_FRAME_PREFIX = struct.Struct("<4sIQQQQ")  # 40 bytes, covered by the crc
_FRAME_SUFFIX = struct.Struct("<I4x")
FRAME_HEADER_LEN = _FRAME_PREFIX.size + _FRAME_SUFFIX.size  # 48


def segment_name(gen: int) -> str:
    return f"wal-{gen:016x}.log"


def parse_segment_name(name: str) -> Optional[int]:
    if len(name) == 24 and name.startswith("wal-") and name.endswith(".log"):
        try:
            return int(name[4:20], 16)
        except ValueError:
            return None
    return None


def encode_segment_header(arity: int, max_depth: int, gen: int) -> bytes:
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, SEGMENT_VERSION, arity, max_depth, 0, gen, 0, 0)
    return head[:-4] + _CRC.pack(zlib.crc32(head[:-4]))


def decode_segment_header(data: Any, path: str) -> Tuple[int, int, int]:
    """(arity, max_depth, gen); CorruptionError if the header is bad."""
    if len(data) < SEGMENT_HEADER_LEN:
        raise CorruptionError(f"WAL segment {path}: header truncated", path)
    magic, version, arity, max_depth, _zero, gen, _zero2, crc = _SEG_HEAD.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        raise CorruptionError(f"WAL segment {path}: bad magic {bytes(magic)!r}", path)
    if zlib.crc32(bytes(data[:SEGMENT_HEADER_LEN - 4])) != crc:
        raise CorruptionError(f"WAL segment {path}: header checksum mismatch", path)
    if version != SEGMENT_VERSION:
        raise CorruptionError(f"WAL segment {path}: unsupported version {version}", path)
    return arity, max_depth, gen


def encode_frame_header(seq: int, first_index: int, count: int, synced: int,
                        payload: Any) -> bytes:
    prefix = _FRAME_PREFIX.pack(FRAME_MAGIC, 0, seq, first_index, count, synced)
    return prefix + _FRAME_SUFFIX.pack(zlib.crc32(payload, zlib.crc32(prefix)))


@dataclass
class Frame:
    offset: int
    seq: int
    first_index: int
    count: int
    synced: int
    payload_offset: int

    @property
    def end(self) -> int:
        return self.payload_offset + NODE * self.count


def frame_at(buf: Any, offset: int) -> Tuple[Optional[Frame], str]:
    """The valid frame at ``offset`` of ``buf``, or (None, why not)."""
    remaining = len(buf) - offset
    if remaining < FRAME_HEADER_LEN:
        return None, f"{remaining} trailing bytes, less than a frame header"
    magic, _zero, seq, first, count, synced = _FRAME_PREFIX.unpack_from(buf, offset)
    if magic != FRAME_MAGIC:
        return None, "no frame magic"
    (crc,) = _FRAME_SUFFIX.unpack_from(buf, offset + _FRAME_PREFIX.size)
    payload_offset = offset + FRAME_HEADER_LEN
    if count == 0 or count > (len(buf) - payload_offset) // NODE:
        return None, f"frame of {count} leaves does not fit in the file"
    with memoryview(buf) as view:
        head = view[offset:offset + _FRAME_PREFIX.size]
        payload = view[payload_offset:payload_offset + NODE * count]
        actual = zlib.crc32(payload, zlib.crc32(head))
        head.release()
        payload.release()
    if actual != crc:
        return None, "frame checksum mismatch"
    return Frame(offset, seq, first, count, synced, payload_offset), ""


def iter_frames(buf: Any, offset: int = SEGMENT_HEADER_LEN) -> Iterator[Tuple[Frame, str]]:
    """Frames from ``offset`` on: yields (frame, "") for each valid frame, then
    (a Frame holding only the offset, reason) at the first invalid one (the
    tear); nothing more at a clean end."""
    end = len(buf)
    while offset < end:
        frame, reason = frame_at(buf, offset)
        if frame is None:
            yield Frame(offset, 0, 0, 0, 0, offset), reason
            return
        yield frame, ""
        offset = frame.end


# --------------------------------------------------------------------------
# Sync record: the highest WAL sequence ever acknowledged as durable

SYNC_NAME = "synced"
SYNC_MAGIC = b"RTSY"
SYNC_VERSION = 1
_SYNC_SLOT = struct.Struct("<4sHHQ8xI4x")  # 32 bytes, crc over the first 24
# Two slots in different 512-byte sectors, written alternately: a crash that
# tears one write damages one slot, and the other still holds the previous
# acknowledged point, which is all that was acknowledged (the torn write's
# fsync never returned).
SYNC_SLOT_OFFSETS = (0, 512)
SYNC_FILE_LEN = SYNC_SLOT_OFFSETS[1] + _SYNC_SLOT.size


def encode_sync_slot(slot: int, seq: int) -> bytes:
    head = _SYNC_SLOT.pack(SYNC_MAGIC, SYNC_VERSION, slot, seq, 0)
    return head[:24] + _CRC.pack(zlib.crc32(head[:24])) + bytes(4)


def read_sync_record(directory: str) -> Optional[Tuple[int, int]]:
    """(acknowledged seq, the slot holding it), None if the file is missing;
    CorruptionError if neither slot is valid."""
    path = os.path.join(directory, SYNC_NAME)
    try:
        with open(path, "rb") as handle:
            data = handle.read(SYNC_FILE_LEN)
    except FileNotFoundError:
        return None
    best: Optional[Tuple[int, int]] = None
    for slot, offset in enumerate(SYNC_SLOT_OFFSETS):
        if len(data) < offset + _SYNC_SLOT.size:
            continue
        magic, version, stored_slot, seq, crc = _SYNC_SLOT.unpack_from(data, offset)
        if (magic == SYNC_MAGIC and version == SYNC_VERSION and stored_slot == slot
                and zlib.crc32(data[offset:offset + 24]) == crc
                and (best is None or seq > best[0])):
            best = (seq, slot)
    if best is None:
        raise CorruptionError(f"sync record {path}: no valid slot ({len(data)} bytes); the "
                              f"WAL's acknowledged end is unknown", path)
    return best


class SyncRecord:
    """The open sync record of a writable tree. ``write(seq)`` makes ``seq``
    the recorded acknowledged point; callers serialise it (the tree's sync
    lock, or the finalizer once nothing else runs)."""

    __slots__ = ("fd", "path", "seq", "slot")

    def __init__(self, directory: str, seq: int, slot: int) -> None:
        self.path = os.path.join(directory, SYNC_NAME)
        self.fd = open_fd(self.path, os.O_RDWR)
        self.seq = seq
        self.slot = slot ^ 1   # the next write spares the slot holding seq

    @staticmethod
    def create(directory: str, seq: int) -> None:
        """Write a fresh record holding ``seq`` in both slots, atomically."""
        data = bytearray(SYNC_FILE_LEN)
        for slot, offset in enumerate(SYNC_SLOT_OFFSETS):
            data[offset:offset + _SYNC_SLOT.size] = encode_sync_slot(slot, seq)
        atomic_write(os.path.join(directory, SYNC_NAME), bytes(data))

    def write(self, seq: int) -> None:
        if seq <= self.seq:
            return
        write_all(self.fd, encode_sync_slot(self.slot, seq), SYNC_SLOT_OFFSETS[self.slot],
                  self.path)
        fdatasync_fd(self.fd, self.path)
        # Only a completed write moves on: after a failed one the same slot
        # is rewritten, so the slot holding the last good seq stays intact.
        self.seq = seq
        self.slot ^= 1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------
# Reading nodes out of a snapshot in bounded pieces

_PIECE_NODES = 1 << 16  # 2 MiB per read


def snapshot_pieces(snap_handle: Any, level: int, start: int, stop: int) -> Iterator[memoryview]:
    """Nodes [start, stop) of ``level`` of a C snapshot, as successive views
    of one reused buffer (consume each before asking for the next)."""
    if stop <= start:
        return
    piece = min(_PIECE_NODES, stop - start)
    buffer = ffi.new("uint8_t[]", piece * NODE)
    raw = ffi.buffer(buffer)
    position = start
    while position < stop:
        count = min(piece, stop - position)
        check(lib.rt_snapshot_read_nodes(snap_handle, level, position, count, buffer),
              "read snapshot nodes")
        with memoryview(raw) as whole:
            view = whole[:count * NODE]
            try:
                yield view
            finally:
                view.release()
        position += count


def snapshot_node(snap_handle: Any, level: int, index: int) -> bytes:
    out = ffi.new("uint8_t[32]")
    check(lib.rt_snapshot_get_node(snap_handle, level, index, out), "read snapshot node")
    node: bytes = ffi.buffer(out)[:]
    return node


# --------------------------------------------------------------------------
# Memory-mapped stored levels

def map_file(path: str, fd: Optional[int] = None) -> Optional[mmap.mmap]:
    """A read-only shared mapping of the whole file (None if it is empty)."""
    if fd is None:
        try:
            handle = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as error:
            raise io_error("open", path, error) from error
        try:
            return map_file(path, handle)
        finally:
            os.close(handle)
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    return mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)


def release_mapping(mapping: Optional[mmap.mmap], *cdatas: Any) -> None:
    """Release cffi views of ``mapping`` and unmap it (when nothing else
    exports it; otherwise the garbage collector unmaps it later)."""
    for cdata in cdatas:
        if cdata is not None:
            try:
                ffi.release(cdata)
            except (ValueError, TypeError):
                pass
    if mapping is not None:
        try:
            mapping.close()
        except BufferError:
            pass


def drop_resident_pages(mapping: Optional[mmap.mmap]) -> None:
    """Let the kernel drop this process's page-table entries of a file
    mapping (the pages stay in the page cache; reads fault them back in):
    verifying a level reads it all, which must not leave it counted as
    resident memory when the point of mapping it is to save RAM."""
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mapping.madvise(mmap.MADV_DONTNEED)
        except OSError:
            pass


def crc_of(mapping: Any, nbytes: int) -> int:
    crc = 0
    step = 1 << 24
    with memoryview(mapping) as view:
        for start in range(0, nbytes, step):
            part = view[start:min(nbytes, start + step)]
            crc = zlib.crc32(part, crc)
            part.release()
    return crc


def root_of_buffer(mapping: Any, nbytes: int, arity: int, last: Optional[bytes] = None) -> bytes:
    """compute_root over the first ``nbytes`` of ``mapping`` (in place), or,
    given ``last``, over those bytes followed by the node ``last``."""
    from .tree import compute_root

    with memoryview(mapping) as view:
        part = view[:nbytes]
        try:
            if last is None:
                return compute_root(part, arity)
            # One transient copy of at most len(level 0) / arity nodes, no
            # more than compute_root of level 0 already allocates.
            return compute_root(b"".join((part, last)), arity)
        finally:
            part.release()


def first_bad_level(levels: List[Tuple[Any, int, Optional[bytes]]], arity: int,
                    root: bytes) -> Optional[int]:
    """The first level whose nodes do not hash up to ``root``, or None.

    ``levels[l]`` is (buffer, nodes of level l at its start, the level's last
    node when it is kept outside the buffer, else None). Every level is
    rehashed to the root with ``compute_root`` on the pool. Level lengths are
    fixed by the size, so a level that differs from the one the leaves
    produce yet hashes to the same root would be a BLAKE3 collision: with
    level 0 checked against the root, this proves every stored node, unlike
    a CRC, which a deliberate edit can keep valid."""
    for level, (buffer, count, last) in enumerate(levels):
        if count + (last is not None) <= 1:
            continue   # the top node: compared with the root by the caller
        if root_of_buffer(buffer, count * NODE, arity, last) != root:
            return level
    return None


# --------------------------------------------------------------------------
# LeanIMT.save / LeanIMT.load

SAVE_MAGIC = b"RTSV"
SAVE_VERSION = 1
_SAVE_HEAD = struct.Struct("<4sHHHHIQ32s")  # 56
_SAVE_LEVEL = struct.Struct("<QI4x")  # 16
_SAVE_CRC = struct.Struct("<I4x")  # 8


def _file_path(path: Any) -> str:
    try:
        result: "str | bytes" = os.fspath(path)
    except TypeError:
        raise ArgumentTypeError(f"path must be a str or os.PathLike, not "
                                f"{type(path).__name__}") from None
    if isinstance(result, bytes):
        return os.fsdecode(result)
    return result


def save_tree(tree: "LeanIMT", path: Any) -> None:
    """Write ``tree`` to ``path`` atomically (see the module docstring)."""
    path = _file_path(path)
    snap = tree.snapshot()
    lengths = level_lengths(snap.size, snap.arity)
    header_len = _SAVE_HEAD.size + len(lengths) * _SAVE_LEVEL.size + _SAVE_CRC.size
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}-{id(snap):x}"
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            offset = header_len
            crcs = []
            for level, length in enumerate(lengths):
                crc = 0
                for piece in snapshot_pieces(snap._snap, level, 0, length):
                    crc = zlib.crc32(piece, crc)
                    write_all(fd, piece, offset, tmp)
                    offset += piece.nbytes
                crcs.append(crc)
            head = _SAVE_HEAD.pack(SAVE_MAGIC, SAVE_VERSION, snap.arity, tree.max_depth,
                                   len(lengths), 0, snap.size, snap.root or _ZERO32)
            head += b"".join(_SAVE_LEVEL.pack(n, c) for n, c in zip(lengths, crcs))
            head += _SAVE_CRC.pack(zlib.crc32(head))
            write_all(fd, head, 0, tmp)
            fsync_fd(fd, tmp)
        finally:
            os.close(fd)
        rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    fsync_dir(directory)


def load_tree(cls: "Type[LeanIMT]", path: Any, verify: bool = True,
              in_place: bool = False) -> "LeanIMT":
    """Read a file written by :func:`save_tree` into a new tree without
    rehashing it (see the module docstring for what ``verify`` checks).
    ``in_place``: serve the nodes from a read-only shared mapping of the file
    instead of copying them (only each level's last chunk is copied); the
    mapping lives as long as the tree and its snapshots."""
    path = _file_path(path)

    def bad(what: str) -> CorruptionError:
        return CorruptionError(f"saved tree {path}: {what}", path)

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise
    except OSError as error:
        raise io_error("open", path, error) from error
    mapping = None
    try:
        file_size = os.fstat(fd).st_size
        head = os.pread(fd, _SAVE_HEAD.size, 0)
        if len(head) < _SAVE_HEAD.size:
            raise bad(f"truncated ({file_size} bytes)")
        magic, version, arity, max_depth, level_count, _zero, size, root = \
            _SAVE_HEAD.unpack(head)
        if magic != SAVE_MAGIC:
            raise bad(f"bad magic {magic!r} (not a file written by LeanIMT.save)")
        header_len = _SAVE_HEAD.size + level_count * _SAVE_LEVEL.size + _SAVE_CRC.size
        header = os.pread(fd, header_len, 0)
        if len(header) < header_len:
            raise bad(f"truncated header ({file_size} bytes)")
        (crc,) = _SAVE_CRC.unpack_from(header, header_len - _SAVE_CRC.size)
        if zlib.crc32(header[:header_len - _SAVE_CRC.size]) != crc:
            raise bad("header checksum mismatch")
        if version != SAVE_VERSION:
            raise bad(f"unsupported version {version}")
        if not 2 <= arity <= 255 or not 1 <= max_depth <= 64:
            raise bad(f"invalid arity {arity} or max_depth {max_depth}")
        if size > arity ** max_depth:
            raise bad(f"{size} leaves exceed arity ** max_depth")
        lengths = level_lengths(size, arity)
        table = [_SAVE_LEVEL.unpack_from(header, _SAVE_HEAD.size + i * _SAVE_LEVEL.size)
                 for i in range(level_count)]
        if [count for count, _ in table] != lengths:
            raise bad(f"level table {[c for c, _ in table]} does not fit {size} leaves")
        expected = header_len + NODE * sum(lengths)
        if file_size != expected:
            raise bad(f"length {file_size} bytes, expected {expected}")
        tree = cls(arity, max_depth)
        if size == 0:
            return tree
        mapping = mmap.mmap(fd, file_size, mmap.MAP_SHARED, mmap.PROT_READ)
        offsets = []
        offset = header_len
        for length in lengths:
            offsets.append(offset)
            offset += NODE * length
        with memoryview(mapping) as view:
            parts = [view[o:o + NODE * n] for o, n in zip(offsets, lengths)]
            try:
                if verify:
                    for level, (part, (_count, level_crc)) in enumerate(zip(parts, table)):
                        if crc_of(part, part.nbytes) != level_crc:
                            raise bad(f"level {level} checksum mismatch")
                    damaged = first_bad_level([(part, count, None) for part, count
                                               in zip(parts, lengths)], arity, root)
                    if damaged == 0:
                        raise bad("the root recomputed from the leaves differs from the "
                                  "recorded root")
                    if damaged is not None:
                        raise bad(f"level {damaged}'s nodes do not hash to the root of the "
                                  f"leaves (the level is damaged; its checksum was kept "
                                  f"valid)")
                if bytes(parts[-1]) != root:
                    raise bad("the top level's node differs from the recorded root")
                if in_place:
                    # Views of the mapping that stay alive with the tree.
                    whole = ffi.from_buffer("uint8_t[]", mapping)
                    buffers = [whole + offset for offset in offsets]
                else:
                    buffers = [ffi.from_buffer("uint8_t[]", part) for part in parts]
                sources = ffi.new("struct rt_level_source[]", len(lengths))
                for level, buffer in enumerate(buffers):
                    sources[level].nodes = buffer
                    sources[level].borrow = lengths[level] if in_place else 0
                status = lib.rt_tree_restore(tree._tree, size, sources, len(lengths))
                if in_place:
                    if status == lib.RT_OK:
                        tree._keepalive.extend((mapping, whole))
                        mapping = None   # owned by the tree now
                    else:
                        ffi.release(whole)
                else:
                    for buffer in buffers:
                        ffi.release(buffer)
                if status == lib.RT_ERR_INVALID_ARGUMENT:
                    raise bad("the stored levels do not form a tree")
                check(status, f"load {path}")
            finally:
                for part in parts:
                    part.release()
        return tree
    finally:
        if mapping is not None:
            mapping.close()
        os.close(fd)


def check_arity(arity: int, max_depth: int) -> None:
    if not 2 <= arity <= 255:
        raise InvalidArgumentError(f"arity must be 2..255, got {arity}")
    if not 1 <= max_depth <= 64:
        raise InvalidArgumentError(f"max_depth must be 1..64, got {max_depth}")
