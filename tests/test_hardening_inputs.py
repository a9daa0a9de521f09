"""Bad-input matrix: every public function and constructor, fed wrong types,
wrong lengths, empty and huge inputs, negative and out-of-range indices,
non-contiguous, read-only and released buffers, numpy arrays of the wrong
dtype or shape, and calls on closed durable trees.

Each case names the exception class and a fragment of its message; the
object the call was made on is fingerprinted before and after (size, depth,
root and every node of every level; for durable trees also what survives a
reopen), and must be unchanged. Positive edge cases (read-only buffers,
ctypes arrays, numpy views) are in the same tables with ``OK``.
"""

from __future__ import annotations

import array
import ctypes
from typing import Any, Callable, NamedTuple, Optional, Type

import numpy as np
import pytest

import rotortree
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    ClosedTreeError,
    ConsistencyProof,
    CorruptionError,
    EmptyBatchError,
    EmptyTreeError,
    FlushPolicy,
    InclusionProof,
    InvalidArgumentError,
    InvalidLeafError,
    InvalidProofError,
    LeanIMT,
    MaxDepthExceededError,
    NodeIndexError,
    ProofBatch,
    RotorTree,
    Snapshot,
    StorageMismatchError,
    UnsupportedKernelError,
)
from rotortree import config as rt_config
from reference import root_of, vector_leaf

OK = None  # a case that must succeed

ARITY, MAX_DEPTH, SIZE = 3, 6, 100          # capacity 729
LEAVES = [vector_leaf(i) for i in range(SIZE)]
U64 = 2**64


class Case(NamedTuple):
    name: str
    call: Callable[[Any], Any]
    error: Optional[Type[BaseException]]
    match: Optional[str] = None


def ids(cases):
    return [case.name for case in cases]


def fingerprint(tree) -> tuple:
    """Everything observable about a tree or snapshot."""
    size, depth, root = tree.size, tree.depth, tree.root
    levels = []
    if size:
        for level in range(depth + 1):
            length = tree.level_len(level)
            levels.append(b"".join(tree.get_node(level, i) for i in range(length)))
    return size, depth, root, tuple(levels)


def run_case(case: Case, target) -> Any:
    if case.error is None:
        return case.call(target)
    with pytest.raises(case.error, match=case.match) as info:
        case.call(target)
    # Errors of rotortree are RotorTreeErrors as well as the builtin they
    # refine; the tables name a builtin only for Python's own call errors
    # (wrong arguments) and for exceptions the caller's iterable raised,
    # which must come through unchanged.
    if issubclass(case.error, rotortree.RotorTreeError):
        assert isinstance(info.value, rotortree.RotorTreeError), repr(info.value)
    return None


def noncontiguous(data: bytes) -> memoryview:
    doubled = bytes(b for byte in data for b in (byte, 0))
    return memoryview(doubled)[::2]


def released() -> memoryview:
    view = memoryview(bytes(32))
    view.release()
    return view


def readonly_array(data: bytes, shape) -> np.ndarray:
    arr = np.frombuffer(data, dtype=np.uint8).reshape(shape)
    assert not arr.flags.writeable
    return arr


@pytest.fixture
def tree():
    t = LeanIMT(ARITY, max_depth=MAX_DEPTH)
    t.insert_many(LEAVES)
    return t


# -- constructors ----------------------------------------------------------------

CONSTRUCTOR_CASES = [
    Case("arity str", lambda _: LeanIMT("4"), ArgumentTypeError, "arity must be an int, not str"),
    Case("arity float", lambda _: LeanIMT(4.0), ArgumentTypeError, "not float"),
    Case("arity None", lambda _: LeanIMT(None), ArgumentTypeError, "not NoneType"),
    Case("arity bool", lambda _: LeanIMT(True), ArgumentTypeError, "not bool"),
    Case("arity numpy int", lambda _: LeanIMT(np.int64(4)), OK),   # __index__ integers count
    Case("arity numpy bool", lambda _: LeanIMT(np.bool_(True)), ArgumentTypeError, "not bool"),
    Case("arity 1", lambda _: LeanIMT(1), InvalidArgumentError, r"arity must be 2\.\.255, got 1"),
    Case("arity 0", lambda _: LeanIMT(0), InvalidArgumentError, "got 0"),
    Case("arity -4", lambda _: LeanIMT(-4), InvalidArgumentError, "got -4"),
    Case("arity 256", lambda _: LeanIMT(256), InvalidArgumentError, "got 256"),
    Case("arity 2**64+4", lambda _: LeanIMT(U64 + 4), InvalidArgumentError, "2..255"),
    Case("max_depth str", lambda _: LeanIMT(4, "32"), ArgumentTypeError, "max_depth must be an int"),
    Case("max_depth float", lambda _: LeanIMT(4, 3.5), ArgumentTypeError, "not float"),
    Case("max_depth None", lambda _: LeanIMT(4, None), ArgumentTypeError, "not NoneType"),
    Case("max_depth False", lambda _: LeanIMT(4, False), ArgumentTypeError, "not bool"),
    Case("max_depth 0", lambda _: LeanIMT(4, 0), InvalidArgumentError, r"1\.\.64, got 0"),
    Case("max_depth -1", lambda _: LeanIMT(4, -1), InvalidArgumentError, "got -1"),
    Case("max_depth 65", lambda _: LeanIMT(4, 65), InvalidArgumentError, "got 65"),
    Case("max_depth 2**64+1", lambda _: LeanIMT(4, U64 + 1), InvalidArgumentError, "1..64"),
    Case("extra argument", lambda _: LeanIMT(4, 32, 1), TypeError, "argument"),
    Case("unknown keyword", lambda _: LeanIMT(arity=4, depth=3), TypeError, "depth"),
    Case("arity 2 max_depth 1", lambda _: LeanIMT(2, 1), OK),
    Case("arity 255 max_depth 64", lambda _: LeanIMT(255, 64), OK),
    Case("ProofBatch()", lambda _: ProofBatch(), TypeError, "generate_proofs or from_bytes"),
    Case("RotorTree()", lambda _: RotorTree(), ArgumentTypeError, r"RotorTree\.open"),
    Case("Snapshot(None)", lambda _: Snapshot(None), ArgumentTypeError, r"LeanIMT\.snapshot"),
    Case("Snapshot(0)", lambda _: Snapshot(0), ArgumentTypeError, r"LeanIMT\.snapshot"),
    Case("Snapshot()", lambda _: Snapshot(), ArgumentTypeError, r"LeanIMT\.snapshot"),
]


@pytest.mark.parametrize("case", CONSTRUCTOR_CASES, ids=ids(CONSTRUCTOR_CASES))
def test_constructors(case):
    run_case(case, None)


# -- LeanIMT writes ----------------------------------------------------------------

ctypes_leaf = (ctypes.c_ubyte * 32).from_buffer_copy(bytes(range(32)))

