"""The leaf index (issue 17): membership, first positions, unique inserts,
snapshots by the size rule, save/load and durable trees, checked against a
plain Python model."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import zlib

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotortree
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    CorruptionError,
    DuplicateLeafError,
    EmptyBatchError,
    FlushPolicy,
    InvalidLeafError,
    LeanIMT,
    NoLeafIndexError,
    RotorTree,
    StorageMismatchError,
)
from rotortree import _core, storage
from rotortree.storage import io as storage_io


def leaf(i: int) -> bytes:
    return blake3.blake3(i.to_bytes(8, "little")).digest()


# Every third pool leaf is a counter with 24 zero bytes in front: leaves that
# are not hashes must not all land in one bucket.
POOL = [i.to_bytes(32, "big") if i % 3 == 0 else leaf(i) for i in range(24)]
OUTSIDE = [leaf(1000 + i) for i in range(4)]


class Model:
    """A tree's leaves as a list; first positions from a dict."""

    def __init__(self, leaves=()):
        self.leaves = list(leaves)

    def first(self, size=None):
        out = {}
        for position, value in enumerate(self.leaves[:size]):
            out.setdefault(value, position)
        return out

    def duplicates(self, batch):
        seen = set(self.leaves)
        marks = []
        for value in batch:
            marks.append(value in seen)
            seen.add(value)
        return [i for i, dup in enumerate(marks) if dup]


def check_against(view, model: Model, size=None):
    """Every lookup form of ``view`` (tree, snapshot, durable tree) agrees
    with the model's first ``size`` leaves."""
    first = model.first(size)
    probes = POOL + OUTSIDE
    for value in probes:
        assert view.has(value) == (value in first)
        assert (value in view) == (value in first)
        assert view.index_of(value) == first.get(value)
    found = view.contains_many(b"".join(probes))
    assert list(found) == [int(v in first) for v in probes]
    positions = view.index_of_many(probes)
    assert positions.tolist() == [first.get(v, -1) for v in probes]


OPS = st.lists(
    st.tuples(st.sampled_from(["plain", "unique", "new", "single"]),
              st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=12)),
    min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arity=st.integers(2, 9), pre=st.lists(st.integers(0, len(POOL) - 1), max_size=20),
       ops=OPS, snap_every=st.integers(1, 4))
def test_matches_a_python_model(arity, pre, ops, snap_every):
    # Leaves already in the tree when the index is enabled, then batches with
    # repeats inside and across them, through every insert form.
    tree = LeanIMT(arity, 16)
    model = Model(POOL[i] for i in pre)
    if pre:
        tree.insert_many([POOL[i] for i in pre])
    tree.enable_index()
    snapshots = []
    for step, (mode, picks) in enumerate(ops):
        batch = [POOL[i] for i in picks]
        dups = model.duplicates(batch)
        root_before, size_before = tree.root, tree.size
        if mode == "plain":
            tree.insert_many(batch)
            model.leaves += batch
        elif mode == "unique":
            if dups:
                with pytest.raises(DuplicateLeafError) as info:
                    tree.insert_many(batch, unique=True)
                assert info.value.positions == dups
                assert info.value.leaves == [batch[p] for p in dups]
                assert tree.root == root_before and tree.size == size_before
            else:
                tree.insert_many(batch, unique=True)
                model.leaves += batch
        elif mode == "new":
            root, dropped = tree.insert_new(batch)
            assert dropped == dups
            model.leaves += [v for i, v in enumerate(batch) if i not in set(dups)]
            assert root == tree.root
        else:
            value = batch[0]
            if value in model.leaves:
                with pytest.raises(DuplicateLeafError):
                    tree.insert(value, unique=True)
            else:
                tree.insert(value, unique=True)
                model.leaves.append(value)
        assert tree.size == len(model.leaves)
        assert tree.root == rotortree.compute_root(b"".join(model.leaves), arity) \
            if model.leaves else tree.root is None
        check_against(tree, model)
        if step % snap_every == 0:
            snapshots.append((tree.snapshot(), len(model.leaves)))
    for snap, size in snapshots:   # as of their own size, after the tree moved on
        check_against(snap, model, size)


