"""Durable trees and fork: a forked child (a multiprocessing worker) must not
keep the parent's directory locked, must not write the parent's files, and
every descriptor a durable tree opens is close-on-exec.

flock locks belong to the open file description, which fork shares: before,
a worker that outlived the parent's close() made every later open raise
TreeLockedError until the worker exited."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

import pytest

import rotortree
from rotortree import (
    CheckpointPolicy,
    ClosedTreeError,
    FlushPolicy,
    RotorTree,
    TreeLockedError,
)

if not hasattr(os, "fork"):
    pytest.skip("os.fork is not available on this platform", allow_module_level=True)

LEAVES = [bytes([i]) * 32 for i in range(1, 40)]
_tree = None   # the parent's tree, inherited by forked workers


def open_manual(path, **kwargs) -> RotorTree:
    return RotorTree.open(path, create=True, flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual(), **kwargs)


def _worker(started, release, results) -> None:
    """A multiprocessing worker: it reads the inherited tree, tries to write
    it, then waits (outliving the parent's close, never closing the tree)
    until released."""
    tree = _tree
    outcome = {"size": tree.size, "root": tree.root}
    for name, write in (("insert", lambda: tree.insert(LEAVES[0])),
                        ("flush", tree.flush), ("checkpoint", tree.checkpoint)):
        try:
            write()
            outcome[name] = "wrote"
        except ClosedTreeError as error:
            outcome[name] = str(error)
    started.set()
    results.put(outcome)
    release.wait(60)


def tree_descriptors(directory) -> dict:
    """fd -> path of this process's descriptors on files of ``directory``."""
    found = {}
    directory = os.path.realpath(directory)
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target == directory or target.startswith(directory + os.sep):
            found[int(name)] = target
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_a_forked_worker_that_outlives_close_does_not_hold_the_lock(tmp_path):
    global _tree
    path = tmp_path / "t"
    context = multiprocessing.get_context("fork")
    started, release, results = context.Event(), context.Event(), context.Queue()
    _tree = open_manual(path, arity=4)
    worker = None
    try:
        _tree.insert_many(LEAVES[:10])
        root = _tree.root
        worker = context.Process(target=_worker, args=(started, release, results))
        worker.start()
        assert started.wait(60)
        outcome = results.get(timeout=60)
        _tree.insert_durable(LEAVES[10:12])   # the parent still writes
        _tree.close()
        _tree = None
        # The worker is still alive: before, this raised TreeLockedError.
        assert worker.is_alive()
        with RotorTree.open(path) as reopened:
            assert reopened.size == 12
            assert reopened.root == rotortree.compute_root(b"".join(LEAVES[:12]), 4)
    finally:
        release.set()
        if worker is not None:
            worker.join(60)
        if _tree is not None:
            _tree.close()
            _tree = None
    assert worker.exitcode == 0
    # The child read the tree as it was at the fork, and refused every write.
    assert outcome["size"] == 10 and outcome["root"] == root
    for name in ("insert", "flush", "checkpoint"):
        assert "forked" in outcome[name], outcome


def test_forked_child_leaves_the_parents_files_alone(tmp_path):
    """A child that exits normally (running atexit handlers, the tree's
    finalizer among them) neither fsyncs, truncates nor closes for the parent."""
    path = tmp_path / "t"
    tree = open_manual(path, arity=4)
    tree.insert_many(LEAVES[:5])
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with tree:   # __exit__ -> close(): must not touch the files
                pass
            code = 0 if tree.size == 5 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    root, _ = tree.insert(LEAVES[5])   # the parent's descriptors still work
    tree.insert_durable(LEAVES[6])
    tree.close()
    with RotorTree.open(path) as reopened:
        assert reopened.size == 7
        assert reopened.root == rotortree.compute_root(b"".join(LEAVES[:7]), 4)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_every_descriptor_of_a_durable_tree_is_close_on_exec(tmp_path):
    path = tmp_path / "t"
    with open_manual(path, arity=4, mmap_levels=1) as tree:
        tree.insert_many(LEAVES[:30])
        tree.checkpoint()               # opens level files
        tree.insert_durable(LEAVES[30:33])
        fds = tree_descriptors(path)
        assert len(fds) >= 4, fds      # lock, directory lock, sync record, WAL, levels
        for fd in fds:
            assert not os.get_inheritable(fd), fds[fd]
        # An exec'd child started without closing descriptors sees none of them.
        script = textwrap.dedent(f"""
            import os
            root = os.path.realpath({str(path)!r})
            held = [os.readlink("/proc/self/fd/" + n) for n in os.listdir("/proc/self/fd")
                    if os.path.exists("/proc/self/fd/" + n)]
            print(sum(1 for t in held if t == root or t.startswith(root + os.sep)))
        """)
        out = subprocess.run([sys.executable, "-c", script], close_fds=False,
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "0", out.stdout + out.stderr
        # The lock is held against another process all the same.
        code = (f"import sys, rotortree\n"
                f"try:\n    rotortree.RotorTree.open({str(path)!r})\n"
                f"except rotortree.TreeLockedError:\n    sys.exit(3)\n")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert result.returncode == 3, result.stderr


def test_fork_while_open_keeps_the_lock_in_the_parent(tmp_path):
    """Dropping the child's copy of the lock must not release the parent's."""
    path = tmp_path / "t"
    tree = open_manual(path, arity=4)
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    with pytest.raises(TreeLockedError):
        RotorTree.open(path)
    tree.close()
    RotorTree.open(path).close()
