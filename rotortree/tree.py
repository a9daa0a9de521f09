"""The in-memory LeanIMT."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Tuple

from ._index import IndexReads, duplicate_error, marked, unique_flag
from ._leaves import Leaves, leaf_batch, single_leaf
from ._native import HASH_LEN, check, ffi, lib, raise_status
from ._validate import int_arg as _int_arg
from ._validate import U64_MAX, shown
from .rules import DEFAULT_RULE, known_rule, rule_arg, rule_code
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    MaxDepthExceededError,
    NodeIndexError,
)
from .snapshot import LATEST

if TYPE_CHECKING:
    from .proofs import BytesLike, ConsistencyProof, InclusionProof
    from .snapshot import ProofBatch, Snapshot

# Single inserts write the root into a C buffer allocated once, read back
# through a cached view: an insert is one short C call, next to which
# allocating a cdata and a view every time is not small (the bound tobytes
# of a memoryview over the buffer makes the bytes in half the time of
# slicing an ffi.buffer, 25 against 50 ns, and a quarter of bytes(bytearray)).
# A call takes a buffer from a shared free list and puts it back: list pop
# and append are atomic, so threads, and signal handlers that insert in
# between, never share one (cheaper than a thread-local, which costs two
# dict operations per call).
_root_buffers: "List[Tuple[Any, Any]]" = []
# Bound once: a global load is cheaper per call than a method lookup.
_take_root_buffer = _root_buffers.pop
_give_root_buffer = _root_buffers.append
_insert_one = lib.rt_tree_insert


def _new_root_buffer() -> "Tuple[Any, Any]":
    """(read, cdata): read() is the bytes C wrote into cdata."""
    out = ffi.new("uint8_t[]", HASH_LEN)
    return memoryview(ffi.buffer(out)).tobytes, out


def _stable(leaves: object, buffer: Any) -> int:
    """RT_UNIQUE_STABLE when no other thread can change the batch during an
    insert (an exact ``bytes``, or the private join of an iterable): C then
    reads it in place instead of copying it first (unique inserts), or
    indexes it while hashing it (``rt_tree_insert_many_stable``)."""
    return lib.RT_UNIQUE_STABLE if type(leaves) is bytes or type(buffer) is bytes else 0


def _index_arg(name: str, value: object, upper: int) -> int:
    value = _int_arg(name, value)
    if value < 0 or value > upper:
        raise NodeIndexError(f"{name} {shown(value)} out of range")
    return value


class LeanIMT(IndexReads):
    """An n-ary Lean Incremental Merkle Tree over BLAKE3 (or SHA-256).

    ``rule`` picks the parent hash (:mod:`rotortree.rules`): with the default
    ``"rotortree-0.15"`` roots are bit-identical to the Rust crate
    ``rotortree`` 0.15 for the same arity and leaves, with ``"leanimt"`` to
    the crate from 0.16 on, and ``"rfc6962"`` (arity 2) builds RFC 6962 /
    RFC 9162 Merkle trees over leaf hashes. Leaves are 32 bytes each and are stored as given (the
    tree never hashes leaves). The tree is safe to share between threads: a
    lock in C guards it, and no call holds the GIL while C works.
    ``os.fork()`` while other threads insert waits for the batch in progress;
    the child sees the tree before or after it, and can use it.

    With ``index=True`` the tree keeps a leaf index in C (an open-addressing
    table of first positions, 5.3..10.7 bytes per distinct leaf), updated
    inside every insert: :meth:`has`, ``leaf in tree``, :meth:`index_of`,
    :meth:`contains_many`, :meth:`index_of_many`, and unique inserts
    (``insert_many(leaves, unique=True)``, :meth:`insert_new`) for
    nullifier sets. :meth:`enable_index` adds it to an existing tree.
    """

    # _keepalive holds whatever memory the C tree reads in place (memory-
    # mapped checkpoint files); snapshots hold it too, since they can
    # outlive the tree.
    __slots__ = ("_tree", "_arity", "_max_depth", "_rule", "_keepalive", "__weakref__")

    def __init__(self, arity: int = 4, max_depth: int = 32, *, index: bool = False,
                 rule: str = DEFAULT_RULE) -> None:
        arity = _int_arg("arity", arity)
        index = unique_flag(index, "index")
        max_depth = _int_arg("max_depth", max_depth)
        if not lib.RT_MIN_ARITY <= arity <= lib.RT_MAX_ARITY:
            raise InvalidArgumentError(
                f"arity must be {lib.RT_MIN_ARITY}..{lib.RT_MAX_ARITY}, got {shown(arity)}"
            )
        if not 1 <= max_depth <= lib.RT_MAX_DEPTH_LIMIT:
            raise InvalidArgumentError(
                f"max_depth must be 1..{lib.RT_MAX_DEPTH_LIMIT}, got {shown(max_depth)}"
            )
        rule = rule_arg(rule, arity)
        out = ffi.new("rt_tree **")
        check(lib.rt_tree_new(arity, max_depth, rule_code(rule), out), "LeanIMT")
        self._tree = ffi.gc(out[0], lib.rt_tree_free)
        self._arity = arity
        self._max_depth = max_depth
        self._rule = rule
        self._keepalive: List[Any] = []
        if index:
            self.enable_index()

    # -- writes ------------------------------------------------------------

    def insert(self, leaf: bytes, unique: bool = False) -> bytes:
        """Append one 32-byte leaf; returns the new root (the durable
        :meth:`RotorTree.insert` returns ``(root, token)`` instead, the token
        telling when the leaf is on disk). With ``unique``
        (indexed trees) a leaf already in the tree raises
        :class:`~rotortree.DuplicateLeafError` and nothing changes."""
        if unique is not False and unique_flag(unique):
            buffer = single_leaf(leaf)
            return self._insert_unique(buffer, 1,
                                       lib.RT_UNIQUE_REJECT | _stable(leaf, buffer))[0]
        # The hot path of services that insert one leaf at a time: the C
        # call is short, so every attribute lookup and helper call here is a
        # visible share of the insert; the common case is spelled out inline.
        if type(leaf) is not bytes or len(leaf) != 32:
            leaf = single_leaf(leaf)
        try:
            buffer = _take_root_buffer()
        except IndexError:
            buffer = _new_root_buffer()
        status = _insert_one(self._tree, leaf, buffer[1])
        new_root: bytes = buffer[0]()
        _give_root_buffer(buffer)
        if status:
            if status == lib.RT_ERR_MAX_DEPTH:
                raise self._capacity_error(1)
            raise_status(status, "insert")
        return new_root

    def insert_many(self, leaves: Leaves, unique: bool = False) -> bytes:
        """Append a batch atomically; returns the new root (the durable
        :meth:`RotorTree.insert_many` returns ``(root, token)``).

        ``leaves`` is a bytes-like object of 32*k bytes (bytes, bytearray,
        memoryview, a C-contiguous uint8 numpy array of shape (k, 32) or
        (32*k,)), read without a copy, or an iterable of 32-byte leaves.
        The batch gives the same root as inserting its leaves one by one.
        A batch that would take the tree past :attr:`capacity` raises
        :class:`~rotortree.MaxDepthExceededError` and inserts nothing.

        An indexed tree indexes a ``bytes`` batch (or the join of an
        iterable) on one pool thread while the others hash it; a mutable
        buffer, which another thread could change between the two reads,
        is indexed from the stored leaves after the hashing.

        The C call runs without the GIL and cannot be stopped midway; a
        Ctrl-C (``KeyboardInterrupt``) that arrives meanwhile is raised as
        soon as it returns. If an exception propagates, the batch is either
        wholly applied or not at all: check ``tree.size``.

        With ``unique=True`` (indexed trees only) a batch holding a leaf
        already in the tree, or the same leaf twice, raises
        :class:`~rotortree.DuplicateLeafError` naming their positions in the
        batch, and nothing is inserted; the check and the insert are one
        locked step in C, so concurrent unique inserts cannot both add a
        leaf. :meth:`insert_new` inserts the new leaves and skips the rest.
        """
        buffer, count = leaf_batch(leaves)
        if unique is not False and unique_flag(unique):
            return self._insert_unique(buffer, count,
                                       lib.RT_UNIQUE_REJECT | _stable(leaves, buffer))[0]
        root = ffi.new("uint8_t[32]")
        # A batch no other thread can change may be read twice: an indexed
        # tree then indexes it while hashing it rather than after.
        insert = lib.rt_tree_insert_many_stable if _stable(leaves, buffer) \
            else lib.rt_tree_insert_many
        status = insert(self._tree, buffer, count, root)
        if status == lib.RT_ERR_MAX_DEPTH:
            raise self._capacity_error(count)
        check(status, "insert_many")
        new_root: bytes = ffi.buffer(root)[:]
        return new_root

    def insert_new(self, leaves: Leaves) -> Tuple[bytes, List[int]]:
        """Insert the leaves of a batch that are not in the tree yet, each
        once, in order, atomically (indexed trees only); returns (root,
        dropped): the positions in the batch that were skipped as already in
        the tree or repeated earlier in the batch. If all are dropped nothing
        changes and the root is the current one."""
        buffer, count = leaf_batch(leaves)
        root, marks = self._insert_unique(buffer, count,
                                          lib.RT_UNIQUE_SKIP | _stable(leaves, buffer))
        return root, marked(marks)

    def _insert_unique(self, buffer: Any, count: int, mode: int) -> "tuple[bytes, bytearray]":
        marks = bytearray(count)
        dups = ffi.new("uint64_t *")
        root = ffi.new("uint8_t[32]")
        status = lib.rt_tree_insert_unique(self._tree, buffer, count, mode,
                                           ffi.from_buffer("uint8_t[]", marks), dups, root)
        if status == lib.RT_ERR_DUPLICATE:
            raise duplicate_error(buffer, count, marks)
        if status == lib.RT_ERR_MAX_DEPTH:
            raise self._capacity_error(count)
        check(status, "unique insert")
        return ffi.buffer(root)[:], marks

    # -- the leaf index --------------------------------------------------------

    def enable_index(self) -> None:
        """Build the leaf index from the leaves already in the tree (in C,
        on the thread pool) and keep it from now on; no-op if it exists."""
        check(lib.rt_tree_index_enable(self._tree), "enable_index")

    @property
    def indexed(self) -> bool:
        """Whether the tree keeps a leaf index."""
        return bool(lib.rt_tree_index_enabled(self._tree))

    def index_stats(self) -> Dict[str, int]:
        """The index's size: distinct leaves (``entries``), ``slots``,
        ``bytes`` and ``slot_bytes`` (4, or 8 past 2**32 leaves)."""
        out = ffi.new("struct rt_index_stats *")
        check(lib.rt_tree_index_stats(self._tree, out), "index_stats")
        return {"entries": int(out.entries), "slots": int(out.slots),
                "bytes": int(out.bytes), "slot_bytes": int(out.slot_bytes)}

    def _index_calls(self) -> Any:
        return lib.rt_tree_index_position, lib.rt_tree_index_find, self._tree

    def has(self, leaf: bytes) -> bool:
        """Whether ``leaf`` (32 bytes) is in the tree (needs the index:
        :class:`~rotortree.NoLeafIndexError` otherwise)."""
        # The hot path of a double-spend check: one C call, spelled out.
        if type(leaf) is not bytes or len(leaf) != HASH_LEN:
            leaf = single_leaf(leaf)
        position: int = lib.rt_tree_index_position(self._tree, leaf)
        if position < -1:
            raise_status(-position, "has")
        return position != -1

    def __contains__(self, leaf: object) -> bool:
        return self.has(leaf)  # type: ignore[arg-type]

    def _capacity_error(self, count: int) -> MaxDepthExceededError:
        """What the refused insert of ``count`` leaves ran into: a full tree,
        or a batch larger than the room left (the C core's message cannot
        tell them apart)."""
        size = self.size
        capacity = self.capacity
        limit = f"arity**max_depth = {self._arity}**{self._max_depth}"
        if capacity > U64_MAX:  # sizes are 64-bit: that is the real limit
            capacity = U64_MAX
            limit = f"2**64 - 1 leaves (arity**max_depth = {self._arity}**{self._max_depth} is more)"
        else:
            limit += f" = {capacity:,} leaves"
        if size >= capacity:
            return MaxDepthExceededError(
                f"the tree is full: it holds {size:,} leaves, its capacity {limit}")
        return MaxDepthExceededError(
            f"inserting {count:,} leaves would exceed the capacity {limit} of a tree holding "
            f"{size:,} (room for {capacity - size:,} more); nothing was inserted")

    # -- reads -------------------------------------------------------------

    def _state(self) -> Any:
        state = ffi.new("struct rt_tree_state *")
        lib.rt_tree_state(self._tree, state)
        return state

    @property
    def root(self) -> Optional[bytes]:
        """The root, or None for the empty tree."""
        state = self._state()
        root: Optional[bytes] = ffi.buffer(state.root)[:] if state.has_root else None
        return root

    @property
    def size(self) -> int:
        """Number of leaves."""
        return int(self._state().size)

    def __len__(self) -> int:
        return int(self._state().size)

    @property
    def depth(self) -> int:
        """Levels above the leaves: 0 for 0 or 1 leaf, else ceil(log_arity(size))."""
        return int(self._state().depth)

    @property
    def arity(self) -> int:
        return self._arity

    @property
    def max_depth(self) -> int:
        return self._max_depth

    @property
    def rule(self) -> str:
        """The hash rule (``"rotortree-0.15"``, ``"leanimt"`` or ``"rfc6962"``)."""
        return self._rule

    @property
    def capacity(self) -> int:
        """The most leaves the tree can hold: arity ** max_depth."""
        capacity: int = self._arity ** self._max_depth
        return capacity

    def level_len(self, level: int) -> int:
        """Number of nodes at ``level`` (0 = leaves, up to ``depth``)."""
        level = _index_arg("level", level, lib.RT_MAX_DEPTH_LIMIT)
        out = ffi.new("uint64_t *")
        status = lib.rt_tree_level_len(self._tree, level, out)
        if status == lib.RT_ERR_INDEX:
            raise NodeIndexError(f"level {level} out of range for a tree of depth {self.depth}")
        check(status, "level_len")
        return int(out[0])

    def get_node(self, level: int, index: int) -> bytes:
        """The 32-byte node at (level, index)."""
        level = _index_arg("level", level, lib.RT_MAX_DEPTH_LIMIT)
        index = _index_arg("index", index, U64_MAX)
        out = ffi.new("uint8_t[32]")
        status = lib.rt_tree_get_node(self._tree, level, index, out)
        if status == lib.RT_ERR_INDEX:
            raise NodeIndexError(f"node ({level}, {index}) out of range")
        check(status, "get_node")
        node: bytes = ffi.buffer(out)[:]
        return node

    # -- snapshots and proofs -------------------------------------------------

    def snapshot(self) -> "Snapshot":
        """An immutable view of the tree now; O(depth), shares storage.

        The tree's next write to a level's last chunk copies that chunk once
        per snapshot; the copy is reused once the snapshot is dropped, so a
        writer publishing a snapshot per insert grows like the tree itself.
        """
        from .snapshot import Snapshot

        out = ffi.new("rt_snapshot **")
        check(lib.rt_tree_snapshot(self._tree, out), "snapshot")
        return Snapshot._from_handle(out[0], self._keepalive, self._max_depth)

    def generate_proof(self, index: int, *, size: Optional[int] = None) -> "InclusionProof":
        """Inclusion proof of leaf ``index`` (any integer with ``__index__``,
        numpy integers included; not a bool) against the current root, or
        with ``size`` against the root the tree had at ``size`` leaves
        (see :meth:`Snapshot.generate_proof`)."""
        return self.snapshot().generate_proof(index, size=size)

    def generate_proofs(self, indices: Any, *, size: Optional[int] = None) -> "ProofBatch":
        """Inclusion proofs of many leaves against the current root, or with
        ``size`` against the root at ``size`` leaves."""
        return self.snapshot().generate_proofs(indices, size=size)

    def generate_consistency_proof(self, old_size: int, new_size: object = LATEST, *,
                                   old_root: Optional[BytesLike] = None) -> "ConsistencyProof":
        """Proof that the tree at ``old_size`` is a prefix of the tree at
        ``new_size`` (default: now), with no snapshot held by the caller; see
        :meth:`Snapshot.generate_consistency_proof` (``old_root`` in second
        place, the earlier form, is still accepted)."""
        return self.snapshot().generate_consistency_proof(old_size, new_size, old_root=old_root)

    def root_at(self, size: int) -> bytes:
        """The root the tree had when it held ``size`` leaves (1..``size``),
        recomputed from the stored levels (O(depth x arity) hashes).
        Raises :class:`NodeIndexError` (an ``IndexError``) out of range."""
        size = _int_arg("size", size)
        out = ffi.new("uint8_t[32]")
        # C checks the range against the size under its own snapshot.
        status = lib.rt_tree_root_at(self._tree, size, out) if 1 <= size <= U64_MAX \
            else lib.RT_ERR_INDEX
        if status == lib.RT_ERR_INDEX:
            current = self.size
            raise NodeIndexError(f"size {shown(size)} out of range: the tree is empty"
                                 if current == 0 else
                                 f"size must be 1..{current}, got {shown(size)}")
        check(status, "root_at")
        root: bytes = ffi.buffer(out)[:]
        return root

    def leaves(self, start: int = 0, stop: Optional[int] = None, *, array: bool = False) -> Any:
        """Leaves ``start`` to ``stop`` as bytes, or a numpy view with
        ``array=True``: see :meth:`Snapshot.leaves` (read from a snapshot,
        so concurrent inserts do not tear the result)."""
        return self.snapshot().leaves(start, stop, array=array)

    def __iter__(self) -> Iterator[bytes]:
        """The leaves (32 bytes each) as of the start of the iteration:
        inserts made meanwhile are not seen."""
        return iter(self.snapshot())

    # -- copies and pickling -------------------------------------------------

    def copy(self) -> "LeanIMT":
        """An independent tree with the same leaves, arity, max_depth and
        leaf index, built without rehashing (one pass over the nodes, as of
        a snapshot taken now); inserting into either leaves the other
        unchanged. ``copy.copy`` and ``copy.deepcopy`` call this."""
        from .storage.savefile import copy_tree

        return copy_tree(type(self), self.snapshot(), self._max_depth, self.indexed)

    def __copy__(self) -> "LeanIMT":
        return self.copy()

    def __deepcopy__(self, memo: Any) -> "LeanIMT":
        return self.copy()

    def __reduce__(self) -> Tuple[Any, Tuple[Any, bytes]]:
        # Pickles carry the save format, and unpickling verifies it as
        # load() does: the C tree itself cannot be pickled.
        from .storage.savefile import load_saved_bytes, saved_bytes

        return load_saved_bytes, (type(self), saved_bytes(self.snapshot(), self._max_depth,
                                                          self.indexed))

    # -- export / import ------------------------------------------------------

    def save(self, path: Any) -> None:
        """Write the tree (every level, so loading never rehashes) to one file,
        atomically: a temporary file, fsync, rename, directory fsync. The
        format is described in :mod:`rotortree.storage`. Inserts may continue
        meanwhile: the file holds a snapshot taken at the start."""
        from .storage import save_tree

        save_tree(self, path)

    @classmethod
    def load(cls, path: Any, *, verify: bool = True, mmap: bool = False,
             rule: Optional[str] = None) -> "LeanIMT":
        """Read a file written by :meth:`save`. The flags are keyword-only.
        The tree gets the hash rule recorded in the file (files from before
        rules are ``"rotortree-0.15"``); with ``rule`` given, a file of
        another rule raises :class:`~rotortree.RuleMismatchError`.
        With ``verify`` every level's CRC is checked and every level is
        rehashed to the root (in parallel), so a changed node is caught even
        when its CRC was kept valid; otherwise only the header is checked and
        nothing is rehashed.
        With ``mmap`` the nodes are read in place from a memory mapping of the
        file instead of copied into RAM (the file must then not be modified
        in place or truncated while the tree or its snapshots live; ``save``
        replaces files by renaming, which is safe).
        Raises :class:`~rotortree.CorruptionError` naming the file."""
        from .storage import load_tree

        for name, flag in (("verify", verify), ("mmap", mmap)):
            if not isinstance(flag, bool):
                raise ArgumentTypeError(f"{name} must be a bool, not {type(flag).__name__}")
        expected = None if rule is None else known_rule(rule)
        return load_tree(cls, path, verify=verify, in_place=mmap, rule=expected)

    def __repr__(self) -> str:
        state = self._state()
        root = ffi.buffer(state.root)[:].hex() if state.has_root else None
        index = ", index=True" if self.indexed else ""
        return (
            f"LeanIMT(arity={self._arity}, max_depth={self._max_depth}{index}, "
            f"rule={self._rule!r}, size={state.size}, root={root})"
        )


def compute_root(leaves: Leaves, arity: int = 4, *, rule: str = DEFAULT_RULE) -> bytes:
    """Root of the LeanIMT over ``leaves`` without keeping a tree, parents
    hashed under ``rule`` (see :class:`LeanIMT`).

    Runs on the thread pool; memory is O(len / arity) beyond the input.
    """
    arity = _int_arg("arity", arity)
    if not lib.RT_MIN_ARITY <= arity <= lib.RT_MAX_ARITY:
        raise InvalidArgumentError(
            f"arity must be {lib.RT_MIN_ARITY}..{lib.RT_MAX_ARITY}, got {shown(arity)}"
        )
    rule = rule_arg(rule, arity)
    buffer, count = leaf_batch(leaves)
    root = ffi.new("uint8_t[32]")
    check(lib.rt_compute_root(buffer, count, arity, rule_code(rule), root), "compute_root")
    result: bytes = ffi.buffer(root)[:]
    return result


__all__ = ["LeanIMT", "compute_root", "HASH_LEN"]
