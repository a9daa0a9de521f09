"""Attacks on group commit and on acknowledge="wal": interrupts at every
point of a round while other threads and coroutines wait for it, records
that must never claim what no fsync completed, and the bookkeeping that
``stats()`` reports."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from rotortree import FlushPolicy
from test_durable import leaf, manual
from test_durable_ack import eventually
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
