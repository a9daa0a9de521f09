"""Log views: every earlier state of a tree from its stored levels.

``root_at(n)``, ``Snapshot.at(n)``, ``generate_proof(i, size=n)``,
``generate_proofs(indices, size=n)`` and ``generate_consistency_proof(m, n)``
are checked against trees built to size n from the same leaves: the same
roots, the same nodes at every level, byte-identical proofs.
"""

from __future__ import annotations

import gc
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rotortree
from conftest import kernels
from reference import vector_leaf
from rotortree import _core
from rotortree.durable import CheckpointPolicy, FlushPolicy

ARITIES = (2, 3, 4, 7, 16)
# Sizes checked one by one against a tree built to that size: past every
# depth change of the small arities, and past the 256 proofs from which a
# batch is split over the pool.
SIZES = 300
# Up to these sizes every leaf / every old size is proven singly.
EVERY_LEAF = 48
EVERY_OLD_SIZE = 40
LEAF_BYTES = b"".join(vector_leaf(i) for i in range(5000))


def leaves(count: int) -> bytes:
    return LEAF_BYTES[: 32 * count]


def built(arity: int, size: int) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(leaves(size))
    return tree


def level_bytes(snap: rotortree.Snapshot) -> list:
    """Every level of ``snap`` as bytes (through the bulk reader, which also
    checks that a view's level lengths and chunk layout hold together)."""
    return [b"".join(bytes(piece) for piece in
                     _core.snapshot_pieces(snap, level, 0, snap.level_len(level)))
            for level in range(snap.depth + 1)]


def sample(rng: random.Random, upper: int, every_below: int, count: int = 6) -> list:
    """All of 0..upper-1 when small, else its ends and a few in between."""
    if upper <= every_below:
        return list(range(upper))
    ends = {0, min(1, upper - 1), max(upper - 2, 0), upper - 1}
    return sorted(ends | {rng.randrange(upper) for _ in range(count)})


def check_view(grown: rotortree.Snapshot, size: int, rng: random.Random) -> None:
    """Everything the grown snapshot says about ``size`` equals what a tree
    built to ``size`` says about itself."""
    ref = built(grown.arity, size).snapshot()
    root = grown.root_at(size)
    assert root == ref.root
    view = grown.at(size)
    assert (view.size, view.depth, view.root) == (size, ref.depth, ref.root)
    assert level_bytes(view) == level_bytes(ref)

    batch = grown.generate_proofs(range(size), size=size)
    assert batch.to_bytes() == ref.generate_proofs(range(size)).to_bytes()
    assert batch.verify_against(root, size)
    for index in sample(rng, size, EVERY_LEAF):
        proof = grown.generate_proof(index, size=size)
        assert proof.to_bytes() == batch.proof_bytes(index)
        assert proof.verify_against(root, size)

    for old_size in sample(rng, size, EVERY_OLD_SIZE):
        old_size += 1
        consistency = grown.generate_consistency_proof(old_size, size)
        assert consistency == ref.generate_consistency_proof(old_size)
        assert consistency.verify_against(grown.root_at(old_size), old_size, root, size)


@pytest.mark.parametrize("arity", ARITIES)
def test_every_size_equals_a_tree_built_to_it(arity):
    rng = random.Random(arity)
    grown = built(arity, SIZES).snapshot()
    for size in range(1, SIZES + 1):
        check_view(grown, size, rng)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kernel", kernels())
def test_batches_at_past_sizes_under_every_kernel(kernel, threads):
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=1)
    for arity in ARITIES:
        tree = built(arity, SIZES)
        snap = tree.snapshot()
        for size in range(1, SIZES + 1, 7 if threads == 1 else 1):
            ref = built(arity, size)
            assert tree.root_at(size) == snap.root_at(size) == ref.root
            indices = list(range(size))
            batch = snap.generate_proofs(indices, size=size)
            assert batch.to_bytes() == ref.generate_proofs(indices).to_bytes()
            assert batch.verify_against(ref.root, size)
            assert [batch.proof_bytes(i) for i in (0, size - 1)] == [
                snap.generate_proof(i, size=size).to_bytes() for i in (0, size - 1)]


