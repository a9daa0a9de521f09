"""fork() while other threads use trees: the child must never hang, and
sees every tree as it was before or after any batch in progress.

Each child reports what it read through a pipe; the parent waits for it
with a deadline and kills it if it hangs (which fails the test), so a
regression shows up as a failure, never as a stuck test run.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import threading
import time

import pytest

import rotortree
from rotortree.proofs import InclusionProof

if not hasattr(os, "fork"):
    pytest.skip("os.fork is not available on this platform", allow_module_level=True)

FORKS = 20
CHILD_DEADLINE = 30.0  # seconds; a healthy child needs well under one


def run_child(body) -> dict:
    """Fork; the child runs body() and sends its result as JSON. Returns the
    result, failing the test if the child hangs or breaks."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            payload = json.dumps(body()).encode()
            with os.fdopen(write_end, "wb") as out:
                out.write(payload)
            code = 0
        except BaseException as error:  # reported through the exit code
            try:
                os.write(2, f"child failed: {error!r}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    deadline = time.monotonic() + CHILD_DEADLINE
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"forked child hung for {CHILD_DEADLINE} s reading the tree")
            ready, _, _ = select.select([read_end], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child failed"
    result: dict = json.loads(b"".join(chunks))
    return result


class Writer:
    """Inserts batches into `tree` until stopped, recording the root after
    each batch, so the parent can tell a before/after state from a torn one."""

    def __init__(self, tree: rotortree.LeanIMT, batch_leaves: int) -> None:
        self.tree = tree
        self.batch = os.urandom(32 * batch_leaves)
        self.batch_leaves = batch_leaves
        self.roots = {tree.size: tree.root}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        size = self.tree.size
        while not self.stop.is_set():
            root = self.tree.insert_many(self.batch)
            size += self.batch_leaves
            self.roots[size] = root

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def read_tree(tree: rotortree.LeanIMT) -> dict:
    """Everything a reader does with a tree, in the child."""
    size, root, depth = tree.size, tree.root, tree.depth
    assert tree.get_node(depth, 0) == root
    assert tree.level_len(0) == size
    index = random.randrange(size)
    proof = tree.generate_proof(index)
    assert proof.root == root and proof.verify()
    assert InclusionProof.from_bytes(proof.to_bytes()).verify()
    snap = tree.snapshot()
    assert snap.size == size and snap.root == root
    # The child owns a working tree: it can insert too.
    leaf = os.urandom(32)
    new_root = tree.insert(leaf)
    assert tree.size == size + 1 and tree.root == new_root
    return {"size": size, "root": root.hex()}


def test_child_forked_during_insert_reads_the_tree():
    tree = rotortree.LeanIMT(4)
    tree.insert_many(os.urandom(32 * 1000))
    rng = random.Random(7)
    seen = []
    with Writer(tree, 100_000) as writer:
        for _ in range(FORKS):
            time.sleep(rng.uniform(0, 0.02))
            seen.append(run_child(lambda: read_tree(tree)))
    for state in seen:
        # The batch running at fork time finished (prepare waited for it)
        # or had not started: either way a state the writer recorded.
        assert writer.roots.get(state["size"]) == bytes.fromhex(state["root"]), state
    assert any(state["size"] > 1000 for state in seen)


# Before LLVM 18 (its pull request 75290, 2023) AddressSanitizer's runtime
# installed no fork handlers: a child forked while another thread held the
# sanitizer allocator's lock hangs at its first malloc, which the churning
# threads here make likely (seen once in a full ASan run with GCC 12's
# libasan). glibc's malloc, the one users run, locks around fork.
@pytest.mark.skipif(bool(os.environ.get("ROTORTREE_UNDER_ASAN")),
                    reason="this libasan (GCC 12's, before LLVM 18) has no fork handlers for "
                           "its allocator: a child forked while other threads allocate can hang "
                           "inside the sanitizer; runs in the plain suite")
def test_child_forked_during_churn_and_tree_turnover():
    """Other threads publish snapshots per insert (freeing chunks into the
    allocator) and create and drop whole trees while the parent forks: the
    child's allocator, tree registry and pool must all work."""
    tree = rotortree.LeanIMT(2)
    tree.insert_many(os.urandom(32 * 5000))
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            tree.insert(os.urandom(32))
            snap = tree.snapshot()
            del snap

    def turnover():
        while not stop.is_set():
            other = rotortree.LeanIMT(3)
            other.insert_many(os.urandom(32 * 20_000))
            keep = other.snapshot()
            del other, keep

    def child_body():
        state = read_tree(tree)
        # Snapshot churn in the child uses the allocator's free lists.
        for _ in range(200):
            tree.insert(os.urandom(32))
            snap = tree.snapshot()
        assert snap.size == tree.size
        # A new tree, and the pool: a batch large enough to go parallel.
        rotortree.configure(num_threads=2)
        jobs = rotortree.pool_stats()["jobs"]
        data = os.urandom(32 * 200_000)
        fresh = rotortree.LeanIMT(4)
        parallel_root = fresh.insert_many(data)
        state["pool_jobs"] = rotortree.pool_stats()["jobs"] - jobs
        rotortree.configure(num_threads=1)
        state["same_root"] = rotortree.compute_root(data, 4) == parallel_root
        return state

    threads = [threading.Thread(target=churn, daemon=True),
               threading.Thread(target=turnover, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(FORKS // 2):
            time.sleep(0.01)
            state = run_child(child_body)
            assert state["pool_jobs"] > 0, state
            assert state["same_root"], state
    finally:
        stop.set()
        for thread in threads:
            thread.join()
