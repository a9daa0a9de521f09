"""``LeanIMT.save`` and ``LeanIMT.load``: one file holding every level of
an in-memory tree (format in :mod:`rotortree.storage`)."""

from __future__ import annotations

import mmap
import os
import tempfile
import zlib
from typing import TYPE_CHECKING, Any, Optional, Type

from .. import _core
from .._native import check, ffi, lib
from ..errors import CorruptionError, RotorTreeError
from ..rules import RULES, check_same_rule, rule_code
from .formats import (
    NODE,
    SAVE_CRC,
    SAVE_FLAG_INDEX,
    SAVE_HEAD,
    SAVE_KNOWN_FLAGS,
    SAVE_LEVEL,
    SAVE_MAGIC,
    SAVE_RULE,
    SAVE_RULELESS_VERSION,
    SAVE_VERSION,
    ZERO_NODE,
    level_lengths,
    valid_shape,
)
from .io import crc_of, file_path, io_error, replace_file, write_all
from .verify import first_bad_level

if TYPE_CHECKING:
    from ..snapshot import Snapshot
    from ..tree import LeanIMT


def save_tree(tree: "LeanIMT", path: Any) -> None:
    """Write ``tree`` to ``path`` atomically (see the module docstring)."""
    save_snapshot(tree.snapshot(), tree.max_depth, tree.indexed, path)


def save_snapshot(snap: "Snapshot", max_depth: int, indexed: bool, path: Any) -> None:
    """Write the tree ``snap`` shows to ``path`` atomically, as a file that
    loads into a tree of ``max_depth`` (with the leaf index if ``indexed``)."""
    path = file_path(path)
    flags = SAVE_FLAG_INDEX if indexed else 0
    lengths = level_lengths(snap.size, snap.arity)
    header_len = (SAVE_HEAD.size + SAVE_RULE.size + len(lengths) * SAVE_LEVEL.size
                  + SAVE_CRC.size)
    tmp = f"{path}.tmp-{os.getpid()}-{id(snap):x}"

    def write(fd: int) -> None:
        offset = header_len
        crcs = []
        for level, length in enumerate(lengths):
            crc = 0
            for piece in _core.snapshot_pieces(snap, level, 0, length):
                crc = zlib.crc32(piece, crc)
                write_all(fd, piece, offset, tmp)
                offset += piece.nbytes
            crcs.append(crc)
        head = SAVE_HEAD.pack(SAVE_MAGIC, SAVE_VERSION, snap.arity, max_depth,
                              len(lengths), flags, snap.size, snap.root or ZERO_NODE)
        head += SAVE_RULE.pack(rule_code(snap.rule))
        head += b"".join(SAVE_LEVEL.pack(n, c) for n, c in zip(lengths, crcs))
        head += SAVE_CRC.pack(zlib.crc32(head))
        write_all(fd, head, 0, tmp)

    replace_file(path, tmp, True, write)


