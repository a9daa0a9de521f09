"""Snapshots of a tree, and proofs generated from them."""

from __future__ import annotations

import struct
import warnings
from array import array
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union, overload

from ._index import IndexReads
from ._native import check, ffi, lib, raise_status
from ._validate import int_arg as _int_arg
from ._validate import U64_MAX, shown
from .errors import (
    ArgumentTypeError,
    EmptyTreeError,
    InvalidArgumentError,
    InvalidProofError,
    NodeIndexError,
    NoLeafIndexError,
    OutOfMemoryError,
)
from .proofs import (
    BytesLike,
    ConsistencyProof,
    InclusionProof,
    _set_encoded,
    trusted_root_bytes,
    trusted_size_int,
)
from .rules import RULES, check_same_rule, known_rule, rule_code


class _Latest:
    """The default ``new_size`` of consistency proofs: the snapshot's own
    size. A sentinel rather than None, so that None in second place (the
    old form's old_root) is still refused."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<the current size>"


LATEST: Any = _Latest()

# Leaves read per C call while iterating (256 KiB).
_ITER_BLOCK = 8192
_BATCH_MAGIC = b"RTPB"
# Version 2 stores the proofs' rule in byte 5; version 1 (byte 5 zero,
# before rules) holds rotortree-0.15 proofs.
_BATCH_VERSION = 2
_BATCH_HEADER = struct.Struct("<4sBB2xQ")
# Formats of 8-byte integers numpy and array use; read in place as uint64
# (a negative int64 becomes a huge index and is reported as out of range).
_U64_FORMATS = frozenset({"Q", "L", "q", "l", "<Q", "<q", "=Q", "=q"})
# Items equal to 0 or 1 (the only values array('Q') makes of a bool) whose
# types are looked at one by one; past this many one scan of every item's
# type is cheaper.
_SMALL_ITEMS_CHECKED = 64
_find_small = lib.rt_indices_find_small


def _plain_indices(values: List[Any]) -> "Optional[array[int]]":
    """``values`` as array('Q') in one C loop, or None when an item needs
    the checked loop of _index_buffer (which names its position): a bool, a
    value below 0 or above 2**64 - 1, or anything array() refuses.

    array() converts ints and anything with ``__index__`` (numpy integers)
    as int_arg does, and checks the range, but it takes bools as 0 and 1.
    Checking every item's type first cost three times the conversion (most
    of what a list cost over an array), so C finds the items that came out
    as 0 or 1 and only their types are looked at."""
    try:
        fast = array("Q", values)
    except (TypeError, OverflowError):
        return None
    count = len(fast)
    if not count:
        return fast
    items = ffi.from_buffer("uint64_t[]", fast)
    position = _find_small(items, count, 0)
    checked = 0
    while position < count:
        if checked == _SMALL_ITEMS_CHECKED:
            return None if bool in set(map(type, values)) else fast
        try:
            if type(values[position]) is bool:
                return None
        except IndexError:  # another thread shrank the caller's list meanwhile
            return None
        checked += 1
        position = _find_small(items, count, position + 1)
    return fast


def _index_buffer(indices: Any) -> Any:
    """A C-readable array of uint64 indices; zero-copy for 8-byte int arrays."""
    if isinstance(indices, (str, bytes, bytearray)):
        raise ArgumentTypeError(
            f"indices must be an iterable of ints, not {type(indices).__name__}"
        )
    try:
        view = memoryview(indices)
    except TypeError:
        view = None
    except ValueError:  # a released memoryview
        raise ArgumentTypeError(f"cannot read indices from {indices!r}") from None
    if view is not None:
        if view.ndim != 1:
            raise InvalidArgumentError(f"indices must be 1-D, got {view.ndim}-D")
        if view.format in _U64_FORMATS and view.itemsize == 8 and view.c_contiguous:
            return ffi.from_buffer("uint64_t[]", indices), len(view)
        if not view.format.lstrip("<>!=@").lower() in ("b", "h", "i", "l", "q", "n"):
            raise ArgumentTypeError(f"indices must be integers, got format {view.format!r}")
        # struct, unlike memoryview.tolist(), reads byte-swapped ('>u8') items,
        # provided it agrees with the exporter on the format and item size.
        try:
            item_size = struct.calcsize(view.format)
        except struct.error:
            item_size = -1
        if item_size != view.itemsize:
            raise ArgumentTypeError(f"indices of format {view.format!r} with "
                                    f"{view.itemsize}-byte items cannot be read")
        values: Iterable[Any] = (item for (item,) in
                                 struct.iter_unpack(view.format, view.tobytes()))
    else:
        try:
            iterator = iter(indices)
        except TypeError:
            raise ArgumentTypeError(
                f"indices must be an iterable of ints, not {type(indices).__name__}"
            ) from None
        values = indices if type(indices) is list else list(iterator)
        fast = _plain_indices(values)
        if fast is not None:
            return ffi.from_buffer("uint64_t[]", fast) if fast else ffi.NULL, len(fast)
    converted = array("Q")
    for position, value in enumerate(values):
        value = _int_arg(f"index at position {position}", value)
        if not 0 <= value <= U64_MAX:
            raise NodeIndexError(f"index {shown(value)} at position {position} out of range")
        converted.append(value)
    return ffi.from_buffer("uint64_t[]", converted) if converted else ffi.NULL, len(converted)


class _ProofScratch:
    """The output buffer of one single-proof call, with the views the call
    needs (as uint8_t for C; as an ffi.buffer, whose slice is the proof's
    bytes in one step, quicker than ffi.unpack)."""

    __slots__ = ("out", "view", "capacity", "length")

    def __init__(self) -> None:
        self.length = ffi.new("size_t *")
        self.capacity = 0

    def grow(self, capacity: int) -> None:
        self.out = ffi.new("uint8_t[]", capacity)
        self.view = ffi.buffer(self.out)
        self.capacity = capacity


_proof_scratch: List[_ProofScratch] = []
# Bound once: a global load is cheaper per call than a method lookup.
_take_proof_scratch = _proof_scratch.pop
_give_proof_scratch = _proof_scratch.append
_proof_one_sized = lib.rt_proof_one_sized
_proof_one_at = lib.rt_proof_one_at
_new_object = object.__new__


class Snapshot(IndexReads):
    """An immutable view of a tree at one moment.

    It shares storage with the tree (copy on write), costs O(depth) to take,
    never changes when the tree grows, and may be read from any number of
    threads while others insert. Memory is freed when it is dropped.

    Every earlier state of the tree is in it too (log views): :meth:`at`,
    :meth:`root_at`, the ``size=`` argument of the proof methods and
    :meth:`generate_consistency_proof` between any two sizes.

    A snapshot of an indexed tree answers :meth:`has`, ``in``,
    :meth:`index_of`, :meth:`contains_many` and :meth:`index_of_many` as of
    its own size: a leaf first inserted at or past it is absent here.
    """

    __slots__ = ("_snap", "_size", "_depth", "_root", "_arity", "_rule", "_proof_max", "_max_depth",
                 "_keepalive", "__weakref__")
    _snap: Any  # the C snapshot (a cffi pointer)
    _max_depth: int  # of the tree it was taken from: what save() records
    _size: int
    _depth: int
    _root: Optional[bytes]
    _arity: int
    _rule: str
    _proof_max: int
    _keepalive: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ArgumentTypeError("Snapshot objects come from LeanIMT.snapshot or "
                                "RotorTree.snapshot")

    @classmethod
    def _from_handle(cls, handle: Any, keepalive: Any = None, max_depth: int = 32) -> "Snapshot":
        """Wrap a C snapshot (which the object then owns and frees);
        ``keepalive`` holds the memory the snapshot reads in place;
        ``max_depth`` is the tree's."""
        snap = object.__new__(cls)
        snap._max_depth = max_depth
        snap._snap = ffi.gc(handle, lib.rt_snapshot_free)
        snap._keepalive = keepalive
        state = ffi.new("struct rt_tree_state *")
        lib.rt_snapshot_state(snap._snap, state)
        snap._size = int(state.size)
        snap._depth = int(state.depth)
        snap._root = ffi.buffer(state.root)[:] if state.has_root else None
        snap._arity = int(lib.rt_snapshot_arity(snap._snap))
        snap._rule = RULES[lib.rt_snapshot_rule(snap._snap)]
        # The longest inclusion proof of this shape (rotortree.h).
        snap._proof_max = lib.RT_PROOF_HEADER_LEN + snap._depth * (2 + 32 * (snap._arity - 1))
        return snap

    def _index_calls(self) -> Any:
        return lib.rt_snapshot_index_position, lib.rt_snapshot_index_find, self._snap

    @property
    def root(self) -> Optional[bytes]:
        return self._root

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return self._size

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def arity(self) -> int:
        return self._arity

    @property
    def rule(self) -> str:
        """The tree's hash rule (see :class:`~rotortree.LeanIMT`)."""
        return self._rule

    def level_len(self, level: int) -> int:
        level = _int_arg("level", level)
        out = ffi.new("uint64_t *")
        if not 0 <= level <= self._depth:
            raise NodeIndexError(f"level {shown(level)} out of range for depth {self._depth}")
        check(lib.rt_snapshot_level_len(self._snap, level, out), "level_len")
        return int(out[0])

    def get_node(self, level: int, index: int) -> bytes:
        level = _int_arg("level", level)
        index = _int_arg("index", index)
        if not 0 <= level <= self._depth or not 0 <= index <= U64_MAX:
            raise NodeIndexError(f"node ({shown(level)}, {shown(index)}) out of range")
        out = ffi.new("uint8_t[32]")
        status = lib.rt_snapshot_get_node(self._snap, level, index, out)
        if status == lib.RT_ERR_INDEX:
            raise NodeIndexError(f"node ({level}, {index}) out of range")
        check(status, "get_node")
        node: bytes = ffi.buffer(out)[:]
        return node

    # -- leaves, equality, saving ---------------------------------------------

    def leaves(self, start: int = 0, stop: Optional[int] = None, *,
               array: bool = False) -> Any:
        """Leaves ``start`` to ``stop`` (default: all) as one bytes object of
        32 bytes per leaf; with ``array=True`` a read-only numpy uint8 view
        of shape (count, 32) over those bytes (needs numpy). The bounds are
        as in ``range``, without negative positions: 0 <= start <= stop <=
        size, else :class:`NodeIndexError`."""
        start = _int_arg("start", start)
        stop = self._size if stop is None else _int_arg("stop", stop)
        if not 0 <= start <= stop <= self._size:
            raise NodeIndexError(f"leaves [{shown(start)}, {shown(stop)}) out of range for "
                                 f"size {self._size}")
        if not isinstance(array, bool):
            raise ArgumentTypeError(f"array must be a bool, not {type(array).__name__}")
        numpy: Any = None
        if array:
            try:
                import numpy
            except ImportError:
                raise InvalidArgumentError("leaves(array=True) needs numpy; without it, "
                                           "leaves() returns bytes") from None
        data = self._read_leaves(start, stop)
        if numpy is None:
            return data
        return numpy.frombuffer(data, dtype=numpy.uint8).reshape(-1, 32)

    def _read_leaves(self, start: int, stop: int) -> bytes:
        if stop == start:
            return b""
        try:
            out = bytearray(32 * (stop - start))
        except MemoryError:
            raise OutOfMemoryError(f"cannot allocate {stop - start:,} leaves") from None
        check(lib.rt_snapshot_read_nodes(self._snap, 0, start, stop - start,
                                         ffi.from_buffer("uint8_t[]", out)), "leaves")
        return bytes(out)

    def __iter__(self) -> Iterator[bytes]:
        """The leaves in order, 32 bytes each, read in blocks."""
        for block_start in range(0, self._size, _ITER_BLOCK):
            block = self._read_leaves(block_start, min(block_start + _ITER_BLOCK, self._size))
            for at in range(0, len(block), 32):
                yield block[at:at + 32]

    def _key(self) -> Tuple[Any, ...]:
        # The hash rule is part of the state when snapshots carry one.
        return (self._arity, self._size, self._root, getattr(self, "rule", None))

    def __eq__(self, other: object) -> bool:
        """Snapshots are equal when they show the same tree: same arity,
        size, root (and hash rule), whichever tree or moment they came
        from. The root commits to every leaf."""
        if not isinstance(other, Snapshot):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _indexed(self) -> bool:
        try:
            self.has(bytes(32))
        except NoLeafIndexError:
            return False
        return True

    def save(self, path: Any) -> None:
        """Write the tree this snapshot shows to one file, as
        :meth:`LeanIMT.save` does (``LeanIMT.load`` reads it back, with the
        leaf index if the tree had one)."""
        from .storage.savefile import save_snapshot

        save_snapshot(self, self._max_depth, self._indexed(), path)

    def __copy__(self) -> "Snapshot":
        return self  # immutable, like a tuple

    def __deepcopy__(self, memo: Any) -> "Snapshot":
        return self

    def __reduce__(self) -> Tuple[Any, Tuple[bytes]]:
        # Through the save format: unpickling loads a verified tree and
        # snapshots it, so the result compares equal to this snapshot.
        from .storage.savefile import saved_bytes

        return _unpickle_snapshot, (saved_bytes(self, self._max_depth, self._indexed()),)

    # -- log views ---------------------------------------------------------

    def _past_size(self, name: str, size: object, upper: Optional[int] = None) -> int:
        """``size`` checked as a size the tree had: 1..``upper`` (default
        this snapshot's size)."""
        size = _int_arg(name, size)
        upper = self._size if upper is None else upper
        if not 1 <= size <= upper:
            if self._size == 0:
                raise NodeIndexError(f"{name} {shown(size)} out of range: the tree is empty")
            raise NodeIndexError(f"{name} must be 1..{upper}, got {shown(size)}")
        return size

    def at(self, size: int) -> "Snapshot":
        """The tree as it was when it held ``size`` leaves (1..``self.size``),
        as a snapshot of its own: reads and proofs see exactly that
        tree. Only the right edge at ``size`` is recomputed (O(depth x arity)
        hashes); storage is shared, with at most one chunk per level copied.
        Raises :class:`NodeIndexError` (an ``IndexError``) for a size out of
        range."""
        size = self._past_size("size", size)
        if size == self._size:
            return self  # immutable: the same state
        out = ffi.new("rt_snapshot **")
        check(lib.rt_snapshot_at(self._snap, size, out), "Snapshot.at")
        return Snapshot._from_handle(out[0], self._keepalive, self._max_depth)

    def root_at(self, size: int) -> bytes:
        """The root the tree had when it held ``size`` leaves (1..``self.size``);
        :class:`NodeIndexError` (an ``IndexError``) outside that range."""
        size = self._past_size("size", size)
        out = ffi.new("uint8_t[32]")
        check(lib.rt_snapshot_root_at(self._snap, size, out), "root_at")
        root: bytes = ffi.buffer(out)[:]
        return root

    # -- proofs ------------------------------------------------------------

    def generate_proof(self, index: int, *, size: Optional[int] = None) -> InclusionProof:
        """The inclusion proof of leaf ``index``: an int or any integer with
        ``__index__`` (numpy integers), not a bool.

        With ``size`` the proof is of the tree as it was at ``size`` leaves
        (its ``tree_size`` is ``size``, its root :meth:`root_at` of it);
        ``index`` must then be below ``size``."""
        limit = self._size if size is None else self._past_size("size", size)
        if type(index) is not int:
            index = _int_arg("index", index)
        if not 0 <= index < limit:
            raise NodeIndexError(f"leaf index {shown(index)} out of range for size {limit}")
        # The batch path's index conversion, offsets array and ProofBatch
        # would cost more than the proof itself, and so would allocating C
        # memory per call: a call takes a scratch buffer from a shared free
        # list (pop and append are atomic, so threads and signal handlers
        # never share one) and returns it.
        try:
            scratch = _take_proof_scratch()
        except IndexError:
            scratch = _ProofScratch()
        if scratch.capacity < self._proof_max:
            scratch.grow(self._proof_max)
        if size is None:
            # The length as the result: reading an out-parameter back costs
            # a tenth of the call.
            length = _proof_one_sized(self._snap, index, scratch.out, scratch.capacity)
            if length < 0:
                _give_proof_scratch(scratch)
                raise_status(-length, "generate_proof")
        else:  # a view for this call only (no Snapshot object, nothing kept)
            status = _proof_one_at(self._snap, limit, index, scratch.out, scratch.capacity,
                                   scratch.length)
            if status:
                _give_proof_scratch(scratch)
                raise_status(status, "generate_proof")
            length = scratch.length[0]
        data: bytes = scratch.view[:length]
        _give_proof_scratch(scratch)
        # InclusionProof._from_encoded, inline: a call frame is a visible
        # share of a single proof.
        proof = _new_object(InclusionProof)
        _set_encoded(proof, data)
        return proof

    def generate_proofs(self, indices: Union[Iterable[int], Any], *,
                        size: Optional[int] = None) -> "ProofBatch":
        """Inclusion proofs of many leaves in one call into C, on the pool.

        ``indices`` is any iterable of integers (ints or anything with
        ``__index__``, not bools); a 1-D array of 8-byte integers (numpy
        uint64/int64, ``array('Q')``) is read without a copy. With ``size``
        the proofs are of the tree as it was at ``size`` leaves (see
        :meth:`generate_proof`), every index below ``size``.
        """
        if size is not None:
            return self.at(size).generate_proofs(indices)
        buffer, count = _index_buffer(indices)
        try:
            offsets = array("Q", bytes(8 * (count + 1)))
        except MemoryError:
            raise OutOfMemoryError(f"cannot allocate the offsets of {count:,} proofs") from None
        offsets_c = ffi.from_buffer("uint64_t[]", offsets)
        bad = ffi.new("size_t *")
        status = lib.rt_proofs_layout(self._snap, buffer, count, offsets_c, bad)
        if status == lib.RT_ERR_INDEX:
            raise NodeIndexError(
                f"leaf index {int(buffer[bad[0]])} at position {bad[0]} out of range "
                f"for size {self._size}"
            )
        check(status, "generate_proofs")
        size = offsets[-1]
        if not count:
            return ProofBatch._from_parts(b"", offsets, self._rule)
        # Not a bytearray: zeroing ~1 KB of fresh pages per proof costs more
        # than generating the proof; C hands out reused mappings instead.
        memory = lib.rt_buffer_alloc(size)
        if memory == ffi.NULL:
            raise OutOfMemoryError(f"cannot allocate {size:,} bytes for {count:,} proofs")
        memory = ffi.gc(memory, lib.rt_buffer_free, size=size)
        check(lib.rt_proofs_fill(self._snap, buffer, count, offsets_c,
                                 ffi.cast("uint8_t *", memory)), "generate_proofs")
        # The buffer object keeps `memory` alive; slicing it copies out bytes.
        return ProofBatch._from_parts(ffi.buffer(memory, size), offsets, self._rule)

    def generate_consistency_proof(self, old_size: int, new_size: object = LATEST, *,
                                   old_root: Optional[BytesLike] = None) -> ConsistencyProof:
        """Proof that the tree of ``old_size`` leaves is a prefix of the tree
        of ``new_size`` leaves (default: this snapshot's size), any two sizes
        with 1 <= old_size <= new_size <= size.

        ``old_root``, if given, must be the tree's root at ``old_size``
        (:class:`InvalidArgumentError` otherwise: such a proof could never
        verify). The form of earlier versions, bytes in second place
        (``generate_consistency_proof(old_size, old_root)``), still means
        that root, up to this snapshot's size. Sizes out of range raise
        :class:`NodeIndexError` (an ``IndexError``).
        """
        old_size = _int_arg("old_size", old_size)
        if isinstance(new_size, (bytes, bytearray, memoryview)):
            if old_root is not None:
                raise ArgumentTypeError("old_root given twice (in second place and by keyword)")
            old_root, new_size = new_size, LATEST
        elif new_size is not LATEST and (isinstance(new_size, bool)
                                         or not hasattr(type(new_size), "__index__")):
            raise ArgumentTypeError(f"old_root must be bytes (or new_size an int), "
                                    f"not {type(new_size).__name__}")
        expected = None if old_root is None else _root_arg("old_root", old_root)
        if self._size == 0:
            raise EmptyTreeError("cannot prove consistency from an empty tree")
        new_size = self._size if new_size is LATEST else self._past_size("new_size", new_size)
        old_size = self._past_size("old_size", old_size, new_size)
        # One call, with room for the longest proof of this shape (rotortree.h).
        capacity = lib.RT_PROOF_HEADER_LEN + self._depth * (2 + 64 * self._arity)
        data = bytearray(capacity)
        length = ffi.new("size_t *")
        check(lib.rt_consistency_at(self._snap, old_size, new_size,
                                    ffi.from_buffer("uint8_t[]", data), capacity, length),
              "consistency proof")
        proof = ConsistencyProof.from_bytes(memoryview(data)[:length[0]])
        if expected is not None and proof.old_root != expected:
            raise InvalidArgumentError(
                f"old_root {expected.hex()} is not this tree's root at size {old_size} "
                f"({proof.old_root.hex()})"
            )
        return proof

    def __repr__(self) -> str:
        root = self._root.hex() if self._root else None
        return (f"Snapshot(arity={self._arity}, rule={self._rule!r}, size={self._size}, "
                f"root={root})")


