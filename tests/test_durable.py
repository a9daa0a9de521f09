"""Durable trees (RotorTree): WAL, checkpoints, recovery, failures; and
LeanIMT.save / LeanIMT.load."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import blake3
import numpy as np
import pytest

import rotortree
from reference import build_levels, root_of
from rotortree import (
    CheckpointPolicy,
    ClosedTreeError,
    CorruptionError,
    DurabilityError,
    FlushPolicy,
    RotorTree,
    StorageMismatchError,
    TreeLockedError,
)
from rotortree import storage
from rotortree.storage import io as storage_io
from rotortree._native import ffi, lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def leaf(i: int) -> bytes:
    return blake3.blake3(i.to_bytes(8, "little")).digest()


def leaves(start: int, count: int) -> bytes:
    return b"".join(leaf(i) for i in range(start, start + count))


def split(data: bytes) -> list:
    return [data[i:i + 32] for i in range(0, len(data), 32)]


def manual(path, **kwargs) -> RotorTree:
    kwargs.setdefault("create", True)
    kwargs.setdefault("flush_policy", FlushPolicy.manual())
    kwargs.setdefault("checkpoint_policy", CheckpointPolicy.manual())
    return RotorTree.open(path, **kwargs)


def all_levels(tree) -> list:
    return [[tree.get_node(level, i) for i in range(tree.level_len(level))]
            for level in range(tree.depth + 1)] if tree.size else []


def stored_leaves(tree) -> bytes:
    snap = tree.snapshot()
    out = ffi.new("uint8_t[]", max(1, 32 * snap.size))
    if snap.size:
        assert lib.rt_snapshot_read_nodes(snap._snap, 0, 0, snap.size, out) == lib.RT_OK
    return ffi.buffer(out, 32 * snap.size)[:]


def segments(path) -> list:
    return sorted(n for n in os.listdir(path) if storage.parse_segment_name(n) is not None)


def current_segment(path) -> str:
    return os.path.join(path, segments(path)[-1])


def flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def file_bytes(path) -> dict:
    return {name: open(os.path.join(path, name), "rb").read()
            for name in sorted(os.listdir(path)) if name != "LOCK"}


# ---------------------------------------------------------------------------
# Basics and round trips


@pytest.mark.parametrize("arity", [2, 3, 4, 16])
def test_insert_checkpoint_reopen_matches_reference(tmp_path, arity):
    data = leaves(0, 1500)
    path = tmp_path / "tree"
    with manual(path, arity=arity) as tree:
        root, token = tree.insert(data[:32])
        assert root == data[:32] and token.seq == 1
        tree.insert_many(data[32:32 * 700])
        assert tree.checkpoint() is True
        assert tree.checkpoint() is False  # nothing new
        for i in range(700, 720):
            tree.insert(data[32 * i:32 * i + 32])
        root = tree.insert_durable(split(data[32 * 720:32 * 1200]))
        assert root == root_of(split(data[:32 * 1200]), arity)
        tree.flush()
    with manual(path, arity=arity) as tree:
        assert tree.recovery["replayed_entries"] == 21
        assert tree.recovery["checkpoint_size"] == 700
        assert tree.size == len(tree) == 1200
        assert tree.root == root_of(split(data[:32 * 1200]), arity)
        tree.insert_many(data[32 * 1200:])
        tree.checkpoint()
        expected = build_levels(split(data), arity)
        assert all_levels(tree) == expected
        assert tree.generate_proof(1499).verify()
        assert tree.generate_proofs([0, 5, 1499]).verify()
        proof = tree.generate_consistency_proof(700, root_of(split(data[:32 * 700]), arity))
        assert proof.verify()
    with RotorTree.open(path, arity=None, max_depth=None) as tree:
        assert tree.arity == arity and tree.max_depth == 32
        assert tree.recovery["replayed_entries"] == 0
        assert all_levels(tree) == expected


def test_empty_and_single_leaf_trees(tmp_path):
    with manual(tmp_path / "t") as tree:
        assert tree.root is None and tree.size == 0 and tree.depth == 0
        assert tree.checkpoint() is False
    with manual(tmp_path / "t") as tree:
        assert tree.root is None
        tree.insert(leaf(1))
        tree.checkpoint()
    with manual(tmp_path / "t", verify_checkpoint=True, mmap_levels=3) as tree:
        assert tree.root == leaf(1) and tree.size == 1
        tree.insert(leaf(2))
        assert tree.root == root_of([leaf(1), leaf(2)], 4)


def test_policy_objects():
    assert repr(FlushPolicy.interval(0.01)) == "FlushPolicy.interval(0.01)"
    assert FlushPolicy.manual().seconds is None
    assert FlushPolicy.interval().seconds == 0.010
    combined = CheckpointPolicy.every_entries(10) | CheckpointPolicy.on_close() \
        | CheckpointPolicy.every_entries(5) | CheckpointPolicy.memory_threshold(1 << 20)
    assert (combined.entries, combined.nbytes, combined.at_close) == (5, 1 << 20, True)
    assert "on_close" in repr(combined)
    assert not CheckpointPolicy.manual().automatic
    with pytest.raises(rotortree.InvalidArgumentError):
        FlushPolicy.interval(0)
    with pytest.raises(rotortree.InvalidArgumentError):
        CheckpointPolicy.every_entries(0)
    with pytest.raises(rotortree.ArgumentTypeError):
        CheckpointPolicy.memory_threshold(1.5)
    with pytest.raises(TypeError):
        RotorTree("x")


def test_policy_counts_follow_the_common_integer_rule():
    """One rule for integer arguments: anything with __index__ (a numpy
    integer) is accepted and stored as a plain int, so policies built
    either way are equal."""
    policy = CheckpointPolicy.every_entries(np.int64(5)) | CheckpointPolicy.memory_threshold(
        np.uint32(1 << 20))
    assert type(policy.entries) is int and type(policy.nbytes) is int
    assert policy == CheckpointPolicy.every_entries(5) | CheckpointPolicy.memory_threshold(1 << 20)
    assert CheckpointPolicy(entries=np.int16(3)).entries == 3


def test_invalid_inserts_change_nothing(tmp_path):
    path = tmp_path / "t"
    with manual(path, arity=2, max_depth=2) as tree:
        tree.insert_many(leaves(0, 3))
        tree.flush()
        before = file_bytes(path)
        with pytest.raises(rotortree.InvalidLeafError):
            tree.insert(b"short")
        with pytest.raises(rotortree.InvalidLeafError):
            tree.insert_many(b"x" * 33)
        with pytest.raises(rotortree.EmptyBatchError):
            tree.insert_many([])
        with pytest.raises(rotortree.ArgumentTypeError):
            tree.insert_many("not bytes")
        with pytest.raises(rotortree.MaxDepthExceededError):
            tree.insert_many(leaves(3, 2))   # capacity 4: checked before the WAL
        assert file_bytes(path) == before and tree.size == 3
        tree.insert(leaf(3))
    with manual(path, arity=2, max_depth=2) as tree:
        assert tree.root == root_of(split(leaves(0, 4)), 2)


def test_open_argument_errors(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(rotortree.InvalidArgumentError):
        RotorTree.open(tmp_path / "file")
    with pytest.raises(rotortree.InvalidArgumentError):
        RotorTree.open(tmp_path / "t", arity=1)
    with pytest.raises(rotortree.ArgumentTypeError):
        RotorTree.open(tmp_path / "t", flush_policy="fast")
    with pytest.raises(rotortree.InvalidArgumentError):
        RotorTree.open(tmp_path / "t", mmap_levels=-1)


# ---------------------------------------------------------------------------
# Policies


def test_interval_flush_makes_tokens_durable(tmp_path):
    with RotorTree.open(tmp_path / "t", create=True, flush_policy=FlushPolicy.interval(0.005),
                        checkpoint_policy=CheckpointPolicy.manual()) as tree:
        tokens = [tree.insert(leaf(i))[1] for i in range(20)]
        assert all(token.wait(5.0) for token in tokens)
        assert tree.stats()["synced_seq"] >= 20


def test_manual_flush_requires_flush(tmp_path):
    with manual(tmp_path / "t") as tree:
        _, token = tree.insert(leaf(0))
        assert token.wait(0.05) is False and not token.durable
        tree.flush()
        assert token.wait(0) is True and token.durable
        _, token2 = tree.insert(leaf(1))
        assert not token2.durable
        waiter = threading.Thread(target=lambda: time.sleep(0.05) or tree.flush())
        waiter.start()
        assert token2.wait(5.0)   # made durable by a flush in another thread
        waiter.join()
        tree.insert_durable(leaf(2))
        assert tree.stats()["synced_seq"] == 3


def test_every_entries_triggers_checkpoints(tmp_path):
    path = tmp_path / "t"
    with manual(path, checkpoint_policy=CheckpointPolicy.every_entries(5)) as tree:
        for round_ in range(3):
            for i in range(5):
                tree.insert(leaf(5 * round_ + i))
            # The checkpointer publishes the metadata first, then counts the
            # checkpoint and deletes the segments it covers: waiting for the
            # metadata alone raced with a checkpointer preempted in between.
            assert wait_until(lambda: tree.stats()["checkpoint_seq"] == 5 * round_ + 5
                              and tree.stats()["checkpoints"] == round_ + 1)
        assert wait_until(lambda: len(segments(path)) == 1)   # covered segments were deleted
        tree.insert(leaf(15))   # below the threshold: no checkpoint
        time.sleep(0.05)
        assert tree.stats()["checkpoints"] == 3 and tree.stats()["checkpoint_seq"] == 15
        assert len(segments(path)) == 1
        assert storage.read_meta(str(path)).size == 15


def test_memory_threshold_triggers_checkpoint(tmp_path):
    path = tmp_path / "t"
    policy = CheckpointPolicy.memory_threshold(100 * 1024)   # ~2400 leaves at arity 4
    with manual(path, checkpoint_policy=policy) as tree:
        tree.insert_many(leaves(0, 1000))
        time.sleep(0.05)
        assert tree.stats()["checkpoints"] == 0
        tree.insert_many(leaves(1000, 3000))
        assert wait_until(lambda: tree.stats()["checkpoint_size"] == 4000)
        assert tree.stats()["uncheckpointed_leaves"] == 0


def test_on_close_checkpoint(tmp_path):
    with manual(tmp_path / "a", checkpoint_policy=CheckpointPolicy.on_close()) as tree:
        tree.insert_many(leaves(0, 50))
        assert storage.read_meta(str(tmp_path / "a")).size == 0
    assert storage.read_meta(str(tmp_path / "a")).size == 50
    with manual(tmp_path / "b") as tree:
        tree.insert_many(leaves(0, 50))
    assert storage.read_meta(str(tmp_path / "b")).size == 0   # manual: WAL only
    with manual(tmp_path / "b") as tree:
        assert tree.size == 50 and tree.recovery["replayed_leaves"] == 50


def test_reopening_does_not_pile_up_segments(tmp_path):
    path = tmp_path / "t"
    for _ in range(5):
        with manual(path):
            pass
    assert len(segments(path)) == 1


# ---------------------------------------------------------------------------
# Torn tails and corruption


def _three_entries_then_one(path):
    """Three acknowledged entries, then one written but never acknowledged
    (the process dies before an fsync returns): only that one may be torn."""
    tree = manual(path)
    tree.insert(leaf(0))
    tree.insert_many(leaves(1, 2))
    tree.insert(leaf(3))
    tree.flush()
    good = os.path.getsize(current_segment(path))
    tree.insert_many(leaves(4, 3))
    full = os.path.getsize(current_segment(path))
    abandon(tree)
    return good, full


def test_torn_tail_at_every_byte_of_the_last_frame(tmp_path):
    base = tmp_path / "base"
    good, full = _three_entries_then_one(base)
    assert full - good == 48 + 3 * 32
    root4 = root_of([leaf(i) for i in range(4)], 4)
    work = tmp_path / "work"
    for cut in range(good, full):
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(base, work)
        wal = current_segment(work)
        with open(wal, "r+b") as handle:
            handle.truncate(cut)
        with manual(work) as tree:
            assert tree.size == 4 and tree.root == root4, cut
            if cut > good:
                assert tree.recovery["torn_tail"] and tree.recovery["dropped_bytes"] == cut - good
            tree.insert_durable(leaf(99))
        with manual(work) as tree:   # the new entry follows the cut cleanly
            assert tree.size == 5
            assert tree.root == root_of([leaf(i) for i in range(4)] + [leaf(99)], 4)


def test_damaged_last_frame_is_a_torn_tail(tmp_path):
    base = tmp_path / "t"
    good, full = _three_entries_then_one(base)
    for offset in (good, good + 20, full - 1):
        work = tmp_path / f"w{offset}"
        shutil.copytree(base, work)
        flip_byte(current_segment(work), offset)
        with manual(work) as tree:
            assert tree.size == 4
            assert "checksum" in tree.recovery["torn_tail"] or "magic" in \
                tree.recovery["torn_tail"]


def test_damage_before_acknowledged_frames_is_corruption(tmp_path):
    path = tmp_path / "t"
    with manual(path) as tree:
        for i in range(5):
            tree.insert_durable(leaf(i))   # each frame records the previous as durable
    wal = current_segment(path)
    frame = 48 + 32
    flip_byte(wal, storage.SEGMENT_HEADER_LEN + frame + 50)   # inside entry 2
    with pytest.raises(CorruptionError) as info:
        manual(path)
    assert os.path.basename(wal) in str(info.value) and "acknowledged" in str(info.value)


def test_unacknowledged_tail_after_a_gap_is_dropped(tmp_path):
    path = tmp_path / "t"
    tree = manual(path)
    tree.insert_durable(leaf(0))
    tree.insert(leaf(1))
    tree.insert(leaf(2))   # never fsynced: may be torn anywhere
    abandon(tree)
    wal = current_segment(path)
    flip_byte(wal, storage.SEGMENT_HEADER_LEN + 80 + 60)   # entry 2; entry 3 intact
    with manual(path) as tree:
        assert tree.size == 1 and tree.recovery["torn_tail"]


@pytest.mark.parametrize("acknowledged", [False, True])
def test_gap_between_segments(tmp_path, monkeypatch, acknowledged):
    """Entries lost at the end of an older segment: a torn tail if they were
    never acknowledged, corruption otherwise."""
    path = tmp_path / "t"
    tree = manual(path)
    tree.insert_durable(leaf(0))
    tree.insert(leaf(1))
    if acknowledged:
        tree.flush()
    lost_from = os.path.getsize(current_segment(path)) - 80

    def rename_fails(*args):
        tree.insert(leaf(2))     # first entry of the newer segment
        raise OSError(errno.EIO, "injected")
    monkeypatch.setattr(storage_io, "sys_rename", rename_fails)
    with pytest.raises(DurabilityError):
        tree.checkpoint()   # rotated the WAL, did not commit
    monkeypatch.undo()
    if acknowledged:
        tree.close()
    else:
        abandon(tree)
    assert len(segments(path)) == 2
    older = os.path.join(path, segments(path)[0])
    with open(older, "r+b") as handle:
        handle.truncate(lost_from)   # entry 2 never reached the disk
    if acknowledged:
        with pytest.raises(CorruptionError, match="acknowledged"):
            manual(path)
    else:
        with manual(path) as tree:
            assert tree.size == 1 and "missing" in tree.recovery["torn_tail"]
            tree.insert_durable(leaf(5))
        with manual(path) as tree:
            assert tree.root == root_of([leaf(0), leaf(5)], 4)


def test_segment_with_torn_header_is_ignored(tmp_path):
    path = tmp_path / "t"
    with manual(path) as tree:
        tree.insert_durable(leaves(0, 10))
    gen = storage.parse_segment_name(segments(path)[-1]) + 1
    (path / storage.segment_name(gen)).write_bytes(b"RTWS\x01")   # crashed while created
    with manual(path) as tree:
        assert tree.size == 10
    assert storage.segment_name(gen) not in segments(path)


def _checkpointed(path, count=3000, arity=4):
    with manual(path, arity=arity) as tree:
        tree.insert_many(leaves(0, count))
        tree.checkpoint()
        tree.insert_many(leaves(count, 10))


@pytest.mark.parametrize("name", ["level-00.dat", "level-01.dat", "level-03.dat"])
def test_damaged_level_file_is_reported(tmp_path, name):
    path = tmp_path / "t"
    _checkpointed(path)
    flip_byte(path / name, 37)
    with pytest.raises(CorruptionError) as info:
        manual(path, verify_checkpoint=True)
    assert name in str(info.value) and "checksum" in str(info.value)
    assert info.value.path == str(path / name)
    # The failed open released the lock and changed nothing.
    flip_byte(path / name, 37)
    with manual(path) as tree:
        assert tree.root == root_of(split(leaves(0, 3010)), 4)


def test_wrong_leaves_with_matching_crc_fail_the_root_check(tmp_path):
    path = tmp_path / "t"
    _checkpointed(path)
    meta = storage.read_meta(str(path))
    data = bytearray((path / "level-00.dat").read_bytes())
    data[0:32] = leaf(123456)
    (path / "level-00.dat").write_bytes(bytes(data))
    meta.levels[0].crc = storage.crc_of(bytes(data), meta.levels[0].stored * 32)
    (path / "meta").write_bytes(meta.encode())
    with pytest.raises(CorruptionError) as info:
        manual(path)
    assert "level-00.dat" in str(info.value) and "root" in str(info.value)


def test_truncated_or_missing_level_file(tmp_path):
    path = tmp_path / "t"
    _checkpointed(path)
    with open(path / "level-01.dat", "r+b") as handle:
        handle.truncate(64)
    with pytest.raises(CorruptionError, match="level-01.dat.*truncated"):
        manual(path, verify_checkpoint=False)
    os.unlink(path / "level-01.dat")
    with pytest.raises(CorruptionError, match="level-01.dat.*missing"):
        manual(path, verify_checkpoint=False)


@pytest.mark.parametrize("offset", [0, 10, 30, 80, 100, -1])
def test_damaged_meta_is_caught_even_without_verify(tmp_path, offset):
    path = tmp_path / "t"
    _checkpointed(path)
    size = os.path.getsize(path / "meta")
    flip_byte(path / "meta", offset % size)
    with pytest.raises(CorruptionError) as info:
        manual(path, verify_checkpoint=False)
    assert "meta" in str(info.value)


def test_missing_meta_with_tree_files(tmp_path):
    path = tmp_path / "t"
    _checkpointed(path)
    os.unlink(path / "meta")
    with pytest.raises(CorruptionError, match="meta.*missing"):
        manual(path)


class Crash(BaseException):
    """Stands for the process dying at an I/O call."""


def abandon(tree) -> None:
    """Drop a tree the way a crash does: no fsync, no cleanup, lock released."""
    tree._stop.set()
    tree._wake_checkpointer.set()
    for thread in tree._threads:
        thread.join()
    tree._finalizer.detach()
    tree._files.close_all()
    tree._closed = True


def crash_at(monkeypatch, n: int) -> list:
    """Make the n-th write/fsync/fdatasync/rename/truncate from now raise Crash."""
    calls = []
    for name in ("sys_pwrite", "sys_fsync", "sys_fdatasync", "sys_rename", "sys_truncate"):
        real = getattr(storage_io, name)

        def hook(*args, _real=real, _name=name):
            calls.append(_name)
            if len(calls) == n:
                raise Crash(_name)
            return _real(*args)
        monkeypatch.setattr(storage_io, name, hook)
    return calls


@pytest.mark.parametrize("mmap_levels", [0, 2])
def test_crash_at_every_io_call_of_a_checkpoint(tmp_path, monkeypatch, mmap_levels):
    data = leaves(0, 3000)
    n = 1
    while True:
        path = tmp_path / f"t{n}"
        tree = manual(path, arity=3, mmap_levels=mmap_levels)
        tree.insert_many(data[:32 * 1000])
        tree.checkpoint()
        tree.insert_many(data[32 * 1000:32 * 2500])
        tree.insert_durable(data[32 * 2500:])
        calls = crash_at(monkeypatch, n)
        try:
            tree.checkpoint()
            finished = True
        except Crash:
            finished = False
        monkeypatch.undo()
        abandon(tree)
        with manual(path, arity=3, mmap_levels=mmap_levels) as tree:
            assert tree.size == 3000, (n, calls)
            assert tree.root == root_of(split(data), 3), (n, calls)
            assert tree.recovery["checkpoint_size"] == 3000 if finished else \
                tree.recovery["checkpoint_size"] in (1000, 3000)
            tree.insert_durable(leaf(3000))
        with manual(path, arity=3) as tree:
            assert tree.size == 3001
        shutil.rmtree(path)
        if finished:
            break
        n += 1
    assert n > 8   # segment creation, level writes and fsyncs, meta, rename, dir fsync


def test_crash_while_dropping_a_torn_tail(tmp_path, monkeypatch):
    base = tmp_path / "base"
    good, full = _three_entries_then_one(base)
    with open(current_segment(base), "r+b") as handle:
        handle.truncate(full - 5)
    for n in (1, 2, 3):
        work = tmp_path / f"w{n}"
        shutil.copytree(base, work)
        crash_at(monkeypatch, n)
        with pytest.raises(Crash):
            manual(work)
        monkeypatch.undo()
        with manual(work) as tree:
            assert tree.size == 4 and tree.root == root_of([leaf(i) for i in range(4)], 4)


# ---------------------------------------------------------------------------
# Safety: locks and shape


def test_second_open_in_process_is_refused(tmp_path):
    path = tmp_path / "t"
    tree = manual(path)
    with pytest.raises(TreeLockedError, match="already open") as info:
        manual(path)
    assert isinstance(info.value, OSError)
    tree.close()
    manual(path).close()   # released on close


def test_second_open_from_another_process_is_refused(tmp_path):
    path = tmp_path / "t"
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {ROOT!r})
        import rotortree
        try:
            rotortree.RotorTree.open({str(path)!r})
        except rotortree.TreeLockedError as error:
            print("locked:", error)
        else:
            print("opened")
    """)
    with manual(path):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60)
        assert out.stdout.startswith("locked:"), out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.startswith("opened"), out.stdout + out.stderr


