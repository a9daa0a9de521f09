"""The flusher and checkpointer threads (they hold only a weak reference
to the tree), and the fork hook that detaches a forked child's copies."""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from ..errors import ClosedTreeError, DurabilityError

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
