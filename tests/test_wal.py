"""The durable write path of issue 20: CRC-32C frame checksums computed in
C, the frame write overlapped with hashing (rt_wal_append) and its failure
handling, version-1 (zlib) segments still read, group commit, and the
writer thread across fork()."""

from __future__ import annotations

import errno
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib

import pytest

from c_build import cc  # noqa: F401 (cc is a fixture)
from reference import root_of
from rotortree import CorruptionError, DurabilityError, LeanIMT, storage
from rotortree._native import lib
from rotortree.durable import wal as wal_module
from rotortree.storage import io as storage_io
from test_durable import abandon, current_segment, leaves, manual, split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Payloads from 64 KiB on are written by the writer thread (csrc/wal.c),
# smaller ones by the caller: both paths are tested.
OVERLAPPED = 2100
INLINE = 300


# -- CRC-32C -------------------------------------------------------------------


def test_crc32c_check_value_and_rfc3720_vectors():
    """The CRC-32C check value and RFC 3720 (iSCSI) B.4 vectors, through the
    detected implementation and the portable one."""
    vectors = [
        (b"123456789", 0xE3069283),
        (bytes(32), 0x8A9136AA),
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ]
    try:
        for force in (0, 1):
            lib.rt_crc32c_force_portable(force)
            for data, expected in vectors:
                assert storage.crc32c(data) == expected, (force, data)
    finally:
        lib.rt_crc32c_force_portable(0)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 63, 4096 + 5, 3 * 4096 - 1, 3 * 4096,
                                  3 * 4096 + 1, 6 * 4096 + 7, 100_003, 3_200_048])
def test_crc32c_portable_and_detected_agree_and_continue(size):
    data = os.urandom(size)
    try:
        lib.rt_crc32c_force_portable(1)
        portable = storage.crc32c(data)
        split_at = size // 3
        assert storage.crc32c(data[split_at:], storage.crc32c(data[:split_at])) == portable
    finally:
        lib.rt_crc32c_force_portable(0)
    assert storage.crc32c(data) == portable
    # Unaligned starts take the byte-wise head of both loops.
    assert storage.crc32c(memoryview(data)[1:]) == storage.crc32c(data[1:])


# -- the format ---------------------------------------------------------------


def frames_of(path):
    with open(current_segment(path), "rb") as handle:
        data = handle.read()
    return data, list(storage.iter_frames(data))


def test_new_segments_are_version_2_with_crc32c_frames(tmp_path):
    path = tmp_path / "t"
    with manual(path, arity=4) as tree:
        tree.insert_many(leaves(0, INLINE))
        tree.insert_many(leaves(INLINE, OVERLAPPED))
        tree.flush()
        data, frames = frames_of(path)
    assert storage.segment_version(data) == 2
    assert [f.count for f, reason in frames] == [INLINE, OVERLAPPED]
    for frame, _ in frames:
        head = data[frame.offset:frame.offset + 40]
        payload = data[frame.payload_offset:frame.end]
        (crc,) = struct.unpack_from("<I", data, frame.offset + 40)
        assert crc == storage.crc32c(payload, storage.crc32c(head))
        assert crc != zlib.crc32(payload, zlib.crc32(head))


def rewrite_as_version_1(segment: str) -> None:
    """Re-encode a segment the way versions before CRC-32C wrote it."""
    with open(segment, "rb") as handle:
        data = handle.read()
    arity, max_depth, gen = storage.decode_segment_header(data, segment)
    out = bytearray(storage.encode_segment_header(arity, max_depth, gen, version=1))
    for frame, reason in storage.iter_frames(data):
        assert not reason
        payload = data[frame.payload_offset:frame.end]
        out += storage.encode_frame_header(frame.seq, frame.first_index, frame.count,
                                           frame.synced, payload, version=1) + payload
    with open(segment, "wb") as handle:
        handle.write(out)


def test_version_1_segments_with_zlib_frames_are_still_replayed(tmp_path):
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaves(0, 10))
    tree.insert_durable(leaves(10, 5))
    abandon(tree)
    rewrite_as_version_1(current_segment(path))
    with manual(path, arity=4) as reopened:
        assert reopened.size == 15
        assert reopened.root == root_of(split(leaves(0, 15)), 4)
        assert reopened.recovery["torn_tail"] is None
        reopened.insert_durable(leaves(15, 1))
    with manual(path, arity=4) as reopened:
        assert reopened.root == root_of(split(leaves(0, 16)), 4)


