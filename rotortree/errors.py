"""Exception classes.

Every error raised by rotortree derives from :class:`RotorTreeError` and from
the builtin exception it refines, so callers can catch either
(``except rotortree.InvalidLeafError``, ``except ValueError`` or
``except rotortree.RotorTreeError``).
"""

from __future__ import annotations

import builtins


class RotorTreeError(Exception):
    """Base class of every rotortree error."""


class InvalidArgumentError(RotorTreeError, builtins.ValueError):
    """A parameter is outside its documented range."""


class ArgumentTypeError(RotorTreeError, builtins.TypeError):
    """A parameter has the wrong type (e.g. a str where bytes are expected)."""


class InvalidLeafError(RotorTreeError, builtins.ValueError):
    """A leaf is not exactly 32 bytes, or a leaf buffer is not whole leaves."""


class EmptyBatchError(RotorTreeError, builtins.ValueError):
    """``insert_many`` was given no leaves."""


class EmptyTreeError(RotorTreeError, builtins.ValueError):
    """The operation needs at least one leaf."""


class MaxDepthExceededError(RotorTreeError, builtins.ValueError):
    """The insert would take the tree past ``arity ** max_depth`` leaves."""


class NodeIndexError(RotorTreeError, builtins.IndexError):
    """A level or node index is out of range."""


class UnsupportedKernelError(RotorTreeError, builtins.ValueError):
    """The requested SIMD kernel cannot run on this CPU or build."""


class PoolBusyError(RotorTreeError, builtins.RuntimeError):
    """The thread pool cannot be reconfigured while parallel work runs."""


class ThreadError(RotorTreeError, builtins.RuntimeError):
    """A thread or lock operation failed in the C core."""


class OutOfMemoryError(RotorTreeError, builtins.MemoryError):
    """The C core could not allocate memory; nothing was changed."""


class InvalidProofError(RotorTreeError, builtins.ValueError):
    """Proof bytes or a proof dict cannot be decoded (truncated, corrupted,
    unknown version), or a proof operation got inconsistent proofs."""


class RuleMismatchError(RotorTreeError, builtins.ValueError):
    """A proof, proof batch, saved file or durable tree made under one hash
    rule (``"rotortree-0.15"``, ``"leanimt"``, ``"rfc6962"``) was given to a
    tree or verifier of another: hashing it under the wrong rule could only
    fail, so it is refused by name instead."""


class DuplicateLeafError(RotorTreeError, builtins.ValueError):
    """A unique insert (``unique=True``) met leaves already in the tree or
    repeated inside the batch; nothing was inserted. ``positions`` holds
    their positions in the batch (ascending) and ``leaves`` the leaves."""

    def __init__(self, message: str, positions: "list[int] | None" = None,
                 leaves: "list[bytes] | None" = None) -> None:
        super().__init__(message)
        self.positions = list(positions or [])
        self.leaves = list(leaves or [])


class NoLeafIndexError(RotorTreeError, builtins.ValueError):
    """A membership query or unique insert on a tree made without a leaf
    index (``index=True``; ``enable_index()`` adds one later)."""


# -- durable trees (rotortree.durable / rotortree.storage) --------------------


class CorruptionError(RotorTreeError, builtins.ValueError):
    """Stored tree data is damaged or inconsistent: a checksum mismatch, a
    truncated or missing file, a root that does not match the leaves. The
    message names the file and what is wrong; ``path`` holds the file."""

    def __init__(self, message: str, path: "str | None" = None) -> None:
        super().__init__(message)
        self.path = path


class TreeLockedError(RotorTreeError, builtins.BlockingIOError):
    """The durable tree's directory is already open (its lock file is held by
    another ``RotorTree``, in this process or another one)."""


class DurabilityError(RotorTreeError, builtins.OSError):
    """A write, fsync, rename or truncate of a durable tree's files failed, or
    an entry was not made durable. ``operation`` names the failed step and
    ``filename`` the file. After an fsync failure the tree refuses writes
    until it is reopened (the state of the file on disk is unknown)."""

    operation: "str | None" = None


class ClosedTreeError(RotorTreeError, builtins.ValueError):
    """The durable tree was closed."""


class TreeNotFoundError(RotorTreeError, builtins.FileNotFoundError):
    """``RotorTree.open`` found no durable tree at the path (the directory is
    missing or empty) and was not asked to create one (``create=True``)."""


class NotATreeError(RotorTreeError, builtins.FileExistsError):
    """``RotorTree.open`` was given a directory that holds other files but
    no durable tree; it is never adopted (a mistyped path must not turn an
    unrelated folder into a tree)."""


class StorageMismatchError(RotorTreeError, builtins.ValueError):
    """A durable tree was opened with a different arity or max_depth than the
    one its files were written with."""


class ReadOnlyTreeError(RotorTreeError, builtins.PermissionError):
    """A write to a durable tree opened with ``read_only=True``, or a
    writable open of a tree whose directory or files cannot be written (a
    read-only filesystem, missing permissions): open it with
    ``read_only=True`` to serve reads and proofs from it."""


# -- distributed builds (rotortree.distributed) ------------------------------------


class LeafSourceError(RotorTreeError, builtins.OSError):
    """A source of leaves for a distributed build cannot be read: a missing
    file, an unreadable or unknown URL, a read that returned fewer bytes
    than the source promised. The message names the file or URL."""


class DistributedBuildError(RotorTreeError, builtins.RuntimeError):
    """A distributed build could not finish: a segment's task failed for a
    reason that is not the leaves' fault (its worker died more often than
    the engine retries, the executor broke down). No root is returned and
    no manifest is written, so a sharded tree on disk is never half-built."""


# -- warnings ----------------------------------------------------------------------


class RotorTreeWarning(UserWarning):
    """A setting (a ``ROTORTREE_*`` environment variable or the config file)
    was ignored at import; ``rotortree.pool_info()["config_errors"]`` lists
    them. A warning, not an error: proof verification and trees keep working
    with the other settings and the defaults."""