@pytest.mark.parametrize("threads", [1, 2])
def test_large_batches_on_one_and_two_threads(threads):
    # Batches past the pool's unit (16384 lookups at the default chunk):
    # fills, lookups and the duplicate check run on the pool with 2 threads.
    rotortree.configure(num_threads=threads)
    rng = np.random.default_rng(threads)
    distinct = rng.integers(0, 256, size=(60000, 32), dtype=np.uint8)
    picks = rng.integers(0, len(distinct), size=90000)
    data = distinct[picks]
    tree = LeanIMT(4, 20, index=True)
    tree.insert_many(data[:50000])
    tree.insert_many(data[50000:])
    first = {}
    for position, row in enumerate(data):
        first.setdefault(row.tobytes(), position)
    expected = np.array([first.get(row.tobytes(), -1) for row in distinct], dtype=np.int64)
    positions = np.frombuffer(tree.index_of_many(distinct), dtype=np.int64)
    assert (positions == expected).all()
    found = np.frombuffer(tree.contains_many(distinct), dtype=bool)
    assert (found == (expected >= 0)).all()
    stats = tree.index_stats()
    assert stats["entries"] == len(first) and stats["slot_bytes"] == 4
    # Unique check of a large batch: in-batch repeats and tree members.
    fresh = rng.integers(0, 256, size=(40000, 32), dtype=np.uint8)
    batch = np.concatenate([fresh, fresh[:3], distinct[:2]])
    with pytest.raises(DuplicateLeafError) as info:
        tree.insert_many(batch, unique=True)
    in_tree = [40003 + i for i in range(2) if distinct[i].tobytes() in first]
    assert info.value.positions == [40000, 40001, 40002] + in_tree
    assert tree.size == 90000
    root, dropped = tree.insert_new(batch)
    assert dropped == info.value.positions and tree.size == 90000 + len(batch) - len(dropped)
    assert tree.index_of(fresh[-1].tobytes()) == 90000 + 39999


def test_repeated_leaf_grows_past_the_position_bits():
    # Positions outgrow the table's position field while the distinct count
    # stays at 2: the table is rebuilt for the positions, not the load.
    tree = LeanIMT(2, 24, index=True)
    a, b = POOL[1], POOL[2]
    tree.insert(a)
    tree.insert_many(a * 70000)
    tree.insert(b)
    assert tree.index_of(a) == 0 and tree.index_of(b) == 70001
    assert tree.index_stats()["entries"] == 2


def test_duplicate_error_names_positions_and_leaves_and_changes_nothing():
    tree = LeanIMT(4, index=True)
    tree.insert_many(POOL[:5])
    snap = tree.snapshot()
    root = tree.root
    batch = [OUTSIDE[0], POOL[3], OUTSIDE[1], OUTSIDE[0]]
    with pytest.raises(DuplicateLeafError) as info:
        tree.insert_many(batch, unique=True)
    error = info.value
    assert isinstance(error, ValueError) and isinstance(error, rotortree.RotorTreeError)
    assert error.positions == [1, 3] and error.leaves == [POOL[3], OUTSIDE[0]]
    assert "batch position 1" in str(error) and "nothing was inserted" in str(error)
    assert tree.root == root and tree.size == 5
    assert not tree.has(OUTSIDE[0]) and not tree.has(OUTSIDE[1])
    assert tree.index_stats()["entries"] == 5
    assert snap.index_of(POOL[4]) == 4


def test_insert_new_with_nothing_new_keeps_the_root():
    tree = LeanIMT(4, index=True)
    tree.insert_many(POOL[:3])
    root = tree.root
    assert tree.insert_new([POOL[2], POOL[0], POOL[2]]) == (root, [0, 1, 2])
    assert tree.size == 3


