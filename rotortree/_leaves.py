"""Turning what callers pass as leaves into (buffer, count) for C.

Bytes-like objects are handed to C without a copy (``ffi.from_buffer``); an
iterable of leaves is validated item by item and joined once. Validation
happens before C is called, and C copies leaves into the tree before hashing,
so a bad leaf anywhere in a batch leaves the tree untouched.
"""

from __future__ import annotations

from typing import Any, Iterable, Tuple, Union

from ._native import HASH_LEN, ffi
from .errors import ArgumentTypeError, EmptyBatchError, InvalidLeafError

BytesLike = Union[bytes, bytearray, memoryview]
Leaves = Union[BytesLike, Iterable[BytesLike], Any]

# Formats whose items are single bytes: bytes/bytearray ('B'), numpy uint8
# ('B'), int8 ('b') and char ('c') arrays; ctypes arrays spell them with a
# byte-order prefix ('<B'), which means nothing for one-byte items.
_BYTE_FORMATS = frozenset({"B", "b", "c"})


def _is_byte_format(view: memoryview) -> bool:
    return view.itemsize == 1 and view.format.lstrip("@=<>!") in _BYTE_FORMATS


def _leaf_view(value: object, position: str) -> memoryview:
    if isinstance(value, (str, int)) or not _is_buffer(value):
        raise ArgumentTypeError(
            f"{position} must be a bytes-like object of {HASH_LEN} bytes, "
            f"not {type(value).__name__}"
        )
    view = memoryview(value)  # type: ignore[arg-type]
    if not _is_byte_format(view):
        # The same rule as for batches: a float32[8] is 32 bytes, but not
        # a leaf.
        raise ArgumentTypeError(
            f"{position} must hold bytes (uint8), got item format {view.format!r}"
        )
    if view.nbytes != HASH_LEN:
        raise InvalidLeafError(
            f"{position} must be exactly {HASH_LEN} bytes, got {view.nbytes}"
        )
    return view


def _is_buffer(value: object) -> bool:
    try:
        memoryview(value)  # type: ignore[arg-type]
    except TypeError:
        return False
    except ValueError:  # a released memoryview
        raise ArgumentTypeError(f"cannot read leaves from {value!r}") from None
    return True


def single_leaf(leaf: object) -> Any:
    """A 32-byte leaf as something C can read without copying."""
    if type(leaf) is bytes and len(leaf) == HASH_LEN:
        return leaf
    view = _leaf_view(leaf, "leaf")
    if not view.c_contiguous:
        return view.tobytes()
    return ffi.from_buffer("uint8_t[]", leaf)


def _check_buffer_shape(view: memoryview) -> int:
    if not _is_byte_format(view):
        raise ArgumentTypeError(
            f"leaf buffers must hold bytes (uint8), got item format {view.format!r}"
        )
    if not view.c_contiguous:
        raise InvalidLeafError("leaf buffers must be C-contiguous")
    if view.ndim == 2 and view.shape is not None and view.shape[1] != HASH_LEN:
        raise InvalidLeafError(
            f"a 2-D leaf buffer must have shape (k, {HASH_LEN}), got {tuple(view.shape)}"
        )
    if view.ndim not in (1, 2):
        raise InvalidLeafError(f"a leaf buffer must be 1-D or 2-D, got {view.ndim}-D")
    if view.nbytes == 0:
        raise EmptyBatchError("empty batch: at least one leaf is needed")
    if view.nbytes % HASH_LEN:
        raise InvalidLeafError(
            f"leaf buffer of {view.nbytes} bytes is not a whole number of "
            f"{HASH_LEN}-byte leaves"
        )
    return view.nbytes // HASH_LEN


def leaf_batch(leaves: Leaves) -> Tuple[Any, int]:
    """(buffer, count): a C-readable buffer of ``count`` leaves.

    The returned buffer keeps whatever it views alive for as long as it is
    referenced.
    """
    if isinstance(leaves, str):
        raise ArgumentTypeError("leaves must be bytes-like or an iterable of leaves, not str")
    try:
        view = memoryview(leaves)  # type: ignore[arg-type]
    except TypeError:
        view = None
    except ValueError:  # a released memoryview
        raise ArgumentTypeError(f"cannot read leaves from {leaves!r}") from None
    if view is not None:
        count = _check_buffer_shape(view)
        return ffi.from_buffer("uint8_t[]", leaves), count

    try:
        items = iter(leaves)
    except TypeError:
        raise ArgumentTypeError(
            f"leaves must be bytes-like or an iterable of leaves, not {type(leaves).__name__}"
        ) from None
    parts = []
    for index, item in enumerate(items):
        if type(item) is bytes and len(item) == HASH_LEN:
            parts.append(item)
        else:
            parts.append(_leaf_view(item, f"leaf {index}").tobytes())
    if not parts:
        raise EmptyBatchError("empty batch: at least one leaf is needed")
    return b"".join(parts), len(parts)