INSERT_CASES = [
    Case("str", lambda t: t.insert("a" * 32), ArgumentTypeError, "bytes-like object of 32 bytes, not str"),
    Case("int", lambda t: t.insert(32), ArgumentTypeError, "not int"),
    Case("None", lambda t: t.insert(None), ArgumentTypeError, "not NoneType"),
    Case("float", lambda t: t.insert(1.5), ArgumentTypeError, "not float"),
    Case("list of ints", lambda t: t.insert([0] * 32), ArgumentTypeError, "not list"),
    Case("tuple of bytes", lambda t: t.insert((bytes(32),)), ArgumentTypeError, "not tuple"),
    Case("dict", lambda t: t.insert({}), ArgumentTypeError, "not dict"),
    Case("empty", lambda t: t.insert(b""), InvalidLeafError, "exactly 32 bytes, got 0"),
    Case("31 bytes", lambda t: t.insert(bytes(31)), InvalidLeafError, "got 31"),
    Case("33 bytes", lambda t: t.insert(bytes(33)), InvalidLeafError, "got 33"),
    Case("64 bytes", lambda t: t.insert(bytes(64)), InvalidLeafError, "got 64"),
    Case("huge", lambda t: t.insert(bytes(1 << 24)), InvalidLeafError, "got 16777216"),
    Case("bytearray 31", lambda t: t.insert(bytearray(31)), InvalidLeafError, "got 31"),
    Case("memoryview 33", lambda t: t.insert(memoryview(bytes(33))), InvalidLeafError, "got 33"),
    Case("released memoryview", lambda t: t.insert(released()), ArgumentTypeError, "released"),
    Case("numpy uint8 31", lambda t: t.insert(np.zeros(31, np.uint8)), InvalidLeafError, "got 31"),
    Case("numpy uint8 (2, 32)", lambda t: t.insert(np.zeros((2, 32), np.uint8)), InvalidLeafError,
         "got 64"),
    Case("numpy float32[8] (32 bytes)", lambda t: t.insert(np.zeros(8, np.float32)),
         ArgumentTypeError, r"must hold bytes \(uint8\), got item format 'f'"),
    Case("numpy uint64[4] (32 bytes)", lambda t: t.insert(np.zeros(4, np.uint64)),
         ArgumentTypeError, "item format"),
    Case("numpy bool[32]", lambda t: t.insert(np.zeros(32, bool)), ArgumentTypeError, "'?'"),
    Case("array('I') of 32 bytes", lambda t: t.insert(array.array("I", [0] * 8)),
         ArgumentTypeError, "'I'"),
    Case("memoryview cast 'Q'", lambda t: t.insert(memoryview(bytes(32)).cast("Q")),
         ArgumentTypeError, "'Q'"),
    # Valid edge inputs: any bytes-like object of 32 one-byte items.
    Case("bytearray", lambda t: t.insert(bytearray(32)), OK),
    Case("non-contiguous view", lambda t: t.insert(noncontiguous(bytes(range(32)))), OK),
    Case("read-only numpy", lambda t: t.insert(readonly_array(bytes(32), (32,))), OK),
    Case("numpy (1, 32)", lambda t: t.insert(np.zeros((1, 32), np.uint8)), OK),
    Case("numpy int8", lambda t: t.insert(np.zeros(32, np.int8)), OK),
    Case("ctypes c_ubyte[32]", lambda t: t.insert(ctypes_leaf), OK),
    Case("bytes subclass", lambda t: t.insert(type("B", (bytes,), {})(bytes(32))), OK),
]


def _gen_raises():
    yield bytes(32)
    raise RuntimeError("generator failed mid-batch")


INSERT_MANY_CASES = [
    Case("None", lambda t: t.insert_many(None), ArgumentTypeError, "not NoneType"),
    Case("float", lambda t: t.insert_many(2.0), ArgumentTypeError, "not float"),
    Case("str", lambda t: t.insert_many("a" * 64), ArgumentTypeError, "not str"),
    Case("empty bytes", lambda t: t.insert_many(b""), EmptyBatchError, "at least one"),
    Case("empty list", lambda t: t.insert_many([]), EmptyBatchError, "at least one"),
    Case("empty generator", lambda t: t.insert_many(iter(())), EmptyBatchError, "at least one"),
    Case("empty numpy (0, 32)", lambda t: t.insert_many(np.zeros((0, 32), np.uint8)),
         EmptyBatchError, "at least one"),
    Case("ragged 65 bytes", lambda t: t.insert_many(bytes(65)), InvalidLeafError, "whole number"),
    Case("ragged 31 bytes", lambda t: t.insert_many(bytes(31)), InvalidLeafError, "whole number"),
    Case("list with str", lambda t: t.insert_many([bytes(32), "a" * 32]), ArgumentTypeError,
         "leaf 1"),
    Case("list with None", lambda t: t.insert_many([None]), ArgumentTypeError, "leaf 0"),
    Case("list with short leaf", lambda t: t.insert_many([bytes(32)] * 5 + [bytes(31)]),
         InvalidLeafError, "leaf 5 must be exactly 32 bytes"),
    Case("list with float array", lambda t: t.insert_many([bytes(32), np.zeros(4)]),
         ArgumentTypeError, "leaf 1 must hold bytes"),
    Case("list of lists", lambda t: t.insert_many([[0] * 32]), ArgumentTypeError, "leaf 0"),
    Case("generator raising", lambda t: t.insert_many(_gen_raises()), RuntimeError,
         "mid-batch"),
    Case("released memoryview", lambda t: t.insert_many(released()), ArgumentTypeError,
         "released"),
    Case("non-contiguous view", lambda t: t.insert_many(noncontiguous(bytes(64))),
         InvalidLeafError, "C-contiguous"),
    Case("Fortran-ordered numpy", lambda t: t.insert_many(np.asfortranarray(
        np.arange(64, dtype=np.uint8).reshape(2, 32))), InvalidLeafError, "C-contiguous"),
    Case("strided numpy rows", lambda t: t.insert_many(np.zeros((4, 32), np.uint8)[::2]),
         InvalidLeafError, "C-contiguous"),
    Case("numpy float64 (2, 4)", lambda t: t.insert_many(np.zeros((2, 4))), ArgumentTypeError,
         "uint8"),
    Case("numpy uint16 (k, 16)", lambda t: t.insert_many(np.zeros((2, 16), np.uint16)),
         ArgumentTypeError, "'H'"),
    Case("numpy bool (1, 32)", lambda t: t.insert_many(np.zeros((1, 32), bool)),
         ArgumentTypeError, "'?'"),
    Case("numpy object", lambda t: t.insert_many(np.array([bytes(32)], dtype=object)),
         ArgumentTypeError),
    Case("numpy (2, 31)", lambda t: t.insert_many(np.zeros((2, 31), np.uint8)), InvalidLeafError,
         "shape"),
    Case("numpy (2, 64)", lambda t: t.insert_many(np.zeros((2, 64), np.uint8)), InvalidLeafError,
         "shape"),
    Case("numpy 3-D", lambda t: t.insert_many(np.zeros((1, 1, 32), np.uint8)), InvalidLeafError,
         "3-D"),
    Case("numpy 0-D", lambda t: t.insert_many(np.uint8(3)), InvalidLeafError, "0-D"),
    Case("array('d')", lambda t: t.insert_many(array.array("d", [0.0] * 8)), ArgumentTypeError,
         "'d'"),
    Case("past capacity by one", lambda t: t.insert_many(bytes(32 * (ARITY**MAX_DEPTH - SIZE + 1))),
         MaxDepthExceededError, r"inserting 630 leaves would exceed .* 729 .* holding 100 "
         r"\(room for 629 more\)"),
    Case("huge batch past capacity", lambda t: t.insert_many(bytes(32 << 16)),
         MaxDepthExceededError, "exceed"),
    # Valid edge inputs.
    Case("exactly to capacity", lambda t: t.insert_many(bytes(32 * (ARITY**MAX_DEPTH - SIZE))), OK),
    Case("read-only numpy (k, 32)", lambda t: t.insert_many(readonly_array(bytes(96), (3, 32))), OK),
    Case("numpy (k*32,)", lambda t: t.insert_many(np.zeros(96, np.uint8)), OK),
    Case("ctypes c_ubyte[64]", lambda t: t.insert_many((ctypes.c_ubyte * 64)()), OK),
    Case("memoryview cast 'b'", lambda t: t.insert_many(memoryview(bytes(64)).cast("b")), OK),
    Case("generator of leaves", lambda t: t.insert_many(bytes(32) for _ in range(5)), OK),
    Case("list of mixed buffers", lambda t: t.insert_many(
        [bytes(32), bytearray(32), memoryview(bytes(32)), np.zeros(32, np.uint8)]), OK),
]


