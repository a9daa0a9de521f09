"""A deliberately plain pure-Python LeanIMT, the oracle the C core is tested
against. It follows SPEC.md line by line and shares no code with the package.
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
