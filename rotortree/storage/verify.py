"""Rehashing stored levels to their root: how a loaded checkpoint or saved
tree proves every stored node, not only its checksum."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from ..rules import DEFAULT_RULE
from .formats import NODE


def root_of_buffer(mapping: Any, nbytes: int, arity: int, last: Optional[bytes] = None,
                   rule: str = DEFAULT_RULE) -> bytes:
    """compute_root (under ``rule``) over the first ``nbytes`` of ``mapping``
    (in place), or, given ``last``, over those bytes followed by the node
    ``last``."""
    from ..tree import compute_root

    with memoryview(mapping) as view:
        part = view[:nbytes]
        try:
            if last is None:
                return compute_root(part, arity, rule=rule)
            # One transient copy of at most len(level 0) / arity nodes, no
            # more than compute_root of level 0 already allocates.
            return compute_root(b"".join((part, last)), arity, rule=rule)
        finally:
            part.release()


def first_bad_level(levels: List[Tuple[Any, int, Optional[bytes]]], arity: int,
                    root: bytes, rule: str = DEFAULT_RULE) -> Optional[int]:
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
        if root_of_buffer(buffer, count * NODE, arity, last, rule) != root:
            return level
    return None


__all__ = ["root_of_buffer", "first_bad_level"]
