"""Behaviour at the edges: arity 2 and 255, max_depth 1 and 64, trees at
exactly their capacity, memory needed by huge batches, and a clean
OutOfMemoryError (a MemoryError) instead of a crash when an allocation fails.

Memory of a tree of N leaves at arity a (docs/hardening.md has the table):
levels hold N * a / (a - 1) nodes of 32 bytes, plus a 64-byte header per
chunk of ~128 nodes (1.6 %, 0.8 % more at odd arities whose chunks are
padded to a cache line) and the chunk tables (8 bytes per chunk):

    tree bytes ~= 32 * N * a / (a - 1) * 1.02

A batch also needs its input: 32 * N bytes (read in place, no copy), so a
100M-leaf batch at arity 4 needs ~3.2 GB of input plus ~4.35 GB of tree.
The RSS test measures the real figure on a 2M-leaf batch and extrapolates.

``ROTORTREE_LIMITS_100M=1`` runs the real 100M-leaf batch (about 8 GB at
arity 4; skipped unless the machine has that much available memory).
The out-of-memory tests run in a child process with a lowered address-space
limit (RLIMIT_AS); they skip under ASan (``ROTORTREE_UNDER_ASAN``), whose
shadow memory needs terabytes of address space.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import psutil
import pytest

import rotortree
from rotortree import (
    CheckpointPolicy,
    FlushPolicy,
    InclusionProof,
    LeanIMT,
    MaxDepthExceededError,
    NodeIndexError,
    RotorTree,
)
from reference import build_levels, root_of

ROOT = Path(__file__).resolve().parent.parent
UNDER_ASAN = bool(os.environ.get("ROTORTREE_UNDER_ASAN"))


def leaves_array(n: int, seed: int = 0) -> np.ndarray:
    """n distinct leaves, fast: the index (and a seed) in the first 16 bytes."""
    arr = np.zeros((n, 32), dtype=np.uint8)
    words = arr.view(np.uint64)
    words[:, 0] = np.arange(n, dtype=np.uint64)
    words[:, 1] = seed
    words[:, 2] = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return arr


def tree_bytes(n: int, arity: int) -> float:
    return 32.0 * n * arity / (arity - 1) * 1.02


# -- arity and depth extremes --------------------------------------------------------


@pytest.mark.parametrize("arity,max_depth", [(2, 1), (255, 1), (2, 16), (255, 2), (3, 9),
                                             (16, 4)])
def test_exactly_at_capacity(arity, max_depth):
    capacity = arity**max_depth
    leaves = leaves_array(capacity, seed=arity)
    tree = LeanIMT(arity, max_depth)
    assert tree.capacity == capacity
    # Fill in uneven batches, the last one landing exactly on capacity.
    cut = capacity // 3 + 1
    tree.insert_many(leaves[:cut])
    for i in range(cut, min(cut + 5, capacity - 1)):
        tree.insert(leaves[i].tobytes())
    at = tree.size
    root = tree.insert_many(leaves[at:])
    assert tree.size == capacity and tree.depth == max_depth
    assert root == rotortree.compute_root(leaves, arity)
    if capacity <= 5000:
        assert root == root_of([leaf.tobytes() for leaf in leaves], arity)
    snap = tree.snapshot()
    # Proofs of the first, last and a spread of leaves; every level full.
    indices = sorted({0, 1, capacity // 2, capacity - 2, capacity - 1,
                      *range(0, capacity, max(1, capacity // 300))})
    batch = snap.generate_proofs(indices)
    assert batch.verify() and batch.verify_against(root, capacity)
    last = batch[-1]
    assert last.leaf_index == capacity - 1 and last.verify_against(root, capacity)
    assert all(len(level.siblings) == arity - 1 for level in last.levels)
    consistency = snap.generate_consistency_proof(capacity - 1, rotortree.compute_root(
        leaves[:-1], arity))
    assert consistency.verify()
    old_proof = _proof_in_prefix(leaves[:-1], arity, max_depth, 0)
    assert consistency.update_inclusion_proof(old_proof) == snap.generate_proof(0)
    # Nothing more fits, and the refusals change nothing.
    for attempt in (lambda: tree.insert(bytes(32)), lambda: tree.insert_many(bytes(64)),
                    lambda: tree.insert_many(leaves[:1])):
        with pytest.raises(MaxDepthExceededError, match="full|exceed"):
            attempt()
    assert tree.size == capacity and tree.root == root
    assert tree.snapshot().generate_proofs([capacity - 1]).verify()


def _proof_in_prefix(leaves, arity, max_depth, index) -> InclusionProof:
    tree = LeanIMT(arity, max_depth)
    tree.insert_many(leaves)
    return tree.generate_proof(index)


@pytest.mark.parametrize("arity", [2, 255])
def test_max_depth_64(arity):
    """max_depth 64: the capacity (arity**64) is far beyond any uint64 size;
    the C side saturates it at 2**64 - 1, and trees behave normally."""
    tree = LeanIMT(arity, 64)
    assert tree.capacity == arity**64 and tree.max_depth == 64
    leaves = leaves_array(3000, seed=7)
    tree.insert_many(leaves[:1])
    assert tree.root == leaves[0].tobytes() and tree.depth == 0
    tree.insert_many(leaves[1:])
    assert tree.root == rotortree.compute_root(leaves, arity)
    assert tree.generate_proofs(range(0, 3000, 37)).verify()
    with pytest.raises(NodeIndexError):
        tree.generate_proof(2**64 - 1)
    with pytest.raises(NodeIndexError):
        tree.get_node(64, 0)


@pytest.mark.parametrize("arity", [2, 255])
def test_depth_grows_one_level_at_each_power(arity):
    tree = LeanIMT(arity, 3)
    leaves = [leaf.tobytes() for leaf in leaves_array(arity**2 + 2, seed=arity)]
    depth_at = {}
    for i, leaf in enumerate(leaves):
        tree.insert(leaf)
        depth_at[i + 1] = tree.depth
    assert depth_at[1] == 0 and depth_at[2] == 1 and depth_at[arity] == 1
    assert depth_at[arity + 1] == 2 and depth_at[arity**2] == 2 and depth_at[arity**2 + 1] == 3
    assert tree.root == build_levels(leaves, arity)[-1][0]


def test_durable_tree_at_capacity(tmp_path):
    path = tmp_path / "full"
    leaves = leaves_array(2**6, seed=3)
    with RotorTree.open(path, arity=2, max_depth=6, create=True, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=CheckpointPolicy.manual()) as tree:
        tree.insert_many(leaves[:40])
        tree.checkpoint()
        tree.insert_durable(leaves[40:])
        assert tree.size == tree.capacity == 64
        seq = tree.stats()["seq"]
        with pytest.raises(MaxDepthExceededError, match="exceed"):
            tree.insert(bytes(32))
        with pytest.raises(MaxDepthExceededError):
            tree.insert_durable(leaves[:1])
        assert tree.stats()["seq"] == seq
        root = tree.root
    with RotorTree.open(path, arity=2, max_depth=6) as tree:
        assert tree.size == 64 and tree.root == root == rotortree.compute_root(leaves, 2)
        with pytest.raises(MaxDepthExceededError):
            tree.insert(bytes(32))


# -- memory needed by big batches ------------------------------------------------------

_RSS_CHILD = textwrap.dedent("""
    import json, sys, psutil, numpy as np, rotortree
    n, arity = int(sys.argv[1]), int(sys.argv[2])
    arr = np.zeros((n, 32), dtype=np.uint8)
    arr.view(np.uint64)[:, 0] = np.arange(n, dtype=np.uint64)
    arr[:] = arr  # touch the input before measuring
    proc = psutil.Process()
    tree = rotortree.LeanIMT(arity)
    tree.insert(bytes(32))
    before = proc.memory_info().rss
    tree.insert_many(arr)
    after = proc.memory_info().rss
    print(json.dumps({"bytes": after - before, "input": arr.nbytes}))