@pytest.mark.parametrize("case", INSERT_CASES, ids=ids(INSERT_CASES))
def test_insert(tree, case):
    before = fingerprint(tree)
    run_case(case, tree)
    if case.error is not None:
        assert fingerprint(tree) == before
    else:
        assert tree.size == SIZE + 1
        leaves = LEAVES + [tree.get_node(0, SIZE)]
        assert tree.root == root_of(leaves, ARITY)


@pytest.mark.parametrize("case", INSERT_MANY_CASES, ids=ids(INSERT_MANY_CASES))
def test_insert_many(tree, case):
    before = fingerprint(tree)
    run_case(case, tree)
    if case.error is not None:
        assert fingerprint(tree) == before
    else:
        assert tree.size > SIZE
        assert rotortree.compute_root(
            b"".join(tree.get_node(0, i) for i in range(tree.size)), ARITY) == tree.root


# -- LeanIMT and Snapshot reads ------------------------------------------------------

READ_CASES = [
    Case("level_len str", lambda t: t.level_len("0"), ArgumentTypeError, "level must be an int"),
    Case("level_len None", lambda t: t.level_len(None), ArgumentTypeError, "NoneType"),
    Case("level_len float", lambda t: t.level_len(0.0), ArgumentTypeError, "float"),
    Case("level_len bool", lambda t: t.level_len(False), ArgumentTypeError, "bool"),
    Case("level_len -1", lambda t: t.level_len(-1), NodeIndexError, "level -1 out of range"),
    Case("level_len depth+1", lambda t: t.level_len(t.depth + 1), NodeIndexError, "out of range"),
    Case("level_len 64", lambda t: t.level_len(64), NodeIndexError, "out of range"),
    Case("level_len 65", lambda t: t.level_len(65), NodeIndexError, "out of range"),
    Case("level_len 2**64", lambda t: t.level_len(U64), NodeIndexError, "out of range"),
    Case("get_node str level", lambda t: t.get_node("0", 0), ArgumentTypeError, "level"),
    Case("get_node str index", lambda t: t.get_node(0, "0"), ArgumentTypeError, "index"),
    Case("get_node None index", lambda t: t.get_node(0, None), ArgumentTypeError, "index"),
    Case("get_node float index", lambda t: t.get_node(0, 1.0), ArgumentTypeError, "index"),
    Case("get_node numpy index", lambda t: t.get_node(0, np.uint64(1)), OK),
    Case("get_node numpy 2-D index", lambda t: t.get_node(0, np.array([[1]])), ArgumentTypeError,
         "index"),
    Case("get_node -1", lambda t: t.get_node(0, -1), NodeIndexError, "out of range"),
    Case("get_node size", lambda t: t.get_node(0, SIZE), NodeIndexError, "out of range"),
    Case("get_node 2**64-1", lambda t: t.get_node(0, U64 - 1), NodeIndexError, "out of range"),
    Case("get_node 2**64", lambda t: t.get_node(0, U64), NodeIndexError, "out of range"),
    Case("get_node 2**200", lambda t: t.get_node(0, 2**200), NodeIndexError, "out of range"),
    Case("get_node level -1", lambda t: t.get_node(-1, 0), NodeIndexError, "out of range"),
    Case("get_node level depth+1", lambda t: t.get_node(t.depth + 1, 0), NodeIndexError,
         "out of range"),
    Case("get_node past level end", lambda t: t.get_node(1, t.level_len(1)), NodeIndexError,
         "out of range"),
    Case("get_node missing argument", lambda t: t.get_node(0), TypeError, "index"),
    # Proofs.
    Case("generate_proof str", lambda t: t.generate_proof("1"), ArgumentTypeError, "index"),
    Case("generate_proof float", lambda t: t.generate_proof(1.0), ArgumentTypeError, "float"),
    Case("generate_proof bool", lambda t: t.generate_proof(True), ArgumentTypeError, "bool"),
    Case("generate_proof None", lambda t: t.generate_proof(None), ArgumentTypeError, "NoneType"),
    Case("generate_proof -1", lambda t: t.generate_proof(-1), NodeIndexError,
         "leaf index -1 out of range for size 100"),
    Case("generate_proof size", lambda t: t.generate_proof(SIZE), NodeIndexError,
         "out of range for size 100"),
    Case("generate_proof 2**64", lambda t: t.generate_proof(U64), NodeIndexError, "out of range"),
    Case("generate_proofs str", lambda t: t.generate_proofs("123"), ArgumentTypeError, "str"),
    Case("generate_proofs bytes", lambda t: t.generate_proofs(b"\x01\x02"), ArgumentTypeError,
         "bytes"),
    Case("generate_proofs bytearray", lambda t: t.generate_proofs(bytearray(8)),
         ArgumentTypeError, "bytearray"),
    Case("generate_proofs int", lambda t: t.generate_proofs(5), ArgumentTypeError, "int"),
    Case("generate_proofs None", lambda t: t.generate_proofs(None), ArgumentTypeError,
         "NoneType"),
    Case("generate_proofs [1.0]", lambda t: t.generate_proofs([1.0]), ArgumentTypeError,
         "position 0"),
    Case("generate_proofs [None]", lambda t: t.generate_proofs([0, None]), ArgumentTypeError,
         "position 1"),
    Case("generate_proofs [True]", lambda t: t.generate_proofs([True]), ArgumentTypeError, "bool"),
    Case("generate_proofs [-1]", lambda t: t.generate_proofs([0, -1]), NodeIndexError,
         "index -1 at position 1"),
    Case("generate_proofs [size]", lambda t: t.generate_proofs([0, 1, SIZE]), NodeIndexError,
         "position 2 out of range"),
    Case("generate_proofs [2**64]", lambda t: t.generate_proofs([U64]), NodeIndexError,
         "out of range"),
    Case("generate_proofs numpy float", lambda t: t.generate_proofs(np.array([1.0])),
         ArgumentTypeError, "integers"),
    Case("generate_proofs numpy bool", lambda t: t.generate_proofs(np.array([True])),
         ArgumentTypeError, "integers"),
    Case("generate_proofs numpy 2-D", lambda t: t.generate_proofs(np.zeros((2, 2), np.int64)),
         InvalidArgumentError, "1-D"),
    Case("generate_proofs numpy int64 -1", lambda t: t.generate_proofs(np.array([-1], np.int64)),
         NodeIndexError, "position 0 out of range"),
    Case("generate_proofs numpy uint64 size", lambda t: t.generate_proofs(
        np.array([3, SIZE], np.uint64)), NodeIndexError, "position 1"),
    Case("generate_proofs numpy object", lambda t: t.generate_proofs(np.array([1], object)),
         ArgumentTypeError),
    Case("generate_proofs array('d')", lambda t: t.generate_proofs(array.array("d", [1.0])),
         ArgumentTypeError, "integers"),
    Case("generate_proofs generator raising", lambda t: t.generate_proofs(
        (i if i < 3 else 1 / 0) for i in range(5)), ZeroDivisionError),
    Case("consistency old_size 0", lambda t: t.generate_consistency_proof(0, t.root),
         NodeIndexError, r"old_size must be 1\.\.100, got 0"),
    Case("consistency old_size size+1", lambda t: t.generate_consistency_proof(SIZE + 1, t.root),
         NodeIndexError, "got 101"),
    Case("consistency old_size -1", lambda t: t.generate_consistency_proof(-1, t.root),
         NodeIndexError, "got -1"),
    Case("consistency old_size str", lambda t: t.generate_consistency_proof("1", t.root),
         ArgumentTypeError, "old_size"),
    Case("consistency old_size bool", lambda t: t.generate_consistency_proof(True, t.root),
         ArgumentTypeError, "bool"),
    Case("consistency root str", lambda t: t.generate_consistency_proof(1, "ab" * 32),
         ArgumentTypeError, "old_root must be bytes"),
    Case("consistency root None", lambda t: t.generate_consistency_proof(1, None),
         ArgumentTypeError, "NoneType"),
    Case("consistency root 31 bytes", lambda t: t.generate_consistency_proof(1, bytes(31)),
         InvalidArgumentError, "32 bytes, got 31"),
    Case("consistency root empty", lambda t: t.generate_consistency_proof(1, b""),
         InvalidArgumentError, "got 0"),
    Case("consistency wrong root", lambda t: t.generate_consistency_proof(5, t.root),
         InvalidArgumentError, "is not this tree's root at size 5"),
    # Valid edges.
    Case("generate_proofs empty", lambda t: t.generate_proofs([]), OK),
    Case("generate_proofs read-only numpy", lambda t: t.generate_proofs(
        np.frombuffer(np.arange(3, dtype=np.uint64).tobytes(), np.uint64)), OK),
    Case("generate_proofs strided numpy", lambda t: t.generate_proofs(
        np.arange(20, dtype=np.int64)[::3]), OK),
    Case("generate_proofs numpy uint8", lambda t: t.generate_proofs(np.arange(5, dtype=np.uint8)),
         OK),
    Case("generate_proofs range", lambda t: t.generate_proofs(range(0, SIZE, 7)), OK),
    Case("generate_proofs big-endian u8", lambda t: t.generate_proofs(
        np.array([0, 7, SIZE - 1], dtype=">u8")), OK),
    Case("generate_proofs big-endian i2", lambda t: t.generate_proofs(
        np.array([3, 2, 1], dtype=">i2")), OK),
    Case("generate_proofs big-endian negative", lambda t: t.generate_proofs(
        np.array([1, -1], dtype=">i8")), NodeIndexError, "-1 at position 1"),
    Case("consistency at full size", lambda t: t.generate_consistency_proof(SIZE, t.root), OK),
]


