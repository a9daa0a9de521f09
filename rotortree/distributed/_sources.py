"""Sources of leaves for a distributed build, as small picklable descriptors.

A build never ships leaves to workers: it cuts the source into the leaf
ranges of its segments (:meth:`Source.part`) and a worker reads its own
range (:meth:`Source.read`). A descriptor holds only what reading needs
(file names and byte ranges, a culled slice of a dask array's graph, a
function and a range), so it is small however large the tree.

Descriptors are plain classes, not tuples or dataclasses: Dask looks inside
those for collections and futures, and a descriptor must reach the worker
as it is.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .._leaf_file import LeafFileError, _size_problem
from .._native import HASH_LEN
from .._validate import int_arg, shown
from ..errors import (ArgumentTypeError, CorruptionError, InvalidArgumentError,
                      InvalidLeafError, LeafSourceError)


def is_local(url: str) -> bool:
    """A plain path (no ``scheme://``) or a ``file://`` URL: read with the
    operating system directly, mapped or with ranged reads."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def url_filesystem(url: str) -> Tuple[Any, str]:
    """(fsspec filesystem, path) for ``url``; LeafSourceError naming it when
    fsspec is missing or does not know the protocol."""
    try:
        import fsspec.core
    except ImportError:
        raise LeafSourceError(f"{url}: reading URLs needs fsspec (pip install "
                              "'rotortree[distributed]')") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ValueError, ImportError, OSError) as error:
        raise LeafSourceError(f"{url}: cannot open this URL ({error})") from error
    return fs, path


# One kept segment buffer per thread that hashes segments. A fresh buffer
# of a segment's size is above glibc's largest mmap threshold, so it is
# mapped and unmapped per segment and every page of it is faulted in and
# zeroed by the kernel again each time: on a worker that cost about as much
# CPU as hashing the segment. Reusing one buffer pays that once per thread.
_kept = threading.local()


def release_segment_buffer() -> None:
    """Drop this thread's kept segment buffer (a local build does, once
    done, so the client does not hold a segment's memory afterwards)."""
    if not getattr(_kept, "busy", False):
        _kept.buffer = None


@contextlib.contextmanager
def segment_buffer(nbytes: int) -> Iterator[memoryview]:
    """A writable view of ``nbytes`` bytes for the duration of the block:
    this thread's kept buffer (grown if too small), or a fresh one when the
    kept one is already lent out (a source that builds a tree itself)."""
    if getattr(_kept, "busy", False):
        yield memoryview(bytearray(nbytes))
        return
    held: Optional[bytearray] = getattr(_kept, "buffer", None)
    if held is None or len(held) < nbytes:
        _kept.buffer = held = None  # let the old one go before the new one exists
        _kept.buffer = held = bytearray(nbytes)
    _kept.busy = True
    try:
        yield memoryview(held)[:nbytes]
    finally:
        _kept.busy = False


class Source:
    """Leaves ``[0, leaves)`` of a source; subclasses say how to read them."""

    __slots__ = ("leaves",)
    leaves: int

    def part(self, start: int, stop: int) -> "Source":
        """The descriptor of leaves ``[start, stop)`` that a task carries."""
        raise NotImplementedError

    def read(self) -> Any:
        """All the leaves of this descriptor: a bytes-like object of
        ``32 * leaves`` bytes, the caller's to keep."""
        raise NotImplementedError

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """The leaves, as :meth:`read`, valid only inside the block: sources
        that can fill a buffer fill the thread's kept segment buffer, so a
        worker does not map and fault in a fresh segment for every task."""
        yield self.read()


# -- files ------------------------------------------------------------------------------


