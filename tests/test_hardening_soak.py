"""Concurrency under load: several Python threads insert, snapshot, prove,
verify, reconfigure the pool and drive a durable tree (flushes, tokens,
checkpoints) all at once; afterwards every snapshot's root must equal the
reference root for its size, and nothing may deadlock.

The reference is the pure-Python LeanIMT in tests/reference.py, built once
over the final leaf order (inserts from two writers interleave in an order
only the tree knows; the tree is append-only, so a snapshot of size s must be
the first s final leaves). The root of every prefix is then recomputed from
the reference levels along the right edge (O(depth * arity) hashes each).

``ROTORTREE_SOAK_SECONDS`` sets the load phase (default 20 s; CI runs it as
is, a release check might use 600). A watchdog dumps every thread's stack
and fails the process if the threads do not finish well after the deadline.
"""

from __future__ import annotations

import faulthandler
import os
import random
import sys
import threading
import time
from typing import Dict, List, Tuple

import numpy as np
import pytest

import rotortree
from rotortree import (
    CheckpointPolicy,
    ConsistencyProof,
    FlushPolicy,
    LeanIMT,
    PoolBusyError,
    RotorTree,
)
from rotortree import config as rt_config
from reference import build_levels, hash_parent

SOAK_SECONDS = float(os.environ.get("ROTORTREE_SOAK_SECONDS", "30"))
# Rate limit of the writers: the reference is pure Python, so the final tree
# must stay a size it can rebuild in a second or two.
MAX_LEAVES = int(os.environ.get("ROTORTREE_SOAK_MAX_LEAVES", str(300_000)))


