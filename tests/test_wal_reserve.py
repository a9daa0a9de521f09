"""WAL segments reserve their blocks ahead of the write position without
changing their size (fallocate with FALLOC_FL_KEEP_SIZE), and the writer
thread starts the writeback of the large frames it writes
(sync_file_range): neither changes a byte that recovery reads."""

from __future__ import annotations

import errno
import logging
import os
import sys

import pytest

from reference import root_of
from rotortree import storage
from rotortree._native import lib
from rotortree.durable import wal as wal_module
from test_durable import abandon, current_segment, leaves, manual, split

FRAME = storage.FRAME_HEADER_LEN
HEADER = storage.SEGMENT_HEADER_LEN


def reservation_supported(directory) -> bool:
    """Whether this file system reserves blocks beyond a file's size (tmpfs,
    ext4, XFS and btrfs do; some network file systems do not)."""
    path = os.path.join(directory, "probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        return lib.rt_wal_reserve(fd, 0, 1 << 20) == 0
    finally:
        os.close(fd)
        os.unlink(path)


def allocated(path) -> int:
    return os.stat(path).st_blocks * 512


def test_reserve_refuses_bad_ranges_and_descriptors(tmp_path):
    path = tmp_path / "file"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert lib.rt_wal_reserve(-1, 0, 4096) == errno.EINVAL
        assert lib.rt_wal_reserve(fd, 0, 0) == errno.EINVAL
        assert lib.rt_wal_reserve(fd, 1 << 63, 4096) == errno.EINVAL
        assert lib.rt_wal_reserve(fd, 4096, (1 << 63) - 1) == errno.EINVAL
    finally:
        os.close(fd)
    assert os.path.getsize(path) == 0


def test_the_live_segment_reserves_blocks_beyond_its_size(tmp_path):
    if not reservation_supported(tmp_path):
        pytest.skip("this file system cannot reserve blocks beyond a file's size")
    tree = manual(tmp_path / "t")
    try:
        tree.insert_many(leaves(0, 10))
        segment = current_segment(tmp_path / "t")
        size = os.path.getsize(segment)
        assert size == HEADER + FRAME + 10 * 32   # the size says where the log ends
        assert allocated(segment) >= size + wal_module.RESERVE_AHEAD - 4096
    finally:
        tree.close()


def test_a_large_frame_reserves_four_frames_ahead(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(wal_module, "reserve_blocks",
                        lambda fd, offset, length: calls.append((offset, length)) or 0)
    monkeypatch.setattr(wal_module, "RESERVE_AHEAD", 4096)
    tree = manual(tmp_path / "t")
    try:
        tree.insert_many(leaves(0, 1000))
        first = HEADER + FRAME + 1000 * 32
        assert calls == [(HEADER, 4 * (FRAME + 1000 * 32))]
        tree.insert_many(leaves(1000, 1000))   # inside the reservation: no call
        assert len(calls) == 1
        for k in range(2, 4):
            tree.insert_many(leaves(1000 * k, 1000))
        # The fourth frame still fits; the fifth starts a new stretch.
        assert len(calls) == 1
        tree.insert_many(leaves(4000, 1000))
        assert calls[1] == (first + 3 * (FRAME + 1000 * 32), 4 * (FRAME + 1000 * 32))
    finally:
        tree.close()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EOPNOTSUPP, errno.EIO])
def test_a_failed_reservation_changes_nothing(tmp_path, monkeypatch, error):
    """A reservation is only a speed-up: when it fails the inserts, the log
    and a reopen are exactly what they would have been."""
    calls = []
    monkeypatch.setattr(wal_module, "reserve_blocks",
                        lambda fd, offset, length: calls.append(offset) or error)
    data = leaves(0, 3000)
    tree = manual(tmp_path / "t")
    try:
        for i in range(0, 3000, 500):
            tree.insert_many(data[32 * i:32 * (i + 500)])
        tree.flush()
        assert calls, "the reservation was never asked for"
        assert tree.root == root_of(split(data), tree.arity)
        segment = current_segment(tmp_path / "t")
        assert os.path.getsize(segment) == HEADER + 6 * FRAME + 3000 * 32
    finally:
        tree.close()
    reopened = manual(tmp_path / "t", create=False)
    try:
        assert reopened.size == 3000
        assert reopened.root == root_of(split(data), reopened.arity)
    finally:
        reopened.close()


def test_after_a_crash_the_reserved_tail_is_neither_replayed_nor_torn(tmp_path, caplog):
    """A crash leaves the reserved blocks beyond the segment's end; recovery
    reads up to the size only, so it replays every entry and reports no torn
    tail."""
    if not reservation_supported(tmp_path):
        pytest.skip("this file system cannot reserve blocks beyond a file's size")
    data = leaves(0, 4000)
    tree = manual(tmp_path / "t")
    for i in range(0, 4000, 1000):
        tree.insert_many(data[32 * i:32 * (i + 1000)])
    tree.flush()
    segment = current_segment(tmp_path / "t")
    size = os.path.getsize(segment)
    assert allocated(segment) > size + (1 << 20)
    abandon(tree)
    with caplog.at_level(logging.WARNING, logger="rotortree"):
        reopened = manual(tmp_path / "t", create=False)
    try:
        assert reopened.size == 4000
        assert reopened.root == root_of(split(data), reopened.arity)
        assert not [r for r in caplog.records if "torn" in r.getMessage()]
        assert os.path.getsize(segment) == size   # nothing was cut
    finally:
        reopened.close()