def _stat_leaves(url: str) -> int:
    """Number of leaves in the file or object ``url``, checked to be whole."""
    try:
        if is_local(url):
            info = os.stat(local_path(url))
            if stat.S_ISDIR(info.st_mode):
                raise LeafSourceError(f"{url} is a directory, not a file of leaves")
            nbytes = info.st_size
        else:
            fs, path = url_filesystem(url)
            # info, not size: a directory has a size too (0 in memory://),
            # and "empty" would name the wrong problem.
            details = fs.info(path)
            if details.get("type") == "directory":
                raise LeafSourceError(f"{url} is a directory, not a file of leaves")
            nbytes = details.get("size")
            if not isinstance(nbytes, int):
                raise LeafSourceError(f"{url}: its store gives no size ({nbytes!r})")
    except LeafSourceError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise LeafSourceError(f"{url}: cannot read leaves ({error})") from error
    problem = _size_problem(url, nbytes)
    if problem:
        raise LeafFileError(problem)
    return nbytes // HASH_LEN


class FileSource(Source):
    """Byte ranges of files or fsspec URLs: ``(url, byte offset, leaves)``."""

    __slots__ = ("ranges",)

    def __init__(self, ranges: Sequence[Tuple[str, int, int]]) -> None:
        self.ranges = list(ranges)
        self.leaves = sum(count for _, _, count in self.ranges)

    @classmethod
    def of_files(cls, urls: Sequence[Any]) -> "FileSource":
        names = []
        for url in urls:
            try:
                name = os.fsdecode(os.fspath(url))
            except TypeError:
                raise ArgumentTypeError(
                    f"a file of leaves must be a path or URL string, not {type(url).__name__}"
                ) from None
            if "\0" in name:
                raise InvalidArgumentError(f"{shown(name)}: a path cannot hold a NUL byte")
            names.append(name)
        return cls([(name, 0, _stat_leaves(name)) for name in names])

    def part(self, start: int, stop: int) -> "FileSource":
        ranges = []
        first = 0
        for url, offset, count in self.ranges:
            low, high = max(start, first), min(stop, first + count)
            if low < high:
                ranges.append((url, offset + (low - first) * HASH_LEN, high - low))
            first += count
        return FileSource(ranges)

    def read(self) -> bytearray:
        buffer = bytearray(self.leaves * HASH_LEN)
        with memoryview(buffer) as view:
            self._fill(view)
        return buffer

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        with segment_buffer(self.leaves * HASH_LEN) as view:
            self._fill(view)
            yield view

    def _fill(self, view: memoryview) -> None:
        filled = 0
        for url, offset, count in self.ranges:
            nbytes = count * HASH_LEN
            _read_range(url, offset, view[filled:filled + nbytes])
            filled += nbytes


def _read_range(url: str, offset: int, into: memoryview) -> None:
    """Fill ``into`` from ``url`` at ``offset``; LeafSourceError naming
    ``url`` if it cannot be read or ends early (changed since planned)."""
    got = 0
    try:
        if is_local(url):
            with open(local_path(url), "rb", buffering=0) as stream:
                stream.seek(offset)
                while got < into.nbytes:
                    step = stream.readinto(into[got:])
                    if not step:
                        break
                    got += step
        else:
            fs, path = url_filesystem(url)
            data = fs.cat_file(path, start=offset, end=offset + into.nbytes)
            got = min(len(data), into.nbytes)
            into[:got] = data[:got]
    except LeafSourceError:
        raise
    except (OSError, ValueError) as error:
        raise LeafSourceError(f"{url}: cannot read leaves ({error})") from error
    if got < into.nbytes:
        raise LeafSourceError(
            f"{url}: ended at byte {offset + got:,}, the build needs bytes up to "
            f"{offset + into.nbytes:,} (the file shrank after the build was planned)")


# -- dask arrays ---------------------------------------------------------------------------


def _is_dask_array(value: object) -> bool:
    return hasattr(value, "__dask_graph__") and hasattr(value, "shape") and hasattr(value, "dtype")


