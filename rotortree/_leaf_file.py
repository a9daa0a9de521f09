"""Files of raw 32-byte leaves, read in segments so files larger than RAM
work: regular files are memory-mapped (the kernel reads ahead and drops
pages already hashed when memory is short), pipes and stdin are streamed,
and so is a file that cannot be mapped.

The root of a file is computed segment by segment: a segment holds
``arity ** k`` leaves, aligned, so its root is node (k, j) of the whole tree
(docs/spec.md §1, aligned subtrees); the segment roots are therefore level k, and the
root of the LeanIMT over them is the root of the file.
"""

from __future__ import annotations

import mmap
import os
import stat
import sys
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from ._native import HASH_LEN
from .errors import InvalidLeafError

DEFAULT_SEGMENT_BYTES = 64 << 20


class LeafFileError(InvalidLeafError):
    """The file cannot be read as leaves (wrong size, empty, unreadable)."""


def segment_leaves(arity: int, segment_bytes: int) -> int:
    """The largest power of ``arity`` (at least ``arity``) whose leaves fit
    in ``segment_bytes``."""
    leaves = arity
    while leaves * arity * HASH_LEN <= segment_bytes:
        leaves *= arity
    return leaves


def _size_problem(name: str, nbytes: int) -> Optional[str]:
    if nbytes == 0:
        return f"{name} is empty: no leaves"
    if nbytes % HASH_LEN:
        return (f"{name}: {nbytes:,} bytes is not a whole number of {HASH_LEN}-byte leaves "
                f"({nbytes // HASH_LEN:,} leaves and {nbytes % HASH_LEN} bytes over)")
    return None


class LeafFile:
    """A file of leaves, ``-`` for stdin. Use as a context manager."""

    def __init__(self, path: str) -> None:
        self.name = "stdin" if path == "-" else path
        # Any: typeshed's BinaryIO (sys.stdin.buffer) lacks readinto.
        self._stream: Optional[Any] = None
        self._owned = path != "-"
        if path == "-":
            self._stream = sys.stdin.buffer
        else:
            try:
                self._stream = open(path, "rb")
            except IsADirectoryError:
                raise LeafFileError(f"{path} is a directory, not a file of leaves") from None
        mode = os.fstat(self._stream.fileno()).st_mode if self._has_fileno() else 0
        # Only regular files have a size known in advance and can be mapped.
        self.nbytes: Optional[int] = (os.fstat(self._stream.fileno()).st_size
                                      if stat.S_ISREG(mode) else None)
        if self.nbytes is not None:
            problem = _size_problem(self.name, self.nbytes)
            if problem:
                self.close()
                raise LeafFileError(problem)

    def _has_fileno(self) -> bool:
        try:
            assert self._stream is not None
            self._stream.fileno()
        except (OSError, AttributeError, ValueError):
            return False
        return True

    @property
    def leaves(self) -> Optional[int]:
        return None if self.nbytes is None else self.nbytes // HASH_LEN

    def pieces(self, piece_bytes: int, split_at: Optional[int] = None) -> Iterator[memoryview]:
        """Consecutive pieces of the file of ``piece_bytes`` (the last one
        shorter). With ``split_at`` (a byte offset), no piece crosses it.
        Each piece is valid only until the next one is requested."""
        assert self._stream is not None
        if self.nbytes is not None:
            yield from self._mapped(piece_bytes, split_at)
        else:
            yield from self._streamed(piece_bytes, split_at)

    def _boundaries(self, total: int, piece_bytes: int,
                    split_at: Optional[int]) -> Iterator[Tuple[int, int]]:
        start = 0
        while start < total:
            end = min(start + piece_bytes, total)
            if split_at is not None and start < split_at < end:
                end = split_at
            yield start, end
            start = end

    def _mapped(self, piece_bytes: int, split_at: Optional[int]) -> Iterator[memoryview]:
        assert self._stream is not None and self.nbytes is not None
        try:
            mapping = mmap.mmap(self._stream.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, OverflowError):
            # No address space for the whole file (RLIMIT_AS, 32-bit) or a
            # file system without mmap: read it instead, it is just slower.
            yield from self._streamed(piece_bytes, split_at)
            return
        try:
            if hasattr(mapping, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
                mapping.madvise(mmap.MADV_SEQUENTIAL)
            with memoryview(mapping) as whole:
                for start, end in self._boundaries(self.nbytes, piece_bytes, split_at):
                    piece = whole[start:end]
                    try:
                        yield piece
                    finally:
                        piece.release()
        finally:
            mapping.close()

    def _streamed(self, piece_bytes: int, split_at: Optional[int]) -> Iterator[memoryview]:
        assert self._stream is not None
        buffer = bytearray(piece_bytes)
        offset = 0
        while True:
            want = piece_bytes
            if split_at is not None and offset < split_at:
                want = min(want, split_at - offset)
            filled = 0
            with memoryview(buffer) as view:
                while filled < want:
                    got = self._stream.readinto(view[filled:want])
                    if not got:
                        break
                    filled += got
            if filled == 0:
                problem = _size_problem(self.name, offset) if offset == 0 else None
                if problem:
                    raise LeafFileError(problem)
                return
            if filled < want and filled % HASH_LEN:
                problem = _size_problem(self.name, offset + filled)
                raise LeafFileError(problem or f"{self.name}: truncated leaf")
            offset += filled
            piece = memoryview(buffer)[:filled]
            try:
                yield piece
            finally:
                piece.release()
            if filled < want:
                return

    def close(self) -> None:
        if self._stream is not None and self._owned:
            self._stream.close()
        self._stream = None

    def __enter__(self) -> "LeafFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_root(source: LeafFile, arity: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
              on_progress: Callable[[int], None] = lambda nbytes: None,
              rule: str = "rotortree-0.15") -> Tuple[bytes, int]:
    """(root, leaf count) of the LeanIMT over the leaves of ``source``,
    parents hashed under ``rule``: segments are whole aligned subtrees, so
    their roots are nodes of the tree under every rule."""
    from .tree import compute_root

    per_segment = segment_leaves(arity, segment_bytes)
    roots: List[bytes] = []
    leaves = 0
    for piece in source.pieces(per_segment * HASH_LEN):
        roots.append(compute_root(piece, arity, rule=rule))
        leaves += len(piece) // HASH_LEN
        on_progress(len(piece))
    return root_of_segments(roots, arity, rule=rule), leaves


def root_of_segments(roots: Sequence[bytes], arity: int, **options: Any) -> bytes:
    """Root of the tree whose aligned segments of ``arity ** k`` leaves
    (all full but the last) have the roots ``roots``, in order: they are
    level k of that tree, so its root is the root over them (docs/spec.md
    §1). ``options`` go to ``compute_root`` (the hash rule)."""
    from .tree import compute_root

    if len(roots) == 1:
        return roots[0]
    return compute_root(b"".join(roots), arity, **options)