@pytest.mark.parametrize("case", READ_CASES, ids=ids(READ_CASES))
def test_tree_reads(tree, case):
    before = fingerprint(tree)
    result = run_case(case, tree)
    assert fingerprint(tree) == before
    if isinstance(result, ProofBatch):
        assert result.verify()


@pytest.mark.parametrize("case", READ_CASES, ids=ids(READ_CASES))
def test_snapshot_reads(tree, case):
    snap = tree.snapshot()
    before = fingerprint(snap)
    tree.insert_many(LEAVES[:10])  # the snapshot must not see this
    run_case(case, snap)
    assert fingerprint(snap) == before
    assert snap.root == root_of(LEAVES, ARITY)


EMPTY_CASES = [
    Case("generate_proof 0", lambda t: t.generate_proof(0), NodeIndexError, "for size 0"),
    Case("generate_proofs [0]", lambda t: t.generate_proofs([0]), NodeIndexError, "size 0"),
    Case("consistency", lambda t: t.generate_consistency_proof(1, bytes(32)), EmptyTreeError,
         "empty"),
    Case("get_node", lambda t: t.get_node(0, 0), NodeIndexError, "out of range"),
    Case("level_len 1", lambda t: t.level_len(1), NodeIndexError, "out of range"),
    Case("level_len 0", lambda t: t.level_len(0), OK),
    Case("generate_proofs []", lambda t: t.generate_proofs([]), OK),
]


@pytest.mark.parametrize("case", EMPTY_CASES, ids=ids(EMPTY_CASES))
@pytest.mark.parametrize("kind", ["tree", "snapshot"])
def test_empty_tree_reads(case, kind):
    target = LeanIMT(4) if kind == "tree" else LeanIMT(4).snapshot()
    run_case(case, target)
    assert (target.size, target.root, target.depth) == (0, None, 0)


# -- compute_root, configure, verify_proofs ---------------------------------------------

COMPUTE_ROOT_CASES = [
    Case("arity str", lambda _: rotortree.compute_root(bytes(64), "4"), ArgumentTypeError,
         "arity"),
    Case("arity 1", lambda _: rotortree.compute_root(bytes(64), 1), InvalidArgumentError, "2..255"),
    Case("arity 256", lambda _: rotortree.compute_root(bytes(64), 256), InvalidArgumentError,
         "256"),
    Case("leaves None", lambda _: rotortree.compute_root(None), ArgumentTypeError, "NoneType"),
    Case("leaves str", lambda _: rotortree.compute_root("x" * 32), ArgumentTypeError, "str"),
    Case("empty bytes", lambda _: rotortree.compute_root(b""), EmptyBatchError, "at least one"),
    Case("empty list", lambda _: rotortree.compute_root([]), EmptyBatchError, "at least one"),
    Case("ragged", lambda _: rotortree.compute_root(bytes(33)), InvalidLeafError, "whole number"),
    Case("numpy float", lambda _: rotortree.compute_root(np.zeros((2, 4))), ArgumentTypeError,
         "uint8"),
    Case("non-contiguous", lambda _: rotortree.compute_root(noncontiguous(bytes(64))),
         InvalidLeafError, "C-contiguous"),
    Case("list with bad leaf", lambda _: rotortree.compute_root([bytes(32), bytes(3)]),
         InvalidLeafError, "leaf 1"),
    Case("one leaf", lambda _: rotortree.compute_root(bytes(range(32))), OK),
    Case("arity 255", lambda _: rotortree.compute_root(bytes(32 * 300), 255), OK),
    Case("read-only numpy", lambda _: rotortree.compute_root(readonly_array(bytes(64), (2, 32))),
         OK),
]


@pytest.mark.parametrize("case", COMPUTE_ROOT_CASES, ids=ids(COMPUTE_ROOT_CASES))
def test_compute_root(case):
    run_case(case, None)


def _config_state():
    info = rotortree.pool_info()
    return {k: info[k] for k in ("num_threads", "parallel_threshold", "par_chunk_size", "simd")}


_missing_kernels = [k for k in rt_config.KERNELS
                    if k not in rt_config.available_kernels()]

CONFIGURE_CASES = [
    Case("num_threads str", lambda _: rotortree.configure(num_threads="2"), ArgumentTypeError,
         "num_threads must be an int"),
    Case("num_threads float", lambda _: rotortree.configure(num_threads=2.0), ArgumentTypeError,
         "float"),
    Case("num_threads bool", lambda _: rotortree.configure(num_threads=True), ArgumentTypeError,
         "bool"),
    Case("num_threads 0", lambda _: rotortree.configure(num_threads=0), InvalidArgumentError,
         r"1\.\.1024, got 0"),
    Case("num_threads -1", lambda _: rotortree.configure(num_threads=-1), InvalidArgumentError,
         "got -1"),
    Case("num_threads 1025", lambda _: rotortree.configure(num_threads=1025),
         InvalidArgumentError, "got 1025"),
    Case("num_threads 2**64", lambda _: rotortree.configure(num_threads=U64),
         InvalidArgumentError, "1..1024"),
    Case("threshold 0", lambda _: rotortree.configure(parallel_threshold=0), InvalidArgumentError,
         "parallel_threshold must be >= 1"),
    Case("threshold 2**64", lambda _: rotortree.configure(parallel_threshold=U64),
         InvalidArgumentError, "below 2\\*\\*64"),
    Case("threshold str", lambda _: rotortree.configure(parallel_threshold="1"),
         ArgumentTypeError, "parallel_threshold"),
    Case("chunk 0", lambda _: rotortree.configure(par_chunk_size=0), InvalidArgumentError,
         "par_chunk_size"),
    Case("chunk -5", lambda _: rotortree.configure(par_chunk_size=-5), InvalidArgumentError,
         "got -5"),
    Case("chunk float", lambda _: rotortree.configure(par_chunk_size=1.5), ArgumentTypeError,
         "float"),
    Case("simd int", lambda _: rotortree.configure(simd=1), ArgumentTypeError,
         "simd must be a str"),
    Case("simd bytes", lambda _: rotortree.configure(simd=b"avx2"), ArgumentTypeError, "bytes"),
    Case("simd unknown", lambda _: rotortree.configure(simd="avx1024"), InvalidArgumentError,
         "unknown SIMD kernel 'avx1024'"),
    Case("simd empty", lambda _: rotortree.configure(simd=""), InvalidArgumentError, "unknown"),
    # A bad value next to good ones changes nothing at all.
    Case("good threads, bad chunk", lambda _: rotortree.configure(num_threads=1, par_chunk_size=0),
         InvalidArgumentError, "par_chunk_size"),
    Case("good threshold, bad simd", lambda _: rotortree.configure(parallel_threshold=7,
                                                                   simd="nope"),
         InvalidArgumentError, "unknown"),
    Case("unknown keyword", lambda _: rotortree.configure(threads=2), TypeError, "threads"),
    Case("positional", lambda _: rotortree.configure(2), TypeError, "positional"),
] + [Case(f"unsupported kernel {k}", lambda _, k=k: rotortree.configure(simd=k),
          UnsupportedKernelError, "not supported") for k in _missing_kernels]


