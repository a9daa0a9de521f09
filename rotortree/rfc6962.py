"""RFC 6962 / RFC 9162 leaf hashes: ``SHA-256(0x00 || entry)``.

A Certificate-Transparency-style log stores entries; its tree's leaves are
their leaf hashes, and its parents ``SHA-256(0x01 || left || right)`` (the
``"rfc6962"`` rule). The 0x00 / 0x01 prefixes keep a leaf from passing for
a parent.

With the compiled core, SHA-256 runs in C (FIPS 180-4, on the CPU's SHA
extensions where it has them, following the process-wide kernel, so
``ROTORTREE_SIMD=portable`` hashes with portable C) and large batches are
spread over the thread pool. Without it (light client mode) the same values
come from :mod:`hashlib`.
"""

from __future__ import annotations

import hashlib
import io
from array import array
from itertools import accumulate
from operator import countOf
from typing import Any, Iterable, List, Optional, Sequence, Tuple, Union

from ._validate import int_arg, shown
from .errors import ArgumentTypeError, InvalidArgumentError, OutOfMemoryError

BytesLike = Union[bytes, bytearray, memoryview]

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_LEN = 32

_lib: Any
try:
    from ._native import check as _check
    from ._native import ffi as _ffi
    from ._native import lib as _lib
except ImportError:  # light client: hashlib only
    _lib = None


def _byte_view(value: object, what: str) -> memoryview:
    """``value`` as a memoryview of bytes, or ArgumentTypeError. str is
    refused: which encoding the log uses is the caller's decision."""
    if isinstance(value, (str, int)):
        raise ArgumentTypeError(f"{what} must be bytes-like, not {type(value).__name__}")
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ArgumentTypeError(f"{what} must be bytes-like, not {type(value).__name__}") from None
    if view.itemsize != 1 or view.format.lstrip("@=<>!") not in ("B", "b", "c"):
        raise ArgumentTypeError(f"{what} must hold bytes (uint8), got item format {view.format!r}")
    return view


def _contiguous(view: memoryview) -> Any:
    return view if view.c_contiguous else view.tobytes()


def leaf_hash(entry: BytesLike) -> bytes:
    """The RFC 6962 leaf hash ``SHA-256(0x00 || entry)`` of one entry
    (any bytes-like object, any length)."""
    view = _byte_view(entry, "entry")
    if _lib is None:
        return hashlib.sha256(LEAF_PREFIX + view.tobytes()).digest()
    out = _ffi.new("uint8_t[32]")
    data = _ffi.from_buffer("uint8_t[]", _contiguous(view))
    _check(_lib.rt_rfc6962_leaf_hashes(data, view.nbytes, _ffi.NULL, 1, view.nbytes, out),
           "leaf_hash")
    return bytes(out)


# A batch of entries as the C calls read it: (data, offsets, count,
# entry_len), entry i being data[i * entry_len:][:entry_len] when offsets is
# None and data[offsets[i]:offsets[i + 1]] otherwise.
_Batch = Tuple[Any, Optional["array[int]"], int, int]


def leaf_hashes(entries: Union[BytesLike, Iterable[BytesLike]],
                entry_len: Optional[int] = None) -> bytes:
    """Leaf hashes of many entries, concatenated: 32 bytes per entry, in
    order, ready for ``LeanIMT(rule="rfc6962").insert_many`` (or use
    :func:`insert_entries`, which skips the concatenated hashes).

    ``entries`` is either an iterable of bytes-like entries of any lengths,
    or one contiguous bytes-like buffer of fixed-size entries with
    ``entry_len`` giving their size (the buffer's length must be a whole
    number of entries). An empty batch gives ``b""``. With the compiled
    core, large batches run on the thread pool (``rotortree.configure``).
    Raises ArgumentTypeError for a str, a non-bytes item or a buffer without
    ``entry_len``, InvalidArgumentError for a bad ``entry_len``.
    """
    return _hashed(_batch(entries, entry_len))


