"""Integrity of durable files: descriptors of failed checkpoints, strict WAL
parsing, level verification, the sync record of acknowledged entries, the
directory lock, read-only opens and recovery warnings.

Every ``RotorTree.open`` here passes ``arity`` explicitly (without it, the
stored arity is accepted).
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import struct
import subprocess
import sys
import zlib

import pytest

import rotortree
from reference import build_levels, root_of
from rotortree import (
    CheckpointPolicy,
    CorruptionError,
    DurabilityError,
    FlushPolicy,
    LeanIMT,
    ReadOnlyTreeError,
    RotorTree,
    RotorTreeError,
    TreeLockedError,
)
from rotortree import storage
from rotortree.storage import io as storage_io
from test_durable import (
    Crash,
    _fail,
    abandon,
    crash_at,
    current_segment,
    file_bytes,
    leaf,
    leaves,
    manual,
    segments,
    split,
)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"),
                                reason="descriptor counts need /proc/self/fd")


def open_fds() -> dict:
    """This process's descriptors and what they point at (after collecting
    garbage, so that an earlier test's unreachable objects cannot close
    theirs between two calls)."""
    gc.collect()
    result = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            result[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass   # the directory listing's own descriptor, already closed
    return result


def wal_state(path) -> dict:
    """The files whose content a failed call must leave as it was (level
    files may gain bytes past their committed end, which mean nothing)."""
    return {name: data for name, data in file_bytes(path).items()
            if not name.startswith("level-")}


def fd_path_endswith(fd: int, suffix: str) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(suffix)
    except OSError:
        return False


@pytest.fixture
def warnings_of_rotortree(caplog):
    caplog.set_level(logging.WARNING, logger="rotortree")
    return lambda: [r for r in caplog.records if r.name == "rotortree"
                    and r.levelno == logging.WARNING]


# ---------------------------------------------------------------------------
# Failed checkpoints leak nothing


def test_repeated_checkpoint_failures_keep_files_and_descriptors(tmp_path, monkeypatch,
                                                                 frozen_heap):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_many(leaves(0, 100))
    tree.checkpoint()
    tree.insert_many(leaves(100, 100))
    tree.flush()
    fds, files, root = open_fds(), wal_state(path), tree.root
    monkeypatch.setattr(storage_io, "sys_rename", _fail())
    for _ in range(300):   # past a 256-descriptor limit if each kept one
        with pytest.raises(DurabilityError):
            tree.checkpoint()
        assert open_fds() == fds
    assert wal_state(path) == files
    assert tree.root == root and tree.stats()["wal_segments"] == 1
    monkeypatch.undo()
    tree.insert(leaf(200))
    assert tree.checkpoint()
    tree.close()
    with manual(path, arity=4) as tree:
        assert tree.root == root_of(split(leaves(0, 100) + leaves(100, 100) + leaf(200)), 4)


def test_retired_segment_of_a_failed_checkpoint_is_closed_once_synced(tmp_path, monkeypatch):
    """An insert that lands in the new segment while the checkpoint fails
    keeps the rotation; the retired segment's descriptor goes at the next
    fsync instead of staying open until a checkpoint succeeds."""
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaves(0, 50))
    tree.checkpoint()   # opens the level files it keeps open
    tree.insert_durable(leaves(50, 2))
    fds = open_fds()
    inserted = []

    def rename_fails(*args):
        inserted.append(tree.insert(leaf(52))[1])
        raise OSError(errno.EIO, "injected")

    monkeypatch.setattr(storage_io, "sys_rename", rename_fails)
    for _ in range(3):
        with pytest.raises(DurabilityError):
            tree.checkpoint()
        tree.flush()
        # The same count: the new segment's descriptor replaced the old one's.
        assert len(open_fds()) == len(fds)
    monkeypatch.undo()
    assert all(token.durable for token in inserted)
    tree.close()
    with manual(path, arity=4) as tree:
        assert tree.size == 55


# ---------------------------------------------------------------------------
# Torn tails are parsed strictly


def test_torn_frame_whose_leaves_hold_a_wellformed_frame_is_a_torn_tail(
        tmp_path, warnings_of_rotortree):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaves(0, 3))
    # Leaves that happen to hold a valid frame claiming that a million
    # entries were acknowledged (three leaves: 80 frame bytes + padding).
    inner = leaf(1000)
    fake = storage.encode_frame_header(7, 50, 1, 10 ** 6, inner) + inner + bytes(16)
    batch = leaves(100, 2) + fake + leaves(200, 2)
    start = os.path.getsize(current_segment(path))
    tree.insert_many(batch)   # written, never acknowledged
    abandon(tree)
    fake_end = start + storage.FRAME_HEADER_LEN + 64 + 80
    with open(current_segment(path), "r+b") as handle:
        handle.truncate(fake_end + 20)   # torn after the frame-like bytes
    with manual(path, arity=4) as tree:
        assert tree.size == 3 and tree.root == root_of(split(leaves(0, 3)), 4)
        assert tree.recovery["torn_tail"]
        tree.insert_durable(leaf(5))
    assert os.path.getsize(current_segment(path)) >= storage.SEGMENT_HEADER_LEN
    assert any("torn tail" in r.getMessage() for r in warnings_of_rotortree())
    with manual(path, arity=4) as tree:
        assert tree.size == 4


# ---------------------------------------------------------------------------
# Every stored level is verified, not only its CRC


def _checkpointed(path, count=3000):
    with manual(path, arity=4) as tree:
        tree.insert_many(leaves(0, count))
        assert tree.checkpoint()
    return build_levels(split(leaves(0, count)), 4)


def _edit_level_keeping_crc(path, level: int) -> None:
    meta = storage.read_meta(str(path))
    name = path / storage.level_file_name(level)
    data = bytearray(name.read_bytes())
    data[32 * 3 + 5] ^= 0x40
    name.write_bytes(bytes(data))
    meta.levels[level].crc = storage.crc_of(bytes(data), meta.levels[level].stored * 32)
    (path / storage.META_NAME).write_bytes(meta.encode())


@pytest.mark.parametrize("level", [1, 2, 4])
@pytest.mark.parametrize("mmap_levels", [0, 3])
def test_level_edit_that_keeps_the_crc_fails_verification(tmp_path, level, mmap_levels):
    path = tmp_path / "t"
    expected = _checkpointed(path)
    _edit_level_keeping_crc(path, level)
    fds, files = open_fds(), file_bytes(path)
    with pytest.raises(CorruptionError, match=storage.level_file_name(level)) as info:
        manual(path, arity=4, mmap_levels=mmap_levels)
    assert "hash" in str(info.value)
    assert open_fds() == fds and file_bytes(path) == files
    # verify_checkpoint=False trusts the files by contract: the damage shows.
    with manual(path, arity=4, verify_checkpoint=False) as tree:
        assert tree.get_node(level, 3) != expected[level][3]


def test_edited_last_node_in_meta_fails_verification(tmp_path):
    path = tmp_path / "t"
    _checkpointed(path)
    meta = storage.read_meta(str(path))
    meta.levels[1].last = leaf(999)   # the meta's own CRC is recomputed
    (path / storage.META_NAME).write_bytes(meta.encode())
    with pytest.raises(CorruptionError, match=storage.level_file_name(1)):
        manual(path, arity=4)


def _edit_saved_level_keeping_crc(file, level: int, arity: int) -> None:
    data = bytearray(file.read_bytes())
    head = struct.Struct("<4sHHHHIQ32s")
    _, _, _, _, level_count, _, size, _ = head.unpack_from(data)
    lengths = storage.level_lengths(size, arity)
    table_at = head.size + storage.SAVE_RULE.size  # version 2: the rule block first
    header_len = table_at + 16 * level_count + 8
    start = header_len + 32 * sum(lengths[:level])
    data[start + 7] ^= 1
    crc = zlib.crc32(bytes(data[start:start + 32 * lengths[level]]))
    struct.pack_into("<I", data, table_at + 16 * level + 8, crc)
    struct.pack_into("<I", data, header_len - 8, zlib.crc32(bytes(data[:header_len - 8])))
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("level", [1, 3])
@pytest.mark.parametrize("mmap", [False, True])
def test_saved_level_edit_that_keeps_the_crc_fails_load(tmp_path, level, mmap):
    tree = LeanIMT(4)
    tree.insert_many(leaves(0, 1000))
    file = tmp_path / "tree.rts"
    tree.save(file)
    _edit_saved_level_keeping_crc(file, level, 4)
    fds = open_fds()
    with pytest.raises(CorruptionError, match=f"level {level}"):
        LeanIMT.load(file, verify=True, mmap=mmap)
    assert open_fds() == fds
    loaded = LeanIMT.load(file, verify=False)   # trusted by contract
    assert loaded.get_node(level, 0) != tree.get_node(level, 0)


# ---------------------------------------------------------------------------
# Acknowledged entries cannot vanish silently (the sync record)


def _acknowledged_after_checkpoint(path) -> int:
    """A checkpoint of 100 leaves, then 5 acknowledged entries of 10 leaves
    (in the WAL only). Returns the live segment's clean length."""
    tree = manual(path, arity=4)
    tree.insert_many(leaves(0, 100))
    tree.checkpoint()
    for i in range(5):
        tree.insert_durable(leaves(100 + 10 * i, 10))
    length = os.path.getsize(current_segment(path))
    tree.close()
    return length