def test_bad_input_is_refused_as_for_insert_many():
    tree = LeanIMT(4, index=True)
    tree.insert(POOL[0])
    for bad in ("x" * 32, 5, None):
        with pytest.raises(ArgumentTypeError):
            tree.has(bad)
    with pytest.raises(InvalidLeafError):
        tree.has(b"short")
    with pytest.raises(InvalidLeafError):
        tree.contains_many(b"x" * 33)
    with pytest.raises(EmptyBatchError):
        tree.index_of_many(b"")
    with pytest.raises(ArgumentTypeError):
        tree.insert_many([POOL[1]], unique="yes")
    with pytest.raises(ArgumentTypeError):
        LeanIMT(4, index=1)
    with pytest.raises(InvalidLeafError):
        tree.insert_many([POOL[1], b"x"], unique=True)
    assert tree.size == 1
    plain = LeanIMT(4)
    plain.insert(POOL[0])
    for call in (lambda: plain.has(POOL[0]), lambda: POOL[0] in plain,
                 lambda: plain.contains_many(POOL[0]), lambda: plain.snapshot().has(POOL[0]),
                 lambda: plain.insert_many([POOL[1]], unique=True),
                 lambda: plain.insert_new([POOL[1]])):
        with pytest.raises(NoLeafIndexError) as info:
            call()
        assert isinstance(info.value, ValueError)
    assert plain.size == 1 and not plain.indexed


def test_an_interrupted_batch_leaves_tree_and_index_unchanged():
    tree = LeanIMT(4, index=True)
    tree.insert_many(POOL[:4])
    root = tree.root

    def batch(error):
        yield OUTSIDE[0]
        yield OUTSIDE[1]
        raise error

    for error in (RuntimeError("injected"), KeyboardInterrupt()):
        for unique in (False, True):
            with pytest.raises(type(error)):
                tree.insert_many(batch(error), unique=unique)
            with pytest.raises(type(error)):
                tree.insert_new(batch(error))
    assert tree.root == root and tree.size == 4
    check_against(tree, Model(POOL[:4]))


def test_enable_index_on_a_grown_tree_and_numpy_views():
    tree = LeanIMT(3)
    tree.insert_many(POOL + POOL[:5])
    assert not tree.indexed
    tree.enable_index()
    tree.enable_index()   # no-op
    assert tree.indexed and "index=True" in repr(tree)
    check_against(tree, Model(POOL + POOL[:5]))
    arr = np.frombuffer(b"".join(POOL[:3]), dtype=np.uint8).reshape(3, 32)
    assert np.frombuffer(tree.contains_many(arr), dtype=bool).all()
    assert np.frombuffer(tree.index_of_many(arr), dtype=np.int64).tolist() == [0, 1, 2]


# -- save / load ---------------------------------------------------------------


def test_save_and_load_keep_the_index(tmp_path):
    tree = LeanIMT(4, index=True)
    tree.insert_many(POOL * 2)
    path = tmp_path / "t.rt"
    tree.save(path)
    for mmap in (False, True):
        loaded = LeanIMT.load(path, mmap=mmap)
        assert loaded.indexed
        check_against(loaded, Model(POOL * 2))
    empty = LeanIMT(4, index=True)
    empty.save(tmp_path / "e.rt")
    assert LeanIMT.load(tmp_path / "e.rt").indexed
    plain = LeanIMT(4)
    plain.insert_many(POOL)
    plain.save(tmp_path / "p.rt")
    assert not LeanIMT.load(tmp_path / "p.rt").indexed


def test_load_refuses_unknown_flags(tmp_path):
    tree = LeanIMT(4, index=True)
    tree.insert_many(POOL)
    path = tmp_path / "t.rt"
    tree.save(path)
    data = bytearray(path.read_bytes())
    levels = len(storage.level_lengths(len(POOL), 4))
    head_len = (storage.SAVE_HEAD.size + storage.SAVE_RULE.size  # version 2: the rule block
                + levels * storage.SAVE_LEVEL.size)
    struct.pack_into("<I", data, 12, 0x80000001)
    struct.pack_into("<I", data, head_len, zlib.crc32(bytes(data[:head_len])))
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="unknown flags"):
        LeanIMT.load(path)


# -- durable trees -------------------------------------------------------------


def manual(path, **kwargs):
    kwargs.setdefault("flush_policy", FlushPolicy.manual())
    kwargs.setdefault("checkpoint_policy", CheckpointPolicy.manual())
    return RotorTree.open(path, **kwargs)


