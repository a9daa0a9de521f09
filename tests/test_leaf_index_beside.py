"""Indexed inserts that stage their batch in the index while the tree hashes
it (csrc/leaf_index.c, rt_index_beside): unique inserts, and plain inserts
of a batch nobody can change (``bytes``). Two threads and one-parent work
units put batches of a few hundred leaves on that path; the index it builds
must be the one the sequential path builds, and a batch it refuses after
hashing must leave the tree, its index and its snapshots as they were."""

from __future__ import annotations

import numpy as np
import pytest

import rotortree
from rotortree import DuplicateLeafError, LeanIMT


@pytest.fixture
def beside():
    rotortree.configure(num_threads=2, parallel_threshold=64, par_chunk_size=1)


def first_positions(leaves):
    first = {}
    for position, value in enumerate(leaves):
        first.setdefault(value, position)
    return first


def check_index(tree, probes, leaves):
    first = first_positions(leaves)
    want = [first.get(p, -1) for p in probes]
    assert tree.index_of_many(probes).tolist() == want
    assert list(tree.contains_many(b"".join(probes))) == [int(w >= 0) for w in want]


def test_a_stable_batch_is_indexed_as_a_copied_one(beside):
    rng = np.random.default_rng(17)
    distinct = rng.integers(0, 256, size=(3000, 32), dtype=np.uint8)
    probes = [row.tobytes() for row in distinct]
    stable = LeanIMT(4, 20, index=True)
    copied = LeanIMT(4, 20, index=True)
    leaves = []
    # Repeats inside batches and across them; the table grows on the first
    # batches (a new table filled beside the hashing) and not on the last.
    for size in (700, 2500, 1200, 600):
        data = distinct[rng.integers(0, len(distinct), size=size)]
        stable.insert_many(data.tobytes())              # staged beside the hashing
        copied.insert_many(bytearray(data.tobytes()))   # indexed after it
        leaves += [row.tobytes() for row in data]
        assert stable.root == copied.root == rotortree.compute_root(b"".join(leaves), 4)
        assert stable.index_stats() == copied.index_stats()
        assert stable.index_stats()["entries"] == len(set(leaves))
        check_index(stable, probes, leaves)


@pytest.mark.parametrize("start", [0, 3000])
def test_a_refused_unique_batch_changes_nothing(beside, start):
    # start 0: the batch needs a new table; 3000: it fits the current one.
    rng = np.random.default_rng(start + 1)
    base = [row.tobytes() for row in rng.integers(0, 256, size=(start, 32), dtype=np.uint8)]
    tree = LeanIMT(4, 20, index=True)
    if base:
        tree.insert_many(b"".join(base))
        tree.insert_many(b"".join(base[:10]))  # plain inserts keep repeats
    leaves = base + base[:10]
    snap = tree.snapshot()
    before = (tree.root, tree.size, tree.index_stats())
    fresh = [row.tobytes() for row in rng.integers(0, 256, size=(2000, 32), dtype=np.uint8)]
    # A repeat inside the batch, and (with a tree) one of the tree's leaves:
    # both found while the nodes were being hashed.
    batch = fresh + [fresh[5]] + base[7:8]
    with pytest.raises(DuplicateLeafError) as info:
        tree.insert_many(b"".join(batch), unique=True)
    assert info.value.positions == [2000] + ([2001] if base else [])
    assert (tree.root, tree.size, tree.index_stats()) == before
    assert snap.size == len(leaves) and snap.root == before[0]
    check_index(tree, fresh + base[:20], leaves)
    check_index(snap, fresh + base[:20], leaves)
    # The same batch, new leaves only: the refused attempt left no trace.
    root, dropped = tree.insert_new(b"".join(batch))
    assert dropped == info.value.positions
    leaves += fresh
    assert root == tree.root == rotortree.compute_root(b"".join(leaves), 4)
    check_index(tree, fresh + base[:20], leaves)
    check_index(snap, fresh + base[:20], base + base[:10])
    # And a unique batch with no repeat goes in whole.
    more = [row.tobytes() for row in rng.integers(0, 256, size=(900, 32), dtype=np.uint8)]
    tree.insert_many(b"".join(more), unique=True)
    leaves += more
    assert tree.root == rotortree.compute_root(b"".join(leaves), 4)
    assert tree.index_stats()["entries"] == len(set(leaves))
    check_index(tree, more + fresh[:5], leaves)