def load_tree(cls: "Type[LeanIMT]", path: Any, *, verify: bool = True,
              in_place: bool = False, rule: Optional[str] = None) -> "LeanIMT":
    """Read a file written by :func:`save_tree` into a new tree without
    rehashing it (see the module docstring for what ``verify`` checks).
    The tree gets the file's rule; ``rule`` (a checked name), when given,
    must be that rule (RuleMismatchError otherwise).
    ``in_place``: serve the nodes from a read-only shared mapping of the file
    instead of copying them (only each level's last chunk is copied); the
    mapping lives as long as the tree and its snapshots."""
    path = file_path(path)

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
        head = os.pread(fd, SAVE_HEAD.size, 0)
        if len(head) < SAVE_HEAD.size:
            raise bad(f"truncated ({file_size} bytes)")
        magic, version, arity, max_depth, level_count, flags, size, root = \
            SAVE_HEAD.unpack(head)
        if magic != SAVE_MAGIC:
            raise bad(f"bad magic {magic!r} (not a file written by LeanIMT.save)")
        if version not in (SAVE_RULELESS_VERSION, SAVE_VERSION):
            raise bad(f"unsupported version {version}")
        # Version 2 adds the rule after the head; version 1 predates rules
        # and its trees are rotortree-0.15's.
        rule_len = SAVE_RULE.size if version >= 2 else 0
        table_at = SAVE_HEAD.size + rule_len
        header_len = table_at + level_count * SAVE_LEVEL.size + SAVE_CRC.size
        header = os.pread(fd, header_len, 0)
        if len(header) < header_len:
            raise bad(f"truncated header ({file_size} bytes)")
        (crc,) = SAVE_CRC.unpack_from(header, header_len - SAVE_CRC.size)
        if zlib.crc32(header[:header_len - SAVE_CRC.size]) != crc:
            raise bad("header checksum mismatch")
        if flags & ~SAVE_KNOWN_FLAGS:
            raise bad(f"unknown flags {flags:#x} (written by a newer rotortree?)")
        if not valid_shape(arity, max_depth):
            raise bad(f"invalid arity {arity} or max_depth {max_depth}")
        (code,) = SAVE_RULE.unpack_from(header, SAVE_HEAD.size) if rule_len else (0,)
        if code >= len(RULES) or (RULES[code] == "rfc6962" and arity != 2):
            raise bad(f"invalid rule number {code} for arity {arity}")
        file_rule = RULES[code]
        if rule is not None:
            check_same_rule(rule, file_rule, f"saved tree {path}")
        if size > arity ** max_depth:
            raise bad(f"{size} leaves exceed arity ** max_depth")
        lengths = level_lengths(size, arity)
        table = [SAVE_LEVEL.unpack_from(header, table_at + i * SAVE_LEVEL.size)
                 for i in range(level_count)]
        if [count for count, _ in table] != lengths:
            raise bad(f"level table {[c for c, _ in table]} does not fit {size} leaves")
        expected = header_len + NODE * sum(lengths)
        if file_size != expected:
            raise bad(f"length {file_size} bytes, expected {expected}")
        tree = cls(arity, max_depth, rule=file_rule)
        if size == 0:
            if flags & SAVE_FLAG_INDEX:
                tree.enable_index()
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
                                               in zip(parts, lengths)], arity, root,
                                               file_rule)
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
                status = _core.restore(tree, size, sources, len(lengths))
                if in_place:
                    if status == lib.RT_OK:
                        _core.keep_alive(tree, mapping, whole)
                        mapping = None   # owned by the tree now
                    else:
                        ffi.release(whole)
                else:
                    for buffer in buffers:
                        ffi.release(buffer)
                if status == lib.RT_ERR_INVALID_ARGUMENT:
                    raise bad("the stored levels do not form a tree")
                check(status, f"load {path}")
                if flags & SAVE_FLAG_INDEX:
                    tree.enable_index()
            finally:
                for part in parts:
                    part.release()
        return tree
    except OSError as error:   # reading a directory (EISDIR), an I/O error
        if isinstance(error, RotorTreeError):
            raise
        raise io_error("read", path, error) from error
    finally:
        if mapping is not None:
            mapping.close()
        os.close(fd)


def saved_bytes(snap: "Snapshot", max_depth: int, indexed: bool) -> bytes:
    """The save file of ``snap`` as bytes: what a pickled tree or snapshot
    carries, so that unpickling checks it exactly as ``load`` checks a file."""
    with tempfile.TemporaryDirectory(prefix="rotortree-pickle-") as scratch:
        path = os.path.join(scratch, "tree")
        save_snapshot(snap, max_depth, indexed, path)
        with open(path, "rb") as file:
            return file.read()


def load_saved_bytes(cls: "Type[LeanIMT]", data: bytes) -> "LeanIMT":
    """A tree from :func:`saved_bytes` output, verified as ``load`` verifies
    a file (a damaged or forged payload raises CorruptionError)."""
    if not isinstance(data, bytes):
        raise CorruptionError(f"a pickled tree holds bytes, not {type(data).__name__}")
    with tempfile.TemporaryDirectory(prefix="rotortree-pickle-") as scratch:
        path = os.path.join(scratch, "tree")
        with open(path, "wb") as file:
            file.write(data)
        return load_tree(cls, path, verify=True)


# ffi.new zeroes what it allocates; a copy overwrites every byte at once.
_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def copy_tree(cls: "Type[LeanIMT]", snap: "Snapshot", max_depth: int,
              indexed: bool) -> "LeanIMT":
    """A new, independent tree holding what ``snap`` shows, without
    rehashing: each level is read once into a buffer the new tree borrows
    (C copies a borrowed level's last chunk before its first write), so a
    copy costs one pass over the nodes."""
    tree = cls(snap.arity, max_depth, index=indexed, rule=snap.rule)
    if snap.size == 0:
        return tree
    lengths = level_lengths(snap.size, snap.arity)
    buffers = []
    for level, length in enumerate(lengths):
        nodes = _uncleared("uint8_t[]", NODE * length)  # every byte is read into next
        check(_core.snapshot_read(snap, level, length, nodes), "copy")
        buffers.append(nodes)
    sources = ffi.new("struct rt_level_source[]", len(lengths))
    for level, nodes in enumerate(buffers):
        sources[level].nodes = nodes
        sources[level].borrow = lengths[level]
    check(_core.restore(tree, snap.size, sources, len(lengths)), "copy")
    _core.keep_alive(tree, *buffers)
    return tree


__all__ = ["save_tree", "save_snapshot", "load_tree", "saved_bytes", "load_saved_bytes",
           "copy_tree"]
