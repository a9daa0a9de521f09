"""rotortree.distributed: a segment task reads its leaves into one buffer
kept per thread (file sources, and callables with a ``fill`` method) rather
than a fresh segment-sized allocation per task; the roots stay those of
compute_root whatever the buffer held before, and a local build does not
keep the buffer once it returns."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import pytest

from rotortree import compute_root

np = pytest.importorskip("numpy")

from rotortree.distributed import CounterLeaves, build  # noqa: E402
from rotortree.distributed import _sources  # noqa: E402

SEGMENT = 16  # a power of arity 4 and of arity 16


class RecordingLeaves:
    """CounterLeaves that records the address of every buffer it fills and
    scribbles over it first, so stale or unwritten bytes change the root."""

    def __init__(self) -> None:
        self.addresses = []
        self.inner = CounterLeaves(7)

    def __call__(self, start, stop):
        return self.inner(start, stop)

    def fill(self, start, stop, out):
        array = np.frombuffer(out, dtype=np.uint8)
        self.addresses.append((threading.get_ident(), array.ctypes.data))
        array[:] = 0xA5
        self.inner.fill(start, stop, out)


def test_counter_leaves_fill_writes_every_byte_of_the_leaves():
    out = bytearray(b"\xff" * 32 * 40)
    CounterLeaves(3).fill(10, 50, memoryview(out))
    words = np.zeros((40, 4), dtype="<u8")
    words[:, 0] = np.arange(10, 50)
    words[:, 1] = 3
    assert bytes(out) == words.tobytes() == bytes(CounterLeaves(3)(10, 50))


def test_a_fill_source_reuses_one_buffer_per_thread_and_gives_compute_roots_root():
    source = RecordingLeaves()
    size = 5 * SEGMENT + 3  # the last segment is shorter than the buffer it reuses
    with cf.ThreadPoolExecutor(max_workers=1) as executor:
        root = build(source, size=size, arity=4, segment_leaves=SEGMENT, client=executor)
    assert root == compute_root(bytes(CounterLeaves(7)(0, size)), 4)
    assert len(source.addresses) == 6
    assert len(set(source.addresses)) == 1  # one thread, one buffer, for all six segments


def test_a_local_build_reuses_the_buffer_and_drops_it_when_done():
    source = RecordingLeaves()
    root = build(source, size=4 * SEGMENT, arity=16, segment_leaves=SEGMENT)
    assert root == compute_root(bytes(CounterLeaves(7)(0, 4 * SEGMENT)), 16)
    assert len(set(source.addresses)) == 1
    assert getattr(_sources._kept, "buffer", None) is None


def test_file_segments_reuse_the_buffer_and_a_short_last_segment_reads_only_its_leaves(
        tmp_path):
    size = 3 * SEGMENT + 5
    path = tmp_path / "leaves.bin"
    path.write_bytes(bytes(CounterLeaves(9)(0, size)))
    with cf.ThreadPoolExecutor(max_workers=1) as executor:
        root = build([str(path)], arity=4, segment_leaves=SEGMENT, client=executor)
        kept = executor.submit(lambda: getattr(_sources._kept, "buffer", None)).result()
    assert root == compute_root(path.read_bytes(), 4)
    assert kept is not None and len(kept) == SEGMENT * 32


def test_a_failing_fill_releases_the_buffer_for_the_next_build():
    class Failing(RecordingLeaves):
        def fill(self, start, stop, out):
            if start >= SEGMENT:
                raise ValueError("generator broke")
            super().fill(start, stop, out)

    with pytest.raises(ValueError, match="generator broke"):
        build(Failing(), size=3 * SEGMENT, arity=4, segment_leaves=SEGMENT)
    assert not getattr(_sources._kept, "busy", False)
    source = RecordingLeaves()
    assert build(source, size=2 * SEGMENT, arity=4, segment_leaves=SEGMENT) == \
        compute_root(bytes(CounterLeaves(7)(0, 2 * SEGMENT)), 4)


def test_a_fill_that_builds_a_tree_itself_gets_its_own_buffer():
    class Nested(RecordingLeaves):
        def fill(self, start, stop, out):
            # A source that builds another tree while its buffer is lent out.
            inner = build(CounterLeaves(1), size=2 * SEGMENT, arity=4, segment_leaves=SEGMENT)
            assert inner == compute_root(bytes(CounterLeaves(1)(0, 2 * SEGMENT)), 4)
            super().fill(start, stop, out)

    source = Nested()
    root = build(source, size=2 * SEGMENT, arity=4, segment_leaves=SEGMENT)
    assert root == compute_root(bytes(CounterLeaves(7)(0, 2 * SEGMENT)), 4)
