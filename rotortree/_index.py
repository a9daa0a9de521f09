"""The leaf index from Python: membership reads shared by ``LeanIMT``,
``Snapshot`` and ``RotorTree``, and the reporting of unique inserts."""

from __future__ import annotations

from array import array
from itertools import compress
from typing import Any, Callable, List, Tuple

from ._leaves import Leaves, leaf_batch, single_leaf
from ._native import HASH_LEN, ffi, lib, raise_status
from .errors import ArgumentTypeError, DuplicateLeafError

# (handle, leaf) -> position, -1 or -status: rt_tree_index_position or
# rt_snapshot_index_position; (handle, leaves, count, positions, found) ->
# status: rt_tree_index_find or rt_snapshot_index_find.
Position = Callable[[Any, Any], int]
Finder = Callable[[Any, Any, int, Any, Any], int]
Calls = Tuple[Position, Finder, Any]

# Duplicates named in an error message; the exception carries them all.
_SHOWN = 5


def position_of(calls: Calls, leaf: object) -> int:
    """The first position of one leaf, -1 if absent."""
    if type(leaf) is not bytes or len(leaf) != HASH_LEN:
        leaf = single_leaf(leaf)
    position = calls[0](calls[2], leaf)
    if position < -1:
        raise_status(-position, "leaf index")
    return position


class IndexReads:
    """Membership reads for a class whose ``_index_calls`` gives its C
    lookups and handle (the tree's index, or a snapshot's, which answers as
    of the snapshot's size)."""

    __slots__ = ()

    def _index_calls(self) -> Calls:
        raise NotImplementedError

    def has(self, leaf: bytes) -> bool:
        """Whether ``leaf`` (32 bytes) is in the tree. Needs the leaf index
        (:class:`~rotortree.NoLeafIndexError` otherwise)."""
        return position_of(self._index_calls(), leaf) >= 0

    def __contains__(self, leaf: object) -> bool:
        return self.has(leaf)  # type: ignore[arg-type]

    def index_of(self, leaf: bytes) -> "int | None":
        """The first position holding ``leaf``, or None if it is absent."""
        position = position_of(self._index_calls(), leaf)
        return None if position < 0 else position

    def contains_many(self, leaves: Leaves) -> bytearray:
        """Membership of a batch (what ``insert_many`` accepts), looked up
        in C on the thread pool: one byte per leaf, 1 present, 0 absent
        (``numpy.frombuffer(result, dtype=bool)`` views it)."""
        buffer, count = leaf_batch(leaves)
        found = bytearray(count)
        _, find, handle = self._index_calls()
        status = find(handle, buffer, count, ffi.NULL, ffi.from_buffer("uint8_t[]", found))
        if status:
            raise_status(status, "contains_many")
        return found

    def index_of_many(self, leaves: Leaves) -> "array[int]":
        """First positions of a batch: an ``array('q')``, -1 for an absent
        leaf (``numpy.frombuffer(result, dtype=numpy.int64)`` views it)."""
        buffer, count = leaf_batch(leaves)
        positions = array("q", bytes(8 * count))
        _, find, handle = self._index_calls()
        status = find(handle, buffer, count, ffi.from_buffer("uint64_t[]", positions),
                      ffi.NULL)
        if status:
            raise_status(status, "index_of_many")
        return positions


def unique_flag(value: object, name: str = "unique") -> bool:
    """A bool flag; a truthy string such as "no" must not silently mean True."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def marked(marks: Any) -> List[int]:
    """Positions whose mark byte is set."""
    return list(compress(range(len(marks)), marks))


def duplicate_error(buffer: Any, count: int, marks: Any) -> DuplicateLeafError:
    """The error for a refused unique batch, naming the duplicates."""
    positions = marked(marks)
    data = ffi.buffer(buffer, count * HASH_LEN) if not isinstance(buffer, bytes) else buffer
    leaves = [bytes(data[p * HASH_LEN:(p + 1) * HASH_LEN]) for p in positions]
    shown = ", ".join(f"{p} ({leaf[:8].hex()}...)" for p, leaf in
                      zip(positions[:_SHOWN], leaves))
    more = f" and {len(positions) - _SHOWN} more" if len(positions) > _SHOWN else ""
    noun = "leaf" if len(positions) == 1 else "leaves"
    return DuplicateLeafError(
        f"{len(positions)} duplicate {noun} (already in the tree or repeated in the batch) "
        f"at batch position {shown}{more}; nothing was inserted", positions, leaves)


def _duplicate_marks(tree_handle: Any, buffer: Any, count: int, what: str) -> Tuple[Any, int]:
    """rt_tree_index_duplicates: one mark byte per leaf of the batch (1: in
    the tree or earlier in the batch) and their number."""
    marks = bytearray(count)
    dups = ffi.new("uint64_t *")
    status = lib.rt_tree_index_duplicates(tree_handle, buffer, count,
                                          ffi.from_buffer("uint8_t[]", marks), dups)
    if status:
        raise_status(status, what)
    return marks, int(dups[0])


def check_duplicates(tree_handle: Any, buffer: Any, count: int) -> None:
    """Raise :class:`DuplicateLeafError` if the batch holds a leaf already
    in the tree or twice; the caller keeps writers out meanwhile."""
    marks, dups = _duplicate_marks(tree_handle, buffer, count, "unique insert")
    if dups:
        raise duplicate_error(buffer, count, marks)


def new_leaves(tree_handle: Any, payload: bytes, count: int) -> Tuple[bytes, int, List[int]]:
    """The leaves of ``payload`` not in the tree and not repeated earlier in
    it, joined in order, their count, and the batch positions dropped; the
    caller keeps writers out until it has inserted them."""
    marks, dups = _duplicate_marks(tree_handle, payload, count, "insert_new")
    if not dups:
        return payload, count, []
    kept = b"".join(payload[i * HASH_LEN:(i + 1) * HASH_LEN]
                    for i in range(count) if not marks[i])
    return kept, count - dups, marked(marks)


__all__ = ["IndexReads", "position_of", "unique_flag", "marked", "duplicate_error",
           "check_duplicates", "new_leaves"]