@pytest.mark.parametrize("damage", ["delete", "zeroed", "empty", "header only",
                                    "cut in entry 4", "cut after entry 5 header"])
def test_lost_acknowledged_wal_entries_are_corruption(tmp_path, damage):
    path = tmp_path / "t"
    length = _acknowledged_after_checkpoint(path)
    wal = current_segment(path)
    frame = storage.FRAME_HEADER_LEN + 10 * 32
    if damage == "delete":
        os.unlink(wal)
    elif damage == "zeroed":   # the header, fsynced before any frame, is gone too
        with open(wal, "r+b") as handle:
            handle.write(bytes(length))
    else:
        cut = {"empty": 0, "header only": storage.SEGMENT_HEADER_LEN,
               "cut in entry 4": storage.SEGMENT_HEADER_LEN + 3 * frame + 100,
               "cut after entry 5 header": length - 10 * 32}[damage]
        os.truncate(wal, cut)
    files, fds = file_bytes(path), open_fds()
    expected = "bad magic" if damage == "zeroed" else "acknowledged.*not a torn tail"
    with pytest.raises(CorruptionError, match=expected) as info:
        manual(path, arity=4)
    if damage == "zeroed":   # named, as the other damage names the directory
        assert os.path.basename(wal) in str(info.value)
    assert file_bytes(path) == files and open_fds() == fds   # recovery repaired nothing
    with pytest.raises(CorruptionError, match=expected):
        RotorTree.open(path, arity=4, read_only=True)