def test_a_version_2_segment_does_not_accept_zlib_frames(tmp_path):
    """The version decides the checksum: a frame checksummed the old way in
    a version-2 segment is damage (here: acknowledged, so corruption)."""
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    tree.insert_durable(leaves(0, 10))
    abandon(tree)
    segment = current_segment(path)
    rewrite_as_version_1(segment)
    with open(segment, "r+b") as handle:   # claim version 2, keep the zlib frames
        header = bytearray(handle.read(storage.SEGMENT_HEADER_LEN))
        struct.pack_into("<H", header, 4, 2)
        struct.pack_into("<I", header, 28, zlib.crc32(bytes(header[:28])))
        handle.seek(0)
        handle.write(header)
    with pytest.raises(CorruptionError, match="checksum"):
        manual(path, arity=4)


# -- failures of the C write ----------------------------------------------------


def tree_nodes(tree) -> list:
    return [[tree.get_node(level, i) for i in range(tree.level_len(level))]
            for level in range(tree.depth + 1)]


@pytest.mark.parametrize("count", [INLINE, OVERLAPPED])
@pytest.mark.parametrize("after_bytes", [0, 48, 48 + 32 * 100])
def test_failed_frame_write_leaves_tree_and_log_as_they_were(tmp_path, count, after_bytes):
    """The write fails part way (a full disk): the batch, already hashed, is
    not published (every node as before, the last node of each level
    overwritten by the hashing put back), the frame is cut, and the tree
    takes the next insert and recovers exactly the acknowledged leaves."""
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    before = leaves(0, 1234)   # not a multiple of 4: every level's last node is partial
    tree.insert_durable(before)
    nodes, segment_size = tree_nodes(tree), os.path.getsize(current_segment(path))
    lib.rt_wal_fail_next_write(errno.ENOSPC, after_bytes)
    try:
        with pytest.raises(DurabilityError) as caught:
            tree.insert_many(leaves(1234, count))
    finally:
        lib.rt_wal_fail_next_write(0, 0)
    assert caught.value.errno == errno.ENOSPC and caught.value.operation == "write"
    assert tree.size == 1234 and tree_nodes(tree) == nodes
    assert tree.stats()["seq"] == 1
    assert os.path.getsize(current_segment(path)) == segment_size
    proof = tree.generate_proof(1233)
    assert proof.verify_against(root_of(split(before), 4), 1234)
    tree.insert_durable(leaves(1234, count))
    expected = root_of(split(leaves(0, 1234 + count)), 4)
    assert tree.root == expected
    abandon(tree)
    with manual(path, arity=4) as reopened:
        assert reopened.size == 1234 + count and reopened.root == expected


def test_failed_write_into_a_deeper_tree_restores_the_old_root_level(tmp_path):
    """A batch that adds levels overwrites the old root's level too."""
    path = tmp_path / "t"
    with manual(path, arity=2) as tree:
        tree.insert_many(leaves(0, 5))
        nodes = tree_nodes(tree)
        lib.rt_wal_fail_next_write(errno.EIO, 10)
        try:
            with pytest.raises(DurabilityError):
                tree.insert_many(leaves(5, OVERLAPPED))
        finally:
            lib.rt_wal_fail_next_write(0, 0)
        assert tree.depth == 3 and tree_nodes(tree) == nodes


def test_leanimt_insert_is_not_affected_by_an_armed_wal_fault():
    tree = LeanIMT(4)
    lib.rt_wal_fail_next_write(errno.EIO, 0)
    try:
        tree.insert_many(leaves(0, 100))
    finally:
        lib.rt_wal_fail_next_write(0, 0)
    assert tree.root == root_of(split(leaves(0, 100)), 4)


# -- copies -------------------------------------------------------------------


def test_only_buffers_of_bytes_are_written_in_place():
    """Others are copied first: another thread changing a bytearray during
    the call could make the frame and the hashed leaves differ."""
    data = leaves(0, 4)
    assert wal_module._immutable(data)
    assert wal_module._immutable(memoryview(data)[32:])
    assert wal_module._immutable(memoryview(memoryview(data)))
    assert not wal_module._immutable(bytearray(data))
    assert not wal_module._immutable(memoryview(bytearray(data)).toreadonly())


