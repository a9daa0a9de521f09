"""LeanIMT behaviour against the pure-Python reference, input forms and errors."""

from __future__ import annotations

import array
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rotortree
from reference import build_levels, depth_of, root_of, vector_leaf


def random_leaves(count: int, seed: int = 0) -> list:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def snapshot_state(tree: rotortree.LeanIMT):
    """Everything observable about a tree: size, root, depth, every node."""
    levels = []
    for level in range(tree.depth + 1):
        levels.append([tree.get_node(level, i) for i in range(tree.level_len(level))])
    return tree.size, tree.root, tree.depth, levels


# -- reference equality ---------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arity=st.integers(2, 40),
    batches=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    seed=st.integers(0, 2**32),
)
def test_random_batches_match_reference(arity, batches, seed):
    leaves = random_leaves(sum(batches), seed)
    tree = rotortree.LeanIMT(arity)
    offset = 0
    for batch in batches:
        root = tree.insert_many(b"".join(leaves[offset: offset + batch]))
        offset += batch
        assert root == root_of(leaves[:offset], arity)
    levels = build_levels(leaves, arity)
    assert tree.depth == depth_of(len(leaves), arity) == len(levels) - 1
    assert snapshot_state(tree)[3] == levels


@settings(max_examples=25, deadline=None)
@given(arity=st.integers(2, 255), size=st.integers(1, 700), seed=st.integers(0, 2**32))
def test_every_arity_matches_reference(arity, size, seed):
    leaves = random_leaves(size, seed)
    tree = rotortree.LeanIMT(arity, max_depth=64)
    assert tree.insert_many(leaves) == root_of(leaves, arity)
    assert rotortree.compute_root(leaves, arity) == root_of(leaves, arity)


def test_single_inserts_equal_batch_for_every_split():
    leaves = random_leaves(70, 7)
    for arity in (2, 3, 4, 5, 16):
        expected = root_of(leaves, arity)
        singles = rotortree.LeanIMT(arity)
        for i, leaf in enumerate(leaves):
            assert singles.insert(leaf) == root_of(leaves[: i + 1], arity)
        assert singles.root == expected
        for split in range(1, len(leaves)):
            tree = rotortree.LeanIMT(arity)
            tree.insert_many(leaves[:split])
            assert tree.insert_many(leaves[split:]) == expected


def test_chunk_boundaries_for_odd_arities():
    # Chunk capacity is a multiple of the arity (129 nodes for arity 3, 255
    # for 255): sizes around those boundaries at every level.
    for arity in (3, 5, 7, 100, 255):
        leaves = random_leaves(3 * 255 + 2, arity)
        tree = rotortree.LeanIMT(arity)
        for size in sorted({1, 2, 127, 128, 129, 130, 254, 255, 256, 257, len(leaves)}):
            tree.insert_many(leaves[tree.size:size]) if size > tree.size else None
            assert tree.root == root_of(leaves[:size], arity), (arity, size)


# -- read API ------------------------------------------------------------------


def test_empty_tree():
    tree = rotortree.LeanIMT()
    assert tree.root is None
    assert tree.size == len(tree) == 0
    assert tree.depth == 0
    assert tree.arity == 4 and tree.max_depth == 32
    assert tree.level_len(0) == 0
    with pytest.raises(rotortree.NodeIndexError):
        tree.get_node(0, 0)
    assert "size=0" in repr(tree)


def test_single_leaf_is_the_root():
    leaf = vector_leaf(0)
    tree = rotortree.LeanIMT(2)
    assert tree.insert(leaf) == leaf == tree.root
    assert tree.depth == 0 and tree.level_len(0) == 1


def test_level_len_and_depth_follow_the_spec():
    tree = rotortree.LeanIMT(4)
    tree.insert_many(random_leaves(17))
    assert tree.depth == 3
    assert [tree.level_len(level) for level in range(4)] == [17, 5, 2, 1]
    with pytest.raises(rotortree.NodeIndexError):
        tree.level_len(4)
    with pytest.raises(IndexError):
        tree.get_node(1, 5)


def test_capacity_property():
    assert rotortree.LeanIMT(4, max_depth=3).capacity == 64


# -- input forms ----------------------------------------------------------------