def prefix_root(levels: List[List[bytes]], size: int, arity: int) -> bytes:
    """Root of the first `size` leaves, from the levels of a larger tree:
    only the right edge differs, the nodes before it are complete subtrees."""
    length, carry, level = size, levels[0][size - 1], 0
    while length > 1:
        last = length - 1
        start = last - last % arity
        group = levels[level][start:last] + [carry]
        carry = group[0] if len(group) == 1 else hash_parent(group)
        length = -(-length // arity)
        level += 1
    return carry


def all_leaves(tree) -> List[bytes]:
    snap = tree.snapshot()
    return [snap.get_node(0, i) for i in range(snap.size)]


class Load:
    """Shared state of one soak run; every thread records its failures."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.errors: List[str] = []
        self.counts: Dict[str, int] = {}
        self.snapshots: List[Tuple[int, bytes]] = []          # the LeanIMT
        self.durable_snapshots: List[Tuple[int, bytes]] = []  # the RotorTree

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def count(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def fail(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)
        self.stop.set()

    def thread(self, name, body, *args):
        def run():
            try:
                body(*args)
            except BaseException as error:  # recorded, reported by the test
                import traceback
                self.fail(f"{name}: {type(error).__name__}: {error}\n{traceback.format_exc()}")
        return threading.Thread(target=run, name=name, daemon=True)


def writer(load: Load, tree: LeanIMT, seed: int) -> None:
    rng = random.Random(seed)
    while load.running():
        if tree.size >= MAX_LEAVES:
            time.sleep(0.01)
            tree.insert(rng.randbytes(32))
            load.count("single inserts")
            continue
        kind = rng.random()
        if kind < 0.45:
            tree.insert(rng.randbytes(32))
            load.count("single inserts")
        elif kind < 0.8:
            k = rng.randint(1, 300)
            tree.insert_many(rng.randbytes(32 * k))
            load.count("batches")
        elif kind < 0.9:
            k = rng.randint(1000, 4000)
            batch = np.frombuffer(rng.randbytes(32 * k), dtype=np.uint8).reshape(k, 32)
            tree.insert_many(batch)
            load.count("numpy batches")
        else:
            tree.insert_many([rng.randbytes(32) for _ in range(rng.randint(1, 50))])
            load.count("list batches")
        if rng.random() < 0.05:
            time.sleep(0.001)


def reader(load: Load, tree: LeanIMT, seed: int) -> None:
    rng = random.Random(seed)
    previous = None
    while load.running():
        snap = tree.snapshot()
        size, root = snap.size, snap.root
        load.count("snapshots")
        if not size:
            continue
        with load.lock:
            load.snapshots.append((size, root))
        count = rng.choice((1, 8, 64, 700))
        indices = np.array([rng.randrange(size) for _ in range(count)], dtype=np.uint64)
        batch = snap.generate_proofs(indices)
        if not batch.verify_against(root, size) or not batch.verify():
            load.fail(f"a batch of {count} proofs at size {size} does not verify")
        load.count("proofs", count)
        position = rng.randrange(count)
        proof = batch[position]
        leaf = snap.get_node(0, int(indices[position]))
        if not (proof.verify_against(root, size) and proof.leaf == leaf):
            load.fail(f"proof of leaf {indices[position]} at size {size} is wrong (pure Python)")
        if previous is not None and previous[0] <= size:
            old_size, old_root = previous
            consistency = snap.generate_consistency_proof(old_size, old_root)
            decoded = ConsistencyProof.from_bytes(consistency.to_bytes())
            if not decoded.verify_against(old_root, old_size, root, size):
                load.fail(f"consistency {old_size} -> {size} does not verify")
            load.count("consistency proofs")
        previous = (size, root)
        if rng.random() < 0.02 and size <= 50_000:
            # compute_root over the snapshot's own leaves, on the pool too.
            leaves = b"".join(snap.get_node(0, i) for i in range(size))
            if rotortree.compute_root(leaves, arity=snap.arity) != root:
                load.fail(f"compute_root differs from the snapshot root at size {size}")
            load.count("compute_roots")


def configurer(load: Load, seed: int) -> None:
    """configure() during the load: each call applies, or is refused with
    PoolBusyError (num_threads while a parallel insert runs), never more."""
    rng = random.Random(seed)
    kernels = rt_config.available_kernels()
    while load.running():
        kwargs = {}
        if rng.random() < 0.6:
            kwargs["num_threads"] = rng.randint(1, 3)
        if rng.random() < 0.6:
            kwargs["parallel_threshold"] = rng.choice((1, 16, 256, 1024, 4096))
        if rng.random() < 0.6:
            kwargs["par_chunk_size"] = rng.choice((1, 8, 64, 512))
        if rng.random() < 0.3:
            kwargs["simd"] = rng.choice(kernels + ["auto"])
        try:
            rotortree.configure(**kwargs)
            load.count("configure applied")
            info = rotortree.pool_info()
            if "num_threads" in kwargs and not 1 <= info["num_threads"] <= 3:
                load.fail(f"pool_info after configure: {info}")
        except PoolBusyError as error:
            if "busy" not in str(error):
                load.fail(f"unclear PoolBusyError message: {error}")
            load.count("configure refused (busy)")
        time.sleep(rng.uniform(0.001, 0.02))


def churner(load: Load, seed: int) -> None:
    """Short-lived trees, snapshots and proofs on the side."""
    rng = random.Random(seed)
    while load.running():
        arity = rng.randint(2, 40)
        leaves = rng.randbytes(32 * rng.randint(1, 3000))
        tree = LeanIMT(arity)
        root = tree.insert_many(leaves)
        snap = tree.snapshot()
        del tree
        if rotortree.compute_root(leaves, arity) != root or snap.root != root:
            load.fail(f"churn: roots differ at arity {arity}")
        if not snap.generate_proofs(range(0, snap.size, 97)).verify():
            load.fail("churn: proofs of a dropped tree's snapshot do not verify")
        load.count("churned trees")


def durable_writer(load: Load, tree: RotorTree, seed: int) -> None:
    rng = random.Random(seed)
    tokens = []
    while load.running():
        if tree.size >= MAX_LEAVES // 2:
            time.sleep(0.005)
        kind = rng.random()
        if kind < 0.5:
            k = 1 if tree.size >= MAX_LEAVES // 2 else rng.randint(1, 200)
            _, token = tree.insert_many(rng.randbytes(32 * k))
            tokens.append(token)
        elif kind < 0.7:
            _, token = tree.insert(rng.randbytes(32))
            tokens.append(token)
        elif kind < 0.8:
            tree.insert_durable(rng.randbytes(32 * (1 if tree.size >= MAX_LEAVES // 2
                                                    else rng.randint(1, 50))))
            load.count("durable inserts (insert_durable)")
        elif kind < 0.88:
            tree.flush()
            load.count("durable flushes")
        else:
            snap = tree.snapshot()
            if snap.size:
                with load.lock:
                    load.durable_snapshots.append((snap.size, snap.root))
                index = rng.randrange(snap.size)
                if not snap.generate_proof(index).verify_against(snap.root, snap.size):
                    load.fail(f"durable proof of {index} at size {snap.size} does not verify")
            load.count("durable snapshots")
        if len(tokens) > 50:
            token = tokens.pop(0)
            if not token.wait(timeout=30):
                load.fail(f"token {token.seq} not durable after 30 s (interval flush)")
            tokens = [t for t in tokens if not t.durable]
        load.count("durable writes")
    for token in tokens:
        if not token.wait(timeout=30):
            load.fail(f"token {token.seq} not durable after 30 s")


def checkpointer(load: Load, tree: RotorTree, seed: int) -> None:
    rng = random.Random(seed)
    while load.running():
        time.sleep(rng.uniform(0.01, 0.2))
        if tree.checkpoint():
            load.count("explicit checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("arity", [4])
def test_soak_everything_at_once(tmp_path, arity):
    load = Load(SOAK_SECONDS)
    tree = LeanIMT(arity, max_depth=32)
    durable = RotorTree.open(
        tmp_path / "durable", arity=3, max_depth=32, create=True,
        flush_policy=FlushPolicy.interval(0.005),
        checkpoint_policy=CheckpointPolicy.every_entries(200) | CheckpointPolicy.on_close(),
        mmap_levels=1)
    seed = random.SystemRandom().randrange(2**32)
    threads = [
        load.thread("writer-1", writer, load, tree, seed + 1),
        load.thread("writer-2", writer, load, tree, seed + 2),
        load.thread("reader-1", reader, load, tree, seed + 3),
        load.thread("reader-2", reader, load, tree, seed + 4),
        load.thread("configure", configurer, load, seed + 5),
        load.thread("churn", churner, load, seed + 6),
        load.thread("durable", durable_writer, load, durable, seed + 7),
        load.thread("checkpoint", checkpointer, load, durable, seed + 8),
    ]
    # Last resort against a hang: dump every stack and end the process.
    grace = 120 + SOAK_SECONDS
    faulthandler.dump_traceback_later(grace, exit=True, file=sys.stderr)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=max(1.0, load.deadline - time.monotonic() + 60))
        stuck = [thread.name for thread in threads if thread.is_alive()]
        if stuck:
            faulthandler.dump_traceback(file=sys.stderr)
        assert not stuck, f"threads still running 60 s after the deadline (deadlock?): {stuck}"
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not load.errors, f"seed {seed}:\n" + "\n".join(load.errors[:10])

    # Every snapshot against the reference built over the final leaf order.
    leaves = all_leaves(tree)
    levels = build_levels(leaves, arity)
    assert tree.root == levels[-1][0]
    for level, nodes in enumerate(levels):
        assert tree.level_len(level) == len(nodes)
        assert [tree.get_node(level, i) for i in range(len(nodes))] == nodes, level
    wrong = [(size, root.hex()) for size, root in load.snapshots
             if prefix_root(levels, size, arity) != root]
    assert not wrong, f"seed {seed}: snapshot roots differ from the reference: {wrong[:5]}"

    # The durable tree: close (flush + checkpoint), reopen, same tree; and
    # every snapshot taken during the load against its reference.
    final_root, final_size = durable.root, durable.size
    durable_leaves = all_leaves(durable)
    durable.close()
    reopened = RotorTree.open(tmp_path / "durable", arity=None, max_depth=None)
    try:
        assert (reopened.size, reopened.root) == (final_size, final_root)
        assert all_leaves(reopened) == durable_leaves
    finally:
        reopened.close()
    if durable_leaves:
        durable_levels = build_levels(durable_leaves, 3)
        assert durable_levels[-1][0] == final_root
        wrong = [(size, root.hex()) for size, root in load.durable_snapshots
                 if prefix_root(durable_levels, size, 3) != root]
        assert not wrong, f"seed {seed}: durable snapshot roots differ: {wrong[:5]}"

    counts = load.counts
    print(f"\nsoak {SOAK_SECONDS:.0f} s (seed {seed}): {tree.size} leaves, "
          f"{len(load.snapshots)} snapshots checked, durable {final_size} leaves; {counts}")
    for what in ("snapshots", "proofs", "batches", "single inserts", "churned trees",
                 "durable writes", "configure applied"):
        assert counts.get(what, 0) > 0, f"no {what} during the soak: {counts}"


def test_buffer_mutated_during_insert_never_corrupts_the_tree():
    """insert_many reads the caller's buffer without a copy (the GIL is
    released). A caller that keeps writing to the buffer gets an unspecified
    mix of old and new leaves, but the tree must stay self-consistent: the
    leaves it stores are the ones it hashed (rotortree.h: "it is copied
    before hashing"). Checked by recomputing the root from the stored leaves.
    Odd trials start from a tree whose last group is partial, so the batch's
    first parent mixes stored and new leaves."""
    rotortree.configure(num_threads=2, parallel_threshold=1024)
    n = 1 << 18
    inconsistent = []
    for trial in range(4):
        arr = np.random.default_rng(trial).integers(0, 256, size=(n, 32), dtype=np.uint8)
        stop = threading.Event()

        def mutate():
            while not stop.is_set():
                np.add(arr, 1, out=arr)  # releases the GIL

        thread = threading.Thread(target=mutate)
        thread.start()
        try:
            time.sleep(0.005)
            tree = LeanIMT(4)
            if trial % 2:
                tree.insert_many(bytes(range(32)) * 3)
            tree.insert_many(arr)
        finally:
            stop.set()
            thread.join()
        stored = b"".join(all_leaves(tree))
        if rotortree.compute_root(stored, arity=4) != tree.root:
            inconsistent.append(trial)
    assert not inconsistent, f"trials whose stored leaves do not hash to the root: {inconsistent}"