def test_unacknowledged_entries_may_vanish(tmp_path):
    """What cannot be told from damage: entries written but never
    acknowledged, lost with their whole segment."""
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    tree = manual(path, arity=4)
    tree.insert_many(leaves(150, 10))   # never fsynced
    abandon(tree)
    os.unlink(current_segment(path))    # the crash lost the new segment
    with manual(path, arity=4) as tree:
        assert tree.size == 150


@pytest.mark.parametrize("damage", ["delete", "zero"])
def test_damaged_sync_record_is_corruption(tmp_path, damage):
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    assert storage.read_sync_record(str(path))[0] == 6
    record = path / storage.SYNC_NAME
    if damage == "delete":
        record.unlink()
    else:
        record.write_bytes(bytes(storage.SYNC_FILE_LEN))
    with pytest.raises(CorruptionError, match=storage.SYNC_NAME):
        manual(path, arity=4)


def test_torn_sync_record_slot_falls_back_to_the_other(tmp_path):
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    seq, slot = storage.read_sync_record(str(path))
    with open(path / storage.SYNC_NAME, "r+b") as handle:
        handle.seek(storage.SYNC_SLOT_OFFSETS[slot] + 9)
        handle.write(b"\xff")
    older, _ = storage.read_sync_record(str(path))
    assert older < seq
    with manual(path, arity=4) as tree:   # all entries are there
        assert tree.size == 150
        tree.insert_durable(leaf(150))
    assert storage.read_sync_record(str(path))[0] == 7


