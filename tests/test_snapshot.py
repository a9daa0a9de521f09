"""Snapshots: immutable, structurally shared views that outlive change."""

from __future__ import annotations

import gc
import random
import threading

import pytest

import rotortree
from reference import build_levels, root_of


def random_leaves(count: int, seed: int) -> list:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def all_nodes(view) -> list:
    return [[view.get_node(level, i) for i in range(view.level_len(level))]
            for level in range(view.depth + 1)]


@pytest.mark.parametrize("arity", [2, 3, 4, 16, 255])
def test_snapshots_never_change_as_the_tree_grows(arity):
    leaves = random_leaves(3100, arity)
    tree = rotortree.LeanIMT(arity)
    snapshots = []
    offset = 0
    for batch in (1, 1, 5, 120, 7, 1, 600, 129, 1000, 1136):
        tree.insert_many(leaves[offset: offset + batch])
        offset += batch
        snapshots.append((offset, tree.snapshot()))
        if offset % 2:
            tree.insert(leaves[offset])  # single inserts between snapshots too
            offset += 1
    for size, snap in snapshots:
        assert snap.size == len(snap) == size
        assert snap.root == root_of(leaves[:size], arity)
        assert snap.arity == arity
        assert all_nodes(snap) == build_levels(leaves[:size], arity)


def test_empty_snapshot():
    snap = rotortree.LeanIMT().snapshot()
    assert snap.root is None and snap.size == 0 and snap.depth == 0
    assert snap.level_len(0) == 0
    with pytest.raises(rotortree.NodeIndexError):
        snap.get_node(0, 0)
    with pytest.raises(rotortree.NodeIndexError):
        snap.generate_proof(0)
    with pytest.raises(rotortree.EmptyTreeError):
        snap.generate_consistency_proof(1, bytes(32))
    assert len(snap.generate_proofs([])) == 0


def test_snapshot_outlives_its_tree():
    leaves = random_leaves(500, 1)
    tree = rotortree.LeanIMT(4)
    tree.insert_many(leaves)
    snap = tree.snapshot()
    del tree
    gc.collect()
    assert snap.root == root_of(leaves, 4)
    assert all_nodes(snap) == build_levels(leaves, 4)
    assert snap.generate_proof(499).verify()


def test_snapshot_read_errors():
    tree = rotortree.LeanIMT(4)
    tree.insert_many(random_leaves(20, 2))
    snap = tree.snapshot()
    for call, error in [
        (lambda: snap.get_node(0, 20), rotortree.NodeIndexError),
        (lambda: snap.get_node(4, 0), rotortree.NodeIndexError),
        (lambda: snap.get_node(-1, 0), rotortree.NodeIndexError),
        (lambda: snap.level_len(4), rotortree.NodeIndexError),
        (lambda: snap.get_node(0, "1"), rotortree.ArgumentTypeError),
        (lambda: snap.level_len(None), rotortree.ArgumentTypeError),
    ]:
        with pytest.raises(error):
            call()


def test_readers_on_snapshots_while_inserting():
    rotortree.configure(num_threads=2, parallel_threshold=64, par_chunk_size=16)
    arity = 4
    leaves = random_leaves(40_000, 3)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(leaves[:1000])
    done = threading.Event()
    problems = []
    checked = []

    def inserter():
        offset = 1000
        while offset < len(leaves):
            tree.insert_many(leaves[offset: offset + 1300])
            offset += 1300
        done.set()

    def reader(seed):
        rng = random.Random(seed)
        while not done.is_set():
            snap = tree.snapshot()
            indices = [rng.randrange(snap.size) for _ in range(50)]
            batch = snap.generate_proofs(indices)
            if not batch.verify():
                problems.append(("batch", snap.size))
            proof = batch[rng.randrange(50)]
            if proof.root != snap.root or not proof.verify():
                problems.append(("proof", snap.size))
            checked.append((snap.size, snap.root))

    threads = [threading.Thread(target=inserter)] + [
        threading.Thread(target=reader, args=(s,)) for s in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []
    assert checked, "readers never ran"
    for size, root in checked[:: max(1, len(checked) // 20)]:
        assert root == root_of(leaves[:size], arity)
