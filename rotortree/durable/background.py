"""The flusher, recorder and checkpointer threads (they hold only a weak
reference to the tree), and the fork hook that detaches a forked child's
copies."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from ..errors import ClosedTreeError, DurabilityError
from .files import Files
from .tokens import SyncState

if TYPE_CHECKING:
    from .tree import RotorTree


# Trees opened by this process. A forked child inherits their descriptors,
# and with them the directory lock: flock (and OFD) locks belong to the open
# file description, which fork shares, so a multiprocessing worker that
# outlived the parent's close() kept the tree locked. Close-on-exec does not
# help (fork does not exec), so the child drops the descriptors at once.
open_trees: "weakref.WeakSet[RotorTree]" = weakref.WeakSet()


def after_fork_in_child() -> None:
    for tree in list(open_trees):
        try:
            tree._detach_forked_copy()
        except Exception:   # an at-fork hook must not fail the fork
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)


def flusher_main(ref: "weakref.ref[RotorTree]", stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        tree = ref()
        if tree is None:
            return
        try:
            if tree._seq > tree._state.synced:
                tree._sync_upto(tree._seq, report=False)
        except ClosedTreeError:
            return
        except DurabilityError:
            if tree._failed is not None:
                return  # failed: tokens and the next call report it
            # A write of the sync record failed, which poisons nothing:
            # retried at the next interval, so tokens still become durable.
        finally:
            del tree


# The least time between two writes of the sync record by the recorder
# thread (acknowledge="wal"), in seconds.
RECORD_GAP = 0.010


def recorder_main(ref: "weakref.ref[RotorTree]", stop: threading.Event, state: SyncState,
                  files: Files) -> None:
    """Advance the sync record to what the fsync rounds acknowledged, for
    trees whose flush policy acknowledges after the WAL fsync alone
    (acknowledge="wal"): one record write covers every round that ended
    before it starts, concurrently with the next round's WAL fsync."""
    record = files.sync
    if record is None:
        return
    while True:
        with state.cond:
            while (state.synced <= record.seq and not stop.is_set()
                   and state.error is None and not state.closed):
                # Bounded: a stop is announced by a notification, except
                # when the tree is collected or abandoned without close().
                state.cond.wait(0.1)
            if stop.is_set() or state.error is not None or state.closed:
                return
            target = state.synced
        tree = ref()
        if tree is None:
            return
        try:
            tree._record_upto(target)
            failed = False
        except DurabilityError as error:
            if error.operation == "fsync":
                return   # the tree is poisoned: tokens and the next call report it
            # A failed write poisons nothing (the slot holding the last good
            # value is kept): retried below; close() reports one that persists.
            failed = True
        except Exception:
            failed = True
        finally:
            del tree
        # Also after a success: the record's flush contends for the disk
        # with the next round's WAL fsync, so writing it after every round
        # would cost each round a second flush again. At most one record
        # write per RECORD_GAP bounds that to a few percent and the record's
        # lag to RECORD_GAP plus one write.
        if stop.wait(0.05 if failed else RECORD_GAP):
            return


def checkpointer_main(ref: "weakref.ref[RotorTree]", wake: threading.Event,
                       stop: threading.Event) -> None:
    while True:
        wake.wait()
        if stop.is_set():
            return
        wake.clear()
        tree = ref()
        if tree is None:
            return
        failed = False
        try:
            while not stop.is_set() and tree._checkpoint_due():
                tree._checkpoint(automatic=True)
        except ClosedTreeError:
            return
        except Exception as error:  # reported by the next write call
            failed = True
            if tree._failed is None:
                tree._background_error = error
        finally:
            del tree
        if failed and stop.wait(1.0):  # back off before retrying
            return
