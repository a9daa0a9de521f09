"""Building a tree segment by segment on an executor (docs/scale.md).

Every node (l, j) is the root of leaves [j·N^l, (j+1)·N^l) (docs/spec.md
§1), so a tree of n leaves is cut into aligned segments of S = N^k leaves,
each hashed on its own by a task, and the segment roots, level k of the
tree, are finished locally: the same path as ``rotortree root FILE``
(:mod:`rotortree._leaf_file`), with the segments spread over workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .. import _core
from .._leaf_file import DEFAULT_SEGMENT_BYTES, root_of_segments
from .._leaf_file import segment_leaves as _default_segment_leaves
from .._native import HASH_LEN, lib
from .._util import Progress
from .._validate import int_arg, shown
from ..errors import (
    ArgumentTypeError,
    DistributedBuildError,
    EmptyTreeError,
    InvalidArgumentError,
    RotorTreeError,
)
from ..storage.formats import level_lengths
from ._sources import Source, release_segment_buffer
from ._store import SEGMENT_MAGIC, Store, encode_header, segment_name

#: The rule of roots bit-identical to the Rust crate rotortree 0.15.
DEFAULT_RULE = "rotortree-0.15"

# Segments per executor.map call (two calls in flight): enough to keep
# every worker busy and to pay the submission once per many segments, few
# enough that a build of millions of segments does not hold millions of
# futures on the client.
_CHUNK_PER_WORKER = 64
_MIN_CHUNK = 256
# Results fetched from a Dask cluster per round trip, in segment order.
_GATHER_BLOCK = 64


def check_arity(arity: object) -> int:
    value = int_arg("arity", arity)
    if not lib.RT_MIN_ARITY <= value <= lib.RT_MAX_ARITY:
        raise InvalidArgumentError(
            f"arity must be {lib.RT_MIN_ARITY}..{lib.RT_MAX_ARITY}, got {shown(value)}")
    return value


def rule_options(rule: object) -> Dict[str, Any]:
    """The keyword arguments that select ``rule`` in compute_root and
    LeanIMT: none for the default rule, so a core without hash rules works."""
    if not isinstance(rule, str):
        raise ArgumentTypeError(f"rule must be a str, not {type(rule).__name__}")
    if rule == DEFAULT_RULE:
        return {}
    from ..tree import compute_root

    if "rule" not in inspect.signature(compute_root).parameters:
        raise InvalidArgumentError(f"unknown hash rule {shown(rule)}: this build knows only "
                                   f"{DEFAULT_RULE!r}")
    return {"rule": rule}


def check_segment_leaves(segment_leaves: object, arity: int) -> Tuple[int, int]:
    """(S, k) with S = arity ** k: the segment size asked for (a power of
    the arity, at least the arity), or about 64 MiB of leaves."""
    if segment_leaves is None:
        size = _default_segment_leaves(arity, DEFAULT_SEGMENT_BYTES)
    else:
        size = int_arg("segment_leaves", segment_leaves)
    k, power = 0, 1
    while power < size:
        power *= arity
        k += 1
    if power != size or k < 1:
        raise InvalidArgumentError(f"segment_leaves must be a power of the arity {arity} "
                                   f"(at least {arity}), got {shown(size)}")
    return size, k


def rotortree_segment(part: Source, index: int, arity: int, options: Dict[str, Any],
                      out: Optional[str]) -> bytes:
    """The task: hash segment ``index`` (leaves of ``part``) on this worker
    with the C core and return its root; with ``out``, also write its levels
    there. Named for Dask's dashboard, which groups tasks by function."""
    from ..tree import LeanIMT, compute_root

    # The leaves live in this thread's reused buffer while the block runs
    # (see _sources.segment_buffer); both the root and the tree copy what
    # they keep, so nothing refers to the buffer past it.
    with part.reading() as leaves:
        if out is None:
            return compute_root(leaves, arity, **options)
        count = part.leaves
        depth = max(1, len(level_lengths(count, arity)) - 1)
        tree = LeanIMT(arity, max_depth=depth, **options)
        root = tree.insert_many(leaves)
    snapshot = tree.snapshot()
    lengths = level_lengths(count, arity)

    def chunks() -> Any:
        yield encode_header(SEGMENT_MAGIC, arity, len(lengths), index, count, root)
        for level, length in enumerate(lengths):
            yield from (bytes(piece) for piece in
                        _core.snapshot_pieces(snapshot, level, 0, length))

    Store(out).write(segment_name(index, count), chunks())
    return root


def executor_for(client: Any) -> Tuple[Optional[cf.Executor], int]:
    """(executor, workers) for ``client``: None runs the segments here, one
    after the other, each on the local thread pool; a Dask client is given
    a ``concurrent.futures`` face (:class:`_DaskExecutor`), so the rest
    never depends on Dask."""
    if client is None:
        return None, 1
    if isinstance(client, cf.Executor):
        workers = getattr(client, "_max_workers", None) or 1
        return client, int(workers)
    if hasattr(client, "get_executor") and hasattr(client, "scheduler_info"):
        try:
            workers = len(client.scheduler_info().get("workers", ())) or 1
        except Exception:  # a client still connecting: the workers only size the chunks
            workers = 1
        return _DaskExecutor(client), workers
    raise ArgumentTypeError("client must be a dask.distributed.Client, a "
                            "concurrent.futures.Executor or None (the local pool), not "
                            f"{type(client).__name__}")


