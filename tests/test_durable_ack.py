"""Acknowledging after the WAL fsync alone (FlushPolicy(acknowledge="wal")):
the sync record follows off the callers' path, written by a recorder
thread. Crashes at every point of a round lose no acknowledged entry and
never look like damage; damage is detected as soon as the record caught up.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time

import pytest

from reference import root_of
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    CorruptionError,
    DurabilityError,
    FlushPolicy,
    InvalidArgumentError,
    RotorTree,
)
from rotortree import storage
from rotortree.storage import io as storage_io
from test_durable import (
    Crash,
    _fail,
    abandon,
    current_segment,
    leaf,
    leaves,
    manual,
    segments,
    split,
)

WAL_ACK = FlushPolicy.manual(acknowledge="wal")
SEAMS = ("sys_pwrite", "sys_fsync", "sys_fdatasync", "sys_rename", "sys_truncate")


def lagged(path, **kwargs) -> RotorTree:
    kwargs.setdefault("flush_policy", WAL_ACK)
    return manual(path, arity=4, **kwargs)


def recorded(path) -> int:
    return storage.read_sync_record(str(path))[0]


def eventually(condition, seconds: float = 10.0) -> bool:
    """Poll for a background thread's effect (no timing is asserted: the
    deadline only keeps a broken build from hanging the suite)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def die_at(monkeypatch, n: int) -> list:
    """The process dies at the n-th write/fsync/fdatasync/rename/truncate
    from now: that call and every later one reach no disk. The calling
    thread gets Crash; a background thread gets EIO (what it does next
    cannot matter: nothing it does reaches the disk any more)."""
    calls: list = []
    main = threading.main_thread()
    for name in SEAMS:
        real = getattr(storage_io, name)

        def hook(*args, _real=real, _name=name):
            calls.append((_name, threading.current_thread() is main))
            if len(calls) >= n:
                if threading.current_thread() is main:
                    raise Crash(_name)
                raise OSError(errno.EIO, "the process died")
            return _real(*args)
        monkeypatch.setattr(storage_io, name, hook)
    return calls


def fail_record_writes(monkeypatch, tree, when, code=errno.EIO) -> list:
    """Writes of the tree's sync record raise OSError(code) while ``when()``
    says so; returns the list of failed writes."""
    real = storage_io.sys_pwrite
    record_fd = tree._files.sync.fd
    failed: list = []

    def hook(fd, data, offset):
        if fd == record_fd and when():
            failed.append(fd)
            raise OSError(code, "injected")
        return real(fd, data, offset)
    monkeypatch.setattr(storage_io, "sys_pwrite", hook)
    return failed


def test_acknowledge_argument_is_checked():
    for bad, error in (("fsync", InvalidArgumentError), ("", InvalidArgumentError),
                       (1, ArgumentTypeError), (None, ArgumentTypeError)):
        with pytest.raises(error, match="acknowledge"):
            FlushPolicy.interval(0.01, acknowledge=bad)
        with pytest.raises(error, match="acknowledge"):
            FlushPolicy.manual(acknowledge=bad)
    assert FlushPolicy.interval().acknowledge == "record"
    assert FlushPolicy.manual(acknowledge="wal") == WAL_ACK != FlushPolicy.manual()
    assert len({WAL_ACK, FlushPolicy.manual(acknowledge="wal"), FlushPolicy.manual()}) == 2
    assert repr(FlushPolicy.interval(0.5, acknowledge="wal")) == \
        "FlushPolicy.interval(0.5, acknowledge='wal')"
    assert repr(WAL_ACK) == "FlushPolicy.manual(acknowledge='wal')"
    assert repr(FlushPolicy.manual()) == "FlushPolicy.manual()"


