"""An exception (KeyboardInterrupt above all) at any point of an insert
leaves a durable tree consistent: the batch is either in the tree with its
WAL bookkeeping committed, or nowhere; later inserts, crashes, checkpoints
and reopens then see exactly the leaves the tree holds.

The exception is injected by a trace function at every point of the write
path (in the rotortree.durable and rotortree.storage packages, rotortree._core
and rotortree._leaves) where
CPython can raise one: on entering each function and right after each call
returns (the C insert, pwrite, the CRC, the bookkeeping helpers). Double
faults (the repair interrupted too) are injected by replacing the repair's
own steps."""

from __future__ import annotations

import dis
import gc
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import rotortree
from rotortree import CheckpointPolicy, FlushPolicy, LeanIMT, RotorTree, _core, durable, storage
from rotortree.storage import io as storage_io

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARITY = 3
# Every module of the durable and storage packages, and the core facade the
# write path calls into.
TRACED = {os.path.abspath(module.__file__) for module in
          (_core, sys.modules["rotortree._leaves"])} | {
    os.path.abspath(module.__file__) for name, module in list(sys.modules.items())
    if name.startswith(("rotortree.durable", "rotortree.storage"))
    and getattr(module, "__file__", None)}


class Injected(BaseException):
    """Stands for KeyboardInterrupt (a BaseException, so no handler for
    Exception or OSError may swallow it)."""


def leaves(start: int, count: int) -> bytes:
    """Leaf i depends only on its position i, so any prefix has a known root."""
    array = np.zeros((count, 4), "<u8")
    array[:, 0] = np.arange(start, start + count, dtype="<u8")
    array[:, 1] = 0x5EED
    return array.tobytes()


def reference_root(size: int) -> "bytes | None":
    return rotortree.compute_root(leaves(0, size), ARITY) if size else None


def open_manual(path, **kwargs) -> RotorTree:
    return RotorTree.open(path, create=True, flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual(), **kwargs)


# Instructions after which CPython checks for pending signals and
# asynchronous exceptions: a KeyboardInterrupt is raised as a call returns
# (C calls included: the C insert, pwrite, crc32) or at a loop's back edge.
_CHECKED = {dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "JUMP_BACKWARD")
            if name in dis.opmap}


def run_injecting(call, at: int) -> "tuple[bool, int]":
    """Run ``call()`` raising Injected at the ``at``-th point, counted in the
    traced modules, where CPython can raise a KeyboardInterrupt: entering a
    function, and after each call returns or loop iterates (not between two
    plain stores: the interpreter never raises there). Returns (injected,
    points passed)."""
    counter = [0]
    last_op = {}

    def point() -> None:
        counter[0] += 1
        if counter[0] == at:
            raise Injected(f"at point {at}")

    def local(frame, event, arg):
        if event == "opcode":
            if last_op.get(frame) in _CHECKED:
                point()
            last_op[frame] = frame.f_code.co_code[frame.f_lasti]
        return local

    def outer(frame, event, arg):
        if frame.f_code.co_filename not in TRACED:
            return None
        frame.f_trace_opcodes = True
        point()
        return local

    sys.settrace(outer)
    try:
        call()
    except Injected:
        return True, counter[0]
    finally:
        sys.settrace(None)
    return False, counter[0]


def crash_image(tree: RotorTree, into) -> RotorTree:
    """What a process crash leaves (the files as the kernel holds them, the
    tree never closed), opened as a second tree."""
    shutil.rmtree(into, ignore_errors=True)
    shutil.copytree(tree.path, into, ignore=shutil.ignore_patterns("LOCK"))
    return RotorTree.open(into, flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual())


