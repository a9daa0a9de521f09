"""Encodings of the durable files (checkpoint record, WAL segments and
frames, sync record, saved-tree header) and the tree shape they rely on;
the layouts are described in :mod:`rotortree.storage`."""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, List, Optional, Tuple

from .._native import ffi, lib
from ..errors import CorruptionError, InvalidArgumentError
from ..rules import DEFAULT_RULE, RFC6962, RULES, rule_code
from .io import atomic_write, fdatasync_fd, open_fd, write_all

NODE = 32
ZERO_NODE = bytes(32)

# --------------------------------------------------------------------------
# Tree shape helpers


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
# Version 2 adds the tree's hash rule after the head; version 1 (before
# rules) has none and means rotortree-0.15.
META_VERSION = 2
META_RULELESS_VERSION = 1
_META_HEAD = struct.Struct("<4sHHHHIQQQ32s")
_META_RULE = struct.Struct("<B7x")
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
# Meta flag: the tree keeps a leaf index, rebuilt from the recovered leaves
# on every open (see rotortree.durable: never stored, so never stale).
META_FLAG_INDEX = 2
_META_KNOWN_FLAGS = META_FLAG_SYNC_RECORD | META_FLAG_INDEX


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
    rule: str = DEFAULT_RULE

    def encode(self) -> bytes:
        head = _META_HEAD.pack(META_MAGIC, META_VERSION, self.arity, self.max_depth,
                               len(self.levels), self.flags, self.size, self.last_seq,
                               self.wal_gen, self.root or ZERO_NODE)
        head += _META_RULE.pack(rule_code(self.rule))
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
        if version not in (META_RULELESS_VERSION, META_VERSION):
            raise bad(f"unsupported version {version}")
        head_len = _META_HEAD.size + (_META_RULE.size if version >= 2 else 0)
        expected_len = head_len + level_count * _META_LEVEL.size + _CRC.size
        if len(data) != expected_len:
            raise bad(f"length {len(data)} bytes, expected {expected_len} for "
                      f"{level_count} levels")
        (crc,) = _CRC.unpack_from(data, expected_len - _CRC.size)
        if zlib.crc32(data[:expected_len - _CRC.size]) != crc:
            raise bad("checksum mismatch (the record is damaged)")
        if not valid_shape(arity, max_depth) or flags & ~_META_KNOWN_FLAGS:
            raise bad(f"invalid header (arity {arity}, max_depth {max_depth}, flags {flags:#x})")
        rule = DEFAULT_RULE
        if version >= 2:
            (code,) = _META_RULE.unpack_from(data, _META_HEAD.size)
            if code >= len(RULES) or (RULES[code] == RFC6962 and arity != 2):
                raise bad(f"invalid rule number {code} for arity {arity}")
            rule = RULES[code]
        levels = []
        offset = head_len
        for _ in range(level_count):
            stored, level_crc, last = _META_LEVEL.unpack_from(data, offset)
            levels.append(LevelRecord(stored, level_crc, last))
            offset += _META_LEVEL.size
        meta = cls(arity, max_depth, size, last_seq, wal_gen,
                   root if size else None, levels, flags, rule)
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
# The segment's version says how its frames are checksummed: version 1 with
# zlib's CRC-32 (read only: segments written before CRC-32C), version 2 with
# CRC-32C, computed in C off the GIL (csrc/wal.c says why CRC-32C). The
# segment header itself keeps zlib's CRC-32 in both, so that the version can
# be trusted before it is used.
SEGMENT_VERSION_ZLIB = 1
SEGMENT_VERSION = 2
SEGMENT_VERSIONS = (SEGMENT_VERSION_ZLIB, SEGMENT_VERSION)
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


def crc32c(data: Any, crc: int = 0) -> int:
    """CRC-32C of a bytes-like object, continuing ``crc`` (as zlib.crc32
    continues its second argument); computed in C without the GIL."""
    with memoryview(data) as view:
        return int(lib.rt_crc32c(crc, ffi.from_buffer("uint8_t[]", view), view.nbytes))


def crc32c_impl() -> str:
    """Which CRC-32C code this machine runs: "sse4.2", "armv8-crc" or "portable"."""
    return str(ffi.string(lib.rt_crc32c_impl()).decode())


def frame_checksum(version: int) -> Callable[[Any, int], int]:
    """The checksum ``f(data, crc)`` of the frames of a segment of ``version``."""
    return zlib.crc32 if version == SEGMENT_VERSION_ZLIB else crc32c


def encode_segment_header(arity: int, max_depth: int, gen: int,
                          version: int = SEGMENT_VERSION) -> bytes:
    head = _SEG_HEAD.pack(SEGMENT_MAGIC, version, arity, max_depth, 0, gen, 0, 0)
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
    if version not in SEGMENT_VERSIONS:
        raise CorruptionError(f"WAL segment {path}: unsupported version {version}", path)
    return arity, max_depth, gen


def segment_version(data: Any) -> int:
    """The version of a segment whose header decode_segment_header accepted."""
    return int(_SEG_HEAD.unpack_from(data)[1])


def encode_frame_prefix(seq: int, first_index: int, count: int, synced: int) -> bytearray:
    """A frame header with its checksum field zero, for rt_wal_append to fill."""
    header = bytearray(FRAME_HEADER_LEN)
    _FRAME_PREFIX.pack_into(header, 0, FRAME_MAGIC, 0, seq, first_index, count, synced)
    return header


