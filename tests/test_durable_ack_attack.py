"""Attacks on group commit and on acknowledge="wal": interrupts at every
point of a round while other threads and coroutines wait for it, records
that must never claim what no fsync completed, and the bookkeeping that
``stats()`` reports."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import threading

import pytest

from reference import root_of
from rotortree import CorruptionError, DurabilityError, FlushPolicy, TreeLockedError
from rotortree.storage import io as storage_io
from test_durable import _fail, leaf, leaves, manual, segments, split
from test_durable_ack import eventually, fail_record_writes, recorded
from test_interrupts import run_injecting

POLICIES = {"record": FlushPolicy.manual(), "wal": FlushPolicy.manual(acknowledge="wal")}


def in_condition_wait(thread: threading.Thread) -> bool:
    """Whether ``thread`` is inside Condition.wait: it holds the condition's
    lock until it is registered as a waiter, so a notification from then on
    reaches it."""
    frame = sys._current_frames().get(thread.ident)
    while frame is not None:
        if frame.f_code is threading.Condition.wait.__code__:
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("acknowledge", sorted(POLICIES))
def test_an_interrupted_round_never_strands_a_waiting_token(tmp_path, acknowledge):
    """A KeyboardInterrupt may strike the leader of a round anywhere, also
    after the round acknowledged its entries but before everyone waiting
    was woken. Whatever point it hits, a thread blocked in ``token.wait()``
    (no timeout) and a coroutine awaiting the token are released as soon
    as the entry is durable: nothing else would ever wake them."""
    tree = manual(tmp_path / "t", arity=4, flush_policy=POLICIES[acknowledge])
    loop = asyncio.new_event_loop()
    try:
        at = 1
        while True:
            _, token = tree.insert(leaf(at))
            waiter = threading.Thread(target=token.wait)
            waiter.start()
            # Blocked in the condition's wait (else the round's end is not
            # what wakes it).
            assert eventually(lambda: in_condition_wait(waiter))

            async def awaiting() -> bool:
                return await token
            task = loop.create_task(awaiting())
            loop.run_until_complete(asyncio.sleep(0))   # registered: no thread of its own
            assert len(tree._state.awaiting) == 1
            injected, _ = run_injecting(tree.flush, at)
            if not token.durable:
                tree.flush()   # not acknowledged by the interrupted call: the next one does
            waiter.join(30)
            stranded = waiter.is_alive()
            if stranded:
                tree._state.wake()   # free it, then fail
                waiter.join()
            assert not stranded, f"token.wait() never woke (interrupt at point {at})"
            # The await is settled through the loop's queue, at once.
            assert loop.run_until_complete(asyncio.wait_for(task, 30)), at
            if not injected:
                break   # every point of one flush has been tried
            at += 1
        assert at > 20
    finally:
        loop.close()
        tree.close()


class PowerCut:
    """What a machine crash leaves of a directory: each file as of its last
    fsync (or fdatasync), whatever was written after it lost. Every write,
    truncate, rename and flush of the storage layer goes through one lock,
    so a file's content read at its flush is exactly what the flush made
    durable. Durable content changes only at flushes, and what was
    acknowledged only grows between them, so the worst moments for a power
    cut are just before each flush: ``images`` holds the directory as the
    cut would leave it then, with the highest sequence number acknowledged
    at that moment (taken once ``tree_of()`` returns a tree)."""

    def __init__(self, monkeypatch, directory: str, tree_of, limit: int) -> None:
        self.lock = threading.Lock()
        self.durable: dict = {}
        self.images: list = []
        self.directory = directory
        self.tree_of = tree_of
        self.limit = limit
        for name in ("sys_pwrite", "sys_truncate"):
            monkeypatch.setattr(storage_io, name, self._serialised(getattr(storage_io, name)))
        for name in ("sys_fsync", "sys_fdatasync"):
            monkeypatch.setattr(storage_io, name, self._flushing(getattr(storage_io, name)))
        real_rename = storage_io.sys_rename

        def rename(src, dst):
            with self.lock:
                real_rename(src, dst)
                # replace_file fsyncs the temporary first and the directory
                # after: the name then carries the flushed content.
                if src in self.durable:
                    self.durable[dst] = self.durable.pop(src)
        monkeypatch.setattr(storage_io, "sys_rename", rename)

    def _serialised(self, real):
        def call(*args):
            with self.lock:
                return real(*args)
        return call

    def _flushing(self, real):
        def call(fd):
            with self.lock:
                self._cut()
                real(fd)
                path = os.readlink(f"/proc/self/fd/{fd}")
                if os.path.isfile(path):
                    with open(path, "rb") as handle:
                        self.durable[path] = handle.read()
        return call

    def _cut(self) -> None:
        tree = self.tree_of()
        if tree is None or len(self.images) >= self.limit:
            return
        acknowledged = tree._state.synced
        self.images.append((acknowledged, {
            name: self.durable.get(os.path.join(self.directory, name), b"")
            for name in os.listdir(self.directory) if name != "LOCK"}))

    @property
    def full(self) -> bool:
        return len(self.images) >= self.limit


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
@pytest.mark.parametrize("acknowledge", sorted(POLICIES))
def test_power_cut_before_any_flush_keeps_every_acknowledged_entry(tmp_path, monkeypatch,
                                                                    acknowledge):
    """Writers sharing rounds, checkpoints rotating and deleting segments,
    flushes, and (under "wal") the recorder, all at once; the power fails
    just before one of their flushes, each in turn. Each image opens
    without CorruptionError and holds every entry acknowledged before the
    cut, in order: neither the record nor a frame ever claims an entry no
    fsync made durable."""
    directory = str(tmp_path / "t")
    trees: list = []
    cut = PowerCut(monkeypatch, directory, lambda: trees[0] if trees else None, limit=250)
    tree = manual(directory, arity=4, flush_policy=POLICIES[acknowledge])
    trees.append(tree)
    order = threading.Lock()
    errors: list = []
    count = [0]

    def writer() -> None:
        try:
            while not cut.full:
                with order:   # leaf i at position i, so a prefix has a known root
                    _, token = tree.insert(leaf(count[0]))
                    count[0] += 1
                tree._sync_upto(token.seq)   # what insert_durable does after its insert
        except BaseException as error:   # pragma: no cover - reported below
            errors.append(error)

    def checkpointer() -> None:
        try:
            while not cut.full:
                tree.checkpoint()
                threading.Event().wait(0.002)
                tree.flush()
        except BaseException as error:   # pragma: no cover - reported below
            errors.append(error)
    threads = [threading.Thread(target=writer) for _ in range(4)]
    threads.append(threading.Thread(target=checkpointer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tree.close()
    monkeypatch.undo()
    assert not errors, errors
    assert cut.images[-1][0] > cut.images[0][0]
    for k, (acknowledged, files) in enumerate(cut.images):
        crashed = tmp_path / f"cut{k}"
        crashed.mkdir()
        for name, data in files.items():
            (crashed / name).write_bytes(data)
        with manual(crashed, flush_policy=POLICIES[acknowledge]) as reopened:
            assert reopened.stats()["seq"] >= acknowledged, (k, acknowledged)
            assert reopened.root == root_of(split(leaves(0, reopened.size)), 4), k


@pytest.mark.parametrize("acknowledge", sorted(POLICIES))
def test_leaders_that_raise_never_leave_followers_stuck(tmp_path, monkeypatch, acknowledge):
    """Writes of the sync record fail at random, so many rounds' leaders
    raise (under "record" the round fails; under "wal" the recorder
    retries): every caller returns or raises, no leader flag is left
    behind, and once the failures stop everything written is durable and
    recorded."""
    path = tmp_path / "t"
    tree = manual(path, arity=4, flush_policy=POLICIES[acknowledge])
    rng = random.Random(20)
    failing = threading.Event()
    failing.set()
    rng_lock = threading.Lock()

    def flaky() -> bool:   # the first write fails, then three in ten
        with rng_lock:
            return failing.is_set() and (not failed or rng.random() < 0.3)
    failed = fail_record_writes(monkeypatch, tree, flaky)
    outcomes: list = []

    def work(k: int) -> None:
        for i in range(25):
            try:
                tree.insert_durable(leaf(1000 * k + i))
                outcomes.append("ok")
            except DurabilityError as error:
                assert error.operation == "write", error
                outcomes.append("raised")
    pool = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(120)
    assert not any(thread.is_alive() for thread in pool), "a caller never returned"
    assert len(outcomes) == 150 and failed
    assert not tree._state.leading
    failing.clear()
    tree.flush()
    assert tree.stats()["recorded_seq"] == tree.stats()["synced_seq"] == 150
    tree.close()
    monkeypatch.undo()
    assert recorded(path) == 150
    with manual(path, flush_policy=POLICIES[acknowledge]) as reopened:
        assert reopened.size == 150


def test_close_after_a_failed_wal_fsync_records_what_was_acknowledged(tmp_path, monkeypatch):
    """Under "wal" entries acknowledged while the record lagged are still
    durable after a later round's WAL fsync fails (that fsync concerns
    later writes only). close() brings the record up to what was
    acknowledged even then, so that losing those entries to damage is
    detected, as it would be under "record"."""
    path = tmp_path / "t"
    tree = manual(path, arity=4, flush_policy=POLICIES["wal"])
    fail_record_writes(   # the recorder lags: only a caller's write goes through
        monkeypatch, tree,
        lambda: threading.current_thread().name.startswith("rotortree-record"))
    for i in range(3):
        tree.insert_durable(leaf(i))
    assert tree.stats()["synced_seq"] == 3 and recorded(path) == 0
    real_fsync = storage_io.sys_fsync
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    with pytest.raises(DurabilityError):
        tree.insert_durable(leaf(3))   # poisons the tree
    monkeypatch.setattr(storage_io, "sys_fsync", real_fsync)
    tree.close()   # the failure was reported to the caller above
    monkeypatch.undo()
    assert recorded(path) == 3
    for name in segments(path):   # the acknowledged entries lost: detected
        os.unlink(path / name)
    with pytest.raises(CorruptionError, match="acknowledged"):
        manual(path)


@pytest.mark.parametrize("acknowledge", sorted(POLICIES))
def test_an_interrupted_close_never_leaves_the_directory_locked(tmp_path, acknowledge,
                                                               frozen_heap):
    """A KeyboardInterrupt at any point of close(), then the tree dropped:
    the finalizer finishes the job, so the directory opens again (and
    holds what was acknowledged). An interrupt between closing a WAL
    segment's descriptor and forgetting it made the finalizer close it a
    second time, which raised EBADF before the lock was released: the
    directory stayed locked for the life of the process."""
    at = 1
    while True:
        path = tmp_path / f"t{at}"
        tree = manual(path, arity=4, flush_policy=POLICIES[acknowledge])
        tree.insert_durable(leaves(0, 5))
        tree.insert_many(leaves(5, 3))
        injected, _ = run_injecting(tree.close, at)
        del tree
        gc.collect()
        # The finalizer runs here, or in the recorder thread if that held
        # the tree for a moment (a record write): the lock goes with it.
        opened: list = []

        def unlocked() -> bool:
            try:
                opened.append(manual(path, flush_policy=POLICIES[acknowledge]))
            except TreeLockedError:
                return False
            return True
        assert eventually(unlocked), f"still locked after an interrupt at point {at}"
        with opened[0] as reopened:
            assert reopened.size in (5, 8), at
            assert reopened.root == root_of(split(leaves(0, reopened.size)), 4), at
        if not injected:
            break   # every point of one close() has been tried
        at += 1
    assert at > 20
