"""Trees past one machine: build on Dask (or any executor), serve from shards.

:func:`build` cuts the leaves into aligned segments of ``arity ** k``
leaves (about 64 MiB each by default), hashes each segment in a task on a
worker with the C core, and finishes the tree over the segment roots
locally. Tasks carry descriptors of their leaf ranges, never the leaves:
each worker reads its own range. With ``out`` every segment's levels, the
top levels and a manifest are written there, and :class:`ShardedTree`
serves nodes and proofs from those files with ranged reads.

``client`` is a ``dask.distributed.Client``, any
``concurrent.futures.Executor`` (``client.get_executor()`` is one, and so is
a ``ProcessPoolExecutor``), or None: then the segments are hashed here on
the local thread pool. Only a Dask client or a dask array source needs
Dask (``pip install 'rotortree[distributed]'``). See docs/scale.md.
"""

from __future__ import annotations

import mmap
import os
import struct
from array import array
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from .._native import HASH_LEN
from .._validate import int_arg, shown
from ..errors import (
    ArgumentTypeError,
    CorruptionError,
    DistributedBuildError,
    InvalidArgumentError,
    LeafSourceError,
    NodeIndexError,
    TreeNotFoundError,
)
from ..proofs import FORMAT_VERSION as PROOF_VERSION
from ..proofs import INCLUSION_MAGIC, InclusionProof, tree_depth
from ..storage.formats import level_lengths
from ._build import (
    DEFAULT_RULE,
    check_arity,
    check_segment_leaves,
    finish,
    rule_options,
    run_segments,
)
from ._sources import (CheckedSource, ConcatSource, CounterLeaves, FileSource, Source,
                       plan_source)
from ._store import (
    FORMAT,
    HEADER,
    SEGMENT_MAGIC,
    TOP_MAGIC,
    VERSION,
    Store,
    check_header,
    encode_header,
    level_offsets,
    segment_name,
    top_name,
)

if TYPE_CHECKING:
    from ..tree import LeanIMT

__all__ = ["build", "ShardedTree", "CounterLeaves", "DEFAULT_RULE", "DistributedBuildError", "LeafSourceError"]

# The fixed head of an encoded inclusion proof (docs/spec.md §5): magic,
# version, arity, level count, reserved, leaf index, tree size; then root
# and leaf; each level is then position u8, sibling count u8, siblings.
_PROOF_HEADER = struct.Struct("<4sBBBBQQ")
_PROOF_HEAD = _PROOF_HEADER.size + 2 * HASH_LEN
# Batches this large are gathered with numpy, segment by segment.
_BATCH_AT_LEAST = 32