def _hashed(batch: _Batch) -> bytes:
    data, offsets, count, size = batch
    if count == 0:
        return b""
    if _lib is None:
        return b"".join(hashlib.sha256(LEAF_PREFIX + bytes(entry)).digest()
                        for entry in _split(data, offsets, count, size))
    nbytes = count * HASH_LEN
    # From the core's cache of mappings, not malloc: malloc hands large
    # frees back to the system, so each call could get 32 MB per million
    # entries of fresh memory that the kernel zeroes page by page, a third
    # as much work as the hashing.
    out = _lib.rt_buffer_alloc(nbytes)
    if out == _ffi.NULL:
        raise OutOfMemoryError(f"cannot allocate the leaf hashes of {count:,} entries")
    out = _ffi.gc(out, _lib.rt_buffer_free, size=nbytes)
    _check(_lib.rt_rfc6962_leaf_hashes(*_c_batch(data, offsets, count, size),
                                       _ffi.cast("uint8_t *", out)), "leaf_hashes")
    return bytes(_ffi.buffer(out, nbytes))


def insert_entries(tree: Any, entries: Union[BytesLike, Iterable[BytesLike]],
                   entry_len: Optional[int] = None) -> bytes:
    """Append the entries' leaf hashes to ``tree``, a
    ``LeanIMT(2, rule="rfc6962")``, as one atomic batch; returns the new
    root. ``entries`` and ``entry_len`` are read as by :func:`leaf_hashes`.

    The tree is the one ``tree.insert_many(leaf_hashes(entries, entry_len))``
    gives, built faster: with the compiled core each piece of entries is
    hashed into leaves, stored and hashed into its part of the tree while
    in cache, in one run of the thread pool, with no buffer of leaf hashes
    in between. Raises what :func:`leaf_hashes` raises for bad entries,
    ArgumentTypeError if ``tree`` is not an in-memory ``LeanIMT``,
    InvalidArgumentError if its rule is not ``"rfc6962"``,
    EmptyBatchError for no entries and MaxDepthExceededError past the
    tree's capacity; then nothing is inserted.
    """
    from .tree import LeanIMT  # the tree module imports this one's siblings

    if not isinstance(tree, LeanIMT):
        raise ArgumentTypeError(
            f"tree must be a LeanIMT, not {type(tree).__name__}; a durable tree takes "
            "insert_many(leaf_hashes(entries)) so that its log records the leaves")
    if tree.rule != "rfc6962":
        raise InvalidArgumentError(
            f"insert_entries needs a tree of the rfc6962 rule, not {tree.rule!r}")
    batch = _batch(entries, entry_len)
    data, offsets, count, size = batch
    if _lib is None or count == 0:
        # No entries go to insert_many too, which raises EmptyBatchError. The
        # batch is hashed, not `entries`: an iterator is already consumed.
        return tree.insert_many(_hashed(batch))
    root = _ffi.new("uint8_t[32]")
    status = _lib.rt_tree_insert_rfc6962_entries(tree._tree,
                                                 *_c_batch(data, offsets, count, size), root)
    if status == _lib.RT_ERR_MAX_DEPTH:
        raise tree._capacity_error(count)
    _check(status, "insert_entries")
    return bytes(_ffi.buffer(root))


def _batch(entries: Union[BytesLike, Iterable[BytesLike]],
           entry_len: Optional[int]) -> _Batch:
    """The entries of :func:`leaf_hashes`'s arguments, checked."""
    if isinstance(entries, str):
        raise ArgumentTypeError("entries must be bytes-like entries, not str")
    try:
        memoryview(entries)  # type: ignore[arg-type,unused-ignore]
        is_buffer = True
    except TypeError:
        is_buffer = False
    except ValueError:  # a released memoryview
        raise ArgumentTypeError(f"cannot read entries from {shown(entries)}") from None
    if is_buffer:
        if entry_len is None:
            raise ArgumentTypeError(
                "a contiguous buffer of entries needs entry_len (the size of each entry); "
                "pass a list for entries of different lengths")
        return _fixed(_byte_view(entries, "entries"), entry_len)
    if entry_len is not None:
        raise ArgumentTypeError("entry_len applies to a contiguous buffer of entries, not to "
                                f"{type(entries).__name__}")
    if isinstance(entries, (list, tuple)):
        items: Sequence[Any] = entries
    else:
        try:
            items = list(entries)
        except TypeError:
            raise ArgumentTypeError(
                f"entries must be a bytes-like buffer or an iterable of entries, "
                f"not {type(entries).__name__}") from None
    joined = _joined(items)
    if joined is not None:
        return joined
    parts: List[bytes] = []
    for index, item in enumerate(items):
        # Anything but bytes is copied once, which also makes a strided view
        # contiguous; a bad item raises here, naming its position.
        parts.append(item if type(item) is bytes
                     else _byte_view(item, f"entry {index}").tobytes())
    return b"".join(parts), _offsets(parts), len(parts), 0


