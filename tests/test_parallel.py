"""The pool path: byte equality with the sequential path, concurrency, fork."""

from __future__ import annotations

import os
import random
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rotortree
from conftest import kernels
from reference import root_of


def random_bytes(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(32 * count)


def as_leaves(data: bytes) -> list:
    return [data[i: i + 32] for i in range(0, len(data), 32)]


def roots_under(threads, threshold, chunk, arity, data, batches):
    rotortree.configure(num_threads=threads, parallel_threshold=threshold, par_chunk_size=chunk)
    tree = rotortree.LeanIMT(arity)
    offset, roots = 0, []
    for batch in batches:
        roots.append(tree.insert_many(data[32 * offset: 32 * (offset + batch)]))
        offset += batch
    return roots


@settings(max_examples=40, deadline=None)
@given(
    arity=st.integers(2, 33),
    batches=st.lists(st.integers(1, 5000), min_size=1, max_size=4),
    threads=st.sampled_from([2, 3, 4]),
    threshold=st.sampled_from([1, 2, 7, 64, 1024]),
    chunk=st.sampled_from([1, 2, 3, 64, 100]),
    seed=st.integers(0, 2**32),
)
def test_parallel_equals_sequential(arity, batches, threads, threshold, chunk, seed):
    data = random_bytes(sum(batches), seed)
    sequential = roots_under(1, 1024, 64, arity, data, batches)
    parallel = roots_under(threads, threshold, chunk, arity, data, batches)
    assert parallel == sequential
    assert sequential[-1] == root_of(as_leaves(data), arity)


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("arity", [2, 3, 4, 8, 16, 255])
def test_large_batch_all_thread_counts(threads, arity):
    data = random_bytes(200_003, arity)
    rotortree.configure(num_threads=1)
    expected = rotortree.LeanIMT(arity).insert_many(data)
    rotortree.configure(num_threads=threads, parallel_threshold=1)
    assert rotortree.LeanIMT(arity).insert_many(data) == expected
    assert rotortree.compute_root(data, arity) == expected


@pytest.mark.parametrize("kernel", kernels())
def test_every_kernel_every_arity_one_and_two_threads(kernel):
    """Random trees of every arity 2-40 under each kernel this CPU runs, at 1
    and 2 threads, grown in uneven batches so lane groups, padded remainders,
    lone parents and multi-chunk messages (arity >= 32) all occur, equal the
    reference. A kernel the CPU lacks is not listed, so it is not run here;
    test_config.py checks the list against the CPU's flags."""
    for arity in range(2, 41):
        data = random_bytes(3 * arity * arity + 37, arity)
        batches = [1, arity + 2, 17 * arity - 1]
        batches.append(len(data) // 32 - sum(batches))
        prefixes, offset = [], 0
        for batch in batches:
            offset += batch
            prefixes.append(root_of(as_leaves(data[: 32 * offset]), arity))
        rotortree.configure(simd=kernel)
        for threads in (1, 2):
            assert roots_under(threads, 1, 1, arity, data, batches) == prefixes, (arity, threads)


def test_compute_root_matches_reference_and_tree():
    for size in (1, 2, 3, 4, 5, 63, 64, 65, 1000, 4097):
        data = random_bytes(size, size)
        for arity in (2, 4, 7, 16):
            expected = root_of(as_leaves(data), arity)
            assert rotortree.compute_root(data, arity) == expected
            assert rotortree.compute_root(as_leaves(data), arity=arity) == expected


def test_compute_root_errors():
    with pytest.raises(rotortree.EmptyBatchError):
        rotortree.compute_root(b"", 4)
    with pytest.raises(rotortree.InvalidArgumentError):
        rotortree.compute_root(bytes(64), 1)
    with pytest.raises(rotortree.InvalidLeafError):
        rotortree.compute_root(bytes(65), 4)
    with pytest.raises(TypeError):
        rotortree.compute_root(bytes(64), "4")


def test_concurrent_batches_apply_atomically_in_some_order():
    rotortree.configure(num_threads=2, parallel_threshold=64, par_chunk_size=16)
    arity = 4
    tree = rotortree.LeanIMT(arity)
    batches = [random_bytes(random.Random(i).randint(1, 3000), 1000 + i) for i in range(24)]
    returned = {}
    start = threading.Barrier(8)

    def worker(indices):
        start.wait()
        for i in indices:
            returned[i] = tree.insert_many(batches[i])

    threads = [threading.Thread(target=worker, args=(range(k, 24, 8),)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Recover the order the batches were applied in: at each step exactly
    # one remaining batch extends the current prefix to the root its own
    # insert_many returned. Atomicity means such a batch always exists.
    prefix, order, remaining = b"", [], set(range(24))
    while remaining:
        matches = [i for i in remaining
                   if rotortree.compute_root(prefix + batches[i], arity) == returned[i]]
        assert len(matches) == 1, f"no unique next batch after {order}"
        order.append(matches[0])
        remaining.discard(matches[0])
        prefix += batches[matches[0]]
    assert tree.size == len(prefix) // 32
    assert tree.root == root_of(as_leaves(prefix), arity)


def test_many_threads_many_trees():
    rotortree.configure(num_threads=2, parallel_threshold=16, par_chunk_size=8)
    data = random_bytes(20_000, 5)
    expected = {arity: root_of(as_leaves(data), arity) for arity in (2, 5)}
    failures = []

    def worker(arity):
        tree = rotortree.LeanIMT(arity)
        for piece in range(0, len(data), 32 * 2500):
            tree.insert_many(data[piece: piece + 32 * 2500])
        if tree.root != expected[arity]:
            failures.append(arity)

    threads = [threading.Thread(target=worker, args=(2 + 3 * (k % 2),)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_reconfigure_during_work_is_safe_or_refused():
    rotortree.configure(num_threads=2, parallel_threshold=1, par_chunk_size=8)
    data = random_bytes(50_000, 9)
    expected = root_of(as_leaves(data), 4)
    stop = threading.Event()
    wrong = []

    def inserter():
        while not stop.is_set():
            if rotortree.LeanIMT(4).insert_many(data) != expected:
                wrong.append(1)

    thread = threading.Thread(target=inserter)
    thread.start()
    outcomes = {"applied": 0, "busy": 0}
    try:
        for i in range(200):
            try:
                rotortree.configure(num_threads=1 + i % 3, parallel_threshold=1 + i % 5)
                outcomes["applied"] += 1
            except rotortree.PoolBusyError as error:
                assert "busy" in str(error)
                outcomes["busy"] += 1
    finally:
        stop.set()
        thread.join()
    assert wrong == []
    assert outcomes["applied"] + outcomes["busy"] == 200
    assert outcomes["applied"] > 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_fork_child_gets_a_working_pool():
    rotortree.configure(num_threads=2, parallel_threshold=1, par_chunk_size=4)
    data = random_bytes(30_000, 3)
    expected = rotortree.LeanIMT(4).insert_many(data)  # workers are running now
    assert rotortree.pool_info()["threads_started"] >= 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not run pytest machinery, only report
        try:
            ok = rotortree.LeanIMT(4).insert_many(data) == expected
            ok = ok and rotortree.pool_info()["threads_started"] >= 1
            os.write(write_end, b"ok" if ok else b"bad")
        finally:
            os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    answer = os.read(read_end, 16)
    os.close(read_end)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert answer == b"ok"
    assert rotortree.LeanIMT(4).insert_many(data) == expected


def test_interpreter_exit_with_running_pool(tmp_path):
    import subprocess

    script = (
        "import rotortree\n"
        "rotortree.configure(num_threads=2, parallel_threshold=1)\n"
        "t = rotortree.LeanIMT(4); t.insert_many(bytes(32 * 100000))\n"
        "print(rotortree.pool_info()['threads_started'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 1


def test_concurrent_single_inserts_each_return_their_own_root():
    # insert() reuses root buffers (a shared free list): a root returned to one thread
    # must never be another thread's, and each must be the tree's root just
    # after that thread's leaf went in.
    tree = rotortree.LeanIMT(3)
    per_thread, count = 4, 400
    returned = [[] for _ in range(per_thread)]
    start = threading.Barrier(per_thread)

    def work(me):
        start.wait()
        for i in range(count):
            leaf = (me * count + i).to_bytes(32, "little")
            returned[me].append((leaf, tree.insert(leaf)))

    threads = [threading.Thread(target=work, args=(me,)) for me in range(per_thread)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = [tree.get_node(0, i) for i in range(tree.size)]
    position = {leaf: i for i, leaf in enumerate(stored)}
    data = b"".join(stored)
    for mine in returned:
        for leaf, root in mine:
            size = position[leaf] + 1
            assert root == rotortree.compute_root(data[:32 * size], 3)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("arity", [2, 3, 4, 16])
def test_large_unaligned_batches_match_the_reference(threads, arity):
    # Batches big enough for the largest fused blocks (1024 level-1 parents
    # each), starting and ending inside groups and blocks.
    batches = [1001, 70_001, 5, 50_003]
    data = random_bytes(sum(batches), 1000 + arity)
    rotortree.configure(num_threads=threads, parallel_threshold=1024)
    tree = rotortree.LeanIMT(arity)
    at = 0
    for count in batches:
        root = tree.insert_many(data[32 * at: 32 * (at + count)])
        at += count
        assert root == root_of(as_leaves(data[: 32 * at]), arity), (arity, at)


def test_pool_unit_inserting_into_another_tree():
    """Nested use: the units of one pool job each call insert_many on a tree
    of their own, large enough to run on the pool too (a job published from
    inside a unit). Driven through the library's internal parallel_for with
    ctypes, since no public call hands Python code to the pool. Every tree
    must end as if built sequentially, and nothing may deadlock."""
    import ctypes

    from rotortree import _rotortree_cffi

    so = ctypes.CDLL(_rotortree_cffi.__file__)
    unit_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t)
    so.rt_pool_parallel_for.argtypes = [ctypes.c_size_t, ctypes.c_size_t, unit_type,
                                        ctypes.c_void_p]
    so.rt_pool_parallel_for.restype = None
    arities = [2, 3, 4, 8, 16, 5]
    batches = [random_bytes(3000 + 1000 * i, 100 + i) for i in range(len(arities))]
    for threads in (2, 3):
        rotortree.configure(num_threads=threads, parallel_threshold=8, par_chunk_size=4)
        trees = [rotortree.LeanIMT(arity) for arity in arities]
        roots: list = [None] * len(trees)
        errors: list = []

        def unit(ctx, begin, end):
            try:
                for i in range(begin, end):
                    roots[i] = trees[i].insert_many(batches[i])
            except BaseException as exc:  # surfaced below; a callback cannot raise
                errors.append(exc)

        callback = unit_type(unit)
        jobs_before = rotortree.pool_stats()["jobs"]
        so.rt_pool_parallel_for(len(trees), 1, callback, None)
        # The outer job, plus the inner inserts' own jobs.
        assert rotortree.pool_stats()["jobs"] > jobs_before + 1
        assert errors == []
        for i, arity in enumerate(arities):
            expected = rotortree.compute_root(batches[i], arity)
            assert roots[i] == expected, (threads, arity)
            assert trees[i].root == expected and trees[i].size == len(batches[i]) // 32


@pytest.mark.parametrize("placement", ["0", "1", " 0\n", "junk"])
def test_every_placement_setting_gives_the_same_bytes(placement):
    """ROTORTREE_POOL_PLACEMENT (read by the C pool at first use) only moves
    threads between CPUs: every value (one it does not know keeps the
    default) must give the same roots through the pool."""
    import subprocess

    script = (
        "import rotortree\n"
        "rotortree.configure(num_threads=2, parallel_threshold=1, par_chunk_size=8)\n"
        "data = bytes(range(256)) * 8000\n"
        "before = rotortree.pool_stats()['jobs']\n"
        "roots = [rotortree.LeanIMT(a).insert_many(data).hex() for a in (2, 4, 16)]\n"
        "assert rotortree.pool_stats()['jobs'] > before\n"
        "rotortree.configure(num_threads=1)\n"
        "assert roots == [rotortree.compute_root(data, a).hex() for a in (2, 4, 16)]\n"
        "print(' '.join(roots))\n"
    )
    env = dict(os.environ, ROTORTREE_POOL_PLACEMENT=placement)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    expected = [rotortree.compute_root(bytes(range(256)) * 8000, a).hex() for a in (2, 4, 16)]
    assert result.stdout.split() == expected
