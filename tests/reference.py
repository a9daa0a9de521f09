"""A deliberately plain pure-Python LeanIMT, the oracle the C core is tested
against. It follows docs/spec.md line by line and shares no code with the package.
"""

from __future__ import annotations

import hashlib
from typing import List, Optional, Sequence

import blake3


def hash_parent(children: Sequence[bytes], rule: str = "rotortree-0.15") -> bytes:
    """A parent of 2..255 children under one of the three rules (docs/spec.md,
    "Hash rules"): tagged BLAKE3, untagged BLAKE3, or RFC 6962's node hash."""
    assert 2 <= len(children) <= 255
    if rule == "rotortree-0.15":
        return blake3.blake3(bytes([0x01, len(children)]) + b"".join(children)).digest()
    if rule == "leanimt":
        return blake3.blake3(b"".join(children)).digest()
    assert rule == "rfc6962" and len(children) == 2
    return hashlib.sha256(b"\x01" + children[0] + children[1]).digest()


def depth_of(size: int, arity: int) -> int:
    if size <= 1:
        return 0
    depth, capacity = 0, 1
    while capacity < size:
        capacity *= arity
        depth += 1
    return depth


def build_levels(leaves: Sequence[bytes], arity: int,
                 rule: str = "rotortree-0.15") -> List[List[bytes]]:
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = []
        for start in range(0, len(below), arity):
            group = below[start:start + arity]
            above.append(group[0] if len(group) == 1 else hash_parent(group, rule))
        levels.append(above)
    return levels


def root_of(leaves: Sequence[bytes], arity: int, rule: str = "rotortree-0.15") -> Optional[bytes]:
    if not leaves:
        return None
    return build_levels(leaves, arity, rule)[-1][0]


def vector_leaf(i: int) -> bytes:
    """The leaf rule of the Rust-made vectors: blake3(u64 i little-endian)."""
    return blake3.blake3(i.to_bytes(8, "little")).digest()


def inclusion_proof_levels(leaves: Sequence[bytes], arity: int, index: int,
                           rule: str = "rotortree-0.15"):
    """The specification's inclusion proof of leaf `index`, from the leaves up, as a list
    of (position, [siblings]): the path node's index within its group and
    the other members of that group in order (none when it is lifted)."""
    assert 0 <= index < len(leaves)
    out = []
    for level in build_levels(leaves, arity, rule)[:-1]:
        position = index % arity
        group = level[index - position:index - position + arity]
        out.append((position, group[:position] + group[position + 1:]))
        index //= arity
    return out


def consistency_levels(leaves: Sequence[bytes], arity: int, old_size: int,
                       rule: str = "rotortree-0.15"):
    """The specification's consistency proof from the first `old_size` leaves to all of
    `leaves`, as a list of (shared, new) hash lists from the leaves up."""
    assert 1 <= old_size <= len(leaves)
    if old_size == len(leaves):
        return []
    levels = build_levels(leaves, arity, rule)
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


def reencoded_proof(data: bytes) -> bytes:
    """The bytes a decodable proof (inclusion or consistency) must re-encode
    to, per docs/spec.md: itself, except that version 1 (from before rules,
    byte 7 always 0) re-encodes as version 2 with rule 0."""
    if len(data) > 4 and data[4] == 1:
        return data[:4] + b"\x02" + data[5:]
    return data