@pytest.mark.parametrize("case", CONFIGURE_CASES, ids=ids(CONFIGURE_CASES))
def test_configure(case):
    before = _config_state()
    run_case(case, None)
    assert _config_state() == before


VERIFY_PROOFS_CASES = [
    Case("None", lambda _: rotortree.verify_proofs(None), ArgumentTypeError, "ProofBatch"),
    Case("list", lambda _: rotortree.verify_proofs([]), ArgumentTypeError, "not list"),
    Case("bytes", lambda _: rotortree.verify_proofs(b"RTPB"), ArgumentTypeError, "bytes"),
    Case("an InclusionProof", lambda t: rotortree.verify_proofs(t.generate_proof(0)),
         ArgumentTypeError, "InclusionProof"),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # verify_proofs is deprecated
@pytest.mark.parametrize("case", VERIFY_PROOFS_CASES, ids=ids(VERIFY_PROOFS_CASES))
def test_verify_proofs(tree, case):
    run_case(case, tree)


# -- ProofBatch ------------------------------------------------------------------------


@pytest.fixture
def batch(tree):
    return tree.generate_proofs([0, 5, 99])


def _batch_bytes(t) -> bytes:
    return t.generate_proofs([0, 5, 99]).to_bytes()


BATCH_CASES = [
    Case("index str", lambda b: b["0"], ArgumentTypeError, "index must be an int"),
    Case("index float", lambda b: b[0.0], ArgumentTypeError, "float"),
    Case("index bool", lambda b: b[True], ArgumentTypeError, "bool"),
    Case("index None", lambda b: b[None], ArgumentTypeError, "NoneType"),
    Case("index len", lambda b: b[3], NodeIndexError, "proof 3 out of range for a batch of 3"),
    Case("index -len-1", lambda b: b[-4], NodeIndexError, "out of range"),
    Case("index 2**64", lambda b: b[U64], NodeIndexError, "out of range"),
    Case("proof_bytes len", lambda b: b.proof_bytes(3), NodeIndexError, "out of range"),
    Case("proof_bytes -4", lambda b: b.proof_bytes(-4), NodeIndexError, "out of range"),
    Case("proof_bytes str", lambda b: b.proof_bytes("1"), ArgumentTypeError, "index"),
    Case("index -1", lambda b: b[-1], OK),
    Case("proof_bytes -1", lambda b: b.proof_bytes(-1), OK),
    Case("slice", lambda b: b[1:], OK),
    Case("empty slice", lambda b: b[5:9], OK),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=ids(BATCH_CASES))
def test_proof_batch_access(batch, case):
    before = batch.to_bytes()
    result = run_case(case, batch)
    assert batch.to_bytes() == before and batch.verify()
    if case.name == "proof_bytes -1":
        assert result == batch.proof_bytes(2) and InclusionProof.from_bytes(result).leaf_index == 99


def _with(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value):]


BATCH_DECODE_CASES = [
    Case("None", lambda d: ProofBatch.from_bytes(None), ArgumentTypeError, "NoneType"),
    Case("str", lambda d: ProofBatch.from_bytes("RTPB"), ArgumentTypeError),
    Case("int", lambda d: ProofBatch.from_bytes(16), ArgumentTypeError, "int"),
    Case("empty", lambda d: ProofBatch.from_bytes(b""), InvalidProofError, "no header"),
    Case("header only, count 3", lambda d: ProofBatch.from_bytes(d[:16]), InvalidProofError,
         "proof 0: truncated"),
    Case("bad magic", lambda d: ProofBatch.from_bytes(b"XTPB" + d[4:]), InvalidProofError,
         "not a proof batch"),
    Case("reserved bytes", lambda d: ProofBatch.from_bytes(_with(d, 6, b"\x01")),
         InvalidProofError, "reserved"),
    Case("version 3", lambda d: ProofBatch.from_bytes(_with(d, 4, b"\x03")), InvalidProofError,
         "version 3"),
    Case("unknown rule", lambda d: ProofBatch.from_bytes(_with(d, 5, b"\x03")),
         InvalidProofError, "unknown rule"),
    Case("count too high", lambda d: ProofBatch.from_bytes(_with(d, 8, (4).to_bytes(8, "little"))),
         InvalidProofError, "proof 3"),
    Case("count 2**64-1", lambda d: ProofBatch.from_bytes(_with(d, 8, bytes([255] * 8))),
         InvalidProofError, "truncated"),
    Case("count too low", lambda d: ProofBatch.from_bytes(_with(d, 8, (2).to_bytes(8, "little"))),
         InvalidProofError, "trailing bytes"),
    Case("truncated last proof", lambda d: ProofBatch.from_bytes(d[:-1]), InvalidProofError,
         "proof 2: truncated"),
    Case("trailing byte", lambda d: ProofBatch.from_bytes(d + b"\0"), InvalidProofError,
         "1 trailing bytes"),
    Case("bytearray", lambda d: ProofBatch.from_bytes(bytearray(d)), OK),
    Case("read-only numpy", lambda d: ProofBatch.from_bytes(np.frombuffer(d, np.uint8)), OK),
    Case("memoryview", lambda d: ProofBatch.from_bytes(memoryview(d)), OK),
    Case("non-contiguous numpy", lambda d: ProofBatch.from_bytes(
        np.repeat(np.frombuffer(d, np.uint8), 2)[::2]), OK),
    Case("released memoryview", lambda d: ProofBatch.from_bytes(_released(d)),
         ArgumentTypeError, "released"),
]


def _released(data: bytes) -> memoryview:
    view = memoryview(data)
    view.release()
    return view


@pytest.mark.parametrize("case", BATCH_DECODE_CASES, ids=ids(BATCH_DECODE_CASES))
def test_proof_batch_from_bytes(tree, case):
    data = _batch_bytes(tree)
    result = run_case(case, data)
    if result is not None:
        assert result.to_bytes() == data and result.verify()


def test_damaged_batch_reports_the_damaged_proof(tree):
    data = bytearray(_batch_bytes(tree))
    first_len = len(tree.generate_proof(0).to_bytes())
    data[16 + first_len + 30] ^= 1      # the root of proof 1
    batch = ProofBatch.from_bytes(bytes(data))
    assert batch.first_invalid() == 1 and not batch.verify()
    assert not batch[1].verify() and batch[0].verify() and batch[2].verify()


# -- proof classes ----------------------------------------------------------------------


def _incl(t) -> bytes:
    return t.generate_proof(42).to_bytes()


def _cons(t) -> bytes:
    return t.generate_consistency_proof(40, root_of(LEAVES[:40], ARITY)).to_bytes()