def check_consistent(tree: RotorTree, size_before: int, seq_before: int, count: int) -> int:
    """The interrupted batch of ``count`` leaves is either wholly in the tree
    with its entry counted, or not at all. Returns the tree's size."""
    size = tree.size
    assert size in (size_before, size_before + count), (size_before, count, size)
    applied = size != size_before
    stats = tree.stats()
    assert stats["seq"] == seq_before + applied
    assert tree.root == reference_root(size)
    return size


def check_recovers(tree: RotorTree, scratch, checkpoint: bool) -> None:
    """An acknowledged insert after the interruption, then a crash: the
    reopened tree holds exactly the acknowledged leaves; so does it after a
    checkpoint."""
    size = tree.size
    assert tree.insert_durable(leaves(size, 1)) == reference_root(size + 1)
    if checkpoint:
        tree.checkpoint()
    with crash_image(tree, scratch) as reopened:
        assert reopened.size == size + 1
        assert reopened.root == reference_root(size + 1)


WRITES = {
    # name: (how to call, leaves per call); all three go through
    # rt_wal_append (frame write and insert in one C call).
    "insert": (lambda tree, data: tree.insert(data), 1),
    "insert_many": (lambda tree, data: tree.insert_many(data), 300),
    # From 64 KiB the frame is written by the WAL writer thread.
    "insert_many_overlapped": (lambda tree, data: tree.insert_many(data), 2100),
    "insert_durable": (lambda tree, data: tree.insert_durable(data), 5),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_exception_at_every_point_of_the_write_path(tmp_path, write):
    call, count = WRITES[write]
    tree = open_manual(tmp_path / "t", arity=ARITY)
    try:
        tree.insert_many(leaves(0, 10))
        at, applied_somewhere, skipped_somewhere = 1, False, False
        while True:
            size, seq = tree.size, tree.stats()["seq"]
            data = leaves(size, count)
            injected, _ = run_injecting(lambda: call(tree, data), at)
            if not injected:
                break   # every point of one call has been tried
            after = check_consistent(tree, size, seq, count)
            applied_somewhere |= after != size
            skipped_somewhere |= after == size
            check_recovers(tree, tmp_path / "crash", checkpoint=at % 4 == 0)
            at += 1
        assert at > 20 and applied_somewhere and skipped_somewhere
        check_recovers(tree, tmp_path / "crash", checkpoint=True)
        tree.close()
        with RotorTree.open(tmp_path / "t") as reopened:
            assert reopened.root == reference_root(reopened.size)
    finally:
        tree.close()


def fail_once(real, error=Injected):
    calls = [0]

    def hook(*args):
        calls[0] += 1
        if calls[0] == 1:
            raise error("the repair was interrupted")
        return real(*args)
    return hook


def insert_with_commit_interrupted_twice(tree, monkeypatch, start: int, count: int) -> None:
    """The C insert succeeds; then both the append's own commit and its
    repair are interrupted, so the bookkeeping is left behind the tree."""
    monkeypatch.setattr(RotorTree, "_commit", fail_once(fail_once(RotorTree._commit)))
    with pytest.raises(Injected):
        tree.insert_many(leaves(start, count))
    monkeypatch.undo()


def interrupt_after_write(tree, monkeypatch):
    """A frame fully written, then an exception before the C insert."""
    real = storage_io.sys_pwrite

    def pwrite_then_interrupt(fd, data, offset):
        real(fd, data, offset)
        raise Injected("after pwrite")
    monkeypatch.setattr(storage_io, "sys_pwrite", pwrite_then_interrupt)


def test_interrupted_rollback_is_finished_by_the_next_call(tmp_path, monkeypatch):
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_many(leaves(0, 7))
    wal = os.path.join(tree.path, max(n for n in os.listdir(tree.path)
                                      if storage.parse_segment_name(n) is not None))
    end = os.path.getsize(wal)
    interrupt_after_write(tree, monkeypatch)
    monkeypatch.setattr(storage_io, "sys_truncate", fail_once(storage_io.sys_truncate))
    with pytest.raises(Injected):
        tree.insert(leaves(7, 1))
    monkeypatch.undo()
    # The frame is still there; the tree never got the leaf.
    assert os.path.getsize(wal) > end and tree.size == 7
    assert tree.stats()["seq"] == 1   # reading the bookkeeping cuts the frame first
    assert os.path.getsize(wal) == end
    check_recovers(tree, tmp_path / "crash", checkpoint=False)
    tree.close()


def test_interrupted_commit_is_finished_by_the_next_call(tmp_path, monkeypatch):
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_many(leaves(0, 7))
    insert_with_commit_interrupted_twice(tree, monkeypatch, 7, 200)
    assert tree.size == 207   # the batch is in the tree: it must be in the WAL's count too
    check_recovers(tree, tmp_path / "crash", checkpoint=True)   # settles, then writes
    assert tree.stats()["seq"] == 3
    tree.close()
    with RotorTree.open(tmp_path / "t") as reopened:
        assert reopened.size == 208 and reopened.root == reference_root(208)


def test_close_makes_an_interrupted_batch_durable(tmp_path, monkeypatch):
    """close() resolves an unsettled append before its final fsync, so the
    batch the tree holds is fsynced and recorded as durable like the rest."""
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_durable(leaves(0, 7))
    insert_with_commit_interrupted_twice(tree, monkeypatch, 7, 3)
    tree.close()
    assert storage.read_sync_record(str(tmp_path / "t"))[0] == 2
    with RotorTree.open(tmp_path / "t") as reopened:
        assert reopened.size == 10 and reopened.root == reference_root(10)


def test_checkpoint_after_an_unsettled_append_pairs_size_and_sequence(tmp_path, monkeypatch):
    """The reported defect: a checkpoint taken while the bookkeeping lagged the
    tree recorded the tree's size with an older sequence, and the tree could
    no longer be opened (CorruptionError)."""
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_many(leaves(0, 7))
    insert_with_commit_interrupted_twice(tree, monkeypatch, 7, 3)
    assert tree.checkpoint() is True
    tree.insert_durable(leaves(10, 1))
    with crash_image(tree, tmp_path / "crash") as reopened:
        assert reopened.size == 11 and reopened.root == reference_root(11)
    tree.close()


def test_finalizer_cuts_the_frame_of_an_unsettled_append(tmp_path, monkeypatch):
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_durable(leaves(0, 7))
    interrupt_after_write(tree, monkeypatch)
    monkeypatch.setattr(storage_io, "sys_truncate", fail_once(storage_io.sys_truncate))
    with pytest.raises(Injected):
        tree.insert_many(leaves(7, 2))
    monkeypatch.undo()
    del tree   # never closed: the finalizer fsyncs what was written
    gc.collect()
    with RotorTree.open(tmp_path / "t") as reopened:
        assert reopened.size == 7 and reopened.root == reference_root(7)


class InterruptingLib:
    """The C library, except that the batch insert raises KeyboardInterrupt
    once the C call has returned (as a Ctrl-C during the call does)."""

    def __init__(self, real) -> None:
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def rt_tree_insert_many(self, *args):
        self._real.rt_tree_insert_many(*args)
        raise KeyboardInterrupt

    def rt_tree_insert_many_stable(self, *args):
        # LeanIMT.insert_many's call for a batch no thread can change (bytes).
        self._real.rt_tree_insert_many_stable(*args)
        raise KeyboardInterrupt

    def rt_wal_append(self, *args):
        # The durable tree's insert: frame write and insert in one C call.
        self._real.rt_wal_append(*args)
        raise KeyboardInterrupt


def test_keyboard_interrupt_after_the_c_insert(tmp_path, monkeypatch):
    """The reported repro: the C insert returns, then KeyboardInterrupt."""
    tree = open_manual(tmp_path / "t", arity=ARITY)
    tree.insert_many(leaves(0, 7))
    monkeypatch.setattr(_core, "lib", InterruptingLib(_core.lib))
    with pytest.raises(KeyboardInterrupt):
        tree.insert_many(leaves(7, 5))
    monkeypatch.undo()
    assert tree.size == 12 and tree.stats()["seq"] == 2
    tree.insert_durable(leaves(12, 1))
    with crash_image(tree, tmp_path / "crash") as reopened:
        assert reopened.size == 13 and reopened.root == reference_root(13)
    tree.checkpoint()
    tree.insert_durable(leaves(13, 1))
    with crash_image(tree, tmp_path / "crash") as reopened:
        assert reopened.size == 14 and reopened.root == reference_root(14)
    tree.close()


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_leanimt_batch_is_whole_or_absent_when_interrupted(monkeypatch, kind):
    """LeanIMT's contract: an exception raised after the C call returns
    leaves the batch applied (check tree.size), never half of it; bytes and
    a mutable buffer take different C calls."""
    import rotortree.tree as tree_module

    tree = LeanIMT(ARITY)
    tree.insert_many(leaves(0, 4))
    monkeypatch.setattr(tree_module, "lib", InterruptingLib(tree_module.lib))
    with pytest.raises(KeyboardInterrupt):
        tree.insert_many(kind(leaves(4, 1000)))
    monkeypatch.undo()
    assert tree.size == 1004 and tree.root == reference_root(1004)
    assert "KeyboardInterrupt" in LeanIMT.insert_many.__doc__


# ---------------------------------------------------------------------------
# A real SIGINT


_SIGINT_CHILD = textwrap.dedent("""
    import signal, sys, time
    # Python raises KeyboardInterrupt on SIGINT only if SIGINT was not
    # ignored when it started, and a test run launched in the background
    # (nohup, "cmd &" in a script, some CI runners) passes SIG_IGN down: the
    # signal was then lost and the loop below filled memory until the OOM
    # killer ended it. Install the handler whatever was inherited.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r}); sys.path.insert(0, {root!r})
    from rotortree import CheckpointPolicy, FlushPolicy, RotorTree
    from test_interrupts import leaves

    tree = RotorTree.open(sys.argv[1], arity=3, create=True,
                          flush_policy=FlushPolicy.interval(0.005),
                          checkpoint_policy=CheckpointPolicy.manual())
    # Bounded, so that a lost signal fails the test instead of exhausting
    # memory and disk: 32 batches are more than a fast machine inserts in
    # the longest delay (a faster one waits for the signal between batches
    # instead), and a minute outlasts any delay under load.
    deadline = time.monotonic() + 60
    print("ready", flush=True)
    try:
        while time.monotonic() < deadline:
            if tree.size < 32 << 20:   # big batches, so the signal lands inside one
                tree.insert_many(leaves(tree.size, 1 << 20))
            else:
                time.sleep(0.01)
        print("not interrupted within 60 s", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    print("interrupted", tree.size, tree.stats()["seq"], flush=True)
    tree.checkpoint()
    while True:
        size = tree.size
        tree.insert_durable(leaves(size, 1 + size % 3))
        print("ack", tree.size, flush=True)
""")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_real_sigint_during_a_big_insert_many(tmp_path, delay):
    script = tmp_path / "child.py"
    script.write_text(_SIGINT_CHILD.format(tests=os.path.join(ROOT, "tests"), root=ROOT))
    path = tmp_path / "t"
    child = subprocess.Popen([sys.executable, str(script), str(path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "ready\n", child.stderr.read()
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline()
        assert line.startswith("interrupted"), line + child.stderr.read()
        acks = []
        while len(acks) < 30:
            line = child.stdout.readline()
            assert line.startswith("ack"), line + child.stderr.read()
            acks.append(int(line.split()[1]))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    with RotorTree.open(path, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=CheckpointPolicy.manual()) as tree:
        assert tree.size >= acks[-1]
        assert tree.root == reference_root(tree.size)