def test_close_gives_the_reserved_blocks_back(tmp_path):
    if not reservation_supported(tmp_path):
        pytest.skip("this file system cannot reserve blocks beyond a file's size")
    data = leaves(0, 2000)
    tree = manual(tmp_path / "t")
    tree.insert_many(data)
    segment = current_segment(tmp_path / "t")
    size = os.path.getsize(segment)
    assert allocated(segment) > size + (1 << 20)
    tree.close()
    assert os.path.getsize(segment) == size
    assert allocated(segment) < size + 64 * 1024
    reopened = manual(tmp_path / "t", create=False)
    try:
        assert reopened.root == root_of(split(data), reopened.arity)
    finally:
        reopened.close()


def test_close_never_cuts_bytes_past_the_bookkept_end(tmp_path):
    """The release truncates only when the file's size is where the next
    frame would go: a file longer than that keeps every byte."""
    tree = manual(tmp_path / "t")
    tree.insert_many(leaves(0, 10))
    segment = tree._files.segment
    segment.reserved = segment.offset + (1 << 20)
    os.pwrite(segment.fd, b"x" * 100, segment.offset)   # not bookkept
    size = os.path.getsize(segment.path)
    tree._release_reserved()
    assert os.path.getsize(segment.path) == size
    os.ftruncate(segment.fd, segment.offset)
    tree.close()


def test_the_writer_thread_starts_the_writeback_of_large_frames(tmp_path):
    """Frames written by the writer thread (from 64 KiB) have their writeback
    started at once; inline frames do not (the work would land on the
    hashing thread)."""
    tree = manual(tmp_path / "t")
    try:
        before = lib.rt_wal_writeback_started()
        tree.insert_many(leaves(0, 100))     # 3,200 bytes: inline
        assert lib.rt_wal_writeback_started() == before
        tree.insert_many(leaves(100, 4000))  # 128,000 bytes: the writer thread
        hinted = 1 if sys.platform.startswith("linux") else 0   # sync_file_range
        assert lib.rt_wal_writeback_started() == before + hinted
        tree.flush()
        assert tree.root == root_of(split(leaves(0, 4100)), tree.arity)
    finally:
        tree.close()


@pytest.mark.parametrize("ack", ["record", "wal"])
@pytest.mark.parametrize("zeroed", ["every unsynced frame", "the last frame's leaves",
                                    "the first unsynced header"])
def test_unsynced_frames_read_as_zeros_within_the_size_are_a_torn_tail(tmp_path, caplog,
                                                                       ack, zeroed):
    """The crash state reserved blocks add: ext4 can commit a grown size
    before it marks the reserved blocks written, so frames no fsync covered
    read as zeros within the size. Recovery keeps the fsynced prefix, cuts
    the rest as a torn tail and logs it, under both acknowledge settings."""
    from rotortree import CheckpointPolicy, FlushPolicy, RotorTree

    def opened(create: bool = False) -> RotorTree:
        return RotorTree.open(tmp_path / "t", create=create,
                              flush_policy=FlushPolicy.manual(acknowledge=ack),
                              checkpoint_policy=CheckpointPolicy.manual())

    data = leaves(0, 50)
    tree = opened(create=True)
    tree.insert_many(data[:32 * 20])
    tree.insert_many(data[32 * 20:32 * 30])
    tree.flush()                              # entries 1-2 acknowledged
    synced_end = tree._files.segment.offset
    tree.insert_many(data[32 * 30:32 * 40])   # entries 3-4: written, never fsynced
    tree.insert_many(data[32 * 40:])
    segment = current_segment(tmp_path / "t")
    size = os.path.getsize(segment)
    abandon(tree)
    frame = FRAME + 10 * 32
    start, length = {"every unsynced frame": (synced_end, size - synced_end),
                     "the last frame's leaves": (size - 10 * 32, 10 * 32),
                     "the first unsynced header": (synced_end, FRAME)}[zeroed]
    with open(segment, "r+b") as handle:
        handle.seek(start)
        handle.write(bytes(length))
    assert os.path.getsize(segment) == size == synced_end + 2 * frame
    kept = 40 if zeroed == "the last frame's leaves" else 30
    with caplog.at_level(logging.WARNING, logger="rotortree"):
        reopened = opened()
    try:
        assert reopened.size == kept
        assert reopened.root == root_of(split(data[:32 * kept]), reopened.arity)
        assert [r for r in caplog.records if "torn" in r.getMessage()]
        reopened.insert_many(leaves(kept, 5))
        reopened.flush()
    finally:
        reopened.close()
    again = opened()
    try:
        assert again.size == kept + 5
    finally:
        again.close()
