"""Regressions from a hostile review of the leaf index (issue 17): a batch
buffer changed while a unique insert runs, and the durable tree's missing
skip mode."""

from __future__ import annotations

import os
import threading

import blake3
import pytest

from rotortree import CheckpointPolicy, FlushPolicy, LeanIMT, NoLeafIndexError, RotorTree


def leaf(i: int) -> bytes:
    return blake3.blake3(b"review" + i.to_bytes(8, "little")).digest()


def first_positions(leaves):
    out = {}
    for position, value in enumerate(leaves):
        out.setdefault(value, position)
    return out


def test_unique_insert_index_matches_the_leaves_while_another_thread_writes_the_buffer():
    # The C call releases the GIL; another thread rewriting the bytearray
    # meanwhile made the index (staged from one read of the batch) disagree
    # with the leaves (copied by a second read): has() then missed leaves
    # that are in the tree. Whatever the buffer holds at each moment, the
    # index must describe the leaves actually inserted.
    count = 100_000
    buffer = bytearray(os.urandom(32 * count))
    stop = threading.Event()

    def scribble():
        i = 0
        while not stop.is_set():
            k = (i * 7919) % count
            buffer[32 * k:32 * k + 8] = os.urandom(8)
            i += 1

    writer = threading.Thread(target=scribble)
    writer.start()
    try:
        for _ in range(3):
            tree = LeanIMT(4, 32, index=True)
            tree.insert_many(buffer, unique=True)   # random leaves: no duplicates
            snap = tree.snapshot()
            leaves = b"".join(snap.get_node(0, i) for i in range(snap.size))
            assert bytes(tree.contains_many(leaves)) == b"\x01" * count
            assert tree.index_of_many(leaves).tolist() == list(range(count))
    finally:
        stop.set()
        writer.join()


def manual(path, **kwargs):
    kwargs.setdefault("flush_policy", FlushPolicy.manual())
    kwargs.setdefault("checkpoint_policy", CheckpointPolicy.manual())
    return RotorTree.open(path, **kwargs)


def test_durable_insert_new_skips_duplicates_logs_only_new_leaves_and_recovers(tmp_path):
    path = tmp_path / "t"
    plain = LeanIMT(4, 32)
    with manual(path, create=True, index=True) as tree:
        tree.insert_many([leaf(0), leaf(1)])
        root, token, dropped = tree.insert_new([leaf(1), leaf(2), leaf(2), leaf(3), leaf(0)])
        assert dropped == [0, 2, 4]
        assert root == plain.insert_many([leaf(0), leaf(1), leaf(2), leaf(3)])
        assert tree.size == 4 and tree.index_of(leaf(3)) == 3
        # nothing new: nothing logged, the current root, the last entry's token
        seq = token.seq
        again, token2, dropped2 = tree.insert_new([leaf(3), leaf(0)])
        assert (again, token2.seq, dropped2) == (root, seq, [0, 1])
        tree.flush()
        assert token2.durable
    with manual(path) as tree:
        assert tree.size == 4 and tree.root == root
        assert first_positions([tree.get_node(0, i) for i in range(4)]) == {
            leaf(i): i for i in range(4)}
        assert tree.has(leaf(2)) and not tree.has(leaf(4))


def test_durable_insert_new_needs_the_index(tmp_path):
    with manual(tmp_path / "t", create=True) as tree:
        with pytest.raises(NoLeafIndexError):
            tree.insert_new([leaf(0)])
        assert tree.size == 0


def test_durable_tree_reports_its_index_size(tmp_path):
    # The durable tree keeps the index "as LeanIMT does", but lacked the
    # call that says what it costs (the memory target is per leaf).
    with manual(tmp_path / "t", create=True, index=True) as tree:
        tree.insert_many([leaf(i) for i in range(100)] + [leaf(0)])
        stats = tree.index_stats()
        assert stats["entries"] == 100 and stats["slot_bytes"] == 4
        assert stats["bytes"] == stats["slots"] * 4 and stats["slots"] * 3 // 4 >= 100
    with manual(tmp_path / "u", create=True) as tree:
        with pytest.raises(NoLeafIndexError):
            tree.index_stats()