class _DaskExecutor(cf.Executor):
    """``map`` on a Dask client that fetches results in batches as they
    complete. ``client.get_executor().map`` fetches each result with a
    round trip of its own, which for small segments costs more than the
    scheduler itself."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def map(self, fn: Callable[..., Any], *iterables: Any, timeout: Optional[float] = None,
            chunksize: int = 1) -> Iterator[Any]:
        import uuid

        columns = [list(column) for column in iterables]
        build = uuid.uuid4().hex[:12]
        # Named keys: the dashboard shows rotortree_segment tasks by segment.
        keys = [f"rotortree_segment-{build}-{index}" for index in columns[1]]
        futures = self._client.map(fn, *columns, key=keys, pure=False)
        return self._results(futures)

    def _results(self, futures: List[Any]) -> Iterator[Any]:
        try:
            for low in range(0, len(futures), _GATHER_BLOCK):
                block = futures[low:low + _GATHER_BLOCK]
                try:
                    values = self._client.gather(block)
                except BaseException:
                    # Name the first failed segment in order: the caller
                    # reports it, as for any other executor.
                    for position, future in enumerate(block):
                        if future.status in ("error", "cancelled"):
                            yield from self._client.gather(block[:position])
                            future.result()
                    raise
                yield from values
        finally:
            self._client.cancel([future for future in futures if not future.done()])


def _failure(index: int, start: int, stop: int, error: BaseException) -> BaseException:
    """What the caller sees for a failed segment: an error about the leaves
    (a rotortree error raised by the source) as it is; anything else, a
    dead worker included, as DistributedBuildError naming the segment."""
    if isinstance(error, RotorTreeError):
        return error
    return DistributedBuildError(
        f"segment {index} (leaves {start:,}..{stop:,}) failed: {type(error).__name__}: {error}")


def run_segments(source: Source, first_index: int, first_leaf: int, per_segment: int,
                 arity: int, options: Dict[str, Any], client: Any, out: Optional[str],
                 progress: bool) -> List[bytes]:
    """Roots of the segments of ``source``, whose leaf 0 is leaf
    ``first_leaf`` = ``first_index * per_segment`` of the tree."""
    executor, workers = executor_for(client)
    spans: List[Tuple[int, int, int]] = []
    for start in range(0, source.leaves, per_segment):
        spans.append((first_index + len(spans), start, min(start + per_segment, source.leaves)))
    roots: List[Optional[bytes]] = [None] * len(spans)
    bar = Progress(len(spans), "rotortree build", enabled=progress, unit="segment")
    with bar:
        if executor is None:
            try:
                for position, (index, start, stop) in enumerate(spans):
                    roots[position] = rotortree_segment(source.part(start, stop), index, arity,
                                                        options, out)
                    bar.update()
            finally:
                release_segment_buffer()
        else:
            _run_on(executor, max(_MIN_CHUNK, _CHUNK_PER_WORKER * workers), spans,
                    source, arity, options, out, roots, bar.update, first_leaf)
    return [root for root in roots if root is not None]


def _run_on(executor: cf.Executor, chunk: int, spans: Sequence[Tuple[int, int, int]],
            source: Source, arity: int, options: Dict[str, Any], out: Optional[str],
            roots: List[Optional[bytes]], done: Callable[[], None], first_leaf: int) -> None:
    """Run the segments in chunks through ``executor.map``, one call per
    chunk (a Dask client submits a chunk in one message, where one submit
    per segment costs the scheduler a round trip each), with the next chunk
    already submitted while this one drains, so workers never wait."""
    chunks = [list(range(low, min(low + chunk, len(spans))))
              for low in range(0, len(spans), chunk)]

    def submit(positions: List[int]) -> Iterator[Any]:
        count = len(positions)
        return iter(executor.map(
            rotortree_segment,
            [source.part(spans[p][1], spans[p][2]) for p in positions],
            [spans[p][0] for p in positions], [arity] * count, [options] * count,
            [out] * count))

    running: List[Tuple[List[int], Iterator[Any]]] = []
    try:
        for number, positions in enumerate(chunks):
            if not running:
                running.append((positions, submit(positions)))
            if number + 1 < len(chunks):
                running.append((chunks[number + 1], submit(chunks[number + 1])))
            positions, results = running[0]
            for position in positions:
                index, start, stop = spans[position]
                try:
                    root = next(results)
                except BaseException as error:
                    raise _failure(index, first_leaf + start, first_leaf + stop,
                                   error) from error
                if not isinstance(root, bytes) or len(root) != HASH_LEN:
                    raise DistributedBuildError(f"segment {index}: the executor returned "
                                                f"{type(root).__name__}, not a 32-byte root")
                roots[position] = root
                done()
            running.pop(0)
    finally:
        # Closing a map's iterator cancels what it has not yet returned.
        for _, results in running:
            close = getattr(results, "close", None)
            if close is not None:
                close()


def finish(roots: Sequence[bytes], arity: int, options: Dict[str, Any]) -> bytes:
    if not roots:
        raise EmptyTreeError("no leaves to build a tree of")
    return root_of_segments(roots, arity, **options)