def _unpickle_snapshot(data: bytes) -> Snapshot:
    from .storage.savefile import load_saved_bytes
    from .tree import LeanIMT

    return load_saved_bytes(LeanIMT, data).snapshot()

def _root_arg(name: str, value: object) -> bytes:
    """A caller's 32-byte root as bytes."""
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ArgumentTypeError(f"{name} must be bytes, not {type(value).__name__}")
    try:
        root = bytes(value)
    except ValueError:  # a released memoryview
        raise ArgumentTypeError(f"cannot read {name}: the buffer was released") from None
    if len(root) != 32:
        raise InvalidArgumentError(f"{name} must be 32 bytes, got {len(root)}")
    return root


class ProofBatch(Sequence[InclusionProof]):
    """Many inclusion proofs in one compact buffer.

    Proofs are materialised as :class:`InclusionProof` objects only when
    accessed; :meth:`verify` checks them all in C, in parallel.
    """

    __slots__ = ("_data", "_offsets", "_rule")
    _data: Union[bytes, bytearray, Any]  # Any: C memory behind a cffi buffer
    _offsets: "array[int]"
    _rule: str

    def __init__(self) -> None:
        raise ArgumentTypeError(
            "ProofBatch objects come from Snapshot.generate_proofs or from_bytes")

    @classmethod
    def _from_parts(cls, data: Union[bytes, bytearray, Any], offsets: "array[int]",
                    rule: str = RULES[0]) -> "ProofBatch":
        batch = object.__new__(cls)
        batch._data = data
        batch._offsets = offsets
        batch._rule = rule
        return batch

    @property
    def rule(self) -> str:
        """The hash rule of every proof in the batch."""
        return self._rule

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, item: int) -> InclusionProof: ...

    @overload
    def __getitem__(self, item: slice) -> List[InclusionProof]: ...

    def __getitem__(self, item: Union[int, slice]) -> Any:
        if isinstance(item, slice):
            return [self[i] for i in range(*item.indices(len(self)))]
        return InclusionProof.from_bytes(self.proof_bytes(item))

    def _position(self, item: object) -> int:
        given = _int_arg("index", item)
        count = len(self)
        index = given + count if given < 0 else given
        if not 0 <= index < count:
            raise NodeIndexError(f"proof {shown(given)} out of range for a batch of {count}")
        return index

    def __iter__(self) -> Iterator[InclusionProof]:
        for index in range(len(self)):
            yield InclusionProof.from_bytes(self.proof_bytes(index))

    def proof_bytes(self, index: int) -> bytes:
        """The serialized bytes of proof ``index`` (no object is built);
        negative indices count from the end, as for ``batch[index]``."""
        index = self._position(index)
        return bytes(self._data[self._offsets[index]: self._offsets[index + 1]])

    @property
    def nbytes(self) -> int:
        return len(self._data)

    def verify(self) -> bool:
        """True if every proof hashes to the root it carries (in C, on the
        pool). A self-consistency check, not a security check: see
        :meth:`verify_against`."""
        return self.first_invalid() is None

    def verify_against(self, trusted_root: bytes, trusted_size: int, *,
                       rule: Optional[str] = None) -> bool:
        """True if every proof proves its leaf at its index in the tree of
        ``trusted_size`` leaves whose root is ``trusted_root`` (in C, on the
        pool); the rule of :meth:`InclusionProof.verify_against`, including
        its ``rule`` check (:class:`~rotortree.RuleMismatchError`)."""
        return self.first_invalid_against(trusted_root, trusted_size, rule=rule) is None

    def first_invalid(self) -> Optional[int]:
        """Position of the first proof that does not hash to the root it
        carries, or None."""
        return self._first_invalid(ffi.NULL, 0)

    def first_invalid_against(self, trusted_root: bytes, trusted_size: int, *,
                              rule: Optional[str] = None) -> Optional[int]:
        """Position of the first proof that :meth:`verify_against` rejects,
        or None. A root that is not 32 bytes or a size outside 1..2**64-1
        rejects every proof (position 0 of a non-empty batch); a ``rule``
        other than the batch's raises :class:`~rotortree.RuleMismatchError`."""
        if rule is not None:
            check_same_rule(known_rule(rule), self._rule, "the proof batch")
        root = trusted_root_bytes(trusted_root)
        size = trusted_size_int(trusted_size)
        if root is None or size is None or not 1 <= size <= U64_MAX:
            return 0 if len(self) else None
        return self._first_invalid(root, size)

    def _first_invalid(self, trusted_root: Any, trusted_size: int) -> Optional[int]:
        count = len(self)
        if count == 0:
            return None
        first = ffi.new("uint64_t *")
        status = lib.rt_verify_inclusion_batch(
            ffi.from_buffer("uint8_t[]", self._data), len(self._data),
            ffi.from_buffer("uint64_t[]", self._offsets), count, trusted_root, trusted_size,
            first)
        if status == lib.RT_OK:
            return None
        if status == lib.RT_ERR_INVALID_PROOF:
            return int(first[0])
        raise_status(status, "verify")

    def to_bytes(self) -> bytes:
        """``RTPB`` | version u8 = 2 | rule u8 | 2 zero bytes | count u64 | the
        proofs back to back (each with the same rule)."""
        return b"".join((_BATCH_HEADER.pack(_BATCH_MAGIC, _BATCH_VERSION,
                                            rule_code(self._rule), len(self)), self._data))

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview]) -> "ProofBatch":
        """Parse :meth:`to_bytes` output; structure is checked, not validity.
        Version 1 batches (before rules) hold rotortree-0.15 proofs; a proof
        whose rule differs from the batch's is a structural error."""
        try:
            view = memoryview(data)
        except TypeError:
            raise ArgumentTypeError(f"expected bytes-like, not {type(data).__name__}") from None
        except ValueError:  # a released memoryview
            raise ArgumentTypeError("cannot read a released buffer") from None
        view = (view if view.c_contiguous else memoryview(view.tobytes())).cast("B")
        if len(view) < _BATCH_HEADER.size:
            raise InvalidProofError("proof batch truncated: no header")
        magic, version, code, count = _BATCH_HEADER.unpack_from(view)
        if magic != _BATCH_MAGIC or view[6:8].tobytes() != b"\0\0" or (
                version == 1 and code != 0):
            raise InvalidProofError("not a proof batch (bad magic or reserved bytes)")
        if version not in (1, _BATCH_VERSION):
            raise InvalidProofError(f"unsupported proof batch version {version}")
        if code >= len(RULES):
            raise InvalidProofError(f"proof batch: unknown rule number {code}")
        body = view[_BATCH_HEADER.size:]
        offsets = array("Q", [0])
        at = 0
        for position in range(count):
            try:
                at += _inclusion_length(body, at, code)
            except InvalidProofError as error:
                raise InvalidProofError(f"proof {position}: {error}") from None
            offsets.append(at)
        if at != len(body):
            raise InvalidProofError(f"{len(body) - at} trailing bytes after {count} proofs")
        return cls._from_parts(body.tobytes(), offsets, RULES[code])

    def __reduce__(self) -> Tuple[Any, Tuple[bytes, "array[int]", str]]:
        # A generated batch's data is a cffi buffer over C memory, which
        # neither pickles nor deep-copies: both get the bytes instead.
        return ProofBatch._from_parts, (bytes(self._data), self._offsets, self._rule)

    def __repr__(self) -> str:
        return f"<ProofBatch of {len(self)} {self._rule} proofs, {self.nbytes} bytes>"