def encode_frame_header(seq: int, first_index: int, count: int, synced: int,
                        payload: Any, version: int = SEGMENT_VERSION) -> bytes:
    prefix = _FRAME_PREFIX.pack(FRAME_MAGIC, 0, seq, first_index, count, synced)
    checksum = frame_checksum(version)
    return prefix + _FRAME_SUFFIX.pack(checksum(payload, checksum(prefix, 0)))


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


def frame_at(buf: Any, offset: int,
             version: int = SEGMENT_VERSION) -> Tuple[Optional[Frame], str]:
    """The valid frame at ``offset`` of ``buf`` (a segment of ``version``),
    or (None, why not)."""
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
        checksum = frame_checksum(version)
        actual = checksum(payload, checksum(head, 0))
        head.release()
        payload.release()
    if actual != crc:
        return None, "frame checksum mismatch"
    return Frame(offset, seq, first, count, synced, payload_offset), ""


def iter_frames(buf: Any, offset: int = SEGMENT_HEADER_LEN,
                version: Optional[int] = None) -> Iterator[Tuple[Frame, str]]:
    """Frames from ``offset`` on: yields (frame, "") for each valid frame, then
    (a Frame holding only the offset, reason) at the first invalid one (the
    tear); nothing more at a clean end. ``version``: the segment's (default:
    read from ``buf``'s header)."""
    if version is None:
        version = segment_version(buf)
    end = len(buf)
    while offset < end:
        frame, reason = frame_at(buf, offset, version)
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
        # Forgotten first: interrupted here, a second close must not close
        # the number again (by then it may name another file).
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


# --------------------------------------------------------------------------
# LeanIMT.save / LeanIMT.load

SAVE_MAGIC = b"RTSV"
# Version 2 adds SAVE_RULE after the head: the tree's rule number; version 1
# has none and means rotortree-0.15.
SAVE_VERSION = 2
SAVE_RULELESS_VERSION = 1
SAVE_HEAD = struct.Struct("<4sHHHHIQ32s")  # 56; the u32 holds SAVE_FLAG_* bits
SAVE_RULE = struct.Struct("<B7x")  # 8
# Save flag: the tree keeps a leaf index; load rebuilds it from the leaves
# (it is not stored: rebuilding on the pool costs about what reading and
# checksumming a stored table would, and cannot disagree with the leaves).
SAVE_FLAG_INDEX = 1
SAVE_KNOWN_FLAGS = SAVE_FLAG_INDEX
SAVE_LEVEL = struct.Struct("<QI4x")  # 16
SAVE_CRC = struct.Struct("<I4x")  # 8


def check_arity(arity: int, max_depth: int) -> None:
    if not lib.RT_MIN_ARITY <= arity <= lib.RT_MAX_ARITY:
        raise InvalidArgumentError(
            f"arity must be {lib.RT_MIN_ARITY}..{lib.RT_MAX_ARITY}, got {arity}")
    if not 1 <= max_depth <= lib.RT_MAX_DEPTH_LIMIT:
        raise InvalidArgumentError(f"max_depth must be 1..{lib.RT_MAX_DEPTH_LIMIT}, got {max_depth}")


def valid_shape(arity: int, max_depth: int) -> bool:
    """Whether a stored arity and max_depth are ones the C core accepts."""
    return (lib.RT_MIN_ARITY <= arity <= lib.RT_MAX_ARITY
            and 1 <= max_depth <= lib.RT_MAX_DEPTH_LIMIT)


__all__ = [
    "NODE",
    "level_lengths",
    "stored_count",
    "META_NAME",
    "META_MAGIC",
    "META_VERSION",
    "LevelRecord",
    "META_FLAG_SYNC_RECORD",
    "META_FLAG_INDEX",
    "Meta",
    "read_meta",
    "level_file_name",
    "SEGMENT_MAGIC",
    "SEGMENT_VERSION",
    "SEGMENT_VERSION_ZLIB",
    "SEGMENT_VERSIONS",
    "crc32c",
    "crc32c_impl",
    "frame_checksum",
    "segment_version",
    "encode_frame_prefix",
    "SEGMENT_HEADER_LEN",
    "FRAME_MAGIC",
    "FRAME_HEADER_LEN",
    "segment_name",
    "parse_segment_name",
    "encode_segment_header",
    "decode_segment_header",
    "encode_frame_header",
    "Frame",
    "frame_at",
    "iter_frames",
    "SYNC_NAME",
    "SYNC_MAGIC",
    "SYNC_VERSION",
    "SYNC_SLOT_OFFSETS",
    "SYNC_FILE_LEN",
    "encode_sync_slot",
    "read_sync_record",
    "SyncRecord",
    "SAVE_MAGIC",
    "SAVE_VERSION",
    "SAVE_RULELESS_VERSION",
    "SAVE_RULE",
    "SAVE_HEAD",
    "SAVE_LEVEL",
    "SAVE_CRC",
    "SAVE_FLAG_INDEX",
    "SAVE_KNOWN_FLAGS",
    "ZERO_NODE",
    "check_arity",
    "valid_shape",
]
