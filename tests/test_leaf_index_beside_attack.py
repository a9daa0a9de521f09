"""Hostile checks of the index filled beside the hashing (rt_index_beside):
random batches with repeats spliced in (inside batches, across the two
threads' blocks of puts and at block boundaries) against a plain
Python model, with two pool threads and one-parent work units so that
batches of 512 leaves or more take the shared path. The index must always
agree with the tree, a refused unique batch must change nothing, and a
unique insert must never accept a leaf twice."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotortree
from rotortree import DuplicateLeafError, LeanIMT
from test_leaf_index_beside import first_positions


@pytest.fixture
def beside():
    # conftest's restore_configuration puts the pool back afterwards.
    rotortree.configure(num_threads=2, parallel_threshold=2, par_chunk_size=1)


def agree(reader, leaves, probes):
    """`reader` (tree or snapshot) answers for `probes` as the model of
    `leaves` does: the least position of each, or absent."""
    first = first_positions(leaves)
    want = [first.get(p, -1) for p in probes]
    assert reader.index_of_many(probes).tolist() == want
    assert list(reader.contains_many(b"".join(probes))) == [int(w >= 0) for w in want]
    for p in probes[::7]:
        assert reader.has(p) == (p in first)
        assert reader.index_of(p) == first.get(p)


def leaf_of(n):
    """Leaf n: its 8 big-endian bytes four times (as in the C driver)."""
    return n.to_bytes(8, "big") * 4


# A batch: `fresh` new leaves, then repeats spliced in at chosen places,
# each a leaf of the tree or of the batch (the shared path needs 512 leaves
# or more at one-parent units: 2 * 256).
op = st.tuples(
    st.sampled_from(["bytes", "bytearray", "unique", "new"]),
    st.integers(1, 1400),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=4),
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(arity=st.sampled_from([2, 3, 4]), ops=st.lists(op, min_size=1, max_size=6))
def test_beside_agrees_with_a_set_model(beside, arity, ops):
    tree = LeanIMT(arity, 16, index=True)
    leaves: list = []
    snaps = []
    counter = 0
    probes: list = []
    for kind, fresh_count, repeats in ops:
        batch = [leaf_of(counter + i) for i in range(fresh_count)]
        counter += fresh_count
        for where, which in repeats:
            pool = leaves + batch
            batch.insert(where % (len(batch) + 1), pool[which % len(pool)])
        probes = (batch[:50] + batch[-50:] + leaves[:50] + [leaf_of(10**9)])
        data = b"".join(batch)
        before = (tree.root, tree.size, tree.index_stats())
        if kind in ("bytes", "bytearray"):
            tree.insert_many(data if kind == "bytes" else bytearray(data))
            leaves += batch
        elif kind == "unique":
            seen = set(leaves)
            dup_positions = []
            for i, leaf in enumerate(batch):
                if leaf in seen:
                    dup_positions.append(i)
                seen.add(leaf)
            if dup_positions:
                with pytest.raises(DuplicateLeafError) as info:
                    tree.insert_many(data, unique=True)
                assert info.value.positions == dup_positions
                assert (tree.root, tree.size, tree.index_stats()) == before
            else:
                tree.insert_many(data, unique=True)
                leaves += batch
        else:
            seen = set(leaves)
            dropped = []
            for i, leaf in enumerate(batch):
                if leaf in seen:
                    dropped.append(i)
                else:
                    leaves.append(leaf)
                    seen.add(leaf)
            _, got = tree.insert_new(data)
            assert got == dropped
        assert tree.size == len(leaves)
        if leaves:
            assert tree.root == rotortree.compute_root(b"".join(leaves), arity)
        assert tree.index_stats()["entries"] == len(set(leaves))
        agree(tree, leaves, probes)
        snaps.append((tree.snapshot(), list(leaves)))
    for snap, held in snaps:
        agree(snap, held, probes)


def test_racing_unique_inserts_and_snapshot_readers(beside):
    # Threads insert overlapping unique batches (600 leaves: the shared
    # path) at once while another reads an old snapshot's index, which the
    # in-place puts write under it: no leaf may go in twice, every accepted
    # batch goes in whole, and the snapshot keeps answering by its size.
    tree = LeanIMT(2, 20, index=True)
    keys = [leaf_of(i) for i in range(1, 6001)]
    tree.insert_many(b"".join(keys[:40]))
    snap = tree.snapshot()
    errors = []
    done = threading.Event()

    def inserter(offset):
        try:
            for start in range(offset, 5300, 400):
                try:
                    tree.insert_many(b"".join(keys[start:start + 600]), unique=True)
                except DuplicateLeafError:
                    pass
                tree.insert_new(b"".join(keys[start + 100:start + 700]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader():
        want = [i if i < 40 else -1 for i in range(len(keys))]
        try:
            while not done.is_set():
                assert snap.index_of_many(keys).tolist() == want
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=inserter, args=(o,)) for o in (0, 200, 130)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert not errors
    data = tree.leaves()
    stored = [data[i:i + 32] for i in range(0, len(data), 32)]
    assert len(set(stored)) == len(stored) == tree.size
    first = first_positions(stored)
    assert tree.index_of_many(keys).tolist() == [first.get(k, -1) for k in keys]
    assert tree.index_stats()["entries"] == tree.size
    assert tree.root == rotortree.compute_root(data, 2)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("count", [511, 512, 513, 1024])
@pytest.mark.parametrize("at", [0, 31, 32, 63, 64, -1])
def test_repeats_at_block_boundaries(threads, count, at, tmp_path):
    # Blocks of puts are 32 leaves at one-parent units, and 512 leaves is
    # the smallest batch shared out; a repeat at either side of a block
    # boundary, first or last, must be found (unique) and must keep the
    # least position (plain), with 3 pool threads as well as 2.
    rotortree.configure(num_threads=threads, parallel_threshold=2, par_chunk_size=1)
    base = [leaf_of(10**6 + i) for i in range(100)]
    tree = LeanIMT(3, 16, index=True)
    tree.insert_many(b"".join(base))
    at = at % count
    batch = [leaf_of(i) for i in range(count)]
    batch[at] = batch[(at + 33) % count] if at != (at + 33) % count else base[5]
    before = (tree.root, tree.size, tree.index_stats())
    snap = tree.snapshot()
    with pytest.raises(DuplicateLeafError):
        tree.insert_many(b"".join(batch), unique=True)
    assert (tree.root, tree.size, tree.index_stats()) == before
    batch[at] = base[7]  # now the only repeat is of a tree leaf
    with pytest.raises(DuplicateLeafError) as info:
        tree.insert_many(b"".join(batch), unique=True)
    assert info.value.positions == [at]
    assert (tree.root, tree.size, tree.index_stats()) == before
    batch[at] = batch[(at + 40) % count]
    tree.insert_many(b"".join(batch))  # plain, stable: kept with its repeat
    leaves = base + batch
    probes = batch + base + [leaf_of(10**9)]
    agree(tree, leaves, probes)
    agree(snap, base, probes)
    assert tree.root == rotortree.compute_root(b"".join(leaves), 3)
    # Saved and loaded, the rebuilt index answers the same.
    tree.save(tmp_path / "t.rt")
    again = LeanIMT.load(tmp_path / "t.rt")
    again.enable_index()
    agree(again, leaves, probes)


def test_durable_tree_recovers_the_same_index(beside, tmp_path):
    # A durable tree checks unique batches with rt_tree_index_duplicates
    # (whose staging this branch reworked) and logs them; its plain LeanIMT
    # twin stages them beside the hashing. Refusals, skips and repeats
    # later, both trees, and the durable one reopened (its index rebuilt by
    # recovery), answer alike.
    path = tmp_path / "d"
    twin = LeanIMT(4, 20, index=True)
    base = [leaf_of(10**6 + i) for i in range(300)]
    batch = [leaf_of(i) for i in range(900)]
    refused = batch + [base[3]]
    with rotortree.RotorTree.open(path, 4, 20, create=True, index=True) as tree:
        for t in (tree, twin):
            t.insert_many(b"".join(base))
            with pytest.raises(DuplicateLeafError) as info:
                t.insert_many(b"".join(refused), unique=True)
            assert info.value.positions == [900]
            dropped = t.insert_new(b"".join(refused))[-1]
            assert dropped == [900]
            t.insert_many(b"".join(batch[:600]))   # plain: repeats kept
        leaves = base + batch + batch[:600]
        probes = batch + base + [leaf_of(10**9)]
        agree(tree, leaves, probes)
        agree(twin, leaves, probes)
        assert tree.root == twin.root
    with rotortree.RotorTree.open(path, index=True) as tree:
        agree(tree, leaves, probes)
        assert tree.root == twin.root


@pytest.mark.slow
def test_beside_stress_driver_under_tsan(tmp_path):
    # The handshake between the owner's plain stores and a joining helper,
    # and snapshot reads of the table being put into, under ThreadSanitizer.
    from c_build import DRIVERS, build_drivers, compiler, sanitizer_prefix, summary

    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc, cc or clang) on PATH")
    flags = ["-std=c11", "-pthread", "-g", "-O1", "-fsanitize=thread"]
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1")
    prefix = sanitizer_prefix(cc, flags, tmp_path, "ThreadSanitizer", env, 600)
    exe = build_drivers(cc, flags, tmp_path / "tsan", [DRIVERS / "test_index_beside.c"])
    run = subprocess.run(prefix + [str(exe["test_index_beside"]), "150"], capture_output=True,
                         text=True, timeout=600, env=env)
    report = f"rc={run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    assert run.returncode == 0, report
    assert "WARNING: ThreadSanitizer" not in run.stderr, report
    assert summary(run) == (150, 0), report