PROOF_DECODE_CASES = [
    Case("incl None", lambda t: InclusionProof.from_bytes(None), ArgumentTypeError, "NoneType"),
    Case("incl str", lambda t: InclusionProof.from_bytes("RTIP"), ArgumentTypeError, "not str"),
    Case("incl list", lambda t: InclusionProof.from_bytes([1, 2]), ArgumentTypeError, "list"),
    Case("incl empty", lambda t: InclusionProof.from_bytes(b""), InvalidProofError, "truncated"),
    Case("incl magic only", lambda t: InclusionProof.from_bytes(b"RTIP"), InvalidProofError,
         "truncated"),
    Case("incl consistency bytes", lambda t: InclusionProof.from_bytes(_cons(t)),
         InvalidProofError, "looks like a consistency proof"),
    Case("incl version 9", lambda t: InclusionProof.from_bytes(_with(_incl(t), 4, b"\x09")),
         InvalidProofError, "version 9"),
    Case("incl unknown rule", lambda t: InclusionProof.from_bytes(_with(_incl(t), 7, b"\x09")),
         InvalidProofError, "unknown rule number 9"),
    Case("incl v1 reserved", lambda t: InclusionProof.from_bytes(
        _with(_with(_incl(t), 4, b"\x01"), 7, b"\x01")), InvalidProofError, "reserved"),
    Case("incl arity 1", lambda t: InclusionProof.from_bytes(_with(_incl(t), 5, b"\x01")),
         InvalidProofError, "arity 1"),
    Case("incl truncated", lambda t: InclusionProof.from_bytes(_incl(t)[:-1]), InvalidProofError,
         "truncated"),
    Case("incl header truncated", lambda t: InclusionProof.from_bytes(_incl(t)[:87]),
         InvalidProofError, "87 bytes"),
    Case("incl trailing", lambda t: InclusionProof.from_bytes(_incl(t) + b"x"),
         InvalidProofError, "trailing"),
    Case("incl level count +1", lambda t: InclusionProof.from_bytes(
        _with(_incl(t), 6, bytes([_incl(t)[6] + 1]))), InvalidProofError, "truncated"),
    Case("cons None", lambda t: ConsistencyProof.from_bytes(None), ArgumentTypeError, "NoneType"),
    Case("cons inclusion bytes", lambda t: ConsistencyProof.from_bytes(_incl(t)),
         InvalidProofError, "looks like an inclusion proof"),
    Case("cons truncated", lambda t: ConsistencyProof.from_bytes(_cons(t)[:-5]),
         InvalidProofError, "truncated"),
    Case("cons trailing", lambda t: ConsistencyProof.from_bytes(_cons(t) + bytes(32)),
         InvalidProofError, "trailing"),
    Case("incl from_dict list", lambda t: InclusionProof.from_dict([]), InvalidProofError,
         "must be a dict"),
    Case("incl from_dict empty", lambda t: InclusionProof.from_dict({}), InvalidProofError,
         "missing key 'arity'"),
    Case("incl from_dict unknown key", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "extra": 1}), InvalidProofError, "unknown keys"),
    Case("incl from_dict bad hex", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "root": "zz" * 32}), InvalidProofError, "hex"),
    Case("incl from_dict short hash", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "leaf": "00" * 31}), InvalidProofError, "64 hex"),
    Case("incl from_dict index str", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "leaf_index": "1"}), InvalidProofError, "must be an int"),
    Case("incl from_dict index -1", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "leaf_index": -1}), InvalidProofError, "out of range"),
    Case("incl from_dict size 2**64", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "tree_size": U64}), InvalidProofError, "out of range"),
    Case("incl from_dict level_count", lambda t: InclusionProof.from_dict(
        {**t.generate_proof(1).to_dict(), "level_count": 9}), InvalidProofError, "level_count 9"),
    Case("incl from_dict arity= mismatch", lambda t: InclusionProof.from_dict(
        t.generate_proof(1).to_dict(), arity=4), InvalidProofError, "disagrees"),
    Case("incl from_dict arity= 1", lambda t: InclusionProof.from_dict(
        t.generate_proof(1).to_dict(), arity=1), InvalidProofError, "arity="),
    Case("cons from_dict None", lambda t: ConsistencyProof.from_dict(None), InvalidProofError,
         "must be a dict"),
    Case("cons from_dict counts", lambda t: ConsistencyProof.from_dict(
        {**ConsistencyProof.from_bytes(_cons(t)).to_dict(),
         "levels": [{"shared_count": 1, "new_count": 1, "hashes": []}] * 5}),
         InvalidProofError),
    Case("incl round trip", lambda t: InclusionProof.from_bytes(bytearray(_incl(t))), OK),
    Case("incl from non-contiguous view", lambda t: InclusionProof.from_bytes(
        noncontiguous(_incl(t))), OK),
]


@pytest.mark.parametrize("case", PROOF_DECODE_CASES, ids=ids(PROOF_DECODE_CASES))
def test_proof_decoding(tree, case):
    before = fingerprint(tree)
    result = run_case(case, tree)
    assert fingerprint(tree) == before
    if result is not None:
        assert result.verify() and result.to_bytes() == _incl(tree)


GARBAGE_FIELDS = [
    dict(root=None), dict(root=b"x"), dict(root="00" * 32), dict(leaf=5), dict(leaf=bytes(33)),
    dict(leaf_index=-1), dict(leaf_index=U64), dict(leaf_index="0"), dict(leaf_index=1.0),
    dict(tree_size=0), dict(tree_size=U64), dict(tree_size=None), dict(arity=1),
    dict(arity=256), dict(arity=3.0), dict(arity=None), dict(levels=None), dict(levels=(1, 2)),
    dict(levels="abc"), dict(levels=()),
]


@pytest.mark.parametrize("fields", GARBAGE_FIELDS, ids=[str(f)[:40] for f in GARBAGE_FIELDS])
def test_proof_objects_with_garbage_fields_never_verify_or_crash(tree, fields):
    """Constructors do not validate (proofs are plain data), but verify()
    never raises and is False; to_bytes/to_dict raise the documented
    classes instead of writing a malformed encoding."""
    genuine = tree.generate_proof(42)
    values = {k: getattr(genuine, k)
              for k in ("root", "leaf", "leaf_index", "tree_size", "arity", "levels")}
    values.update(fields)
    proof = InclusionProof(**values)
    assert proof.verify() is False
    assert proof.verify_against(genuine.root, genuine.tree_size) is False
    try:
        data = proof.to_bytes()
    except (ArgumentTypeError, InvalidArgumentError):
        with pytest.raises((ArgumentTypeError, InvalidArgumentError)):
            proof.to_dict()
    else:
        assert not InclusionProof.from_bytes(data).verify()


def test_update_inclusion_proof_bad_arguments(tree):
    old_root = root_of(LEAVES[:40], ARITY)
    consistency = tree.generate_consistency_proof(40, old_root)
    small = LeanIMT(ARITY)
    small.insert_many(LEAVES[:40])
    old_proof = small.generate_proof(7)
    for bad, error, match in [
        (None, ArgumentTypeError, "InclusionProof"),
        (old_proof.to_bytes(), ArgumentTypeError, "bytes"),
        (tree.generate_proof(7), InvalidProofError, "tree of 100 leaves"),
        (InclusionProof(old_proof.root, bytes(32), 7, 40, ARITY, old_proof.levels),
         InvalidProofError, "does not verify"),
    ]:
        with pytest.raises(error, match=match):
            consistency.update_inclusion_proof(bad)
    same = tree.generate_consistency_proof(SIZE, tree.root)
    with pytest.raises(InvalidArgumentError, match="old_size == new_size"):
        same.update_inclusion_proof(tree.generate_proof(1))
    assert consistency.update_inclusion_proof(old_proof) == tree.generate_proof(7)


# -- LeanIMT.save / load -------------------------------------------------------------------