def durable_leaves(tree):
    return [tree.get_node(0, i) for i in range(tree.size)]


def test_durable_index_is_recorded_and_rebuilt(tmp_path):
    path = tmp_path / "t"
    with manual(path, create=True, index=True) as tree:
        tree.insert_many(POOL[:10])
        tree.checkpoint()            # the flag survives a checkpoint's meta
        tree.insert_many(POOL[5:15])  # and the WAL replay
        check_against(tree, Model(POOL[:10] + POOL[5:15]))
    with manual(path) as tree:
        assert tree.indexed and tree.recovery["index_seconds"] > 0
        check_against(tree, Model(POOL[:10] + POOL[5:15]))
    with pytest.raises(StorageMismatchError):
        manual(path, index=False)
    with manual(path, read_only=True) as tree:
        assert tree.indexed and tree.has(POOL[14])
    other = tmp_path / "o"
    with manual(other, create=True) as tree:
        tree.insert_many(POOL[:3])
        assert not tree.indexed
    with manual(other, index=True) as tree:     # added later, and recorded
        assert tree.indexed and tree.index_of(POOL[2]) == 2
    with manual(other) as tree:
        assert tree.indexed
        assert storage.read_meta(str(other)).flags & storage.META_FLAG_INDEX


def test_durable_unique_insert_is_checked_before_the_log_write(tmp_path):
    path = tmp_path / "t"
    with manual(path, create=True, index=True) as tree:
        tree.insert_many(POOL[:4])
        tree.flush()
        wal = {name: (path / name).read_bytes() for name in os.listdir(path)
               if name.startswith("wal-")}
        for batch in ([OUTSIDE[0], POOL[1]], [OUTSIDE[0], OUTSIDE[0]]):
            with pytest.raises(DuplicateLeafError) as info:
                tree.insert_many(batch, unique=True)
            assert info.value.positions == [1]
        with pytest.raises(DuplicateLeafError):
            tree.insert(POOL[0], unique=True)
        assert {name: (path / name).read_bytes() for name in wal} == wal
        assert tree.size == 4 and not tree.has(OUTSIDE[0])
        tree.insert_many([OUTSIDE[0], OUTSIDE[1]], unique=True)
        assert tree.index_of(OUTSIDE[1]) == 5
    with manual(path) as tree:
        check_against(tree, Model(POOL[:4] + OUTSIDE[:2]))


class Crash(Exception):
    pass


@pytest.mark.parametrize("where", ["write", "insert", "after_insert"])
def test_after_a_crash_the_index_agrees_with_the_recovered_leaves(tmp_path, monkeypatch, where):
    # A failure at each step of a unique durable insert (the WAL write, the
    # C insert, right after it), then the process "dies": a copy of the
    # directory is opened and its index is checked against its leaves.
    path = tmp_path / "t"
    tree = manual(path, create=True, index=True)
    tree.insert_many(POOL[:6])
    tree.flush()
    if where == "write":
        def fail(*args):
            raise OSError(errno.EIO, "injected")
        monkeypatch.setattr(storage_io, "sys_pwrite", fail)
    else:
        # The durable tree's C step is rt_wal_append (frame write and insert).
        real = _core.wal_append

        def insert(*args):
            if where == "insert":
                raise Crash("before the C insert")
            status = real(*args)
            raise Crash("after the C insert")
        monkeypatch.setattr(_core, "wal_append", insert)
    with pytest.raises((Crash, OSError)):
        tree.insert_many([OUTSIDE[0], OUTSIDE[1]], unique=True)
    monkeypatch.undo()
    inserted = where == "after_insert"
    expected = POOL[:6] + (OUTSIDE[:2] if inserted else [])
    check_against(tree, Model(expected))
    assert tree.size == len(expected)
    crashed = tmp_path / "crashed"
    shutil.copytree(path, crashed, ignore=shutil.ignore_patterns("LOCK"))
    tree.close()
    with manual(crashed) as recovered:
        assert recovered.indexed
        check_against(recovered, Model(durable_leaves(recovered)))
        assert durable_leaves(recovered) in (POOL[:6], expected)