def _inclusion_length(view: memoryview, at: int, rule: int) -> int:
    """Byte length of the serialized inclusion proof starting at ``at``,
    which must be of the rule numbered ``rule``."""
    header: int = lib.RT_PROOF_HEADER_LEN
    if len(view) - at < header:
        raise InvalidProofError("truncated inclusion proof header")
    found = view[at + 7] if view[at + 4] != 1 else 0  # version 1: rotortree-0.15
    if found != rule:
        raise InvalidProofError(
            f"rule number {found} in a batch of rule {RULES[rule]!r} proofs")
    level_count = view[at + 6]
    length = header
    for _ in range(level_count):
        if len(view) - at < length + 2:
            raise InvalidProofError("truncated inclusion proof level")
        length += 2 + 32 * view[at + length + 1]
    if len(view) - at < length:
        raise InvalidProofError("truncated inclusion proof siblings")
    return length


def verify_proofs(batch: ProofBatch) -> bool:
    """Deprecated: call ``batch.verify()``, which this only repeats (every
    proof hashes to the root it carries; self-consistency only, see
    ``batch.verify_against(root, size)``). Warns with DeprecationWarning."""
    warnings.warn("rotortree.verify_proofs(batch) is deprecated; call batch.verify(), or "
                  "batch.verify_against(root, size) for a trusted root",
                  DeprecationWarning, stacklevel=2)
    if not isinstance(batch, ProofBatch):
        raise ArgumentTypeError(f"expected a ProofBatch, not {type(batch).__name__}")
    return batch.verify()