""")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan shadow memory distorts RSS")
@pytest.mark.parametrize("arity", [2, 4, 255])
def test_memory_per_leaf_matches_the_documented_formula(arity):
    n = 2_000_000
    env = dict(os.environ, ROTORTREE_MEMORY_CACHE_MB="0", PYTHONPATH=str(ROOT))
    env.pop("LD_PRELOAD", None)
    res = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(n), str(arity)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    measured = json.loads(res.stdout)["bytes"]
    expected = tree_bytes(n, arity)
    per_leaf = measured / n
    print(f"\narity {arity}: {per_leaf:.1f} bytes/leaf measured, {expected / n:.1f} documented;"
          f" 100M leaves -> {per_leaf * 1e8 / 2**30:.2f} GiB of tree + 2.98 GiB of input")
    # Huge-page rounding of the last slab can add up to 2 MiB per level.
    assert 0.85 * expected <= measured <= 1.15 * expected + 8 * 2**21, (measured, expected)


@pytest.mark.skipif(not os.environ.get("ROTORTREE_LIMITS_100M"),
                    reason="set ROTORTREE_LIMITS_100M=1 to insert a real 100M-leaf batch (~8 GB)")
def test_hundred_million_leaf_batch():
    n, arity = 100_000_000, 4
    needed = 32 * n + tree_bytes(n, arity) + (1 << 30)
    available = psutil.virtual_memory().available
    if available < needed:
        pytest.skip(f"needs ~{needed / 2**30:.1f} GiB available, have {available / 2**30:.1f}")
    leaves = leaves_array(n, seed=100)
    proc = psutil.Process()
    tree = LeanIMT(arity)
    before = proc.memory_info().rss
    root = tree.insert_many(leaves)
    grown = proc.memory_info().rss - before
    print(f"\n100M leaves: tree grew RSS by {grown / 2**30:.2f} GiB "
          f"(documented {tree_bytes(n, arity) / 2**30:.2f})")
    assert tree.size == n
    assert root == rotortree.compute_root(leaves, arity)
    assert tree.generate_proofs([0, n // 2, n - 1]).verify()
    assert grown <= 1.15 * tree_bytes(n, arity) + 64 * 2**21


# -- clean MemoryError when allocation fails ----------------------------------------------

_OOM_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import rotortree

    threads, arity, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rotortree.configure(num_threads=threads, parallel_threshold=64)
    arr = np.zeros((n, 32), dtype=np.uint8)
    arr.view(np.uint64)[:, 0] = np.arange(n, dtype=np.uint64)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(arr[:5000])
    # Start the pool's workers now: they must exist before the limit.
    rotortree.LeanIMT(arity).insert_many(arr[:200000])
    snap = tree.snapshot()
    before = (tree.size, tree.root, tree.level_len(0), tree.get_node(1, 3))

    def vm_size():
        for line in open("/proc/self/status"):
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (24 << 20), hard))
    outcome = {}
    for name, call in (("insert_many", lambda: tree.insert_many(arr)),
                       ("insert_many again", lambda: tree.insert_many(arr[:n // 2])),
                       ("compute_root", lambda: rotortree.compute_root(arr, 2)),
                       ("generate_proofs", lambda: snap.generate_proofs(
                           np.zeros(n, dtype=np.uint64)))):
        try:
            call()
            outcome[name] = "ok"
        except rotortree.OutOfMemoryError as error:
            outcome[name] = ("OutOfMemoryError", str(error), isinstance(error, MemoryError))
        except MemoryError as error:
            outcome[name] = ("MemoryError", str(error), True)
    after_failure = (tree.size, tree.root, tree.level_len(0), tree.get_node(1, 3))
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    root = tree.insert_many(arr)
    print(json.dumps({
        "outcome": outcome,
        "unchanged": after_failure == before,
        "recovered": root == rotortree.compute_root(
            np.concatenate([arr[:5000], arr]), arity),
        "size": tree.size,
    }))
""")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan needs far more address space than RLIMIT_AS allows")
@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux",
                    reason="RLIMIT_AS and /proc are Linux-specific")
