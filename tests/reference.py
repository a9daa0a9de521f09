"""A deliberately plain pure-Python LeanIMT, the oracle the C core is tested
against. It follows docs/spec.md line by line and shares no code with the package.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import blake3


def hash_parent(children: Sequence[bytes]) -> bytes:
    assert 2 <= len(children) <= 255
    return blake3.blake3(bytes([0x01, len(children)]) + b"".join(children)).digest()


def depth_of(size: int, arity: int) -> int:
    if size <= 1:
        return 0
    depth, capacity = 0, 1
    while capacity < size:
        capacity *= arity
        depth += 1
    return depth


def build_levels(leaves: Sequence[bytes], arity: int) -> List[List[bytes]]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = []
        for start in range(0, len(below), arity):
            group = below[start:start + arity]
            above.append(group[0] if len(group) == 1 else hash_parent(group))
        levels.append(above)
    return levels


def root_of(leaves: Sequence[bytes], arity: int) -> Optional[bytes]:
    if not leaves:
        return None
    return build_levels(leaves, arity)[-1][0]


def vector_leaf(i: int) -> bytes:
    """The leaf rule of the Rust-made vectors: blake3(u64 i little-endian)."""
    return blake3.blake3(i.to_bytes(8, "little")).digest()


def inclusion_proof_levels(leaves: Sequence[bytes], arity: int, index: int):
    """The specification's inclusion proof of leaf `index`, from the leaves up, as a list
    of (position, [siblings]): the path node's index within its group and
    the other members of that group in order (none when it is lifted)."""
    assert 0 <= index < len(leaves)
    out = []
    for level in build_levels(leaves, arity)[:-1]:
        position = index % arity
        group = level[index - position:index - position + arity]
        out.append((position, group[:position] + group[position + 1:]))
        index //= arity
    return out


def consistency_levels(leaves: Sequence[bytes], arity: int, old_size: int):
    """The specification's consistency proof from the first `old_size` leaves to all of
    `leaves`, as a list of (shared, new) hash lists from the leaves up."""
    assert 1 <= old_size <= len(leaves)
    if old_size == len(leaves):
        return []
    levels = build_levels(leaves, arity)
    out = []
    old_len, new_len, level = old_size, len(leaves), 0
    while old_len > 1 or new_len > 1:
        nodes = levels[level]
        boundary = old_len - 1
        group_start = boundary - boundary % arity
        shared_end = boundary + 1 if level == 0 else boundary
        out.append((nodes[group_start:shared_end],
                    nodes[boundary + 1:min(new_len, group_start + arity)]))
        old_len = -(-old_len // arity)
        new_len = -(-new_len // arity)
        level += 1
    return out