def test_sync_record_written_before_acknowledging(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaf(0))
    real = storage_io.sys_pwrite
    monkeypatch.setattr(storage_io, "sys_pwrite", lambda fd, data, off: (
        _fail(errno.ENOSPC)() if fd_path_endswith(fd, "/" + storage.SYNC_NAME)
        else real(fd, data, off)))
    fds = open_fds()
    _, token = tree.insert(leaf(1))
    with pytest.raises(DurabilityError) as info:
        tree.flush()
    assert info.value.operation == "write" and storage.SYNC_NAME in str(info.value)
    assert not token.durable and open_fds() == fds
    assert storage.read_sync_record(str(path))[0] == 1
    monkeypatch.undo()
    tree.flush()   # a failed record write refuses nothing: it is retried
    assert token.durable and storage.read_sync_record(str(path))[0] == 2
    tree.close()


def test_crash_at_every_io_call_of_a_group_commit(tmp_path, monkeypatch):
    """A crash between the WAL fsync and the sync record (or inside either)
    never makes recovery call the WAL damaged, nor loses an acknowledged
    entry."""
    n = 1
    while True:
        path = tmp_path / f"t{n}"
        tree = manual(path, arity=4)
        tree.insert_durable(leaves(0, 10))
        calls = crash_at(monkeypatch, n)
        try:
            tree.insert_durable(leaves(10, 5))
            finished = True
        except Crash:
            finished = False
        monkeypatch.undo()
        abandon(tree)
        with manual(path, arity=4) as tree:
            assert tree.size == 15 if finished else tree.size in (10, 15), (n, calls)
            assert tree.root == root_of(split(leaves(0, tree.size)), 4)
        if finished:
            break
        n += 1
    assert n == 5   # frame write, WAL fsync, record write, record fdatasync


def test_interval_flusher_retries_a_failed_sync_record_write(tmp_path, monkeypatch):
    path = tmp_path / "t"
    real = storage_io.sys_pwrite
    failures = []

    def fail_twice(fd, data, offset):
        if fd_path_endswith(fd, "/" + storage.SYNC_NAME) and len(failures) < 2:
            failures.append(fd)
            raise OSError(errno.EIO, "injected")
        return real(fd, data, offset)

    with RotorTree.open(path, arity=4, create=True, flush_policy=FlushPolicy.interval(0.002),
                        checkpoint_policy=CheckpointPolicy.manual()) as tree:
        monkeypatch.setattr(storage_io, "sys_pwrite", fail_twice)
        _, token = tree.insert(leaf(0))
        assert token.wait(10.0)
        assert len(failures) == 2 and not tree.stats()["failed"]
    assert storage.read_sync_record(str(path))[0] == 1


def test_sync_record_fsync_failure_refuses_writes(tmp_path, monkeypatch):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    monkeypatch.setattr(storage_io, "sys_fdatasync", _fail())   # only the sync record uses it
    with pytest.raises(DurabilityError):
        tree.insert_durable(leaf(0))
    monkeypatch.undo()
    with pytest.raises(DurabilityError, match="refuses writes"):
        tree.insert(leaf(1))
    with contextlib.suppress(DurabilityError):
        tree.close()