@settings(max_examples=60, deadline=None)
@given(arity=st.integers(2, 40), grown_size=st.integers(1, 5000), data=st.data())
def test_views_of_larger_trees(arity, grown_size, data):
    size = data.draw(st.integers(1, grown_size), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    old_size = data.draw(st.integers(1, size), label="old_size")
    tree = built(arity, grown_size)
    ref = built(arity, size)
    assert tree.root_at(size) == ref.root
    assert tree.generate_proof(index, size=size) == ref.generate_proof(index)
    assert (tree.generate_proofs([index, 0, size - 1], size=size).to_bytes()
            == ref.generate_proofs([index, 0, size - 1]).to_bytes())
    consistency = tree.generate_consistency_proof(old_size, size)
    assert consistency == ref.generate_consistency_proof(old_size)
    assert consistency.verify_against(tree.root_at(old_size), old_size, ref.root, size)


def test_views_of_views_and_lifetimes():
    tree = built(4, 1000)
    snap = tree.snapshot()
    view = snap.at(700)
    del snap
    tree.insert_many(leaves(1000))  # the tree rewrites the chunks it shared
    gc.collect()
    inner = view.at(333)
    del view
    gc.collect()
    ref = built(4, 333).snapshot()
    assert level_bytes(inner) == level_bytes(ref)
    assert inner.generate_proofs(range(333)).to_bytes() == ref.generate_proofs(
        range(333)).to_bytes()
    same = ref.at(333)
    assert same is ref  # the snapshot's own size is the snapshot itself


def test_view_of_an_indexed_tree_looks_leaves_up_as_of_its_size():
    tree = rotortree.LeanIMT(4, index=True)
    tree.insert_many(leaves(600))
    view = tree.snapshot().at(250)
    del tree  # the view holds the index itself, as snapshots do
    gc.collect()
    assert [view.index_of(vector_leaf(k)) for k in (0, 249, 250, 599)] == [0, 249, None, None]
    assert view.has(vector_leaf(100)) and not view.has(vector_leaf(300))


def test_views_return_their_memory():
    tree = built(4, 5000)
    snap = tree.snapshot()
    gc.collect()
    before = rotortree.memory_stats()
    for size in range(1, 5000, 197):
        views = [snap.at(size) for _ in range(5)]
        assert all(v.root == snap.root_at(size) for v in views)
        del views
    gc.collect()
    after = rotortree.memory_stats()
    assert after["chunk_bytes"] - after["free_chunk_bytes"] == (
        before["chunk_bytes"] - before["free_chunk_bytes"])


def test_root_at_while_another_thread_inserts():
    tree = rotortree.LeanIMT(3)
    roots = [tree.insert(vector_leaf(0))]
    done = threading.Event()
    errors = []

    def writer():
        try:
            for i in range(1, 3000):
                roots.append(tree.insert(vector_leaf(i)))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    rng = random.Random(3)
    checked = 0
    while not done.is_set() or checked < 200:
        known = len(roots)  # roots[:known] are final
        size = rng.randint(1, known)
        assert tree.root_at(size) == roots[size - 1]
        checked += 1
    thread.join()
    assert not errors


# -- argument errors -----------------------------------------------------------------


@pytest.fixture
def tree():
    return built(4, 100)


@pytest.mark.parametrize("call, match", [
    (lambda t: t.root_at(0), r"size must be 1\.\.100, got 0"),
    (lambda t: t.root_at(101), r"size must be 1\.\.100, got 101"),
    (lambda t: t.root_at(-1), "got -1"),
    (lambda t: t.root_at(1 << 70), "got 1180591620717411303424"),
    (lambda t: t.snapshot().root_at(101), r"size must be 1\.\.100, got 101"),
    (lambda t: t.snapshot().at(0), r"size must be 1\.\.100, got 0"),
    (lambda t: t.generate_proof(0, size=101), r"size must be 1\.\.100, got 101"),
    (lambda t: t.generate_proof(50, size=50), "leaf index 50 out of range for size 50"),
    (lambda t: t.generate_proofs([0, 50], size=50), "index 50 at position 1 out of range "
                                                    "for size 50"),
    (lambda t: t.generate_proofs([0], size=0), r"size must be 1\.\.100, got 0"),
    (lambda t: t.generate_consistency_proof(51, 50), r"old_size must be 1\.\.50, got 51"),
    (lambda t: t.generate_consistency_proof(1, 101), r"new_size must be 1\.\.100, got 101"),
    (lambda t: t.generate_consistency_proof(0, 50), r"old_size must be 1\.\.50, got 0"),
    (lambda t: rotortree.LeanIMT().root_at(1), "out of range: the tree is empty"),
    (lambda t: rotortree.LeanIMT().snapshot().at(1), "out of range: the tree is empty"),
])
def test_sizes_out_of_range_are_index_errors(tree, call, match):
    before = (tree.size, tree.root)
    with pytest.raises(rotortree.NodeIndexError, match=match) as caught:
        call(tree)
    assert isinstance(caught.value, IndexError)
    assert (tree.size, tree.root) == before


@pytest.mark.parametrize("call, match", [
    (lambda t: t.root_at("3"), "size must be an int, not str"),
    (lambda t: t.root_at(True), "not bool"),
    (lambda t: t.snapshot().at(3.0), "not float"),
    (lambda t: t.generate_proof(0, size="3"), "size must be an int"),
    (lambda t: t.generate_consistency_proof(1, 2.0), "old_root must be bytes .or new_size an "
                                                     "int., not float"),
    (lambda t: t.generate_consistency_proof(1, None), "not NoneType"),
    (lambda t: t.generate_consistency_proof(1, t.root, old_root=t.root), "given twice"),
    (lambda t: t.generate_consistency_proof(1, 50, old_root="ab" * 32), "old_root must be bytes"),
])
def test_argument_types(tree, call, match):
    with pytest.raises(rotortree.ArgumentTypeError, match=match) as caught:
        call(tree)
    assert isinstance(caught.value, TypeError)


def test_consistency_forms(tree):
    root_37 = built(4, 37).root
    root_60 = built(4, 60).root
    # The form of earlier versions: old_root in second place, to the current size.
    legacy = tree.generate_consistency_proof(37, root_37)
    assert legacy == tree.generate_consistency_proof(37) == tree.generate_consistency_proof(
        37, 100) == tree.generate_consistency_proof(37, old_root=root_37)
    assert legacy.new_size == 100 and legacy.old_root == root_37
    between = tree.generate_consistency_proof(37, 60, old_root=root_37)
    assert (between.old_size, between.new_size, between.new_root) == (37, 60, root_60)
    assert between.verify_against(root_37, 37, root_60, 60)
    with pytest.raises(rotortree.InvalidArgumentError, match="not this tree's root at size 37"):
        tree.generate_consistency_proof(37, 60, old_root=root_60)
    same = tree.generate_consistency_proof(60, 60)
    assert same.verify_against(root_60, 60, root_60, 60) and same.levels == ()
    with pytest.raises(rotortree.EmptyTreeError):
        rotortree.LeanIMT().generate_consistency_proof(1, 1)


# -- stored trees ----------------------------------------------------------------------


def answers(tree, size: int, rng: random.Random) -> tuple:
    """What a tree says about its past at ``size``."""
    indices = sample(rng, size, 0, 4)
    old = rng.randint(1, size)
    return (tree.root_at(size), tree.generate_proof(indices[-1], size=size).to_bytes(),
            tree.generate_proofs(indices, size=size).to_bytes(),
            tree.generate_consistency_proof(old, size).to_bytes())


@pytest.mark.parametrize("mmap_levels", [0, 3])
def test_durable_tree_answers_the_same_after_reopen(tmp_path, mmap_levels):
    path = tmp_path / "tree"
    total = 3000
    opened = rotortree.RotorTree.open(path, 4, create=True, flush_policy=FlushPolicy.manual(),
                                      checkpoint_policy=CheckpointPolicy.on_close())
    roots = []
    with opened as durable:
        for start in range(0, total, 250):
            durable.insert_many(leaves(total)[32 * start: 32 * (start + 250)])
            roots.append((durable.size, durable.root))
        durable.flush()
        sizes = [1, 2, 5, 127, 128, 129, 1000, 1025, total - 1, total]
        before = {size: answers(durable, size, random.Random(size)) for size in sizes}
        assert all(durable.root_at(size) == root for size, root in roots)
    with rotortree.RotorTree.open(path, mmap_levels=mmap_levels, read_only=True) as reopened:
        if mmap_levels:  # the views then cut levels served from the file
            assert sum(reopened.stats()["cold_nodes"].values()) > 0
        assert {size: answers(reopened, size, random.Random(size)) for size in sizes} == before
        assert all(reopened.root_at(size) == root for size, root in roots)
        for size in (1, 129, 1000, total):
            ref = built(4, size).snapshot()
            assert level_bytes(reopened.snapshot().at(size)) == level_bytes(ref)


def test_loaded_file_in_place_answers_the_same(tmp_path):
    tree = built(3, 2000)
    tree.save(tmp_path / "t.rt")
    loaded = rotortree.LeanIMT.load(tmp_path / "t.rt", mmap=True)
    for size in (1, 3, 128, 384, 385, 1000, 1999, 2000):
        rng = random.Random(size)
        assert answers(loaded, size, rng) == answers(tree, size, random.Random(size))
        assert level_bytes(loaded.snapshot().at(size)) == level_bytes(
            built(3, size).snapshot())
