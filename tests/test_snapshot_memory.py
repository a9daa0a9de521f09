"""Memory under snapshot churn: a writer that publishes ``tree.snapshot()``
after every insert and drops the previous one must grow by about what the
tree itself grows, not by a copied chunk per level per insert.

Measured with the C core's own accounting (``rotortree.memory_stats()``,
bytes of level storage alive), which is deterministic where RSS is not;
``bench/snapshot_churn.py`` measures RSS for the full-size patterns.
"""

from __future__ import annotations

import gc
import os

import pytest

import rotortree

# Slabs grow geometrically (a new slab holds as many chunks as its level
# already has), so level storage can run up to twice the nodes it holds;
# chunk headers add 1.6%. Three times the tree's own growth covers both.
FACTOR = 3
# Per level: the partly filled chunk being appended to, the smallest slab,
# and the chunks a snapshot generation copies. Far below one lost chunk per
# insert, which is what the bound guards against.
ALLOWANCE = 1 << 20


def own_growth(arity: int, leaves: int) -> float:
    """Bytes the tree's levels need for `leaves` more leaves: 32 per node,
    arity / (arity - 1) nodes per leaf over all levels."""
    return 32 * arity / (arity - 1) * leaves


def held() -> int:
    gc.collect()
    return rotortree.memory_stats()["chunk_bytes"]


def grown_tree(arity: int, size: int) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(os.urandom(32 * size))
    return tree


@pytest.mark.parametrize("arity, base, batches, batch", [
    (4, 20_000, 20_000, 1),   # single inserts, as in the issue (reduced)
    (2, 20_000, 2_000, 16),   # 16-leaf batches at arity 2
    (16, 5_000, 10_000, 1),
    (3, 2_000, 5_000, 3),     # odd arity: chunk capacity not a power of two
])
def test_snapshot_per_insert_grows_like_the_tree(arity, base, batches, batch):
    tree = grown_tree(arity, base)
    snap = tree.snapshot()
    data = os.urandom(32 * batch * batches)
    before = held()
    for i in range(batches):
        if batch == 1:
            tree.insert(data[32 * i: 32 * i + 32])
        else:
            tree.insert_many(data[32 * batch * i: 32 * batch * (i + 1)])
        snap = tree.snapshot()  # readers get the new one; the old one is dropped
    grown = held() - before
    bound = FACTOR * own_growth(arity, batches * batch) + ALLOWANCE
    assert grown <= bound, (
        f"level storage grew by {grown} bytes for {batches * batch} leaves "
        f"(bound {bound:.0f}, {grown / (batches * batch):.0f} bytes per leaf)")
    # The snapshot still reads what it saw.
    assert snap.root == tree.root
    assert snap.size == base + batches * batch


def test_copies_of_dropped_snapshots_are_reused():
    """Readers holding many snapshots at once: each holds its own copy of
    every level's last chunk, so the peak is large, but once they are
    dropped those copies serve the next round. Level storage then stops at
    the first round's peak plus the tree's growth, where before every round
    added its copies again (freed chunks stay in a slab another chunk pins,
    ready for reuse, so storage between rounds stays near the peak)."""
    arity, per_round, rounds = 4, 500, 5
    tree = grown_tree(arity, 20_000)
    data = os.urandom(32 * per_round * rounds)

    def round_peak(r):
        held_snaps = []
        for i in range(per_round):
            at = 32 * (r * per_round + i)
            tree.insert(data[at: at + 32])
            held_snaps.append(tree.snapshot())
        assert held_snaps[0].size + per_round - 1 == held_snaps[-1].size
        return held()

    first_peak = round_peak(0)
    last_peak = max(round_peak(r) for r in range(1, rounds))
    grown = last_peak - first_peak
    bound = FACTOR * own_growth(arity, per_round * (rounds - 1)) + ALLOWANCE
    assert grown <= bound, f"peak grew by {grown} bytes over {rounds - 1} rounds (bound {bound:.0f})"
    stats = rotortree.memory_stats()
    assert 0 < stats["free_chunk_bytes"] <= stats["chunk_bytes"]


def test_dropping_tree_and_snapshots_returns_level_storage():
    """Free chunks must not keep their slabs alive: once the tree and every
    snapshot are gone, the storage they used is released."""
    before = held()
    tree = grown_tree(4, 30_000)
    snaps = []
    for i in range(300):
        tree.insert(os.urandom(32))
        snaps.append(tree.snapshot())
        if i % 3:
            snaps.pop(0)
    assert held() > before
    del tree
    assert held() > before  # the snapshots still hold chunks
    snaps.clear()
    assert held() <= before
