"""Late review of the background leaf-index build in durable recovery:
failures after the checkpoint's levels were restored, and index answers
after reopening trees whose WAL holds leaves of the checkpoint again."""

from __future__ import annotations

import numpy as np
import pytest

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