def _offsets(items: Sequence[Any]) -> "array[int]":
    offsets = array("Q", [0])
    offsets.extend(accumulate(map(len, items)))
    return offsets


def _joined(items: Sequence[Any]) -> Optional[_Batch]:
    """A list of byte strings as a batch from one concatenation, with every
    pass over the list at C speed (a million entries have no Python-level
    loop); None sends the list down the item-by-item path, which names a bad
    item.

    ``len`` is the byte length exactly for byte strings and 1-D byte
    buffers, and at most it for any other buffer. So when the concatenation
    is a whole number ``size`` of bytes per item and every ``len`` is
    ``size``, every item is ``size`` bytes (none can hold more without
    another holding less); otherwise the lengths summing to the total proves
    each one is a byte length."""
    try:
        # BytesIO.writelines copies item by item; bytes.join first fills an
        # 80-byte buffer record per item, 8 MB of scratch for 100k entries.
        # Once large frees elsewhere have handed such memory back to the
        # system, every call page-faults its scratch in afresh: that cost
        # more than the copy of short entries itself.
        writer = io.BytesIO()
        writer.writelines(items)
        data = writer.getvalue()  # in CPython the written buffer itself, not a copy
        count = len(items)
        size = len(data) // count if count else 0
        # One counting pass, with no list of lengths: a length below 257 is
        # a cached int, so each comparison is an identity check.
        if size and size * count == len(data) and countOf(map(len, items), size) == count:
            return _fixed(memoryview(data), size)
        offsets = _offsets(items)
    except (TypeError, ValueError, BufferError):  # str, int, strided or released views
        return None
    if offsets[-1] != len(data):
        return None
    return data, offsets, count, 0


def _fixed(view: memoryview, entry_len: object) -> _Batch:
    size = int_arg("entry_len", entry_len)
    if size < 0:
        raise InvalidArgumentError(f"entry_len must be >= 0, got {shown(size)}")
    total = view.nbytes
    if size == 0:
        if total:
            raise InvalidArgumentError("entry_len 0 cannot split a non-empty buffer")
        return view, None, 0, 0
    if total % size:
        raise InvalidArgumentError(
            f"a buffer of {total} bytes is not a whole number of {size}-byte entries")
    return _contiguous(view), None, total // size, size


def _split(data: Any, offsets: Optional["array[int]"], count: int,
           size: int) -> Iterable[Any]:
    """The entries of a batch one by one (the hashlib path)."""
    view = memoryview(data)
    if offsets is None:
        return (view[i * size:(i + 1) * size] for i in range(count))
    return (view[offsets[i]:offsets[i + 1]] for i in range(count))


def _c_batch(data: Any, offsets: Optional["array[int]"], count: int,
             size: int) -> Tuple[Any, ...]:
    """A batch as the C calls' (data, data_len, offsets, count, entry_len)."""
    nbytes = memoryview(data).nbytes
    if offsets is None:
        return _ffi.from_buffer("uint8_t[]", data), nbytes, _ffi.NULL, count, size
    return (_ffi.from_buffer("uint8_t[]", data), nbytes, _ffi.from_buffer("uint64_t[]", offsets),
            count, 0)


__all__ = ["LEAF_PREFIX", "NODE_PREFIX", "insert_entries", "leaf_hash", "leaf_hashes"]