def test_every_leaf_container_gives_the_same_root():
    leaves = random_leaves(33, 3)
    joined = b"".join(leaves)
    expected = root_of(leaves, 4)
    forms = {
        "bytes": joined,
        "bytearray": bytearray(joined),
        "memoryview": memoryview(joined),
        "numpy 2d": np.frombuffer(joined, dtype=np.uint8).reshape(33, 32),
        "numpy 1d": np.frombuffer(joined, dtype=np.uint8),
        "numpy int8": np.frombuffer(joined, dtype=np.int8),
        "list of bytes": leaves,
        "tuple of bytearrays": tuple(bytearray(x) for x in leaves),
        "generator of memoryviews": (memoryview(x) for x in leaves),
        "array of B": array.array("B", joined),
    }
    for name, form in forms.items():
        tree = rotortree.LeanIMT(4)
        assert tree.insert_many(form) == expected, name


def test_insert_accepts_any_32_byte_bytes_like():
    leaf = vector_leaf(5)
    for form in (leaf, bytearray(leaf), memoryview(leaf), np.frombuffer(leaf, np.uint8)):
        tree = rotortree.LeanIMT()
        assert tree.insert(form) == leaf


def test_leaves_are_copied_not_referenced():
    buffer = bytearray(b"".join(random_leaves(10, 1)))
    tree = rotortree.LeanIMT(2)
    root = tree.insert_many(buffer)
    buffer[:] = bytes(len(buffer))
    assert tree.root == root
    assert tree.get_node(0, 0) != bytes(32)


def test_numpy_non_contiguous_rejected():
    array2d = np.zeros((8, 64), dtype=np.uint8)[:, :32]
    tree = rotortree.LeanIMT()
    with pytest.raises(rotortree.InvalidLeafError, match="contiguous"):
        tree.insert_many(array2d)
    assert tree.size == 0


# -- errors leave the tree unchanged ---------------------------------------------


@pytest.fixture
def populated():
    tree = rotortree.LeanIMT(3, max_depth=6)
    tree.insert_many(random_leaves(100, 11))
    return tree


BAD_BATCHES = [
    ("short leaf mid-batch", lambda: random_leaves(5) + [b"x" * 31] + random_leaves(5),
     rotortree.InvalidLeafError, "leaf 5"),
    ("long leaf mid-batch", lambda: random_leaves(5) + [b"x" * 33], rotortree.InvalidLeafError,
     "leaf 5"),
    ("str leaf", lambda: random_leaves(2) + ["a" * 32], rotortree.ArgumentTypeError, "leaf 2"),
    ("int leaf", lambda: [7], rotortree.ArgumentTypeError, "leaf 0"),
    ("None leaf", lambda: random_leaves(1) + [None], rotortree.ArgumentTypeError, "leaf 1"),
    ("ragged buffer", lambda: bytes(32 * 3 + 1), rotortree.InvalidLeafError, "whole number"),
    ("empty bytes", lambda: b"", rotortree.EmptyBatchError, "at least one"),
    ("empty list", lambda: [], rotortree.EmptyBatchError, "at least one"),
    ("str batch", lambda: "a" * 64, rotortree.ArgumentTypeError, "str"),
    ("int batch", lambda: 12, rotortree.ArgumentTypeError, "int"),
    ("numpy float", lambda: np.zeros((2, 4), dtype=np.float64), rotortree.ArgumentTypeError,
     "uint8"),
    ("numpy uint64 (k, 4)", lambda: np.zeros((2, 4), dtype=np.uint64),
     rotortree.ArgumentTypeError, "uint8"),
    ("numpy wrong shape", lambda: np.zeros((2, 16), dtype=np.uint8), rotortree.InvalidLeafError,
     "shape"),
    ("numpy 3-D", lambda: np.zeros((2, 2, 32), dtype=np.uint8), rotortree.InvalidLeafError,
     "3-D"),
    ("past max_depth", lambda: random_leaves(3**6 - 100 + 1), rotortree.MaxDepthExceededError,
     "would exceed the capacity"),
]


