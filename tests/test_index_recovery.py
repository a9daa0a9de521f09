"""Durable recovery builds the leaf index of the checkpoint's leaves in the
background while it verifies the checkpoint and replays the WAL (issue 17,
recovery target): the index it ends with must be the one built from all
the recovered leaves after the replay, whatever the recovery met (torn
tail, unverified damaged leaves), and a recovery that fails must leave no
build running or half-adopted."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import rotortree
from rotortree import CheckpointPolicy, CorruptionError, FlushPolicy, LeanIMT, RotorTree
from rotortree._native import ffi, lib
from rotortree.durable import recovery
from rotortree.storage import level_file_name

# Small pool units, so that trees of tens of thousands of leaves take the
# pool's and the partitioned fill's paths in the builds after the replay
# and in adopt (the background build itself runs on its own thread).
CHUNK = 1
CHECKPOINTED, REPLAYED, UNFLUSHED = 60_000, 9_000, 3_000


@pytest.fixture(autouse=True)
def small_units():
    rotortree.configure(num_threads=2, par_chunk_size=CHUNK)


def manual(path, **kwargs):
    return RotorTree.open(path, flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual(), **kwargs)


def leaves_with_repeats(count, seed):
    """Random leaves, a tenth of them repeats of earlier ones (first
    positions matter), some repeating leaves of the checkpoint in the WAL."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(count, 32), dtype=np.uint8)
    picks = rng.integers(0, count, size=count // 10)
    for target in picks:
        data[target] = data[rng.integers(0, target + 1)]
    return data


class Builds:
    """Every IndexBuild recovery makes, and what became of it."""

    def __init__(self, monkeypatch):
        self.made = []
        made = self.made

        class Counted(recovery.IndexBuild):
            __slots__ = ("adopted",)

            def __init__(self, *args):
                super().__init__(*args)
                self.adopted = False
                made.append(self)

            def adopt(self, tree):
                super().adopt(tree)
                self.adopted = True

        monkeypatch.setattr(recovery, "IndexBuild", Counted)
        monkeypatch.setattr("rotortree.durable.opening.IndexBuild", Counted, raising=False)

    def all_consumed(self):
        # Adopted or discarded: the C thread was joined and the view freed.
        return all(b._handle is None and b._view is None for b in self.made)


def crashed_tree(base, data):
    """A checkpoint of CHECKPOINTED leaves, REPLAYED more flushed to the WAL,
    UNFLUSHED after them; then the process "dies" (a copy is recovered)."""
    path = base / "live"
    tree = manual(path, create=True, arity=4, index=True)
    tree.insert_many(data[:CHECKPOINTED])
    tree.checkpoint()
    tree.insert_many(data[CHECKPOINTED:CHECKPOINTED + REPLAYED // 2])
    tree.insert_many(data[CHECKPOINTED + REPLAYED // 2:CHECKPOINTED + REPLAYED])
    tree.flush()
    tree.insert_many(data[CHECKPOINTED + REPLAYED:])
    crashed = base / "crashed"
    shutil.copytree(path, crashed, ignore=shutil.ignore_patterns("LOCK"))
    tree.close()
    return crashed


def last_segment(path):
    names = sorted(n for n in os.listdir(path)
                   if rotortree.storage.parse_segment_name(n) is not None)
    return os.path.join(path, names[-1])


def lookups(tree, probes):
    return (np.frombuffer(tree.index_of_many(probes), dtype=np.int64).copy(),
            tree.index_stats()["entries"])


def expected_positions(leaves, probes):
    first = {}
    for position, row in enumerate(leaves):
        first.setdefault(row.tobytes(), position)
    return np.array([first.get(row.tobytes(), -1) for row in probes], dtype=np.int64), len(first)


def open_both_ways(monkeypatch, path, **kwargs):
    """Open copies of ``path`` with and without the background build; each
    tree's leaves and (positions of every probe, entries)."""
    results = {}
    for background in (True, False):
        copy = f"{path}-{background}"
        shutil.copytree(path, copy)
        monkeypatch.setattr(recovery, "BACKGROUND_INDEX", background)
        with manual(copy, **kwargs) as tree:
            leaves = np.frombuffer(b"".join(tree.get_node(0, i) for i in range(tree.size)),
                                   dtype=np.uint8).reshape(-1, 32)
            probes = np.concatenate([leaves, ABSENT])
            results[background] = (leaves, lookups(tree, probes), tree.recovery)
    return results


ABSENT = np.random.default_rng(99).integers(0, 256, size=(8, 32), dtype=np.uint8)


@pytest.mark.parametrize("case", ["clean", "torn_tail", "unverified_damaged_leaf",
                                  "level0_served_from_its_file"])
def test_background_index_equals_the_one_built_after_the_replay(tmp_path, monkeypatch, case):
    data = leaves_with_repeats(CHECKPOINTED + REPLAYED + UNFLUSHED, seed=len(case))
    path = crashed_tree(tmp_path, data)
    kwargs = {}
    if case == "torn_tail":   # the last, unacknowledged frame is cut short
        segment = last_segment(path)
        os.truncate(segment, os.path.getsize(segment) - 5)
    elif case == "unverified_damaged_leaf":
        # A damaged leaf the checksum is not asked to catch: the tree and
        # both indexes hold the damaged value alike.
        level0 = os.path.join(path, level_file_name(0))
        with open(level0, "r+b") as handle:
            handle.seek(32 * 12_345)
            handle.write(bytes(32))
        kwargs["verify_checkpoint"] = False
    elif case == "level0_served_from_its_file":
        # The tree keeps the mapping the build reads (by default level 0 is
        # copied and the mapping released after the restore, while the
        # build's own view keeps it mapped until adopted).
        kwargs["mmap_levels"] = 1
    builds = Builds(monkeypatch)
    results = open_both_ways(monkeypatch, path, **kwargs)
    assert len(builds.made) == 1 and builds.made[0].adopted and builds.all_consumed()
    (leaves, (positions, entries), info), (plain_leaves, plain, _) = results[True], results[False]
    assert np.array_equal(leaves, plain_leaves)
    assert np.array_equal(positions, plain[0]) and entries == plain[1]
    probes = np.concatenate([leaves, ABSENT])
    assert np.array_equal(positions, expected_positions(leaves, probes)[0])
    assert entries == expected_positions(leaves, probes)[1]
    size = CHECKPOINTED + REPLAYED + (UNFLUSHED if case != "torn_tail" else 0)
    if case == "torn_tail":
        assert info["torn_tail"] and CHECKPOINTED + REPLAYED <= len(leaves) < \
            CHECKPOINTED + REPLAYED + UNFLUSHED
    else:
        assert len(leaves) == size
    if case == "unverified_damaged_leaf":
        assert positions[12_345] == 12_345 and not leaves[12_345].any()


def test_a_failed_recovery_leaves_no_build_behind(tmp_path, monkeypatch):
    data = leaves_with_repeats(CHECKPOINTED + REPLAYED + UNFLUSHED, seed=7)
    path = crashed_tree(tmp_path, data)
    level0 = os.path.join(path, level_file_name(0))
    with open(level0, "r+b") as handle:   # caught by the checksum, after the build started
        handle.seek(32 * 100)
        handle.write(bytes(32))
    builds = Builds(monkeypatch)
    with pytest.raises(CorruptionError):
        manual(path)
    assert len(builds.made) == 1 and not builds.made[0].adopted and builds.all_consumed()
    # A failure in the replay, after the checkpoint was restored.
    def broken(*args):
        raise CorruptionError("injected", str(path))
    monkeypatch.setattr(recovery.Recovery, "_check_segment_header", staticmethod(broken))
    with pytest.raises(CorruptionError, match="injected"):
        manual(path, verify_checkpoint=False)
    assert len(builds.made) == 2 and not builds.made[1].adopted and builds.all_consumed()
    monkeypatch.undo()
    rotortree.configure(num_threads=2, par_chunk_size=CHUNK)
    with manual(path, verify_checkpoint=False) as tree:   # the directory is still usable
        assert tree.indexed and tree.index_of(data[5].tobytes()) is not None


def build_from(buffer, count, expected):
    out = ffi.new("rt_index_build **")
    assert lib.rt_index_build_start(ffi.from_buffer("uint8_t[]", buffer), count, expected,
                                    out) == lib.RT_OK
    return out[0]


def check_index(tree, leaves):
    probes = np.concatenate([leaves, ABSENT])
    expected, entries = expected_positions(leaves, probes)
    positions = np.frombuffer(tree.index_of_many(probes), dtype=np.int64)
    assert np.array_equal(positions, expected) and tree.index_stats()["entries"] == entries


@pytest.mark.parametrize("case", ["fits", "outgrown", "other_leaves", "indexed_already"])
def test_adopt_uses_the_build_only_when_it_fits_the_tree(case):
    data = leaves_with_repeats(40_000, seed=3)
    count = 30_000
    buffer = bytearray(data[:count].tobytes())
    if case == "other_leaves":
        buffer[-1] ^= 1   # the tree's last buffered leaf differs
    tree = LeanIMT(4, 20, index=case == "indexed_already")
    grown = data if case != "outgrown" else np.concatenate([data] * 8)
    tree.insert_many(grown)
    build = build_from(buffer, count, 40_000 if case != "outgrown" else count)
    assert lib.rt_tree_index_adopt(tree._tree, build) == lib.RT_OK
    assert tree.indexed
    check_index(tree, grown)
    tree.insert_many(data[:10])   # the adopted table keeps up with inserts
    check_index(tree, np.concatenate([grown, data[:10]]))


def test_a_discarded_build_is_freed_and_start_refuses_bad_arguments():
    buffer = leaves_with_repeats(20_000, seed=4).tobytes()   # alive until the discard
    lib.rt_index_build_discard(build_from(buffer, 20_000, 20_000))
    lib.rt_index_build_discard(ffi.NULL)
    out = ffi.new("rt_index_build **")
    assert lib.rt_index_build_start(ffi.NULL, 1, 1, out) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_index_build_start(ffi.from_buffer(bytes(32)), 0, 1, out) == \
        lib.RT_ERR_INVALID_ARGUMENT
    assert out[0] == ffi.NULL
    assert lib.rt_tree_index_adopt(ffi.NULL, ffi.NULL) == lib.RT_ERR_INVALID_ARGUMENT


# ---------------------------------------------------------------------------
# Unique inserts read an immutable batch in place (RT_UNIQUE_STABLE)


def test_only_immutable_or_private_batches_skip_the_copy():
    from rotortree.tree import _stable
    from rotortree._leaves import leaf_batch

    data = leaves_with_repeats(4, seed=5)
    as_bytes = data.tobytes()
    stable = {"bytes": as_bytes, "list": [row.tobytes() for row in data]}
    mutable = {"bytearray": bytearray(as_bytes), "numpy": data,
               "memoryview": memoryview(bytearray(as_bytes))}
    for name, leaves in {**stable, **mutable}.items():
        buffer, _ = leaf_batch(leaves)
        assert _stable(leaves, buffer) == (lib.RT_UNIQUE_STABLE if name in stable else 0), name


@pytest.mark.parametrize("form", ["bytes", "bytearray", "numpy", "list"])
def test_unique_inserts_agree_whether_the_batch_is_copied_or_not(form):
    data = leaves_with_repeats(50_000, seed=6)
    fresh = np.unique(data, axis=0)
    np.random.default_rng(8).shuffle(fresh)
    batches = {"bytes": fresh.tobytes(), "bytearray": bytearray(fresh.tobytes()),
               "numpy": fresh, "list": [row.tobytes() for row in fresh]}
    tree, reference = LeanIMT(4, 20, index=True), LeanIMT(4, 20)
    root = tree.insert_many(batches[form], unique=True)
    assert root == reference.insert_many(fresh)
    check_index(tree, fresh)
    with pytest.raises(rotortree.DuplicateLeafError) as info:
        tree.insert_many(batches[form], unique=True)
    assert info.value.positions == list(range(len(fresh))) and tree.size == len(fresh)
    assert tree.insert_new(batches[form])[1] == list(range(len(fresh)))
    assert tree.root == root


def test_the_stable_flag_is_no_mode_of_its_own():
    tree = LeanIMT(4, 20, index=True)
    marks, dups, root = bytearray(1), ffi.new("uint64_t *"), ffi.new("uint8_t[32]")
    leaf = ffi.from_buffer("uint8_t[]", bytes(range(32)))
    assert lib.rt_tree_insert_unique(tree._tree, leaf, 1, lib.RT_UNIQUE_STABLE,
                                     ffi.from_buffer("uint8_t[]", marks), dups, root) == \
        lib.RT_ERR_INVALID_ARGUMENT
    assert tree.size == 0
    assert lib.rt_tree_insert_unique(tree._tree, leaf, 1,
                                     lib.RT_UNIQUE_REJECT | lib.RT_UNIQUE_STABLE,
                                     ffi.from_buffer("uint8_t[]", marks), dups, root) == lib.RT_OK
    assert tree.size == 1 and tree.index_of(bytes(range(32))) == 0


def test_an_interrupt_as_the_build_starts_joins_and_frees_it(tmp_path, monkeypatch):
    """A KeyboardInterrupt raised as rt_index_build_start returns (Python
    checks signals at the next bytecode) must not leave the C thread running
    with nobody to join it or free its table."""
    data = leaves_with_repeats(CHECKPOINTED, seed=7)
    path = tmp_path / "tree"
    with manual(path, create=True, arity=4, index=True) as tree:
        tree.insert_many(data)
        tree.checkpoint()
    discarded = []

    class InterruptingLib:
        def __getattr__(self, name):
            return getattr(lib, name)

        def rt_index_build_start(self, *args):
            status = lib.rt_index_build_start(*args)
            assert status == lib.RT_OK and args[-1][0] != ffi.NULL
            raise KeyboardInterrupt

        def rt_index_build_discard(self, handle):
            discarded.append(handle)
            lib.rt_index_build_discard(handle)

    monkeypatch.setattr(recovery, "lib", InterruptingLib())
    monkeypatch.setattr(recovery, "BACKGROUND_INDEX", True)
    with pytest.raises(KeyboardInterrupt):
        manual(path)
    assert len(discarded) == 1
    monkeypatch.setattr(recovery, "lib", lib)
    with manual(path) as tree:   # nothing of the interrupted open remains
        assert tree.size == CHECKPOINTED and tree.index_of(data[5].tobytes()) >= 0