def test_garbage_collected_tree_records_what_its_finalizer_synced(tmp_path):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    _, token = tree.insert(leaf(0))
    del tree
    gc.collect()
    assert token.wait(1.0)
    assert storage.read_sync_record(str(path))[0] == 1


def test_tree_without_sync_record_from_an_older_version_opens(tmp_path):
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    meta = storage.read_meta(str(path))
    meta.flags = 0
    (path / storage.META_NAME).write_bytes(meta.encode())
    (path / storage.SYNC_NAME).unlink()
    with manual(path, arity=4) as tree:
        assert tree.size == 150
    assert storage.read_sync_record(str(path))[0] == 6   # recorded from now on
    os.unlink(current_segment(path))   # the empty one from that open is gone
    os.unlink(current_segment(path))
    with pytest.raises(CorruptionError, match="acknowledged"):
        manual(path, arity=4)


# ---------------------------------------------------------------------------
# The lock cannot be deleted away


def test_deleting_the_lock_file_does_not_admit_a_second_writer(tmp_path):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaf(0))
    os.unlink(path / "LOCK")
    fds = open_fds()
    with pytest.raises(TreeLockedError, match="already open"):
        manual(path, arity=4)
    assert open_fds() == fds
    tree.close()
    with manual(path, arity=4) as tree:
        assert tree.size == 1


