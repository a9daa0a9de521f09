"""Restoring trees from stored levels and serving cold prefixes in place."""

from __future__ import annotations

import mmap
import random

import pytest

import rotortree
from reference import build_levels, root_of
from rotortree._native import ffi, lib


def random_leaves(count: int, seed: int) -> list:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(count)]


def restore(arity: int, levels: list, borrow: int):
    """A tree restored from `levels` (lists of nodes); returns (tree, keepalive)."""
    tree = rotortree.LeanIMT(arity)
    buffers = [ffi.from_buffer(b"".join(nodes)) for nodes in levels]
    sources = ffi.new("struct rt_level_source[]", len(levels))
    for i, buffer in enumerate(buffers):
        sources[i].nodes = buffer
        sources[i].borrow = borrow
    status = lib.rt_tree_restore(tree._tree, len(levels[0]), sources, len(levels))
    return tree, status, buffers


@pytest.mark.parametrize("arity", [2, 3, 4, 16, 255])
@pytest.mark.parametrize("borrow", [0, 128, 10**9])
def test_restore_then_keep_inserting(arity, borrow):
    leaves = random_leaves(2000, arity)
    tree, status, keep = restore(arity, build_levels(leaves[:1500], arity), borrow)
    assert status == lib.RT_OK
    assert tree.root == root_of(leaves[:1500], arity)
    snap = tree.snapshot()
    tree.insert_many(leaves[1500:1777])
    tree.insert(leaves[1777])
    tree.insert_many(leaves[1778:])
    assert tree.root == root_of(leaves, arity)
    assert [[tree.get_node(l, i) for i in range(tree.level_len(l))]
            for l in range(tree.depth + 1)] == build_levels(leaves, arity)
    assert snap.root == root_of(leaves[:1500], arity)
    assert snap.generate_proof(7).verify()


def test_restore_rejects_bad_shapes_and_stays_empty():
    leaves = random_leaves(100, 1)
    levels = build_levels(leaves, 4)
    tree, status, _ = restore(4, levels[:-1], 0)  # one level missing
    assert status == lib.RT_ERR_INVALID_ARGUMENT
    assert tree.size == 0 and tree.root is None
    tree.insert_many(leaves)
    assert tree.root == root_of(leaves, 4)
    # A tree that already has leaves cannot be restored into.
    sources = ffi.new("struct rt_level_source[]", len(levels))
    buffers = [ffi.from_buffer(b"".join(nodes)) for nodes in levels]
    for i, buffer in enumerate(buffers):
        sources[i].nodes = buffer
    assert lib.rt_tree_restore(tree._tree, 100, sources, len(levels)) == lib.RT_ERR_INVALID_ARGUMENT
    assert tree.root == root_of(leaves, 4)


def test_make_cold_serves_nodes_from_a_mapping(tmp_path):
    arity = 4
    leaves = random_leaves(5000, 9)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(leaves[:3000])
    before = tree.snapshot()
    path = tmp_path / "level0"
    path.write_bytes(b"".join(leaves[:3000]))
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    cold = ffi.new("uint64_t *")
    view = ffi.from_buffer(mapping)
    assert lib.rt_tree_make_cold(tree._tree, 0, view, 3000, cold) == lib.RT_OK
    assert cold[0] == 2944  # whole 128-node chunks, not the chunk of the last node
    assert tree.get_node(0, 0) == leaves[0] and tree.get_node(0, 2943) == leaves[2943]
    tree.insert_many(leaves[3000:])
    assert tree.root == root_of(leaves, arity)
    assert before.root == root_of(leaves[:3000], arity)
    assert tree.generate_proof(5).verify() and tree.generate_proof(4999).verify()
    # Shrinking is refused silently: the prefix stays as it is.
    assert lib.rt_tree_make_cold(tree._tree, 0, view, 128, cold) == lib.RT_OK
    assert cold[0] == 2944
    del tree, before
    ffi.release(view)
    mapping.close()


def test_snapshot_bulk_read():
    leaves = random_leaves(1000, 4)
    tree = rotortree.LeanIMT(3)
    tree.insert_many(leaves)
    snap = tree.snapshot()
    out = ffi.new("uint8_t[]", 32 * 1000)
    assert lib.rt_snapshot_read_nodes(snap._snap, 0, 0, 1000, out) == lib.RT_OK
    assert ffi.buffer(out)[:] == b"".join(leaves)
    assert lib.rt_snapshot_read_nodes(snap._snap, 0, 999, 2, out) == lib.RT_ERR_INDEX
    assert lib.rt_snapshot_read_nodes(snap._snap, 9, 0, 1, out) == lib.RT_ERR_INDEX
    level1 = build_levels(leaves, 3)[1]
    assert lib.rt_snapshot_read_nodes(snap._snap, 1, 100, 200, out) == lib.RT_OK
    assert ffi.buffer(out, 32 * 200)[:] == b"".join(level1[100:300])


def test_restore_reads_the_last_node_apart_when_given():
    leaves = random_leaves(700, 6)
    levels = build_levels(leaves, 4)
    # Every level's final node is stale in the "file"; the real ones are
    # passed separately, as a store that keeps mutable nodes apart does.
    stale = [b"".join(nodes[:-1]) + bytes(32) for nodes in levels]
    buffers = [ffi.from_buffer(data) for data in stale]
    lasts = [ffi.from_buffer(nodes[-1]) for nodes in levels]
    sources = ffi.new("struct rt_level_source[]", len(levels))
    for i in range(len(levels)):
        sources[i].nodes = buffers[i]
        sources[i].borrow = 10**9
        sources[i].last = lasts[i]
    tree = rotortree.LeanIMT(4)
    assert lib.rt_tree_restore(tree._tree, 700, sources, len(levels)) == lib.RT_OK
    assert tree.root == root_of(leaves, 4)
    assert tree.get_node(0, 699) == leaves[699]