def test_a_bytearray_changed_after_the_call_does_not_change_the_frame(tmp_path):
    path = tmp_path / "t"
    buffer = bytearray(leaves(0, 8))
    tree = manual(path, arity=4)
    tree.insert_many(buffer)
    buffer[:] = bytes(len(buffer))
    tree.flush()
    abandon(tree)
    with manual(path, arity=4) as reopened:
        assert reopened.root == root_of(split(leaves(0, 8)), 4)


# -- group commit ---------------------------------------------------------------


def test_calls_that_arrive_during_a_round_share_the_next_one(tmp_path, monkeypatch):
    """The group-commit guarantee, with the interleaving fixed instead of
    left to the scheduler: while a leader's fsync is held, seven more
    insert_durable calls append and wait; once it ends, one round covers all
    seven. Exactly two WAL fsyncs: a leader that synced only its own entry
    makes eight, one that missed some followers more than two."""
    rounds = []
    entered, release = threading.Event(), threading.Event()
    real = storage_io.sys_fsync

    def held_fsync(fd):
        rounds.append(fd)
        if len(rounds) == 1:
            entered.set()
            release.wait(30)
        real(fd)
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    monkeypatch.setattr(storage_io, "sys_fsync", held_fsync)
    roots = []
    leader = threading.Thread(target=lambda: roots.append(tree.insert_durable(leaves(0, 1))))
    leader.start()
    assert entered.wait(30)
    followers = [threading.Thread(target=lambda k=k: roots.append(tree.insert_durable(
        leaves(1 + k, 1)))) for k in range(7)]
    for thread in followers:
        thread.start()
    deadline = time.monotonic() + 30
    while tree.stats()["seq"] < 8 and time.monotonic() < deadline:
        time.sleep(0.002)
    appended = tree.stats()["seq"]
    release.set()
    for thread in [leader, *followers]:
        thread.join(30)
        assert not thread.is_alive()
    monkeypatch.undo()
    assert appended == 8, "appends waited for the fsync round in progress"
    assert len(roots) == 8 and tree.stats()["synced_seq"] == 8
    assert len(rounds) == 2, len(rounds)
    tree.close()


def test_concurrent_insert_durable_calls_share_fsync_rounds(tmp_path, monkeypatch):
    """8 threads x 15 calls with a slow fsync: every call returns, all are
    durable, and rounds are shared."""
    rounds = []
    real = storage_io.sys_fsync

    def slow_fsync(fd):
        rounds.append(fd)
        time.sleep(0.01)
        real(fd)
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    monkeypatch.setattr(storage_io, "sys_fsync", slow_fsync)
    threads, calls = 8, 15
    roots = []

    def worker(k):
        for i in range(calls):
            roots.append(tree.insert_durable(leaves(1000 * k + i, 1)))

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    monkeypatch.undo()
    assert len(roots) == threads * calls and tree.size == threads * calls
    # Without sharing there is one round per call (120). How many calls a
    # round covers is up to the scheduler here (a woken thread may append
    # just after the next round started): a bound of two per round failed
    # under load (67 rounds), so how much is shared is checked with a fixed
    # interleaving above, and this run only that sharing happened at all.
    assert len(rounds) < threads * calls, len(rounds)
    assert tree.stats()["synced_seq"] == threads * calls
    tree.close()


def test_followers_lead_the_next_round_when_a_round_fails(tmp_path, monkeypatch):
    """A failed write of the sync record (which poisons nothing) raises in
    the leader only; the waiting callers run their own round and succeed."""
    path = tmp_path / "t"
    tree = manual(path, arity=4)
    failed = []
    entered = threading.Event()
    release = threading.Event()
    real = storage_io.sys_pwrite
    record_fd = tree._files.sync.fd

    def failing_once(fd, data, offset):
        if fd == record_fd and not failed:
            failed.append(fd)
            entered.set()
            release.wait(5)
            raise OSError(errno.EIO, "injected")
        return real(fd, data, offset)
    monkeypatch.setattr(storage_io, "sys_pwrite", failing_once)
    errors, done = [], []

    def call(i):
        try:
            tree.insert_durable(leaves(i, 1))
            done.append(i)
        except DurabilityError as error:
            errors.append(error)

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert entered.wait(5)
    followers = [threading.Thread(target=call, args=(i,)) for i in range(1, 5)]
    for thread in followers:
        thread.start()
    time.sleep(0.05)
    release.set()
    for thread in [leader, *followers]:
        thread.join(10)
        assert not thread.is_alive()
    monkeypatch.undo()
    assert len(errors) == 1 and sorted(done) == [1, 2, 3, 4]
    assert tree.stats()["synced_seq"] == 5
    tree.close()