def _mapped_segments() -> int:
    """Segment files a ShardedTree keeps mapped at once: proofs of random
    leaves touch many segments, and a mapping holds a file descriptor, so
    up to half of this process's limit."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 16384
    return max(16, min(16384, soft // 2))


_MAPPED_SEGMENTS = _mapped_segments()


def _out_url(out: Any) -> str:
    url = os.fsdecode(os.fspath(out))
    if "://" not in url:
        # Workers may run elsewhere in the file system's tree (another
        # working directory): they get an absolute path.
        url = os.path.abspath(url)
    return url


def build(source: Any, *, arity: int, rule: str = DEFAULT_RULE, client: Any = None,
          out: Any = None, segment_leaves: Optional[int] = None, size: Optional[int] = None,
          progress: bool = False) -> bytes:
    """Root of the tree over the leaves of ``source``, built segment by segment.

    ``source`` is a list of files or fsspec URLs of raw 32-byte leaves (read
    in order, as one sequence), a dask array of shape (n, 32) uint8, or a
    callable ``f(start, stop)`` returning the bytes of leaves
    ``[start, stop)`` (then ``size`` gives n); a callable with a
    ``fill(start, stop, out)`` method (as :class:`CounterLeaves`) writes
    them into ``out`` instead, a buffer each worker thread reuses from one
    segment to the next (files are read into it too), so segments do not
    pay for fresh memory each. ``segment_leaves`` is a power
    of ``arity``; by default the largest whose leaves fit in 64 MiB. With
    ``out`` (a directory or fsspec URL, which must not already hold a
    sharded tree) the levels are written there for :class:`ShardedTree`.
    ``progress`` shows a bar on stderr; Dask's dashboard shows the
    ``rotortree_segment`` tasks.

    The root equals ``compute_root`` over the same leaves. Errors: a source
    that cannot be read raises :class:`~rotortree.LeafSourceError` (or
    :class:`~rotortree._leaf_file.LeafFileError` for a file that is not
    whole leaves) naming it; a task that fails otherwise (a worker that died
    more often than Dask retries, a broken executor) raises
    :class:`~rotortree.DistributedBuildError`. A failed build returns no
    root and writes no manifest.
    """
    arity = check_arity(arity)
    options = rule_options(rule)
    per_segment, _ = check_segment_leaves(segment_leaves, arity)
    plan = plan_source(source, size)
    store = None
    url = None
    if out is not None:
        url = _out_url(out)
        store = Store(url)
        if store.read_manifest() is not None:
            raise InvalidArgumentError(f"{url} already holds a sharded tree; open it with "
                                       "ShardedTree.open and append to it")
        store.makedirs()
    roots = run_segments(plan, 0, 0, per_segment, arity, options, client, url, progress)
    root = finish(roots, arity, options)
    if store is not None:
        _commit(store, roots, root, arity, rule, per_segment, plan.leaves, options)
    return root


def _commit(store: Store, roots: List[bytes], root: bytes, arity: int, rule: str,
            per_segment: int, size: int, options: Dict[str, Any]) -> None:
    """Write the top levels, then the manifest that makes them current."""
    from .. import _core
    from ..tree import LeanIMT

    top = LeanIMT(arity, max_depth=max(1, tree_depth(len(roots), arity)), **options)
    top.insert_many(b"".join(roots))
    snapshot = top.snapshot()
    lengths = level_lengths(len(roots), arity)

    def chunks() -> Any:
        yield encode_header(TOP_MAGIC, arity, len(lengths), 0, len(roots), root)
        for level, length in enumerate(lengths):
            yield from (bytes(piece) for piece in _core.snapshot_pieces(snapshot, level, 0,
                                                                           length))

    store.write(top_name(size), chunks())
    store.write_manifest({
        "format": FORMAT, "version": VERSION, "arity": arity, "rule": rule, "size": size,
        "segment_leaves": per_segment, "segments": len(roots), "top": top_name(size),
        "root": root.hex(),
    })


class ShardedTree:
    """A tree written by :func:`build`, served from its files.

    Proofs read only the nodes they need: one group of siblings per level
    of the leaf's segment (local files are memory-mapped, fsspec URLs read by
    byte range), and the top levels, which are held in memory. Proofs are
    identical to those of an in-memory :class:`~rotortree.LeanIMT` over the
    same leaves. Not for concurrent use with :meth:`append` from another
    thread or process.
    """

    _url: str
    _store: Store
    _maps: "OrderedDict[int, Optional[mmap.mmap]]"
    _options: Dict[str, Any]
    _top: "LeanIMT"
    _roots: List[bytes]
    _arity: int
    _rule: str
    _size: int
    _root: bytes
    _per_segment: int
    _k: int
    _segments: int
    _depth: int
    _lengths: List[int]
    _shapes: Dict[int, Tuple[List[int], List[int]]]
    _level_heads: List[List[bytes]]
    _top_proofs: Dict[int, bytes]

    def __init__(self) -> None:
        raise ArgumentTypeError("ShardedTree objects come from ShardedTree.open(path)")

    @classmethod
    def open(cls, out: Any) -> "ShardedTree":
        """Open the sharded tree at ``out`` (directory or fsspec URL).
        :class:`~rotortree.TreeNotFoundError` when there is no manifest (no
        tree, or a build that failed); :class:`~rotortree.CorruptionError`
        naming the file when a file it names is missing or does not match
        it (segment files are checked when first read)."""
        self = object.__new__(cls)
        self._url = _out_url(out)
        self._store = Store(self._url)
        self._maps = OrderedDict()
        self._load()
        return self

    def _load(self) -> None:
        from ..tree import LeanIMT

        store = self._store
        manifest = store.read_manifest()
        where = store.where("manifest.json")
        if manifest is None:
            raise TreeNotFoundError(f"{self._url} holds no sharded tree (no {where})")
        try:
            arity = check_arity(manifest["arity"])
            rule = manifest["rule"]
            self._options = rule_options(rule)
            size = int_arg("size", manifest["size"])
            per_segment, k = check_segment_leaves(manifest["segment_leaves"], arity)
            segments = int_arg("segments", manifest["segments"])
            root = bytes.fromhex(manifest["root"])
            top = manifest["top"]
        except (KeyError, TypeError, ValueError) as error:
            raise CorruptionError(f"{where}: bad field ({error})", where) from error
        if size < 1 or segments != -(-size // per_segment) or len(root) != HASH_LEN \
                or manifest.get("version") != VERSION or top != top_name(size):
            raise CorruptionError(f"{where}: inconsistent manifest", where)
        head = store.read(top, 0, HEADER.size + segments * HASH_LEN)
        check_header(head, store.where(top), TOP_MAGIC, arity, 0, segments, root)
        body = head[HEADER.size:]
        if len(body) != segments * HASH_LEN:
            raise CorruptionError(f"{store.where(top)}: truncated", store.where(top))
        self._top = LeanIMT(arity, max_depth=max(1, tree_depth(segments, arity)),
                            **self._options)
        if self._top.insert_many(body) != root:
            raise CorruptionError(f"{store.where(top)}: the segment roots do not hash to the "
                                  "manifest's root", store.where(top))
        self._roots = [bytes(body[i:i + HASH_LEN]) for i in range(0, len(body), HASH_LEN)]
        self._arity, self._rule, self._size, self._root = arity, rule, size, root
        self._per_segment, self._k, self._segments = per_segment, k, segments
        self._depth = tree_depth(size, arity)
        self._lengths = level_lengths(size, arity)
        self._shapes = {}
        # The two bytes before each level's siblings: position, count.
        self._level_heads = [[bytes((position, count)) for count in range(arity)]
                             for position in range(arity)]
        self._top_proofs = {}

    # -- facts ------------------------------------------------------------------------

    @property
    def root(self) -> bytes:
        return self._root

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def arity(self) -> int:
        return self._arity

    @property
    def rule(self) -> str:
        return self._rule

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def segment_leaves(self) -> int:
        return self._per_segment

    @property
    def segments(self) -> int:
        return self._segments

    def __repr__(self) -> str:
        return (f"ShardedTree({self._url!r}, arity={self._arity}, rule={self._rule!r}, "
                f"size={self._size}, segments={self._segments}, root={self._root.hex()})")

    # -- segment files ------------------------------------------------------------------

    def _segment_count(self, index: int) -> int:
        if index < self._segments - 1:
            return self._per_segment
        return self._size - index * self._per_segment

    def _segment_name(self, index: int) -> str:
        return segment_name(index, self._segment_count(index))

    def _mapping(self, index: int) -> Optional[mmap.mmap]:
        # Threads serving proofs share the cache: another may evict this
        # entry between any two steps, so nothing here assumes it stays.
        try:
            cached = self._maps[index]
        except KeyError:
            pass
        else:
            try:
                self._maps.move_to_end(index)
            except KeyError:  # evicted meanwhile: the caller still holds its mapping
                pass
            return cached
        name = self._segment_name(index)
        count = self._segment_count(index)
        mapping = self._store.map(name)
        data = mapping if mapping is not None else self._store.read(name, 0, HEADER.size)
        check_header(bytes(data[:HEADER.size]), self._store.where(name), SEGMENT_MAGIC,
                     self._arity, index, count, self._roots[index])
        expected = level_offsets(count, self._arity)[-1]
        if mapping is not None and len(mapping) != expected:
            where, got = self._store.where(name), len(mapping)  # len() of a closed map raises
            mapping.close()
            raise CorruptionError(f"{where}: {got} bytes, expected {expected}", where)
        self._maps[index] = mapping
        while len(self._maps) > _MAPPED_SEGMENTS:
            # Dropped, not closed: a thread may still be reading it (a
            # close would fail under its numpy views or pull the map from
            # under its slices); it is unmapped when its last user lets go.
            try:
                self._maps.popitem(last=False)
            except KeyError:
                break
        return mapping

    def _read(self, index: int, offset: int, length: int) -> bytes:
        mapping = self._mapping(index)
        if mapping is not None:
            return mapping[offset:offset + length]
        data = self._store.read(self._segment_name(index), offset, length)
        if len(data) != length:
            where = self._store.where(self._segment_name(index))
            raise CorruptionError(f"{where}: truncated", where)
        return data

    # -- nodes and proofs -------------------------------------------------------------

    def get_node(self, level: int, index: int) -> bytes:
        """The 32-byte node at (level, index) of the whole tree."""
        level, index = int_arg("level", level), int_arg("index", index)
        if not 0 <= level < len(self._lengths) or not 0 <= index < self._lengths[level]:
            raise NodeIndexError(f"node ({shown(level)}, {shown(index)}) out of range")
        if level >= self._k:
            return self._top.get_node(level - self._k, index)
        span = self._arity ** (self._k - level)
        segment, local = divmod(index, span)
        count = self._segment_count(segment)
        if level >= len(level_lengths(count, self._arity)):  # above a short segment's root
            lifted: bytes = self._roots[segment]
            return lifted
        return self._read(segment, self._shape(count)[1][level] + local * HASH_LEN, HASH_LEN)

    def _index(self, index: object) -> int:
        value = int_arg("index", index)
        if not 0 <= value < self._size:
            raise NodeIndexError(f"leaf index {shown(value)} out of range for size {self._size}")
        return value

    def _shape(self, count: int) -> Tuple[List[int], List[int]]:
        """(level lengths, level byte offsets) of a segment of ``count``
        leaves, padded with length 1 up to level k (lifted levels)."""
        shape = self._shapes.get(count)
        if shape is None:
            lengths = level_lengths(count, self._arity)
            offsets = level_offsets(count, self._arity)
            lengths = lengths + [1] * (self._k + 1 - len(lengths))
            shape = self._shapes[count] = (lengths, offsets)
        return shape

    def _top_levels(self, segment: int) -> bytes:
        """The encoded levels above the segments of the proof of any leaf of
        ``segment``: those of the top tree's proof of its leaf ``segment``."""
        encoded = self._top_proofs.get(segment)
        if encoded is None:
            if self._depth > self._k:
                encoded = self._top.generate_proof(segment).to_bytes()[_PROOF_HEAD:]
            else:
                encoded = b""
            self._top_proofs[segment] = encoded
        return encoded

    def _proof_bytes(self, index: int) -> bytes:
        """The binary form (docs/spec.md §5) of the proof of leaf ``index``,
        written directly: building proof objects level by level costs more
        than reading the nodes."""
        arity = self._arity
        segment, position = divmod(index, self._per_segment)
        lengths, offsets = self._shape(self._segment_count(segment))
        mapping = self._mapping(segment)
        heads = self._level_heads
        parts = [b"", self._root, b""]
        for level in range(min(self._k, self._depth)):
            slot = position % arity
            start = position - slot
            stop = min(start + arity, lengths[level])
            if stop - start > 1 or level == 0:
                low = offsets[level] + start * HASH_LEN
                high = offsets[level] + stop * HASH_LEN
                group = (mapping[low:high] if mapping is not None
                         else self._read(segment, low, high - low))
                at = slot * HASH_LEN
                if level == 0:
                    parts[2] = group[at:at + HASH_LEN]
                parts.append(heads[slot][stop - start - 1])
                parts.append(group[:at])
                parts.append(group[at + HASH_LEN:])
            else:
                parts.append(heads[slot][0])
            position //= arity
        if self._depth == 0:  # one leaf: no levels, the leaf is the root
            parts[2] = self._root
        parts.append(self._top_levels(segment))
        parts[0] = _PROOF_HEADER.pack(INCLUSION_MAGIC, PROOF_VERSION, arity, self._depth, 0,
                                      index, self._size)
        return b"".join(parts)

    def generate_proof(self, index: int) -> InclusionProof:
        """Inclusion proof of leaf ``index``, equal to the in-memory tree's."""
        return InclusionProof.from_bytes(self._proof_bytes(self._index(index)))

    def generate_proofs(self, indices: Iterable[Any]) -> Any:
        """Inclusion proofs of many leaves as a :class:`~rotortree.ProofBatch`
        (the type ``Snapshot.generate_proofs`` returns), in the order given."""
        from ..snapshot import ProofBatch

        checked = [self._index(index) for index in indices]
        if self._store.local and len(checked) >= _BATCH_AT_LEAST:
            try:
                import numpy  # noqa: F401

                from . import _batch
            except ImportError:  # numpy missing: one proof at a time
                pass
            else:
                last_full = self._segment_count(self._segments - 1) == self._per_segment
                data, ends = _batch.encode(
                    checked, self._per_segment, self._segments - (0 if last_full else 1),
                    self._arity, min(self._k, self._depth),
                    _PROOF_HEADER.pack(INCLUSION_MAGIC, PROOF_VERSION, self._arity,
                                       self._depth, 0, 0, self._size),
                    self._root, self._shape(self._per_segment)[1], self._mapping,
                    self._top_levels, self._proof_bytes)
                return ProofBatch._from_parts(data, array("Q", ends))
        pieces = []
        offsets = array("Q", [0])
        total = 0
        encode = self._proof_bytes
        for index in checked:
            encoded = encode(index)
            pieces.append(encoded)
            total += len(encoded)
            offsets.append(total)
        return ProofBatch._from_parts(b"".join(pieces), offsets)

    # -- growth -----------------------------------------------------------------------

    def append(self, source: Any, *, client: Any = None, size: Optional[int] = None,
               progress: bool = False) -> bytes:
        """Append the leaves of ``source`` (as for :func:`build`); returns the
        new root. Only the right-edge segment (if it is not full), the new
        segments and the top are written; the manifest is replaced last, so
        a failed append leaves the tree as it was."""
        plan = plan_source(source, size)
        if not plan.leaves:
            # Nothing to add (a dask array of no rows): rewriting would give
            # the top file its old name, which the cleanup below would then
            # delete from under the new manifest.
            return self._root
        store = self._store
        first = self._segments - 1
        last_count = self._segment_count(first)
        parts: List[Source] = []
        if last_count < self._per_segment:
            # The right edge is rebuilt from its own level 0 plus the new leaves.
            location = (os.path.join(store.path, self._segment_name(first)) if store.local
                        else store.where(self._segment_name(first)))
            self._mapping(first)  # its header is checked before it is trusted
            parts.append(CheckedSource(FileSource([(location, HEADER.size, last_count)]),
                                       self._roots[first], self._arity, self._options,
                                       store.where(self._segment_name(first))))
        else:
            first += 1
        parts.append(plan)
        combined = ConcatSource(parts)
        new_roots = run_segments(combined, first, first * self._per_segment,
                                 self._per_segment, self._arity, self._options, client,
                                 self._url, progress)
        roots = self._roots[:first] + new_roots
        root = finish(roots, self._arity, self._options)
        new_size = self._size + plan.leaves
        old_top = top_name(self._size)
        old_edge = self._segment_name(first) if first < self._segments else None
        _commit(store, roots, root, self._arity, self._rule, self._per_segment, new_size,
                self._options)
        self.close()
        self._load()
        # Only now unreferenced by the manifest.
        if old_top != top_name(new_size):
            store.remove(old_top)
        if old_edge is not None and old_edge != self._segment_name(first):
            store.remove(old_edge)
        return root

    def close(self) -> None:
        """Release the mapped segment files (the tree stays usable: they are
        mapped again when needed)."""
        for mapping in self._maps.values():
            if mapping is not None:
                mapping.close()
        self._maps.clear()

    def __enter__(self) -> "ShardedTree":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