def test_save_and_load_bad_arguments(tree, tmp_path):
    before = fingerprint(tree)
    for path in (None, 5, 1.5):
        with pytest.raises(ArgumentTypeError, match="path must be"):
            tree.save(path)
        with pytest.raises(ArgumentTypeError, match="path must be"):
            LeanIMT.load(path)
    saved_as_bytes = bytes(tmp_path / "as-bytes")
    tree.save(saved_as_bytes)
    assert fingerprint(LeanIMT.load(saved_as_bytes)) == before
    with pytest.raises(OSError):
        LeanIMT.load(tmp_path / "missing")
    with pytest.raises(OSError):
        LeanIMT.load(tmp_path)                  # a directory
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"garbage" * 100)
    with pytest.raises(CorruptionError, match="bad magic"):
        LeanIMT.load(garbage)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(CorruptionError):
        LeanIMT.load(empty)
    good = tmp_path / "good"
    tree.save(good)
    data = good.read_bytes()
    for cut in (0, 10, 56, 80, len(data) - 1):
        (tmp_path / "cut").write_bytes(data[:cut])
        with pytest.raises(CorruptionError):
            LeanIMT.load(tmp_path / "cut")
    assert fingerprint(LeanIMT.load(good)) == before == fingerprint(tree)
    # The flags are keyword-only and must be bools: a truthy "no" must not
    # silently mean True, and load(path, False) must not be read as verify.
    with pytest.raises(TypeError):
        LeanIMT.load(good, False)  # type: ignore[misc]
    for flag in ("verify", "mmap"):
        with pytest.raises(ArgumentTypeError, match=f"{flag} must be a bool"):
            LeanIMT.load(good, **{flag: "no"})


# -- durable trees ---------------------------------------------------------------------------


def _open(path, **kwargs):
    kwargs.setdefault("create", True)
    kwargs.setdefault("flush_policy", FlushPolicy.manual())
    kwargs.setdefault("checkpoint_policy", CheckpointPolicy.manual())
    return RotorTree.open(path, **kwargs)


OPEN_CASES = [
    Case("path None", lambda p: RotorTree.open(None), ArgumentTypeError, "path must be a str"),
    Case("path int", lambda p: RotorTree.open(123), ArgumentTypeError, "not int"),
    Case("path is a file", lambda p: RotorTree.open(p / "file"), InvalidArgumentError,
         "not a directory"),
    Case("arity str", lambda p: RotorTree.open(p / "t", arity="4"), ArgumentTypeError, "arity"),
    Case("arity 1", lambda p: RotorTree.open(p / "t", arity=1), InvalidArgumentError, "2..255"),
    Case("arity 256", lambda p: RotorTree.open(p / "t", arity=256), InvalidArgumentError, "256"),
    Case("max_depth 0", lambda p: RotorTree.open(p / "t", max_depth=0), InvalidArgumentError,
         "max_depth"),
    Case("max_depth 65", lambda p: RotorTree.open(p / "t", max_depth=65), InvalidArgumentError,
         "65"),
    Case("mmap_levels -1", lambda p: RotorTree.open(p / "t", mmap_levels=-1),
         InvalidArgumentError, "mmap_levels"),
    Case("mmap_levels 66", lambda p: RotorTree.open(p / "t", mmap_levels=66),
         InvalidArgumentError, "mmap_levels"),
    Case("mmap_levels str", lambda p: RotorTree.open(p / "t", mmap_levels="1"),
         ArgumentTypeError, "mmap_levels"),
    Case("mmap_levels bool", lambda p: RotorTree.open(p / "t", mmap_levels=True),
         ArgumentTypeError, "bool"),
    Case("verify_checkpoint str", lambda p: RotorTree.open(p / "t", verify_checkpoint="no"),
         ArgumentTypeError, "verify_checkpoint must be a bool"),
    Case("verify_checkpoint None", lambda p: RotorTree.open(p / "t", verify_checkpoint=None),
         ArgumentTypeError, "verify_checkpoint"),
    Case("flush_policy str", lambda p: RotorTree.open(p / "t", flush_policy="manual"),
         ArgumentTypeError, "FlushPolicy"),
    Case("checkpoint_policy int", lambda p: RotorTree.open(p / "t", checkpoint_policy=5),
         ArgumentTypeError, "CheckpointPolicy"),
    Case("interval 0", lambda p: FlushPolicy.interval(0), InvalidArgumentError, "interval"),
    Case("interval -1", lambda p: FlushPolicy.interval(-1), InvalidArgumentError, "interval"),
    Case("interval huge", lambda p: FlushPolicy.interval(1e9), InvalidArgumentError, "3600"),
    Case("interval nan", lambda p: FlushPolicy.interval(float("nan")), InvalidArgumentError,
         "interval"),
    Case("interval str", lambda p: FlushPolicy.interval("1"), ArgumentTypeError, "number"),
    Case("interval bool", lambda p: FlushPolicy.interval(True), ArgumentTypeError, "bool"),
    Case("every_entries 0", lambda p: CheckpointPolicy.every_entries(0), InvalidArgumentError,
         ">= 1"),
    Case("every_entries str", lambda p: CheckpointPolicy.every_entries("5"), ArgumentTypeError,
         "int"),
    Case("memory_threshold -1", lambda p: CheckpointPolicy.memory_threshold(-1),
         InvalidArgumentError, ">= 1"),
    Case("every_entries 2**64", lambda p: CheckpointPolicy.every_entries(1 << 64),
         InvalidArgumentError, "below 2\\*\\*64"),
    Case("every_entries bool", lambda p: CheckpointPolicy.every_entries(True), ArgumentTypeError,
         "bool"),
    Case("policy | int", lambda p: CheckpointPolicy.manual() | 5, TypeError),
    Case("second open of an open tree", lambda p: RotorTree.open(p / "open"),
         rotortree.TreeLockedError, "already open"),
    Case("arity mismatch", lambda p: RotorTree.open(p / "closed", arity=4), StorageMismatchError,
         "arity 3"),
    Case("max_depth mismatch", lambda p: RotorTree.open(p / "closed", arity=3, max_depth=9),
         StorageMismatchError, "max_depth"),
]


@pytest.mark.parametrize("case", OPEN_CASES, ids=ids(OPEN_CASES))
def test_durable_open_arguments(tmp_path, case):
    (tmp_path / "file").write_bytes(b"x")
    holder = _open(tmp_path / "open", arity=3)
    closed = _open(tmp_path / "closed", arity=3, max_depth=12)
    closed.insert_durable(LEAVES[:5])
    closed.close()
    try:
        run_case(case, tmp_path)
    finally:
        holder.close()
    assert not (tmp_path / "t").exists() or not any((tmp_path / "t").iterdir()) or \
        case.error is None
    with _open(tmp_path / "closed", arity=None, max_depth=None) as reopened:
        assert reopened.size == 5 and reopened.root == root_of(LEAVES[:5], 3)


DURABLE_WRITE_CASES = [
    Case("insert str", lambda d: d.insert("x" * 32), ArgumentTypeError, "leaf must be"),
    Case("insert 31 bytes", lambda d: d.insert(bytes(31)), InvalidLeafError, "got 31"),
    Case("insert float32[8]", lambda d: d.insert(np.zeros(8, np.float32)), ArgumentTypeError,
         "uint8"),
    Case("insert released", lambda d: d.insert(released()), ArgumentTypeError, "released"),
    Case("insert_many empty", lambda d: d.insert_many([]), EmptyBatchError, "at least one"),
    Case("insert_many ragged", lambda d: d.insert_many(bytes(33)), InvalidLeafError, "whole"),
    Case("insert_many None", lambda d: d.insert_many(None), ArgumentTypeError, "NoneType"),
    Case("insert_many numpy float", lambda d: d.insert_many(np.zeros((1, 4))), ArgumentTypeError,
         "uint8"),
    Case("insert_many list with bad leaf", lambda d: d.insert_many([bytes(32), bytes(5)]),
         InvalidLeafError, "leaf 1"),
    Case("insert_many past capacity", lambda d: d.insert_many(bytes(32 * (3**5 - SIZE + 1))),
         MaxDepthExceededError, "exceed"),
    Case("insert_durable int", lambda d: d.insert_durable(5), ArgumentTypeError, "int"),
    Case("insert_durable empty", lambda d: d.insert_durable(b""), EmptyBatchError, "at least"),
    Case("level_len -1", lambda d: d.level_len(-1), NodeIndexError, "out of range"),
    Case("get_node past end", lambda d: d.get_node(0, SIZE), NodeIndexError, "out of range"),
    Case("generate_proof size", lambda d: d.generate_proof(SIZE), NodeIndexError, "out of range"),
    Case("generate_proofs [-1]", lambda d: d.generate_proofs([-1]), NodeIndexError, "-1"),
    Case("consistency wrong root", lambda d: d.generate_consistency_proof(3, bytes(32)),
         InvalidArgumentError, "not this tree's root"),
]