def test_arity_and_max_depth_mismatch(tmp_path):
    path = tmp_path / "t"
    with manual(path, arity=8, max_depth=10) as tree:
        tree.insert(leaf(0))
    with pytest.raises(StorageMismatchError, match="arity 8"):
        manual(path, arity=4)
    with pytest.raises(StorageMismatchError, match="max_depth 10"):
        manual(path, arity=8, max_depth=11)
    with manual(path, arity=None, max_depth=None) as tree:
        assert (tree.arity, tree.max_depth, tree.size) == (8, 10, 1)


# ---------------------------------------------------------------------------
# Injected I/O failures


def _fail(error_code=errno.EIO):
    def hook(*args, **kwargs):
        raise OSError(error_code, os.strerror(error_code))
    return hook


def test_write_failure_fails_the_call_and_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with manual(path) as tree:
        tree.insert_durable(leaves(0, 5))
        before, root = file_bytes(path), tree.root
        monkeypatch.setattr(storage_io, "sys_pwrite", _fail(errno.ENOSPC))
        with pytest.raises(DurabilityError) as info:
            tree.insert(leaf(5))
        assert info.value.operation == "write" and info.value.errno == errno.ENOSPC
        assert "wal-" in str(info.value)
        with pytest.raises(DurabilityError):
            tree.insert_many(leaves(5, 500))
        assert tree.root == root and tree.size == 5 and file_bytes(path) == before

        # A short write followed by a failure: the partial frame is cut off.
        calls = []

        def half_then_fail(fd, data, offset):
            calls.append(1)
            if len(calls) == 1:
                return os.pwrite(fd, bytes(data)[:len(data) // 2], offset)
            raise OSError(errno.EIO, "I/O error")

        monkeypatch.setattr(storage_io, "sys_pwrite", half_then_fail)
        with pytest.raises(DurabilityError):
            tree.insert(leaf(5))
        assert file_bytes(path) == before and tree.size == 5
        monkeypatch.undo()
        root, token = tree.insert(leaf(5))   # a write failure does not poison
        tree.flush()
        assert token.durable
    with manual(path) as tree:
        assert tree.root == root_of(split(leaves(0, 6)), 4)


def test_failed_rollback_refuses_writes(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with manual(path) as tree:
        tree.insert_durable(leaf(0))
        monkeypatch.setattr(storage_io, "sys_pwrite", _fail(errno.ENOSPC))
        monkeypatch.setattr(storage_io, "sys_truncate", _fail())
        with pytest.raises(DurabilityError, match="No space"):
            tree.insert(leaf(1))
        monkeypatch.undo()
        with pytest.raises(DurabilityError, match="refuses writes"):
            tree.insert(leaf(1))
        assert tree.size == 1


def test_fsync_failure_refuses_writes_and_never_reports_durable(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = manual(path)
    tree.insert_durable(leaf(0))
    _, token = tree.insert(leaf(1))
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    with pytest.raises(DurabilityError) as info:
        tree.flush()
    assert info.value.operation == "fsync"
    monkeypatch.undo()   # fsync "works" again, but the tree stays failed
    assert not token.durable
    with pytest.raises(DurabilityError, match="not durable"):
        token.wait(1.0)
    with pytest.raises(DurabilityError, match="refuses writes"):
        tree.insert(leaf(2))
    with pytest.raises(DurabilityError):
        tree.insert_durable(leaf(2))
    with pytest.raises(DurabilityError):
        tree.flush()
    with pytest.raises(DurabilityError):
        tree.checkpoint()
    assert tree.size == 2 and tree.stats()["failed"]   # reads still work
    tree.close()   # the failure was already reported
    with pytest.raises(ClosedTreeError):
        tree.insert(leaf(2))
    with manual(path) as tree:   # reopening clears the state
        assert tree.size >= 1
        tree.insert_durable(leaf(9))


def test_fsync_failure_in_the_background_flusher(tmp_path, monkeypatch):
    path = tmp_path / "t"
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    with pytest.raises(DurabilityError):
        RotorTree.open(path, create=True)   # creating the directory needs fsync too
    monkeypatch.undo()
    tree = RotorTree.open(path, create=True, flush_policy=FlushPolicy.interval(0.002),
                          checkpoint_policy=CheckpointPolicy.manual())
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    _, token = tree.insert(leaf(0))
    with pytest.raises(DurabilityError):
        token.wait(5.0)
    with pytest.raises(DurabilityError):
        tree.insert(leaf(1))
    monkeypatch.undo()
    tree.close()


def test_close_reports_an_unreported_fsync_failure(tmp_path, monkeypatch):
    tree = RotorTree.open(tmp_path / "t", create=True, flush_policy=FlushPolicy.interval(0.002),
                          checkpoint_policy=CheckpointPolicy.manual())
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    tree.insert(leaf(0))
    assert wait_until(lambda: tree.stats()["failed"])
    monkeypatch.undo()
    with pytest.raises(DurabilityError):
        tree.close()
    assert tree.closed


def _level_fd(fd) -> bool:
    return "level-" in os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc")
def test_checkpoint_write_failure_changes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with manual(path, mmap_levels=1) as tree:
        tree.insert_many(leaves(0, 2000))
        tree.checkpoint()
        tree.insert_many(leaves(2000, 1000))
        tree.flush()
        meta_before = (path / "meta").read_bytes()
        committed = {n: (path / n).read_bytes()[:32 * r.stored] for n, r in
                     ((storage.level_file_name(i), r)
                      for i, r in enumerate(storage.read_meta(str(path)).levels)) if r.stored}
        real = storage_io.sys_pwrite
        monkeypatch.setattr(storage_io, "sys_pwrite", lambda fd, data, off: (
            _fail(errno.ENOSPC)() if _level_fd(fd) else real(fd, data, off)))
        with pytest.raises(DurabilityError) as info:
            tree.checkpoint()
        assert "level-" in str(info.value) and info.value.operation == "write"
        assert (path / "meta").read_bytes() == meta_before
        for name, prefix in committed.items():
            assert (path / name).read_bytes()[:len(prefix)] == prefix
        assert tree.size == 3000 and not tree.stats()["failed"]
        tree.insert(leaf(3000))   # still writable
        monkeypatch.undo()
        assert tree.checkpoint()
        assert tree.stats()["checkpoint_size"] == 3001
    with manual(path) as tree:
        assert tree.root == root_of(split(leaves(0, 3001)), 4)


def test_rename_failure_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with manual(path) as tree:
        tree.insert_many(leaves(0, 100))
        tree.checkpoint()
        tree.insert_many(leaves(100, 100))
        meta_before = (path / "meta").read_bytes()
        monkeypatch.setattr(storage_io, "sys_rename", _fail())
        with pytest.raises(DurabilityError) as info:
            tree.checkpoint()
        assert info.value.operation == "rename"
        assert (path / "meta").read_bytes() == meta_before
        assert not (path / "meta.tmp").exists()
        monkeypatch.undo()
        tree.insert(leaf(200))
        tree.flush()
    with manual(path) as tree:   # the uncommitted level bytes are ignored
        assert tree.recovery["checkpoint_size"] == 100
        assert tree.root == root_of(split(leaves(0, 201)), 4)


def test_checkpoint_fsync_failure_poisons(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = manual(path)
    tree.insert_durable(leaves(0, 300))
    monkeypatch.setattr(storage_io, "sys_fsync", _fail())
    with pytest.raises(DurabilityError) as info:
        tree.checkpoint()
    assert info.value.operation == "fsync"
    monkeypatch.undo()
    with pytest.raises(DurabilityError):
        tree.insert(leaf(300))
    tree.close()
    with manual(path) as tree:
        assert tree.root == root_of(split(leaves(0, 300)), 4)


def test_background_checkpoint_failure_is_reported_once(tmp_path, monkeypatch):
    path = tmp_path / "t"
    with manual(path, checkpoint_policy=CheckpointPolicy.every_entries(2)) as tree:
        monkeypatch.setattr(storage_io, "sys_rename", _fail())
        tree.insert(leaf(0))
        tree.insert(leaf(1))
        assert wait_until(lambda: tree._background_error is not None)
        with pytest.raises(DurabilityError, match="background checkpoint"):
            tree.insert(leaf(2))
        assert tree.size == 2
        monkeypatch.undo()
        tree.insert(leaf(2))
        assert wait_until(lambda: tree.stats()["checkpoint_size"] >= 2, timeout=10)


# ---------------------------------------------------------------------------
# Closed trees, context manager


def test_closed_tree_raises(tmp_path):
    tree = manual(tmp_path / "t", mmap_levels=2)
    tree.insert_many(leaves(0, 2000))
    tree.checkpoint()
    snap = tree.snapshot()
    tree.close()
    tree.close()   # idempotent
    assert tree.closed and "closed" in repr(tree)
    for call in (lambda: tree.root, lambda: tree.size, lambda: len(tree),
                 lambda: tree.insert(leaf(0)), lambda: tree.insert_many(leaves(0, 2)),
                 lambda: tree.insert_durable(leaf(0)), tree.flush, tree.checkpoint,
                 tree.snapshot, lambda: tree.get_node(0, 0), lambda: tree.generate_proof(0)):
        with pytest.raises(ClosedTreeError):
            call()
    with pytest.raises(ClosedTreeError):
        with tree:
            pass
    # A snapshot taken before close still reads its (memory-mapped) nodes.
    assert snap.get_node(0, 5) == leaf(5) and snap.generate_proof(1234).verify()


def test_context_manager_closes_on_error(tmp_path):
    path = tmp_path / "t"
    with pytest.raises(KeyError):
        with RotorTree.open(path, create=True,
                            checkpoint_policy=CheckpointPolicy.on_close()) as tree:
            tree.insert(leaf(0))
            raise KeyError("boom")
    assert tree.closed
    assert storage.read_meta(str(path)).size == 1   # on_close still ran
    with RotorTree.open(path) as tree:
        assert tree.size == 1


def test_garbage_collected_tree_releases_the_lock(tmp_path):
    path = tmp_path / "t"
    tree = RotorTree.open(path, create=True)
    _, token = tree.insert(leaf(0))
    del tree
    import gc
    gc.collect()
    assert token.wait(1.0)   # the finalizer fsynced it
    with manual(path) as tree:
        assert tree.size == 1


# ---------------------------------------------------------------------------
# Memory-mapped levels


def test_mmap_levels_serve_checkpointed_nodes_from_files(tmp_path):
    path = tmp_path / "t"
    data = leaves(0, 20000)
    with manual(path, mmap_levels=2) as tree:
        tree.insert_many(data[:32 * 12000])
        tree.checkpoint()
        cold = tree.stats()["cold_nodes"]
        assert cold[0] >= 11000 and cold[1] >= 2500
        snap = tree.snapshot()
        out = ffi.new("uint8_t[]", 32 * 12000)
        assert lib.rt_snapshot_read_nodes(snap._snap, 0, 0, 12000, out) == lib.RT_OK
        assert ffi.buffer(out)[:] == (path / "level-00.dat").read_bytes()[:32 * 12000]
        assert lib.rt_snapshot_read_nodes(snap._snap, 1, 0, 2999, out) == lib.RT_OK
        assert ffi.buffer(out, 32 * 2999)[:] == (path / "level-01.dat").read_bytes()[:32 * 2999]
        tree.insert_many(data[32 * 12000:32 * 15000])
        tree.checkpoint()   # the cold prefix grows within the same mapping
        assert tree.stats()["cold_nodes"][0] >= 14000
        tree.insert_many(data[32 * 15000:])
        assert tree.root == root_of(split(data), 4)
        assert snap.root == root_of(split(data[:32 * 12000]), 4)
        assert snap.generate_proof(11999).verify()
    for verify in (True, False):
        with manual(path, mmap_levels=2, verify_checkpoint=verify) as tree:
            assert tree.stats()["cold_nodes"][0] >= 14000
            assert tree.root == root_of(split(data), 4)
            assert tree.get_node(0, 7) == leaf(7)
            assert tree.generate_proof(123).verify()


_RSS_CHILD = """
import sys; sys.path.insert(0, {root!r})
import gc, json, psutil, rotortree
proc = psutil.Process()
gc.collect()
before = proc.memory_info().rss
tree = rotortree.RotorTree.open({path!r}, mmap_levels=int(sys.argv[1]),
                                verify_checkpoint=sys.argv[2] == "1",
                                flush_policy=rotortree.FlushPolicy.manual(),
                                checkpoint_policy=rotortree.CheckpointPolicy.manual())
after = proc.memory_info().rss
assert tree.size == {size}
print(json.dumps({{"delta": after - before, "root": tree.root.hex()}}))
"""


@pytest.mark.skipif(bool(os.environ.get("ROTORTREE_UNDER_ASAN")),
                    reason="ASan's shadow memory and quarantine of freed buffers distort RSS")
def test_mmap_levels_keep_resident_memory_down(tmp_path):
    path = tmp_path / "t"
    size = 1 << 20   # level 0 is 32 MiB
    with manual(path) as tree:
        from rotortree._util import deterministic_leaves

        tree.insert_many(deterministic_leaves(size))
        tree.checkpoint()
        root = tree.root.hex()
    script = tmp_path / "rss.py"
    script.write_text(_RSS_CHILD.format(root=ROOT, path=str(path), size=size))
    # Without the mapping cache: it keeps the slabs that verification's
    # rehash frees resident (13 MiB here), which put the verified open 4 KiB
    # over the bound below in some runs; what is measured is whether the
    # mapped level's pages stay resident, not what the cache holds.
    env = dict(os.environ, ROTORTREE_MEMORY_CACHE_MB="0")
    results = {}
    for levels, verify in ((0, "0"), (1, "0"), (1, "1")):
        out = subprocess.run([sys.executable, str(script), str(levels), verify],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        results[(levels, verify)] = json.loads(out.stdout)
        assert results[(levels, verify)]["root"] == root
    in_ram = results[(0, "0")]["delta"]
    assert in_ram > 30 << 20
    assert results[(1, "0")]["delta"] < in_ram - (20 << 20), results
    # Verifying reads every page; they must not stay counted as resident.
    assert results[(1, "1")]["delta"] < in_ram - (20 << 20), results


# ---------------------------------------------------------------------------
# Concurrency


def test_threads_insert_and_wait_while_checkpoints_run(tmp_path):
    path = tmp_path / "t"
    policy = CheckpointPolicy.every_entries(40)
    tree = RotorTree.open(path, arity=3, create=True, flush_policy=FlushPolicy.interval(0.002),
                          checkpoint_policy=policy, mmap_levels=1)
    errors = []
    acked = {}

    def writer(worker: int) -> None:
        try:
            rng = random.Random(worker)
            mine = []
            for step in range(60):
                base = (worker << 32) + step * 1000
                k = rng.choice([1, 1, 3, 50])
                batch = leaves(base, k)
                if rng.random() < 0.3:
                    tree.insert_durable(batch)
                else:
                    _, token = tree.insert_many(batch)
                    assert token.wait(10.0)
                mine.extend(split(batch))
            acked[worker] = mine
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    def checkpointer() -> None:
        try:
            for _ in range(15):
                tree.checkpoint()
                time.sleep(0.003)
        except Exception as error:  # pragma: no cover
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=checkpointer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    data = stored_leaves(tree)
    assert sorted(split(data)) == sorted(x for mine in acked.values() for x in mine)
    for mine in acked.values():   # each thread's leaves in its own order
        positions = [data.index(x) for x in mine]
        assert positions == sorted(positions)
    root = tree.root
    assert root == rotortree.compute_root(data, 3)
    tree.close()
    with RotorTree.open(path, arity=3, mmap_levels=1) as tree:
        assert tree.root == root


# ---------------------------------------------------------------------------
# Crash safety: SIGKILL a writer at random points


_CRASH_CHILD = """
import random, sys
sys.path.insert(0, {root!r})
import blake3, rotortree
from rotortree import CheckpointPolicy, FlushPolicy, RotorTree

def leaf(i):
    return blake3.blake3(i.to_bytes(8, "little")).digest()

path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
tree = RotorTree.open(path, arity=3, create=True, flush_policy=FlushPolicy.interval(0.003),
                      checkpoint_policy=CheckpointPolicy.every_entries(25), mmap_levels=1)
n = tree.size
print("open", n, flush=True)
while True:
    k = rng.choice([1, 1, 2, 7, 60, 400])
    batch = b"".join(leaf(i) for i in range(n, n + k))
    if rng.random() < 0.6:
        root = tree.insert_durable(batch)
        n += k
        print("ack", n, root.hex(), flush=True)
    else:
        root, token = tree.insert_many(batch)
        n += k
        if rng.random() < 0.5 and token.wait():
            print("ack", n, root.hex(), flush=True)
    if rng.random() < 0.03:
        tree.checkpoint()
"""


@pytest.mark.slow
def test_sigkill_never_loses_acknowledged_inserts(tmp_path):
    path = tmp_path / "t"
    script = tmp_path / "child.py"
    script.write_text(_CRASH_CHILD.format(root=ROOT))
    rng = random.Random(1234)
    total_acks = 0
    for round_ in range(7):
        child = subprocess.Popen([sys.executable, str(script), str(path), str(round_)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Wait until the child has opened the tree, then let it run a while.
        first = child.stdout.readline()
        assert first.startswith("open"), first + child.stderr.read()
        time.sleep(rng.uniform(0.05, 0.5))
        child.send_signal(signal.SIGKILL)
        # Read through the same buffered reader as readline() above, which
        # may hold data it read ahead (communicate() would skip it), and keep
        # only whole lines: the kill can cut the last one short.
        out = child.stdout.read()
        child.stdout.close()
        child.stderr.close()
        child.wait(timeout=60)
        acks = [line.split() for line in out.split("\n")[:-1] if line.startswith("ack ")]
        assert all(len(ack) == 3 and len(ack[2]) == 64 for ack in acks), acks
        total_acks += len(acks)
        with RotorTree.open(path, arity=3, verify_checkpoint=True, mmap_levels=1,
                            flush_policy=FlushPolicy.manual(),
                            checkpoint_policy=CheckpointPolicy.manual()) as tree:
            size = tree.size
            data = stored_leaves(tree)
            assert data == leaves(0, size)   # the exact sequence, nothing lost in between
            assert tree.root == rotortree.compute_root(data, 3)
            for _, n, root in acks:
                assert int(n) <= size, (n, size)
                assert rotortree.compute_root(data[:32 * int(n)], 3).hex() == root
    assert total_acks > 0


# ---------------------------------------------------------------------------
# LeanIMT.save / LeanIMT.load


@pytest.mark.parametrize("arity,count", [(2, 0), (2, 1), (2, 1000), (3, 777), (4, 4096),
                                         (16, 5000), (255, 300)])
def test_save_load_round_trip(tmp_path, arity, count):
    tree = rotortree.LeanIMT(arity, max_depth=20)
    if count:
        tree.insert_many(leaves(0, count))
    path = tmp_path / "tree.rt"
    tree.save(path)
    for verify in (True, False):
        for in_place in (False, True):
            loaded = rotortree.LeanIMT.load(path, verify=verify, mmap=in_place)
            assert (loaded.arity, loaded.max_depth, loaded.size) == (arity, 20, count)
            assert loaded.root == tree.root
            assert all_levels(loaded) == all_levels(tree)
    snap = loaded.snapshot()
    tree.insert(leaf(10**6))
    tree.save(path)   # replaces the file by renaming: the mapped one stays intact
    loaded.insert_many(leaves(count, 10))
    assert loaded.root == root_of(split(leaves(0, count + 10)), arity)
    assert all_levels(loaded)[0] == split(leaves(0, count + 10))
    if count:
        assert snap.generate_proof(count - 1).verify()
    assert [p for p in os.listdir(tmp_path) if ".tmp" in p] == []


def test_load_detects_corruption(tmp_path):
    tree = rotortree.LeanIMT(4)
    tree.insert_many(leaves(0, 3000))
    path = tmp_path / "tree.rt"
    tree.save(str(path))
    header = 56 + 16 * (tree.depth + 1) + 8
    pristine = path.read_bytes()
    for offset, verify_only in ((header + 100, True), (len(pristine) - 40, True),
                                (3, False), (20, False), (header - 10, False)):
        path.write_bytes(pristine)
        flip_byte(path, offset)
        with pytest.raises(CorruptionError) as info:
            rotortree.LeanIMT.load(path, verify=True)
        assert str(path) in str(info.value)
        if not verify_only:
            with pytest.raises(CorruptionError):
                rotortree.LeanIMT.load(path, verify=False)
    path.write_bytes(pristine[:-1])
    with pytest.raises(CorruptionError, match="length"):
        rotortree.LeanIMT.load(path, verify=False)
    path.write_bytes(b"nope")
    with pytest.raises(CorruptionError, match="truncated"):
        rotortree.LeanIMT.load(path)
    with pytest.raises(FileNotFoundError):
        rotortree.LeanIMT.load(tmp_path / "missing")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "tree.rt"
    tree = rotortree.LeanIMT(4)
    tree.insert_many(leaves(0, 100))
    tree.save(path)
    before = path.read_bytes()
    tree.insert_many(leaves(100, 100))
    for hook in ("sys_pwrite", "sys_fsync", "sys_rename"):
        monkeypatch.setattr(storage_io, hook, _fail())
        with pytest.raises(DurabilityError):
            tree.save(path)
        monkeypatch.undo()
        assert path.read_bytes() == before
        assert sorted(os.listdir(tmp_path)) == ["tree.rt"]
    tree.save(path)
    assert rotortree.LeanIMT.load(path).root == root_of(split(leaves(0, 200)), 4)


def test_save_load_a_million_leaves_without_rehashing(tmp_path):
    from rotortree._util import deterministic_leaves

    data = deterministic_leaves(1 << 20)
    tree = rotortree.LeanIMT(4)
    tree.insert_many(data)
    path = tmp_path / "big.rt"
    tree.save(path)
    loaded = rotortree.LeanIMT.load(path, verify=False)
    assert loaded.root == tree.root and loaded.size == 1 << 20
    assert loaded.generate_proof(777777).verify()
    assert rotortree.LeanIMT.load(path).root == tree.root
    mapped = rotortree.LeanIMT.load(path, verify=False, mmap=True)
    assert mapped.root == tree.root and mapped.get_node(0, 12345) == data[32 * 12345:32 * 12346]