def test_crash_at_every_point_of_a_round_loses_no_acknowledged_entry(tmp_path, monkeypatch):
    """I/O of a round, in order: the frame (caller), the WAL fsync
    (caller, then the entry is acknowledged), the record's write and its
    fdatasync (recorder thread). The process dies at each in turn, and once
    after all of them: every acknowledged entry is recovered, recovery
    never calls the WAL damaged, and the record on disk never claims more
    than what was fsynced."""
    n = 1
    while True:
        path = tmp_path / f"t{n}"
        tree = lagged(path)
        tree.insert_durable(leaves(0, 10))
        tree.flush()   # the record claims entry 1: no recorder I/O is pending
        assert recorded(path) == 1
        calls = die_at(monkeypatch, n)
        try:
            tree.insert_durable(leaves(10, 5))
            acknowledged = True
        except Crash:
            acknowledged = False
        # Acknowledged: the recorder's write and fdatasync follow (or the
        # death reaches them first).
        assert eventually(lambda: len(calls) >= (4 if n > 4 else n)), (n, calls)
        abandon(tree)
        monkeypatch.undo()
        names = [name for name, _ in calls]
        assert acknowledged == (n > 2), (n, calls)   # after the WAL fsync, not the record
        # A crash loses an unsynced write or keeps it; this one keeps it.
        assert recorded(path) == (2 if n > 3 else 1), (n, calls)
        with lagged(path) as tree:   # no CorruptionError at any point
            # An unacknowledged frame may survive (the page cache kept it).
            assert tree.size in ((15,) if acknowledged else (10, 15)), (n, calls)
            assert tree.root == root_of(split(leaves(0, tree.size)), 4)
        if n > 4:
            assert names[:4] == ["sys_pwrite", "sys_fsync", "sys_pwrite", "sys_fdatasync"]
            assert [in_main for _, in_main in calls[:4]] == [True, True, False, False]
            break
        n += 1


def test_crash_during_a_stream_of_rounds_never_reports_damage(tmp_path, monkeypatch):
    """Rounds back to back, the recorder running concurrently with them:
    wherever the process dies, everything acknowledged is recovered and
    nothing is reported as damaged."""
    for n in range(1, 14):
        path = tmp_path / f"t{n}"
        tree = lagged(path)
        calls = die_at(monkeypatch, n)
        done = 0
        # Dying in the recorder poisons the tree: the next call raises.
        with contextlib.suppress(Crash, DurabilityError):
            for i in range(6):
                tree.insert_durable(leaves(10 * i, 10))
                done = i + 1
        abandon(tree)
        monkeypatch.undo()
        with lagged(path) as tree:
            assert tree.size >= 10 * done, (n, calls)
            assert tree.size % 10 == 0
            assert tree.root == root_of(split(leaves(0, tree.size)), 4)


@pytest.mark.parametrize("catch_up", ["recorder", "flush", "close"])
@pytest.mark.parametrize("damage", ["delete", "cut in entry 4", "cut after entry 5 header"])
def test_lost_acknowledged_entries_are_detected_once_the_record_caught_up(
        tmp_path, catch_up, damage):
    path = tmp_path / "t"
    tree = lagged(path)
    tree.insert_many(leaves(0, 100))
    tree.checkpoint()
    for i in range(5):
        tree.insert_durable(leaves(100 + 10 * i, 10))
    if catch_up == "recorder":   # on its own, within about RECORD_GAP
        assert eventually(lambda: tree.stats()["recorded_seq"] == 6)
    elif catch_up == "flush":
        tree.flush()
        assert tree.stats()["recorded_seq"] == tree.stats()["synced_seq"] == 6
    length = os.path.getsize(current_segment(path))
    if catch_up == "close":
        tree.close()
    else:
        abandon(tree)   # a crash once the record caught up
    assert recorded(path) == 6
    wal = current_segment(path)
    frame = storage.FRAME_HEADER_LEN + 10 * 32
    if damage == "delete":
        os.unlink(wal)
    else:
        os.truncate(wal, {"cut in entry 4": storage.SEGMENT_HEADER_LEN + 3 * frame + 100,
                          "cut after entry 5 header": length - 10 * 32}[damage])
    with pytest.raises(CorruptionError, match="acknowledged.*not a torn tail"):
        lagged(path)


def test_before_the_record_catches_up_only_its_lag_is_taken_for_a_torn_tail(
        tmp_path, monkeypatch, caplog):
    """The weaker point of acknowledge="wal", pinned: while the record lags
    (here held back), damage cutting the newest acknowledged entry is taken
    for a torn tail and logged; entries the record claims are still
    protected."""
    path = tmp_path / "t"
    tree = lagged(path)
    tree.insert_durable(leaves(0, 10))
    tree.flush()
    held = threading.Event()
    release = threading.Event()

    def hold() -> bool:
        held.set()
        release.wait(10)
        return True
    fail_record_writes(monkeypatch, tree, hold)
    tree.insert_durable(leaves(10, 10))   # acknowledged with the record held
    assert held.wait(10) and tree.stats()["recorded_seq"] == 1
    length = os.path.getsize(current_segment(path))
    release.set()
    abandon(tree)
    monkeypatch.undo()
    assert recorded(path) == 1
    os.truncate(current_segment(path), length - 5)
    with caplog.at_level(logging.WARNING, logger="rotortree"):
        with lagged(path) as tree:
            assert tree.size == 10
    assert any("torn" in r.getMessage() or "never acknowledged" in r.getMessage()
               for r in caplog.records)
    for name in segments(path):   # entries the record claims are still protected
        os.unlink(path / name)
    with pytest.raises(CorruptionError, match="acknowledged"):
        lagged(path)


