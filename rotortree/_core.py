"""The one internal interface between the in-memory core (``LeanIMT``,
``Snapshot``) and the modules built on it (``storage``, ``durable``).

Those modules restore trees from files, hand file mappings to the C core and
read snapshots level by level; the public classes deliberately offer none of
that. Rather than each module reaching into ``LeanIMT._tree`` or
``Snapshot._snap``, they call these functions, so the private state of the
core is touched here and in the classes themselves only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator, Optional

from ._native import check, ffi, lib

if TYPE_CHECKING:
    from .snapshot import Snapshot
    from .tree import LeanIMT

NODE = 32
# Nodes copied out of a snapshot per C call when a level is streamed.
_PIECE_NODES = 1 << 16  # 2 MiB per read


# -- trees ----------------------------------------------------------------------


def keep_alive(tree: "LeanIMT", *objects: Any) -> None:
    """Keep ``objects`` (memory the C tree reads in place, such as a file
    mapping and its cffi view) alive as long as ``tree`` and every snapshot
    taken from it."""
    tree._keepalive.extend(objects)


def handle(tree: "LeanIMT") -> Any:
    """``tree``'s C handle, for C calls made on it outside the class."""
    return tree._tree


def restore(tree: "LeanIMT", size: int, sources: Any, count: int) -> int:
    """``rt_tree_restore`` into the empty ``tree`` from ``count`` level
    sources (``struct rt_level_source[]``); the C status, unchecked, so the
    caller can name the file an RT_ERR_INVALID_ARGUMENT came from."""
    status: int = lib.rt_tree_restore(tree._tree, size, sources, count)
    return status


def make_cold(tree: "LeanIMT", level: int, nodes: Any, count: int) -> Optional[int]:
    """Serve the first ``count`` nodes of ``level`` from ``nodes`` (memory
    kept alive with :func:`keep_alive`) instead of the tree's own chunks;
    the number of nodes now served from it, or None if the C core declined
    (the level then simply stays in RAM)."""
    out = ffi.new("uint64_t *")
    if lib.rt_tree_make_cold(tree._tree, level, nodes, count, out) != lib.RT_OK:
        return None
    return int(out[0])


def insert_batch(tree: "LeanIMT", buffer: Any, count: int, root_out: Any) -> int:
    """``rt_tree_insert_many`` on ``tree``: the C status, unchecked, for
    callers that must pair the insert with their own bookkeeping (the
    durable tree's WAL) before raising."""
    status: int = lib.rt_tree_insert_many(tree._tree, buffer, count, root_out)
    return status


def wal_append(tree: "LeanIMT", fd: int, offset: int, header: Any, leaves: Any, count: int,
               root_out: Any, errno_out: Any) -> int:
    """``rt_wal_append``: write a WAL frame and insert its leaves, overlapped;
    the C status, unchecked (see :func:`insert_batch`)."""
    status: int = lib.rt_wal_append(tree._tree, fd, offset, ffi.from_buffer(header), leaves,
                                    count, root_out, errno_out)
    return status


def check_unique(tree: "LeanIMT", buffer: Any, count: int) -> None:
    """Raise :class:`~rotortree.DuplicateLeafError` if the batch repeats a
    leaf or holds one already in ``tree`` (the caller keeps other writers
    out until it has inserted the batch)."""
    from ._index import check_duplicates

    check_duplicates(tree._tree, buffer, count)


def new_leaves(tree: "LeanIMT", payload: bytes, count: int) -> Any:
    """(kept payload, kept count, dropped positions) of a batch for ``tree``:
    see :func:`rotortree._index.new_leaves` (the caller keeps writers out)."""
    from ._index import new_leaves as kept

    return kept(tree._tree, payload, count)


def index_calls(tree: "LeanIMT") -> Any:
    """``tree``'s C lookups and handle, for :class:`rotortree._index.IndexReads`."""
    return tree._index_calls()


# -- snapshots ------------------------------------------------------------------


def snapshot_pieces(snap: "Snapshot", level: int, start: int, stop: int) -> Iterator[memoryview]:
    """Nodes [start, stop) of ``level`` of ``snap``, as successive views of
    one reused buffer (consume each before asking for the next): a level is
    streamed to a file without holding all of it in memory twice."""
    if stop <= start:
        return
    handle = snap._snap
    piece = min(_PIECE_NODES, stop - start)
    buffer = ffi.new("uint8_t[]", piece * NODE)
    raw = ffi.buffer(buffer)
    position = start
    while position < stop:
        count = min(piece, stop - position)
        check(lib.rt_snapshot_read_nodes(handle, level, position, count, buffer),
              "read snapshot nodes")
        with memoryview(raw) as whole:
            view = whole[:count * NODE]
            try:
                yield view
            finally:
                view.release()
        position += count


def snapshot_read(snap: "Snapshot", level: int, count: int, out: Any) -> int:
    """Nodes [0, count) of ``level`` of ``snap`` into ``out``; the C status."""
    status: int = lib.rt_snapshot_read_nodes(snap._snap, level, 0, count, out)
    return status


def snapshot_node(snap: "Snapshot", level: int, index: int) -> bytes:
    """Node (level, index) of ``snap`` without the public method's argument
    checks (the caller computed the position from the snapshot's shape)."""
    out = ffi.new("uint8_t[32]")
    check(lib.rt_snapshot_get_node(snap._snap, level, index, out), "read snapshot node")
    node: bytes = ffi.buffer(out)[:]
    return node


__all__ = ["keep_alive", "handle", "restore", "make_cold", "insert_batch", "check_unique",
           "new_leaves", "index_calls", "snapshot_pieces", "snapshot_read", "snapshot_node"]
