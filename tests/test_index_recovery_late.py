"""Late review of the background leaf-index build in durable recovery:
failures after the checkpoint's levels were restored, and index answers
after reopening trees whose WAL holds leaves of the checkpoint again."""

from __future__ import annotations

import numpy as np
import pytest

from rotortree._native import ffi, lib
from rotortree.durable import recovery
from test_index_recovery import (CHECKPOINTED, REPLAYED, UNFLUSHED, Builds, crashed_tree,
                                 leaves_with_repeats, manual)


@pytest.mark.parametrize("error", [KeyboardInterrupt, MemoryError])
def test_a_failure_while_the_levels_are_handed_to_the_tree_discards_the_build(
        tmp_path, monkeypatch, error):
    """The build's C thread reads the level-0 mapping: a failure after the
    restore but before _restore_checkpoint returns the build (a Ctrl-C, or
    no memory while the mapped levels are handed to the tree) must join
    the thread and free its table, not leave the mapping to the garbage
    collector while the thread still reads it."""
    data = leaves_with_repeats(CHECKPOINTED + REPLAYED + UNFLUSHED, seed=3)
    path = crashed_tree(tmp_path, data)
    builds = Builds(monkeypatch)
    monkeypatch.setattr(recovery, "BACKGROUND_INDEX", True)

    def failing(self, level, cdata, count):
        raise error

    monkeypatch.setattr(recovery.Recovery, "_make_cold", failing)
    with pytest.raises(error):
        manual(path, mmap_levels=1)
    assert len(builds.made) == 1 and not builds.made[0].adopted and builds.all_consumed()
    monkeypatch.undo()
    with manual(path, mmap_levels=1) as tree:   # the directory is still usable
        assert tree.size == CHECKPOINTED + REPLAYED + UNFLUSHED
        assert tree.index_of(data[5].tobytes()) is not None


@pytest.mark.parametrize("status", ["RT_ERR_THREAD", "RT_ERR_NOMEM"])
@pytest.mark.parametrize("mmap_levels", [0, 1])
def test_a_build_that_cannot_start_leaves_the_mapping_to_the_restore(
        tmp_path, monkeypatch, status, mmap_levels):
    """No thread or no memory for the background build: recovery goes on
    and indexes all leaves after the replay. The build must not unmap the
    level-0 file the restore still reads (checksum, the tree's copy)."""
    data = leaves_with_repeats(CHECKPOINTED + REPLAYED + UNFLUSHED, seed=4)
    path = crashed_tree(tmp_path, data)
    calls = []

    class RefusingLib:
        def __getattr__(self, name):
            return getattr(lib, name)

        def rt_index_build_start(self, leaves, count, expected, out):
            calls.append(count)
            out[0] = ffi.NULL
            return getattr(lib, status)

    monkeypatch.setattr(recovery, "lib", RefusingLib())
    monkeypatch.setattr(recovery, "BACKGROUND_INDEX", True)
    with manual(path, mmap_levels=mmap_levels) as tree:
        assert calls == [CHECKPOINTED]
        size = CHECKPOINTED + REPLAYED + UNFLUSHED
        assert tree.size == size and tree.indexed
        first = {}
        for position, row in enumerate(data[:size]):
            first.setdefault(row.tobytes(), position)
        probes = np.ascontiguousarray(data[:size:97])
        got = np.frombuffer(tree.index_of_many(probes), dtype=np.int64)
        assert got.tolist() == [first[row.tobytes()] for row in probes]
        assert tree.index_stats()["entries"] == len(first)


def interrupted_after(monkeypatch, owner, name):
    """Make ``owner.name`` return normally, then raise KeyboardInterrupt:
    what a Ctrl-C does when Python checks for signals as the call returns,
    before its result reaches the caller's variable."""
    original = getattr(owner, name)

    def interrupted(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(owner, name, interrupted)


@pytest.mark.parametrize("where", ["IndexBuild", "_restore_checkpoint"])
def test_an_interrupt_as_a_started_build_is_handed_back_discards_it(
        tmp_path, monkeypatch, where):
    """The build's thread runs from inside IndexBuild(...): an interrupt as
    that constructor, or the restore that returns the build, hands it back
    must still join the thread before the level-0 mapping can be unmapped."""
    data = leaves_with_repeats(CHECKPOINTED + REPLAYED + UNFLUSHED, seed=5)
    path = crashed_tree(tmp_path, data)
    builds = Builds(monkeypatch)
    monkeypatch.setattr(recovery, "BACKGROUND_INDEX", True)
    if where == "IndexBuild":
        counted = recovery.IndexBuild

        class Interrupted(counted):
            __slots__ = ()

            def __init__(self, *args):
                super().__init__(*args)
                raise KeyboardInterrupt

        monkeypatch.setattr(recovery, "IndexBuild", Interrupted)
    else:
        interrupted_after(monkeypatch, recovery.Recovery, "_restore_checkpoint")
    with pytest.raises(KeyboardInterrupt):
        manual(path)
    assert len(builds.made) == 1 and not builds.made[0].adopted and builds.all_consumed()
    monkeypatch.undo()
    with manual(path) as tree:
        assert tree.size == CHECKPOINTED + REPLAYED + UNFLUSHED
        assert tree.index_of(data[7].tobytes()) is not None