def test_record_write_failure_is_retried_and_acknowledges_anyway(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = lagged(path)
    failures = fail_record_writes(monkeypatch, tree, lambda: len(failures) < 2, errno.ENOSPC)
    _, token = tree.insert(leaf(0))
    tree._sync_upto(token.seq)   # a round alone, as insert_durable runs it
    assert token.durable
    assert eventually(lambda: tree.stats()["recorded_seq"] == 1)
    assert len(failures) == 2 and not tree.stats()["failed"]
    tree.insert(leaf(1))   # still writable
    tree.close()
    assert recorded(path) == 2


def test_record_fdatasync_failure_poisons_but_keeps_acknowledged_entries(tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "t"
    tree = lagged(path)
    monkeypatch.setattr(storage_io, "sys_fdatasync", _fail())   # only the sync record uses it
    _, token = tree.insert(leaf(0))
    tree.insert_durable(leaf(1))   # the WAL fsync succeeded: acknowledged
    assert token.durable
    assert eventually(lambda: tree.stats()["failed"])
    assert token.durable and token.wait(0)   # an acknowledgement is never withdrawn
    with pytest.raises(DurabilityError, match="refuses writes"):
        tree.insert(leaf(2))
    monkeypatch.undo()
    with contextlib.suppress(DurabilityError):
        tree.close()
    with lagged(path) as tree:
        assert tree.size == 2


def test_flush_and_close_bring_the_record_up_to_date(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = lagged(path)
    fail_record_writes(   # the recorder fails every write: only the callers' count
        monkeypatch, tree,
        lambda: threading.current_thread().name.startswith("rotortree-record"))
    tree.insert_durable(leaf(0))
    tree.flush()   # written by the caller, not the recorder
    assert recorded(path) == 1
    tree.insert_durable(leaf(1))
    tree.close()
    assert recorded(path) == 2


def test_concurrent_callers_share_rounds_and_the_record_follows(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = lagged(path)
    real = storage_io.sys_fsync
    rounds = []

    def counting(fd):
        rounds.append(fd)
        return real(fd)
    monkeypatch.setattr(storage_io, "sys_fsync", counting)
    threads, calls = 6, 20

    def work(k):
        for i in range(calls):
            tree.insert_durable(leaf(k * calls + i))
    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert tree.stats()["synced_seq"] == threads * calls
    assert len(rounds) < threads * calls   # shared: fewer rounds than calls
    assert eventually(lambda: tree.stats()["recorded_seq"] == threads * calls)
    tree.close()
    with lagged(path) as reopened:
        assert reopened.size == threads * calls


def test_interval_policy_acknowledges_tokens_through_the_wal_alone(tmp_path, monkeypatch):
    """The background flusher's rounds acknowledge too; the recorder follows."""
    path = tmp_path / "t"
    with RotorTree.open(path, arity=4, create=True,
                        flush_policy=FlushPolicy.interval(0.002, acknowledge="wal"),
                        checkpoint_policy=CheckpointPolicy.manual()) as tree:
        _, token = tree.insert(leaf(0))
        assert token.wait(10.0)
        assert eventually(lambda: tree.stats()["recorded_seq"] == 1)
    assert recorded(path) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_while_the_recorder_writes_does_not_hang_the_child(tmp_path, monkeypatch):
    """The child inherits the record's lock as the recorder held it; the
    at-fork hook closes the child's descriptors under a fresh lock instead
    of waiting forever for a thread the child does not have."""
    path = tmp_path / "t"
    tree = lagged(path)
    held = threading.Event()
    release = threading.Event()

    def hold_in_recorder() -> bool:
        if threading.current_thread().name.startswith("rotortree-record"):
            held.set()
            release.wait(10)
        return False   # the write then goes through
    fail_record_writes(monkeypatch, tree, hold_in_recorder)
    tree.insert_durable(leaf(0))
    assert held.wait(10)   # the recorder is inside write_record, holding the lock
    pid = os.fork()
    if pid == 0:
        os._exit(0 if tree.size == 1 and tree._files.sync.fd < 0 else 2)
    release.set()
    deadline = time.monotonic() + 30
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the sync record's lock")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0
    tree.insert_durable(leaf(1))   # the parent's recorder and files still work
    tree.close()
    assert recorded(path) == 2