def test_deleting_the_lock_file_does_not_admit_a_writer_from_another_process(tmp_path):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    os.unlink(path / "LOCK")
    code = ("import sys, rotortree\n"
            "try:\n"
            f"    rotortree.RotorTree.open({str(path)!r}, arity=4)\n"
            "except rotortree.TreeLockedError:\n"
            "    sys.exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 3, result.stderr
    tree.close()


# ---------------------------------------------------------------------------
# Read-only opens


def _tree_with_torn_tail(path) -> bytes:
    """A checkpoint, acknowledged WAL entries, and a torn unacknowledged
    frame at the end. Returns the acknowledged leaves."""
    _acknowledged_after_checkpoint(path)
    tree = manual(path, arity=4)
    tree.insert_many(leaves(150, 10))
    abandon(tree)
    wal = current_segment(path)
    os.truncate(wal, os.path.getsize(wal) - 5)
    return leaves(0, 150)


def test_read_only_open_serves_proofs_and_writes_nothing(tmp_path, warnings_of_rotortree):
    path = tmp_path / "t"
    data = _tree_with_torn_tail(path)
    files, listing, fds = file_bytes(path), sorted(os.listdir(path)), open_fds()
    with RotorTree.open(path, arity=4, read_only=True, mmap_levels=1) as tree:
        assert tree.read_only and tree.size == 150
        assert tree.root == root_of(split(data), 4)
        assert tree.generate_proofs(range(0, 150, 7)).verify()
        assert tree.recovery["torn_tail"]
        with RotorTree.open(path, arity=4, read_only=True) as other:   # readers share
            assert other.root == tree.root
        with pytest.raises(TreeLockedError):   # a writer would repair files under it
            manual(path, arity=4)
        for write in (lambda: tree.insert(leaf(1)), lambda: tree.insert_many(leaves(0, 2)),
                      lambda: tree.insert_durable(leaf(1)), tree.flush, tree.checkpoint):
            with pytest.raises(ReadOnlyTreeError, match="read_only") as info:
                write()
            assert isinstance(info.value, PermissionError)
            assert isinstance(info.value, RotorTreeError)
        assert tree.size == 150 and not tree._threads
    assert file_bytes(path) == files and sorted(os.listdir(path)) == listing
    assert open_fds() == fds
    assert any("torn tail" in r.getMessage() and "read-only" in r.getMessage()
               for r in warnings_of_rotortree())


def test_read_only_open_is_refused_while_a_writer_has_the_tree(tmp_path):
    path = tmp_path / "t"
    with manual(path, arity=4):
        with pytest.raises(TreeLockedError, match="for writing"):
            RotorTree.open(path, arity=4, read_only=True)


def test_read_only_open_of_a_missing_tree_creates_nothing(tmp_path):
    path = tmp_path / "absent"
    with pytest.raises(rotortree.TreeNotFoundError, match="never creates"):
        RotorTree.open(path, arity=4, read_only=True)
    assert not path.exists()
    path.mkdir()
    with pytest.raises(rotortree.TreeNotFoundError, match="never creates"):
        RotorTree.open(path, arity=4, read_only=True)
    assert os.listdir(path) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_writable_open_on_unwritable_storage_suggests_read_only(tmp_path, monkeypatch, code):
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    real_open = os.open

    def refuse_writes(file, flags, *args, **kwargs):
        if str(file).startswith(str(path)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), str(file))
        return real_open(file, flags, *args, **kwargs)

    files, fds = file_bytes(path), open_fds()
    monkeypatch.setattr(os, "open", refuse_writes)
    with pytest.raises(ReadOnlyTreeError, match="read_only=True") as info:
        manual(path, arity=4)
    assert isinstance(info.value, PermissionError) and info.value.errno == code
    assert str(path) in str(info.value)
    assert file_bytes(path) == files and open_fds() == fds
    with RotorTree.open(path, arity=4, read_only=True) as tree:
        assert tree.size == 150


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs under tmp_path, and a function that remounts it read-only
    (tests run as root, where a chmod'd directory stays writable)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN: {result.stderr.strip()}")

    def remount_read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    try:
        yield mount, remount_read_only
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_read_only_filesystem(read_only_mount):
    mount, remount_read_only = read_only_mount
    path = mount / "t"
    data = _tree_with_torn_tail(path)
    remount_read_only()
    files, fds = file_bytes(path), open_fds()
    with pytest.raises(ReadOnlyTreeError, match="read_only=True") as info:
        manual(path, arity=4)
    assert info.value.errno == errno.EROFS and str(path) in str(info.value)
    assert open_fds() == fds
    with pytest.raises(ReadOnlyTreeError):
        manual(mount / "new", arity=4)
    with RotorTree.open(path, arity=4, read_only=True, mmap_levels=2) as tree:
        assert tree.root == root_of(split(data), 4)
        proof = tree.generate_proof(149)
        assert proof.verify() and proof.root == tree.root
    assert file_bytes(path) == files and open_fds() == fds


# ---------------------------------------------------------------------------
# Recovery warnings


def test_recovery_that_drops_a_torn_tail_logs_a_warning(tmp_path, warnings_of_rotortree):
    path = tmp_path / "t"
    _tree_with_torn_tail(path)
    torn = current_segment(path)
    with manual(path, arity=4) as tree:
        assert tree.recovery["torn_tail"] and tree.recovery["dropped_bytes"]
    records = warnings_of_rotortree()
    assert len(records) == 1 and "dropped the torn tail" in records[0].getMessage()
    assert torn in records[0].getMessage()
    with manual(path, arity=4):   # clean now: nothing to say
        pass
    assert len(warnings_of_rotortree()) == 1


def test_recovery_that_removes_leftovers_logs_a_warning(tmp_path, warnings_of_rotortree):
    path = tmp_path / "t"
    _acknowledged_after_checkpoint(path)
    (path / storage.segment_name(0)).write_bytes(b"left by an interrupted clean-up")
    (path / (storage.META_NAME + ".tmp")).write_bytes(b"partial")
    with manual(path, arity=4) as tree:
        assert tree.size == 150
    messages = " ".join(r.getMessage() for r in warnings_of_rotortree())
    assert "covered by the checkpoint" in messages and "meta.tmp" in messages
    assert storage.segment_name(0) not in segments(path)


def test_public_names():
    assert rotortree.ReadOnlyTreeError is ReadOnlyTreeError
    assert issubclass(ReadOnlyTreeError, PermissionError)
