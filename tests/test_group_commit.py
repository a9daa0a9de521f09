"""Group commit's gate (rt_sync_gate_*): the C meeting point of an fsync
round's leader and its followers, waited on without the GIL, and the
durable tree's use of it (a lead is never left behind, whatever interrupts
the leader; one round acknowledges every follower it covered)."""

from __future__ import annotations

import threading
import time

import pytest

from rotortree import FlushPolicy
from rotortree._native import ffi, lib
from rotortree.durable import wal as wal_module
from rotortree.storage import io as storage_io
from test_durable import leaf, manual


def new_gate(synced: int, gather_max_ns: int = 0):
    return ffi.gc(lib.rt_sync_gate_new(synced, gather_max_ns), lib.rt_sync_gate_free)


def in_thread(fn):
    """fn() run on another thread: its result."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    return out[0]


def test_gate_outcomes():
    gate = new_gate(5)
    assert lib.rt_sync_gate_wait(gate, 5, 0) == lib.RT_SYNC_DURABLE
    assert lib.rt_sync_gate_wait(gate, 6, 0) == lib.RT_SYNC_LEAD   # no round runs: lead one
    assert lib.rt_sync_gate_leading(gate) == 1
    # Another thread finds the round running and times out waiting for it.
    assert in_thread(lambda: lib.rt_sync_gate_wait(gate, 6, 10)) == lib.RT_SYNC_TIMEOUT
    # Only the leader's own thread gives the lead up; others may raise the point.
    in_thread(lambda: lib.rt_sync_gate_end(gate, 5))
    assert lib.rt_sync_gate_leading(gate) == 1
    lib.rt_sync_gate_end(gate, 6)
    assert lib.rt_sync_gate_leading(gate) == 0
    assert in_thread(lambda: lib.rt_sync_gate_wait(gate, 6, 0)) == lib.RT_SYNC_DURABLE
    lib.rt_sync_gate_end(gate, 3)   # the durable point never moves back
    assert lib.rt_sync_gate_wait(gate, 6, 0) == lib.RT_SYNC_DURABLE
    lib.rt_sync_gate_fail(gate)
    assert lib.rt_sync_gate_wait(gate, 7, 0) == lib.RT_SYNC_FAILED
    assert lib.rt_sync_gate_wait(gate, 6, 0) == lib.RT_SYNC_DURABLE


def test_followers_wake_when_the_round_ends():
    """Followers blocked for the running round all return once the leader
    ends it: durable if it covered them, else one of them leads next."""
    gate = new_gate(0)
    assert lib.rt_sync_gate_wait(gate, 1, 0) == lib.RT_SYNC_LEAD
    outcomes = []
    lock = threading.Lock()

    def follow(seq: int) -> None:
        outcome = lib.rt_sync_gate_wait(gate, seq, 60_000)
        with lock:
            outcomes.append((seq, outcome))
        if outcome == lib.RT_SYNC_LEAD:
            lib.rt_sync_gate_end(gate, seq)
    pool = [threading.Thread(target=follow, args=(seq,)) for seq in (1, 1, 2, 2)]
    for thread in pool:
        thread.start()
    lib.rt_sync_gate_end(gate, 1)
    for thread in pool:
        thread.join(60)
    assert not any(thread.is_alive() for thread in pool)
    assert sorted(o for s, o in outcomes if s == 1) == [lib.RT_SYNC_DURABLE] * 2
    # Of the two not covered, one led the next round, which covered the other.
    assert sorted(o for s, o in outcomes if s == 2) == [lib.RT_SYNC_DURABLE, lib.RT_SYNC_LEAD]
    assert lib.rt_sync_gate_leading(gate) == 0


def test_a_new_leader_gathers_the_last_rounds_writers():
    """A round ended with three followers waiting: of them, the one made the
    next leader waits for the last round's leader (back with a new entry)
    to queue too before its round starts, so that one round covers all
    four writers, where it would start at once and leave that writer a
    round behind. The wait is bounded by half the last round (here about
    half a second, generous for a loaded machine) and gather_max_ns."""
    gate = new_gate(0, 60 * 10**9)
    assert lib.rt_sync_gate_wait(gate, 1, 0) == lib.RT_SYNC_LEAD
    led = []

    def follow() -> None:
        if lib.rt_sync_gate_wait(gate, 2, 60_000) == lib.RT_SYNC_LEAD:
            led.append(lib.rt_sync_gate_waiting(gate))
            lib.rt_sync_gate_end(gate, 3)
    pool = [threading.Thread(target=follow) for _ in range(3)]
    for thread in pool:
        thread.start()
    while lib.rt_sync_gate_waiting(gate) < 3:
        time.sleep(0.001)
    time.sleep(1.0)   # the last round's length bounds the next one's gathering
    lib.rt_sync_gate_end(gate, 1)
    back = threading.Thread(target=lambda: lib.rt_sync_gate_wait(gate, 3, 60_000))
    back.start()
    for thread in pool + [back]:
        thread.join(60)
    assert not any(thread.is_alive() for thread in pool + [back])
    assert led == [3]   # the two other followers and the returning writer


def test_a_lone_writer_never_gathers():
    """After a round without followers a new leader starts at once (a
    gathering bounded by a minute would hang the test otherwise)."""
    gate = new_gate(0, 60 * 10**9)
    for seq in range(1, 4):
        assert lib.rt_sync_gate_wait(gate, seq, 60_000) == lib.RT_SYNC_LEAD
        lib.rt_sync_gate_end(gate, seq)


class _Interrupting:
    """Stands in for the cffi ``lib`` in the WAL module: the gate's wait
    raises KeyboardInterrupt as it returns with the lead, the point where
    the caller has not yet seen that it leads."""

    def __init__(self) -> None:
        self.fired = 0

    def __getattr__(self, name: str):
        return getattr(lib, name)

    def rt_sync_gate_wait(self, gate, seq, timeout_ms):
        outcome = lib.rt_sync_gate_wait(gate, seq, timeout_ms)
        if outcome == lib.RT_SYNC_LEAD and not self.fired:
            self.fired += 1
            raise KeyboardInterrupt("as the gate made this caller the leader")
        return outcome


@pytest.mark.parametrize("acknowledge", ["record", "wal"])
def test_a_leader_interrupted_as_it_is_elected_gives_the_lead_up(tmp_path, monkeypatch,
                                                                 acknowledge):
    tree = manual(tmp_path / "t", arity=4, flush_policy=FlushPolicy.manual(
        acknowledge=acknowledge))
    interrupting = _Interrupting()
    monkeypatch.setattr(wal_module, "lib", interrupting)
    with pytest.raises(KeyboardInterrupt):
        tree.insert_durable(leaf(0))
    assert interrupting.fired == 1
    assert not tree._state.leading
    # The entry is in the tree, not yet durable; the next caller leads a round
    # (in a thread, so that a stuck lead fails the join, not the suite).
    assert tree.size == 1 and tree.stats()["synced_seq"] == 0
    in_thread(lambda: tree.insert_durable(leaf(1)))
    assert tree.stats()["synced_seq"] == 2
    tree.close()


def test_one_round_acknowledges_every_follower_it_covers(tmp_path, monkeypatch):
    """Followers that wrote before a round started return when it ends,
    without rounds of their own: the round's fsync is held until all of them
    wait at the gate, then exactly one more fsync (none) runs."""
    tree = manual(tmp_path / "t", arity=4)
    real = storage_io.sys_fsync
    release = threading.Event()
    entered = threading.Event()
    fsyncs = []

    def held(fd):
        fsyncs.append(fd)
        entered.set()
        release.wait(60)
        return real(fd)
    followers = 5
    tokens = [tree.insert_many(leaf(k))[1] for k in range(followers + 1)]
    monkeypatch.setattr(storage_io, "sys_fsync", held)
    leader = threading.Thread(target=tree._sync_upto, args=(tokens[0].seq,))
    leader.start()
    assert entered.wait(60)
    pool = [threading.Thread(target=tree._sync_upto, args=(token.seq,))
            for token in tokens[1:]]
    for thread in pool:
        thread.start()
    assert all(not token.durable for token in tokens)
    release.set()
    for thread in [leader] + pool:
        thread.join(60)
    assert not any(thread.is_alive() for thread in [leader] + pool)
    assert len(fsyncs) == 1 and all(token.durable for token in tokens)
    tree.close()
