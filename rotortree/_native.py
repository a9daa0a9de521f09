"""Thin layer over the generated cffi module: status codes to exceptions.

Every call into ``lib`` releases the GIL (cffi's API mode does so for every
function), so C work runs in parallel with other Python threads.
"""

from __future__ import annotations

from typing import NoReturn

from . import errors
from ._rotortree_cffi import ffi, lib

HASH_LEN: int = lib.RT_HASH_LEN

# One table from C status codes to exception classes: C decides what went
# wrong, Python only chooses how to say it.
_STATUS_ERRORS: dict[int, type[errors.RotorTreeError]] = {
    lib.RT_ERR_INVALID_ARGUMENT: errors.InvalidArgumentError,
    lib.RT_ERR_INVALID_LEAF: errors.InvalidLeafError,
    lib.RT_ERR_EMPTY_BATCH: errors.EmptyBatchError,
    lib.RT_ERR_MAX_DEPTH: errors.MaxDepthExceededError,
    lib.RT_ERR_INDEX: errors.NodeIndexError,
    lib.RT_ERR_NOMEM: errors.OutOfMemoryError,
    lib.RT_ERR_BUSY: errors.PoolBusyError,
    lib.RT_ERR_UNSUPPORTED: errors.UnsupportedKernelError,
    lib.RT_ERR_THREAD: errors.ThreadError,
    lib.RT_ERR_EMPTY_TREE: errors.EmptyTreeError,
    lib.RT_ERR_INVALID_PROOF: errors.InvalidProofError,
    lib.RT_ERR_NO_INDEX: errors.NoLeafIndexError,
    lib.RT_ERR_DUPLICATE: errors.DuplicateLeafError,
}


def raise_status(status: int, context: str = "") -> NoReturn:
    message = ffi.string(lib.rt_strerror(status)).decode()
    if context:
        message = f"{context}: {message}"
    raise _STATUS_ERRORS.get(status, errors.RotorTreeError)(message)


def check(status: int, context: str = "") -> None:
    if status != lib.RT_OK:
        raise_status(status, context)


__all__ = ["ffi", "lib", "HASH_LEN", "check", "raise_status"]
