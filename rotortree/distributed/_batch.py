"""Batches of proofs from the mapped segment files of a ShardedTree, with
numpy: every proof of a leaf in a full segment has the same shape below
the segments (full groups at every level, since a full segment is
``arity ** k`` leaves), so a whole segment's proofs are gathered level by
level with one fancy index each instead of a Python loop per proof and
level. The encoding is the binary form of docs/spec.md §5, as in
``ShardedTree._proof_bytes``; tests compare both with in-memory proofs.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, Dict, List, Sequence

HASH_LEN = 32
_HEAD = struct.Struct("<4sBBBBQQ")


def encode(indices: Sequence[int], per_segment: int, full_segments: int, arity: int,
           levels: int, head: bytes, root: bytes, offsets: Sequence[int],
           mapping: Callable[[int], Any], top: Callable[[int], bytes],
           one: Callable[[int], bytes]) -> "tuple[bytearray, List[int]]":
    """(data, offsets) of the proofs of ``indices`` in their order.

    Leaves of the first ``full_segments`` segments are encoded here from
    ``mapping(segment)`` (the mapped file), whose levels start at
    ``offsets``; the others by ``one(index)``. ``head`` is the proof header
    with a zero leaf index, ``levels`` the segment levels a proof crosses,
    ``top(segment)`` the encoded levels above them.
    """
    import numpy as np

    wanted = np.asarray(indices, dtype=np.uint64)
    segments = wanted // np.uint64(per_segment)
    fixed = len(head) + 2 * HASH_LEN + levels * (2 + (arity - 1) * HASH_LEN)
    full = np.nonzero(segments < np.uint64(full_segments))[0]
    groups = [(segment, full[segments[full] == segment], top(segment))
              for segment in np.unique(segments[full]).tolist()]
    widths = {fixed + len(above) for _, _, above in groups}
    if len(full) == len(wanted) and len(widths) == 1:
        # The common case, every proof the same length: the batch is one
        # (proofs, length) array, filled in place.
        width = widths.pop()
        data = bytearray(len(wanted) * width)
        grid = np.frombuffer(data, dtype=np.uint8).reshape(len(wanted), width)
        for segment, members, above in groups:
            _fill(grid, members, wanted[members], segment, per_segment, arity, levels, head,
                  root, offsets, mapping(segment), above)
        del grid
        return data, list(range(0, len(data) + 1, width))
    lengths = np.zeros(len(wanted), dtype=np.int64)
    rows: Dict[int, Any] = {}
    for segment, members, above in groups:
        encoded = np.empty((len(members), fixed + len(above)), dtype=np.uint8)
        _fill(encoded, slice(None), wanted[members], segment, per_segment, arity, levels,
              head, root, offsets, mapping(segment), above)
        lengths[members] = encoded.shape[1]
        for row, position in enumerate(members.tolist()):
            rows[position] = encoded[row]
    for position in np.nonzero(segments >= np.uint64(full_segments))[0].tolist():
        rows[position] = one(int(wanted[position]))
        lengths[position] = len(rows[position])
    ends = np.cumsum(lengths)
    data = bytearray(int(ends[-1]) if len(ends) else 0)
    view = memoryview(data)
    start = 0
    for position, end in enumerate(ends.tolist()):
        view[start:end] = rows[position]
        start = end
    return data, [0] + ends.tolist()


def _fill(out: Any, rows: Any, indices: Any, segment: int, per_segment: int, arity: int,
          levels: int, head: bytes, root: bytes, offsets: Sequence[int], mapped: Any,
          top: bytes) -> None:
    """Write the proofs of ``indices`` (all in ``segment``) into the rows
    ``rows`` of ``out``."""
    import numpy as np

    count = len(indices)
    out[rows, :len(head)] = np.frombuffer(head, dtype=np.uint8)
    out[rows, 8:16] = indices.astype("<u8").view(np.uint8).reshape(count, 8)
    out[rows, 24:56] = np.frombuffer(root, dtype=np.uint8)
    whole = np.frombuffer(mapped, dtype=np.uint8)
    position = (indices - np.uint64(segment * per_segment)).astype(np.int64)
    others = np.arange(arity - 1)[None, :]
    width = (arity - 1) * HASH_LEN
    column = len(head) + 2 * HASH_LEN
    nodes = None
    for level in range(levels):
        nodes = whole[offsets[level]:offsets[level + 1]].reshape(-1, HASH_LEN)
        slot = position % arity
        if level == 0:
            out[rows, 56:88] = nodes[position]
        # The group's other members, in order: the path node taken out.
        siblings = (position - slot)[:, None] + others + (others >= slot[:, None])
        out[rows, column] = slot
        out[rows, column + 1] = arity - 1
        out[rows, column + 2:column + 2 + width] = nodes[siblings].reshape(count, width)
        column += 2 + width
        position //= arity
    if top:
        out[rows, column:] = np.frombuffer(top, dtype=np.uint8)
    del whole, nodes  # views of the mapping: it may be closed once they are gone
