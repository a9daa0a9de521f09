"""Index fills grouped by table region (for tables past the last-level
cache, reached here through a small pool chunk): the answers must be those
of the plain fill, checked against first positions computed with numpy."""

import numpy as np
import pytest

import rotortree
from rotortree import DuplicateLeafError, LeanIMT


@pytest.fixture
def small_chunk():
    before = rotortree.pool_info()
    rotortree.configure(num_threads=2, par_chunk_size=1)
    yield
    rotortree.configure(num_threads=before["num_threads"],
                        par_chunk_size=before["par_chunk_size"])


def batch(seed, distinct, count):
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, size=(distinct, 32), dtype=np.uint8)
    return keys[rng.integers(0, distinct, size=count)]


def first_of_each(rows):
    """For every row, the first position holding the same leaf; and how
    many distinct leaves there are."""
    _, first, inverse = np.unique(np.ascontiguousarray(rows).view("V32").ravel(),
                                  return_index=True, return_inverse=True)
    return first[inverse.ravel()], len(first)


def check(tree, rows):
    first, distinct = first_of_each(rows)
    absent = batch(99, 3000, 3000)
    probes = np.concatenate([rows[::5], absent])
    want = list(first[::5]) + [-1] * len(absent)
    assert list(tree.index_of_many(probes)) == want
    assert list(tree.contains_many(probes)) == [int(w >= 0) for w in want]
    assert [tree.index_of(bytes(p)) for p in probes[::50]] == \
        [None if w < 0 else w for w in want[::50]]
    assert tree.index_stats()["entries"] == distinct


def test_rebuild_matches_numpy(small_chunk):
    rows = batch(1, 150_000, 240_000)   # repeats across the whole tree
    tree = LeanIMT(4, 24)
    tree.insert_many(rows)
    tree.enable_index()
    check(tree, rows)


def test_growth_by_plain_inserts(small_chunk):
    rows = batch(2, 150_000, 240_000)
    tree = LeanIMT(4, 24, index=True)
    for part in np.array_split(rows, 3):   # each batch outgrows the table
        tree.insert_many(part)
    check(tree, rows)


def test_unique_batches_report_the_repeats(small_chunk):
    rows = batch(3, 200_000, 240_000)
    tree = LeanIMT(4, 24, index=True)
    head, tail = rows[:160_000], rows[160_000:]
    first, _ = first_of_each(head)
    expected = list(np.flatnonzero(first != np.arange(len(head))))
    assert expected
    with pytest.raises(DuplicateLeafError) as caught:
        tree.insert_many(head, unique=True)
    assert caught.value.positions == expected
    assert tree.size == 0
    _, dropped = tree.insert_new(head)
    assert dropped == expected
    kept = np.delete(head, expected, axis=0)
    # Into a tree that already holds leaves, outgrowing its table: repeats of
    # the tree's leaves and inside the batch.
    first, _ = first_of_each(np.concatenate([kept, tail]))
    at = np.arange(len(kept), len(kept) + len(tail))
    want_dropped = list(np.flatnonzero(first[len(kept):] != at))
    _, dropped = tree.insert_new(tail)
    assert dropped == want_dropped
    check(tree, np.concatenate([kept, np.delete(tail, want_dropped, axis=0)]))