class ArraySource(Source):
    """A dask array of shape (n, 32), dtype uint8; a part is the culled
    graph of its rows, computed on the worker that hashes them."""

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        shape = tuple(array.shape)
        if len(shape) != 2 or shape[1] != HASH_LEN:
            raise InvalidLeafError(f"a dask array of leaves must have shape (n, {HASH_LEN}), "
                                   f"got {shape}")
        if str(array.dtype) != "uint8":
            raise ArgumentTypeError(f"a dask array of leaves must be uint8, got {array.dtype}")
        if any(isinstance(extent, float) for extent in shape):  # nan: unknown chunk sizes
            raise InvalidArgumentError("the dask array's length is unknown; call "
                                       "compute_chunk_sizes() first")
        self.array = array
        self.leaves = int(shape[0])

    def part(self, start: int, stop: int) -> "ArraySource":
        import importlib

        dask: Any = importlib.import_module("dask")
        (rows,) = dask.optimize(self.array[start:stop])
        return ArraySource(rows)

    def read(self) -> Any:
        import numpy

        # The rows are computed here, on the worker, by the synchronous
        # scheduler: the task is the unit Dask schedules and retries.
        rows = numpy.ascontiguousarray(self.array.compute(scheduler="sync"), dtype=numpy.uint8)
        return rows.reshape(-1)


# -- generated leaves -------------------------------------------------------------------------


class CallableSource(Source):
    """``function(start, stop)`` returns leaves ``[start, stop)`` (a
    bytes-like object of ``32 * (stop - start)`` bytes); for generated data
    and sources the package does not know. The function must be picklable
    to run on other processes. A function with a ``fill(start, stop, out)``
    method (``out`` a writable memoryview of ``32 * (stop - start)``
    bytes) is filled into a reused buffer instead of called."""

    __slots__ = ("function", "start")

    def __init__(self, function: Callable[[int, int], Any], leaves: int, start: int = 0) -> None:
        self.function = function
        self.leaves = leaves
        self.start = start

    def part(self, start: int, stop: int) -> "CallableSource":
        return CallableSource(self.function, stop - start, self.start + start)

    def read(self) -> Any:
        stop = self.start + self.leaves
        data = self.function(self.start, stop)
        name = (getattr(self.function, "__qualname__", None)
                or type(self.function).__qualname__)
        try:
            view = memoryview(data)
        except TypeError:
            raise ArgumentTypeError(f"the leaf source {name}({self.start}, {stop}) returned "
                                    f"{type(data).__name__}, not a bytes-like object") from None
        if view.nbytes != self.leaves * HASH_LEN:
            raise InvalidLeafError(f"the leaf source {name}({self.start}, {stop}) returned "
                                   f"{view.nbytes:,} bytes, not {self.leaves * HASH_LEN:,} "
                                   f"({self.leaves:,} leaves)")
        return data

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        fill = getattr(self.function, "fill", None)
        if fill is None:
            yield self.read()
            return
        with segment_buffer(self.leaves * HASH_LEN) as view:
            fill(self.start, self.start + self.leaves, view)
            yield view


# -- an old right edge, read back to be rebuilt -----------------------------------------------


class CheckedSource(Source):
    """A source whose leaves must hash to ``root`` (arity and hash-rule
    options given): an append reads the old right-edge segment's leaves from
    its file, whose header the manifest vouches for but whose body nothing
    else checks, and a changed leaf would otherwise pass into the new tree.
    Checked on the worker that reads it, so the client reads no leaves."""

    __slots__ = ("source", "root", "arity", "options", "where")

    def __init__(self, source: Source, root: bytes, arity: int, options: Dict[str, Any],
                 where: str) -> None:
        self.source, self.root, self.arity = source, root, arity
        self.options, self.where = options, where
        self.leaves = source.leaves

    def part(self, start: int, stop: int) -> Source:
        if (start, stop) == (0, self.leaves):
            return self
        # An edge is shorter than a segment, and the segment being rebuilt
        # starts where it does: a part of it cannot be checked alone.
        raise AssertionError(f"a checked source is read whole, not [{start}, {stop})")

    def read(self) -> Any:
        from ..tree import compute_root

        leaves = self.source.read()
        if compute_root(leaves, self.arity, **self.options) != self.root:
            raise CorruptionError(f"{self.where}: its leaves do not hash to the root in its "
                                  "header", self.where)
        return leaves