@pytest.mark.parametrize("case", DURABLE_WRITE_CASES, ids=ids(DURABLE_WRITE_CASES))
def test_durable_bad_calls_change_nothing(tmp_path, case):
    """A refused call changes neither the tree nor its files: what a reopen
    recovers is the same tree, and no WAL entry was added."""
    path = tmp_path / "t"
    tree = _open(path, arity=3, max_depth=5)
    tree.insert_many(LEAVES[:60])
    tree.checkpoint()
    tree.insert_many(LEAVES[60:])
    tree.flush()
    before, seq = fingerprint(tree), tree.stats()["seq"]
    run_case(case, tree)
    assert fingerprint(tree) == before and tree.stats()["seq"] == seq
    tree.close()
    with _open(path, arity=3, max_depth=5) as reopened:
        assert fingerprint(reopened) == before
        assert reopened.recovery.get("entries", 1) == 1


CLOSED_CASES = [
    Case("insert", lambda d: d.insert(bytes(32)), ClosedTreeError, "is closed"),
    Case("insert_many", lambda d: d.insert_many(bytes(64)), ClosedTreeError, "is closed"),
    # Arguments are validated first; either error leaves everything as it was.
    Case("insert_many bad input", lambda d: d.insert_many(None), ArgumentTypeError, "NoneType"),
    Case("insert_durable", lambda d: d.insert_durable(bytes(32)), ClosedTreeError, "closed"),
    Case("flush", lambda d: d.flush(), ClosedTreeError, "closed"),
    Case("checkpoint", lambda d: d.checkpoint(), ClosedTreeError, "closed"),
    Case("root", lambda d: d.root, ClosedTreeError, "closed"),
    Case("size", lambda d: d.size, ClosedTreeError, "closed"),
    Case("len", lambda d: len(d), ClosedTreeError, "closed"),
    Case("depth", lambda d: d.depth, ClosedTreeError, "closed"),
    Case("level_len", lambda d: d.level_len(0), ClosedTreeError, "closed"),
    Case("get_node", lambda d: d.get_node(0, 0), ClosedTreeError, "closed"),
    Case("snapshot", lambda d: d.snapshot(), ClosedTreeError, "closed"),
    Case("generate_proof", lambda d: d.generate_proof(0), ClosedTreeError, "closed"),
    Case("generate_proofs", lambda d: d.generate_proofs([0]), ClosedTreeError, "closed"),
    Case("generate_consistency_proof", lambda d: d.generate_consistency_proof(1, bytes(32)),
         ClosedTreeError, "closed"),
    Case("with", lambda d: d.__enter__(), ClosedTreeError, "closed"),
    Case("close again", lambda d: d.close(), OK),
    Case("closed", lambda d: d.closed, OK),
    Case("arity", lambda d: d.arity, OK),
    Case("capacity", lambda d: d.capacity, OK),
    Case("path", lambda d: d.path, OK),
    Case("repr", lambda d: repr(d), OK),
    Case("stats", lambda d: d.stats(), OK),
]


@pytest.mark.parametrize("case", CLOSED_CASES, ids=ids(CLOSED_CASES))
def test_calls_on_a_closed_durable_tree(tmp_path, case):
    path = tmp_path / "t"
    tree = _open(path, arity=3)
    tree.insert_durable(LEAVES[:20])
    snap = tree.snapshot()
    tree.close()
    result = run_case(case, tree)
    if case.name == "closed":
        assert result is True
    assert tree.closed
    # A snapshot taken before close still works; the files are intact.
    assert snap.size == 20 and snap.generate_proofs(range(20)).verify()
    with _open(path, arity=3) as reopened:
        assert reopened.size == 20 and reopened.root == root_of(LEAVES[:20], 3)


def test_tokens_of_a_closed_tree(tmp_path):
    tree = _open(tmp_path / "t", arity=3)
    _, synced = tree.insert(LEAVES[0])
    tree.flush()
    _, pending = tree.insert(LEAVES[1])
    tree.close()                      # close fsyncs the WAL
    assert synced.wait(timeout=1) and pending.wait(timeout=1)
    assert synced.durable and pending.durable


def test_token_wait_checks_its_timeout(tmp_path):
    tree = _open(tmp_path / "t", arity=3)
    try:
        _, token = tree.insert(LEAVES[0])
        tree.flush()
        for bad in ("1", b"1", [1], True):
            with pytest.raises(ArgumentTypeError, match="timeout"):
                token.wait(timeout=bad)
        assert token.wait(timeout=0) and token.wait(timeout=1.5) and token.wait()
    finally:
        tree.close()


def test_token_wait_with_nan_or_infinite_timeout(tmp_path):
    # NaN compared false with everything: the wait loop spun, taking and
    # dropping the lock, until the entry became durable. An infinite or huge
    # timeout reached Condition.wait and raised OverflowError.
    import threading
    import time

    tree = _open(tmp_path / "t", arity=3)
    try:
        _, pending = tree.insert(LEAVES[0])
        rescue = threading.Timer(1.0, tree.flush)  # ends the spin, if any
        rescue.start()
        with pytest.raises(InvalidArgumentError, match="timeout"):
            pending.wait(timeout=float("nan"))
        rescue.join()
        for huge in (float("inf"), 1e300, 10**30, 10**400):
            _, pending = tree.insert(LEAVES[1])
            flusher = threading.Timer(0.2, tree.flush)
            flusher.start()
            started = time.monotonic()
            assert pending.wait(timeout=huge) is True
            assert time.monotonic() - started < 30
            flusher.join()
        _, pending = tree.insert(LEAVES[2])
        assert pending.wait(timeout=-1) is False and pending.wait(timeout=0) is False
    finally:
        tree.close()


def test_index_formats_struct_cannot_read_are_type_errors(monkeypatch):
    # Every format numpy, array, ctypes and _testbuffer produce is one struct
    # reads with the exporter's item size; an exporter that disagrees (8-byte
    # items labelled '<l', struct's 4 bytes) or uses a format struct rejects
    # ('<n') must not yield misread indices or a struct.error.
    import rotortree.snapshot as snapshot_module

    real = memoryview

    class Labelled:
        def __init__(self, view, fmt):
            self._view, self.format = view, fmt
            self.ndim, self.itemsize = view.ndim, view.itemsize
            self.c_contiguous = view.c_contiguous

        def __len__(self):
            return len(self._view)

        def tobytes(self):
            return self._view.tobytes()

    tree = LeanIMT(4)
    tree.insert_many(bytes(32 * 100))
    snap = tree.snapshot()
    for fmt in ("<l", ">L", "<n", "@<q", "<>q"):
        monkeypatch.setattr(snapshot_module, "memoryview",
                            lambda obj, fmt=fmt: Labelled(real(obj), fmt), raising=False)
        with pytest.raises(ArgumentTypeError, match="format"):
            snap.generate_proofs(np.array([3, 1, 99], dtype=np.int64))
    monkeypatch.undo()
    assert [p.leaf_index for p in snap.generate_proofs(np.array([3, 1, 99], dtype=">i8"))] \
        == [3, 1, 99]