# -- fork -----------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_writer_thread_is_restarted_in_a_forked_child(tmp_path):
    """The child inherits no writer thread: its first overlapped append must
    start one instead of waiting for the parent's."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_durable import leaves, manual
        tree = manual({str(tmp_path / "parent")!r}, arity=4)
        tree.insert_many(leaves(0, {OVERLAPPED}))   # starts the writer thread
        pid = os.fork()
        if pid == 0:
            child = manual({str(tmp_path / "child")!r}, arity=4)
            child.insert_many(leaves(0, {OVERLAPPED}))
            child.close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        tree.close()
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with manual(tmp_path / "child", arity=4) as child:
        assert child.root == root_of(split(leaves(0, OVERLAPPED)), 4)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_overlapped_appends_does_not_deadlock(tmp_path):
    """fork() waits for the running insert (the fork handlers hold every
    tree's lock); the WAL writer's state must not be locked before that, or
    the insert, waiting for its frame, and fork wait for each other."""
    script = textwrap.dedent(f"""
        import os, sys, threading
        sys.path.insert(0, {os.path.join(ROOT, "tests")!r})
        from test_durable import leaves, manual
        tree = manual({str(tmp_path / "t")!r}, arity=4)
        batch = leaves(0, {OVERLAPPED})
        stop = threading.Event()
        def writer():
            for _ in range(1000):   # bounds the WAL at 67 MB
                if stop.is_set():
                    break
                tree.insert_many(batch)
        thread = threading.Thread(target=writer)
        thread.start()
        for _ in range(100):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)
        stop.set()
        thread.join()
        tree.close()
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, timeout=120,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- the C driver: natively and, for the ARMv8 CRC instructions, emulated ----


def _run_crc_driver(command: list) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " 0 failed" in result.stdout, result.stdout[-3000:]
    return result.stdout


def test_crc_driver_natively(cc, tmp_path):  # noqa: F811 (fixture)
    from c_build import DRIVERS, build_drivers
    from test_cross_aarch64 import FLAGS

    binaries = build_drivers(cc, FLAGS, tmp_path, [DRIVERS / "test_crc.c"])
    out = _run_crc_driver([str(binaries["test_crc"])])
    assert f"(crc32c: {storage.crc32c_impl()})" in out


def test_crc_driver_under_aarch64_emulation(tmp_path):
    """The ARMv8 CRC32C instructions against the portable code."""
    from c_build import DRIVERS, build_drivers
    from test_cross_aarch64 import CROSS_CC, EMULATORS, FLAGS, INSTALL

    cross = shutil.which(CROSS_CC)
    emulator = next((shutil.which(e) for e in EMULATORS if shutil.which(e)), None)
    if cross is None or emulator is None:
        pytest.skip(f"{CROSS_CC} or qemu-aarch64 not on PATH; Debian/Ubuntu: {INSTALL}")
    binaries = build_drivers([cross], FLAGS + ["-static"], tmp_path, [DRIVERS / "test_crc.c"])
    out = _run_crc_driver([emulator, str(binaries["test_crc"])])
    assert "(crc32c: armv8-crc)" in out, out


@pytest.mark.parametrize("count", [INLINE, OVERLAPPED])
def test_failed_frame_write_leaves_the_leaf_index_as_it_was(tmp_path, count):
    """The index grown for the batch is dropped with it: the leaves are not
    found and a unique insert of them succeeds afterwards."""
    path = tmp_path / "t"
    with manual(path, arity=4, index=True) as tree:
        tree.insert_many(leaves(0, 100))
        batch = leaves(100, count)
        lib.rt_wal_fail_next_write(errno.EIO, 48)
        try:
            with pytest.raises(DurabilityError):
                tree.insert_many(batch, unique=True)
        finally:
            lib.rt_wal_fail_next_write(0, 0)
        assert not any(tree.has(leaf) for leaf in split(batch))
        assert tree.has(leaves(99, 1))
        tree.insert_many(batch, unique=True)
        assert tree.index_of(batch[-32:]) == 100 + count - 1