@pytest.mark.parametrize("threads,arity", [(1, 4), (2, 2), (2, 255)])
def test_allocation_failure_is_a_clean_memory_error(threads, arity):
    n = 2_000_000            # 64 MB of input, ~85-130 MB of tree: over the limit
    env = dict(os.environ, ROTORTREE_MEMORY_CACHE_MB="0", PYTHONPATH=str(ROOT))
    env.pop("LD_PRELOAD", None)
    res = subprocess.run([sys.executable, "-c", _OOM_CHILD, str(threads), str(arity), str(n)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, (
        f"the child died (rc {res.returncode}: a negative rc is a signal, i.e. a crash "
        f"instead of a MemoryError)\nstdout:\n{res.stdout}\nstderr:\n{res.stderr[-4000:]}")
    report = json.loads(res.stdout.strip().splitlines()[-1])
    outcome = report["outcome"]
    print(f"\n{threads} threads, arity {arity}: {outcome}")
    for name in ("insert_many", "insert_many again"):
        kind, message, is_memory_error = outcome[name]
        assert kind == "OutOfMemoryError" and is_memory_error, outcome
        assert "out of memory" in message, message
    assert outcome["compute_root"] == "ok" or outcome["compute_root"][0] == "OutOfMemoryError"
    assert outcome["generate_proofs"] == "ok" or outcome["generate_proofs"][0] in (
        "OutOfMemoryError", "MemoryError")
    assert report["unchanged"], report
    assert report["recovered"] and report["size"] == 5000 + n, report