@pytest.mark.parametrize("name,make,error,message", BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_bad_batch_changes_nothing(populated, name, make, error, message):
    before = snapshot_state(populated)
    with pytest.raises(error, match=message):
        populated.insert_many(make())
    assert snapshot_state(populated) == before


@pytest.mark.parametrize(
    "leaf,error",
    [(b"x" * 31, rotortree.InvalidLeafError), (b"", rotortree.InvalidLeafError),
     ("a" * 32, rotortree.ArgumentTypeError), (None, rotortree.ArgumentTypeError),
     (32, rotortree.ArgumentTypeError), ([0] * 32, rotortree.ArgumentTypeError)],
)
def test_bad_single_leaf_changes_nothing(populated, leaf, error):
    before = snapshot_state(populated)
    with pytest.raises(error):
        populated.insert(leaf)
    assert snapshot_state(populated) == before


def test_errors_subclass_builtins():
    assert issubclass(rotortree.InvalidLeafError, ValueError)
    assert issubclass(rotortree.MaxDepthExceededError, ValueError)
    assert issubclass(rotortree.EmptyBatchError, ValueError)
    assert issubclass(rotortree.NodeIndexError, IndexError)
    assert issubclass(rotortree.ArgumentTypeError, TypeError)
    assert issubclass(rotortree.OutOfMemoryError, MemoryError)
    for cls in (rotortree.InvalidLeafError, rotortree.NodeIndexError, rotortree.PoolBusyError):
        assert issubclass(cls, rotortree.RotorTreeError)


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda t: t.get_node(0, 100), rotortree.NodeIndexError),
        (lambda t: t.get_node(0, -1), rotortree.NodeIndexError),
        (lambda t: t.get_node(0, 2**70), rotortree.NodeIndexError),
        (lambda t: t.get_node(6, 0), rotortree.NodeIndexError),
        (lambda t: t.get_node(-1, 0), rotortree.NodeIndexError),
        (lambda t: t.get_node(1, 34), rotortree.NodeIndexError),
        (lambda t: t.level_len(99), rotortree.NodeIndexError),
        (lambda t: t.get_node("0", 0), rotortree.ArgumentTypeError),
        (lambda t: t.get_node(0, 1.0), rotortree.ArgumentTypeError),
        (lambda t: t.level_len(True), rotortree.ArgumentTypeError),
    ],
)
def test_out_of_range_reads(populated, call, error):
    before = snapshot_state(populated)
    with pytest.raises(error):
        call(populated)
    assert snapshot_state(populated) == before


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"arity": 1}, rotortree.InvalidArgumentError),
        ({"arity": 256}, rotortree.InvalidArgumentError),
        ({"arity": 0}, ValueError),
        ({"arity": 4.0}, TypeError),
        ({"arity": True}, TypeError),
        ({"arity": "4"}, TypeError),
        ({"max_depth": 0}, ValueError),
        ({"max_depth": 65}, ValueError),
        ({"max_depth": None}, TypeError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        rotortree.LeanIMT(**kwargs)


# -- max_depth edges -------------------------------------------------------------


@pytest.mark.parametrize("arity,max_depth", [(2, 1), (2, 10), (3, 5), (4, 4), (16, 2), (255, 1)])
def test_exact_capacity_fits_and_one_more_fails(arity, max_depth):
    capacity = arity**max_depth
    leaves = random_leaves(capacity, arity)
    tree = rotortree.LeanIMT(arity, max_depth)
    assert tree.insert_many(leaves[:-1]) == root_of(leaves[:-1], arity)
    assert tree.insert(leaves[-1]) == root_of(leaves, arity)
    assert tree.depth == max_depth
    before = snapshot_state(tree)
    with pytest.raises(rotortree.MaxDepthExceededError):
        tree.insert(leaves[0])
    with pytest.raises(rotortree.MaxDepthExceededError):
        tree.insert_many(leaves[:2])
    assert snapshot_state(tree) == before


def test_batch_crossing_capacity_fails_whole():
    tree = rotortree.LeanIMT(2, max_depth=4)
    tree.insert_many(random_leaves(10))
    before = snapshot_state(tree)
    with pytest.raises(rotortree.MaxDepthExceededError):
        tree.insert_many(random_leaves(7))
    assert snapshot_state(tree) == before
    tree.insert_many(random_leaves(6))
    assert tree.size == 16


def test_huge_max_depth_saturates_capacity():
    tree = rotortree.LeanIMT(255, max_depth=64)
    leaves = random_leaves(300)
    assert tree.insert_many(leaves) == root_of(leaves, 255)


@settings(max_examples=40, deadline=None)
@given(
    arity=st.sampled_from([2, 3, 4, 5, 8, 16, 31, 32, 33, 255]),
    steps=st.lists(st.tuples(st.booleans(), st.integers(1, 40)), min_size=1, max_size=25),
    seed=st.integers(0, 2**32),
)
def test_single_and_batch_inserts_interleaved(arity, steps, seed):
    # Single inserts reuse per-level hashing state between calls; batches and
    # snapshots in between must never leave it stale.
    leaves = random_leaves(sum(n for _, n in steps), seed)
    tree = rotortree.LeanIMT(arity, max_depth=64)
    offset = 0
    for single, n in steps:
        if single:
            for leaf in leaves[offset: offset + n]:
                root = tree.insert(leaf)
        else:
            root = tree.insert_many(leaves[offset: offset + n])
        offset += n
        assert root == root_of(leaves[:offset], arity)
        if n % 3 == 0:
            tree.snapshot()
