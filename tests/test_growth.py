"""Growing trees (issue 15): memory for the next batch is pre-faulted in the
background; that must never change what the tree holds, across snapshots
and fork()."""

from __future__ import annotations

import os
import random

import pytest

import rotortree

# Enough leaves that level 0 takes several MiB per batch, which is what
# asks for pre-faulting (smaller growth is not worth it).
BATCH = 70_000


def batch_bytes(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(32 * count)


@pytest.mark.parametrize("threads", [1, 2])
def test_batches_into_prefaulted_memory_keep_every_root(threads):
    rotortree.configure(num_threads=threads)   # conftest restores the pool afterwards
    tree = rotortree.LeanIMT(4)
    data = b""
    snapshots = []
    for number in range(5):
        part = batch_bytes(BATCH + number * 1_001, number)
        data += part
        assert tree.insert_many(part) == rotortree.compute_root(data, 4)
        snapshots.append((tree.snapshot(), rotortree.compute_root(data, 4), len(data) // 32))
        tree.insert(bytes(32))   # a single insert lands in the pre-faulted slab too
        data += bytes(32)
    for snap, root, size in snapshots:
        assert snap.root == root and snap.size == size
        assert snap.generate_proof(size - 1).verify_against(root, size)
    assert tree.root == rotortree.compute_root(data, 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is not available")
def test_a_child_forked_after_prefaulting_grows_its_tree():
    tree = rotortree.LeanIMT(4)
    data = batch_bytes(BATCH, 1)
    tree.insert_many(data)   # starts the background pre-faulting
    pid = os.fork()
    if pid == 0:  # the child: its own pre-faulting, from a clean state
        status = 1
        try:
            more = data
            for seed in (2, 3):
                part = batch_bytes(BATCH, seed)
                more += part
                if tree.insert_many(part) != rotortree.compute_root(more, 4):
                    break
            else:
                status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    part = batch_bytes(BATCH, 9)
    assert tree.insert_many(part) == rotortree.compute_root(data + part, 4)