# -- concatenation (appends: the old right-edge segment, then the new leaves) ---------------


class ConcatSource(Source):
    __slots__ = ("sources",)

    def __init__(self, sources: Sequence[Source]) -> None:
        self.sources = [source for source in sources if source.leaves]
        self.leaves = sum(source.leaves for source in self.sources)

    def part(self, start: int, stop: int) -> Source:
        parts: List[Source] = []
        first = 0
        for source in self.sources:
            low, high = max(start, first), min(stop, first + source.leaves)
            if low < high:
                parts.append(source.part(low - first, high - first))
            first += source.leaves
        return parts[0] if len(parts) == 1 else ConcatSource(parts)

    def read(self) -> bytes:
        return b"".join(bytes(memoryview(source.read()).cast("B")) for source in self.sources)


def plan_source(source: Any, size: Optional[int]) -> Source:
    """The descriptor of what the caller passed as ``source``."""
    if isinstance(source, (str, bytes, os.PathLike)):
        source = [source]
    if isinstance(source, (list, tuple)):
        if size is not None:
            raise InvalidArgumentError("size is only for a callable source; a file's size "
                                       "is its own")
        if not source:
            raise InvalidArgumentError("no files of leaves given")
        return FileSource.of_files(source)
    if _is_dask_array(source):
        if size is not None:
            raise InvalidArgumentError("size is only for a callable source; a dask array's "
                                       "size is its length")
        return ArraySource(source)
    if callable(source):
        if size is None:
            raise InvalidArgumentError("a callable source needs size= (the number of leaves "
                                       "it produces)")
        size = int_arg("size", size)
        if size < 1:
            raise InvalidArgumentError(f"size must be >= 1, got {shown(size)}")
        return CallableSource(source, size)
    raise ArgumentTypeError(
        "source must be a list of files or URLs of raw 32-byte leaves, a dask array of "
        f"shape (n, 32) uint8, or a callable(start, stop); got {type(source).__name__}")


_FILL_ROWS = 1 << 14


class CounterLeaves:
    """A generated source for tests, benchmarks and simulations: leaf ``i``
    is ``i`` and ``seed`` as two little-endian u64 followed by 16 zero
    bytes. Cheap to produce anywhere (numpy), picklable, and every leaf
    distinct, so a misplaced segment changes the root."""

    __slots__ = ("seed",)

    def __init__(self, seed: int = 0) -> None:
        self.seed = int_arg("seed", seed) & ((1 << 64) - 1)

    def __call__(self, start: int, stop: int) -> Any:
        import numpy

        leaves = numpy.empty((stop - start) * HASH_LEN, dtype=numpy.uint8)
        self.fill(start, stop, leaves)
        return leaves

    def fill(self, start: int, stop: int, out: Any) -> None:
        """Write leaves ``[start, stop)`` into ``out`` (a writable buffer of
        ``32 * (stop - start)`` bytes, whatever it held before)."""
        import numpy

        words = numpy.frombuffer(out, dtype="<u8").reshape(-1, 4)
        if len(words) != stop - start:
            raise InvalidArgumentError(f"fill({start}, {stop}) needs {(stop - start) * HASH_LEN:,}"
                                       f" bytes, got {len(words) * HASH_LEN:,}")
        # Rows are built in a small block that stays in cache and copied out
        # whole: one sequential pass over ``out`` instead of three strided ones.
        block = numpy.zeros((min(len(words), _FILL_ROWS), 4), dtype="<u8")
        block[:, 1] = self.seed
        for low in range(0, len(words), _FILL_ROWS):
            high = min(low + _FILL_ROWS, len(words))
            rows = block[:high - low]
            rows[:, 0] = numpy.arange(start + low, start + high, dtype="<u8")
            words[low:high] = rows

    def __reduce__(self) -> Any:
        return (CounterLeaves, (self.seed,))

    def __repr__(self) -> str:
        return f"CounterLeaves(seed={self.seed})"
