"""The storing lane kernels: insert_many's level 0 written by the kernel from
the registers it hashed (AVX2, AVX-512), instead of through a staging copy.

* The C driver tests/c/test_storing.c, under AddressSanitizer and
  UndefinedBehaviorSanitizer: copy == children, parents == the portable
  kernel's, for arities 2..40 and wide ones, lane-group remainders,
  aligned and unaligned destinations.
* Whole trees under every kernel at 1 and 2 threads, in batches that start
  and stop on chunk boundaries and inside them: the stored leaves are the
  caller's and the root is the reference's.
* A thread flipping the caller's leaves while insert_many runs: whatever
  bytes the tree stored, they must hash to the parents it computed (every
  proof verifies, compute_root of the stored leaves is the root). A kernel
  that read a leaf once to hash and again to store would fail this.
"""

from __future__ import annotations

import re
import subprocess
import threading

import numpy as np
import pytest

import rotortree
from rotortree import config as rt_config

from c_build import (ASAN_UBSAN, DRIVERS, HASH_SOURCES, build_drivers,  # noqa: F401
                     asan_ubsan_env, cc, sanitizer_prefix, summary)
from reference import root_of

STORING_KERNELS = {"avx2", "avx512"}
CHUNK_NODES = 128  # RT_CHUNK_TARGET_NODES: level chunks hold about this many nodes
# A kernel that reads a leaf twice is caught only if a flip lands between
# the two reads. With one substituted (hash from the caller, then copy from
# the caller), two batches let it pass at one thread; six failed it at
# every arity tested here.
INSERTS_WHILE_FLIPPING = 6


@pytest.mark.slow
def test_storing_driver_under_sanitizers(cc, tmp_path):  # noqa: F811 (cc is a fixture)
    env = asan_ubsan_env()
    prefix = sanitizer_prefix(cc, ASAN_UBSAN, tmp_path, "ASan/UBSan", env, 120)
    binary = build_drivers(cc, ASAN_UBSAN, tmp_path / "build", [DRIVERS / "test_storing.c"],
                           HASH_SOURCES)["test_storing"]
    run = subprocess.run(prefix + [str(binary)], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    passed, failed = summary(run)
    assert passed > 0 and failed == 0
    # Every storing kernel the extension could dispatch to was tested.
    tested = re.search(r"kernels tested:(.*)", run.stdout)
    assert tested is not None
    assert set(tested.group(1).split()) == STORING_KERNELS & set(rt_config.available_kernels())


def random_leaves(rng, count):
    return rng.integers(0, 256, (count, 32), dtype=np.uint8)


@pytest.mark.parametrize("rule", ["rotortree-0.15", "leanimt"])
@pytest.mark.parametrize("arity", [2, 3, 4, 5, 16, 17, 40])
def test_batches_on_and_off_chunk_boundaries(arity, rule):
    """Batches cut at level-0 chunk boundaries, one leaf either side of them,
    and mid-group, so runs start and stop everywhere the kernel's run
    splitting can put them; every kernel, 1 and 2 threads."""
    rng = np.random.default_rng(arity)
    chunk = rotortree_chunk_capacity(arity)
    cuts = sorted({c for k in (1, 2, 3, 5) for c in (k * chunk - 1, k * chunk, k * chunk + 1)}
                  | {arity + 1, 2 * arity - 1, 7 * chunk // 2})
    total = cuts[-1] + 3 * chunk + arity // 2
    leaves = random_leaves(rng, total)
    expected = root_of([bytes(x) for x in leaves], arity, rule=rule)
    bounds = [0] + cuts + [total]
    for kernel in rt_config.available_kernels():
        for threads in (1, 2):
            rt_config.configure(simd=kernel, num_threads=threads, parallel_threshold=1,
                                par_chunk_size=1)
            tree = rotortree.LeanIMT(arity=arity, rule=rule)
            for lo, hi in zip(bounds, bounds[1:]):
                tree.insert_many(leaves[lo:hi])
            assert tree.leaves() == leaves.tobytes(), (kernel, threads)
            assert bytes(tree.root) == expected, (kernel, threads)


def rotortree_chunk_capacity(arity: int) -> int:
    """Level chunks' capacity: the smallest multiple of the arity holding
    CHUNK_NODES (rt_chunk_capacity in csrc/level.c)."""
    return -(-CHUNK_NODES // arity) * arity


@pytest.mark.slow
@pytest.mark.parametrize("arity", [2, 4, 7, 16])
def test_leaves_changed_during_insert_many_still_hash_to_their_parents(arity):
    """A thread keeps inverting the caller's leaves while insert_many reads
    them. The tree may store any mix of old and new bytes, but what it stores
    must be what it hashed."""
    rng = np.random.default_rng(1000 + arity)
    count = 60_000
    leaves = random_leaves(rng, count)
    words = leaves.view(np.uint64)
    available = rt_config.available_kernels()
    # The storing kernels, and the fastest kernel that stages (the staging
    # path is the same code whichever kernel hashes).
    staging = [k for k in available if k not in STORING_KERNELS][-1]
    for kernel in [k for k in available if k in STORING_KERNELS] + [staging]:
        for threads in (1, 2):
            rt_config.configure(simd=kernel, num_threads=threads)
            tree = rotortree.LeanIMT(arity=arity)
            tree.insert_many(leaves[:arity + 1])  # old leaves share the batch's first parent
            stop = threading.Event()
            flips = [0]

            def flip():
                while not stop.is_set():
                    np.invert(words, out=words)
                    flips[0] += 1

            flipper = threading.Thread(target=flip)
            flipper.start()
            try:
                for _ in range(INSERTS_WHILE_FLIPPING):
                    tree.insert_many(leaves[arity + 1:])
            finally:
                stop.set()
                flipper.join()
            assert flips[0] > 0
            stored = np.frombuffer(tree.leaves(), dtype=np.uint8).reshape(-1, 32)
            root = rotortree.compute_root(stored, arity=arity)
            assert root == bytes(tree.root), (kernel, threads)
            snapshot = tree.snapshot()
            assert snapshot.generate_proofs(np.arange(len(stored))).verify(), (kernel, threads)
