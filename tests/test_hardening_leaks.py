"""Leaks: creating and dropping 100k trees, snapshots and proofs (and big
trees, and durable trees) leaves resident memory, file descriptors and
threads flat.

Robust measurement: the first rounds warm up (Python's allocator arenas,
the C core's slab and mapping caches, the pool's threads); growth is then
measured between two later rounds, after ``gc.collect()``. A leak of even
a few dozen bytes per iteration would show as megabytes here. valgrind
memcheck over the C driver (tests/test_c_core.py) covers the C side byte
for byte; this test covers the Python objects that own C memory (ffi.gc
handles, keepalives, proof batches, durable trees' maps and threads).

Skipped under ASan (``ROTORTREE_UNDER_ASAN``): its quarantine holds freed
memory on purpose.
"""

from __future__ import annotations

import gc
import os
import random
import threading

import psutil
import pytest

import rotortree
from rotortree import CheckpointPolicy, ConsistencyProof, FlushPolicy, InclusionProof, LeanIMT

pytestmark = pytest.mark.skipif(bool(os.environ.get("ROTORTREE_UNDER_ASAN")),
                                reason="ASan's quarantine keeps freed memory resident")

PROC = psutil.Process()
MIB = 1 << 20


def rss() -> int:
    gc.collect()
    return PROC.memory_info().rss


def small_round(rng: random.Random, iterations: int, leaves: bytes) -> None:
    """`iterations` trees, snapshots and proof batches, all dropped."""
    for i in range(iterations):
        arity = 2 + i % 7
        count = 1 + rng.randrange(40)
        tree = LeanIMT(arity)
        tree.insert_many(leaves[:32 * count])
        snap = tree.snapshot()
        if i % 3 == 0:
            del tree                      # the snapshot outlives its tree
        batch = snap.generate_proofs((0, count - 1))
        if i % 5 == 0:
            proof = batch[-1]
            InclusionProof.from_bytes(proof.to_bytes()).verify()
            assert batch.verify()
        if i % 11 == 0 and count > 1:
            consistency = snap.generate_consistency_proof(1, leaves[:32])
            ConsistencyProof.from_bytes(consistency.to_bytes())


@pytest.mark.slow
def test_100k_trees_snapshots_and_proofs_leave_rss_flat():
    rng = random.Random(1)
    leaves = rng.randbytes(32 * 64)
    rounds, per_round = 5, 20_000          # 100k of each in all
    samples = []
    for _ in range(rounds):
        small_round(rng, per_round, leaves)
        samples.append(rss())
    growth = samples[-1] - samples[1]
    per_iteration = growth / (per_round * (rounds - 2))
    print(f"\nRSS after each round of {per_round}: {[s // MIB for s in samples]} MiB; "
          f"growth after warm-up {growth / MIB:.2f} MiB ({per_iteration:.1f} B/iteration)")
    assert growth < 3 * MIB, f"RSS grew {growth / MIB:.1f} MiB over {per_round * 3} iterations"


def test_big_trees_and_their_snapshots_are_released():
    """Trees large enough for huge-page mapped slabs (and the mapping cache
    that recycles them): after warm-up, making and dropping more of them,
    with snapshots outliving them, does not grow RSS."""
    leaves = random.Random(2).randbytes(32 * 300_000)
    samples = []
    for _ in range(6):
        for arity in (2, 4, 16):
            tree = LeanIMT(arity)
            tree.insert_many(leaves)
            snap = tree.snapshot()
            tree.insert_many(leaves[:32 * 1000])   # copy-on-write of shared chunks
            del tree
            assert snap.generate_proofs(range(0, 300_000, 30_011)).verify()
            del snap
            assert rotortree.compute_root(leaves, arity)
        samples.append(rss())
    growth = samples[-1] - samples[2]
    print(f"\nRSS after each round of 3 big trees: {[s // MIB for s in samples]} MiB")
    assert growth < 8 * MIB, f"RSS grew {growth / MIB:.1f} MiB over 3 rounds of big trees"


def test_durable_trees_release_memory_files_and_threads(tmp_path):
    leaves = random.Random(3).randbytes(32 * 2000)

    def cycle(i: int) -> None:
        tree = rotortree.RotorTree.open(
            tmp_path / f"t{i % 3}", arity=4, create=True,
            flush_policy=FlushPolicy.interval(0.01) if i % 2 else FlushPolicy.manual(),
            checkpoint_policy=CheckpointPolicy.every_entries(3) | CheckpointPolicy.on_close(),
            mmap_levels=i % 3)
        with tree:
            tree.insert_many(leaves[:32 * (1 + i % 1000)])
            _, token = tree.insert(leaves[:32])
            tree.insert_durable(leaves[32:64])
            token.wait(timeout=10)
            snap = tree.snapshot()
        assert snap.generate_proofs([0, snap.size - 1]).verify()   # outlives the close

    for i in range(15):                      # warm-up
        cycle(i)
    base_rss, base_fds, base_threads = rss(), PROC.num_fds(), threading.active_count()
    for i in range(15, 60):
        cycle(i)
    growth = rss() - base_rss
    print(f"\n45 durable open/insert/close cycles: RSS {growth / MIB:+.2f} MiB, "
          f"fds {PROC.num_fds() - base_fds:+d}, threads {threading.active_count() - base_threads:+d}")
    assert PROC.num_fds() <= base_fds, "file descriptors leaked"
    assert threading.active_count() <= base_threads, "background threads leaked"
    assert growth < 6 * MIB, f"RSS grew {growth / MIB:.1f} MiB over 45 durable cycles"
