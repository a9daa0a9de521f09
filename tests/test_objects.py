"""Trees, snapshots, proofs and tokens behave like Python objects: copies
are real copies, pickles go through the save format, reprs are short,
snapshots of one state compare equal, trees iterate over their leaves,
tokens are awaitable, proof JSON says what it is."""

from __future__ import annotations

import asyncio
import copy
import json
import pickle
import threading

import numpy as np
import pytest

import rotortree
from rotortree import (
    ArgumentTypeError,
    CheckpointPolicy,
    ClosedTreeError,
    ConsistencyProof,
    CorruptionError,
    FlushPolicy,
    InclusionProof,
    InvalidProofError,
    LeanIMT,
    NodeIndexError,
    RotorTree,
    compute_root,
)
from rotortree._util import deterministic_leaves


def leaves(count: int, seed: bytes = b"objects") -> bytes:
    return deterministic_leaves(count, seed)


def filled(count: int, arity: int = 4, **kwargs) -> LeanIMT:
    tree = LeanIMT(arity, **kwargs)
    if count:
        tree.insert_many(leaves(count))
    return tree


# -- copies -----------------------------------------------------------------------


@pytest.mark.parametrize("make_copy", [copy.copy, copy.deepcopy, lambda tree: tree.copy()])
def test_copies_are_independent_trees(make_copy):
    tree = filled(1000)
    root = tree.root
    clone = make_copy(tree)
    assert clone is not tree
    assert (clone.root, clone.size, clone.arity, clone.max_depth) == (root, 1000, 4, 32)
    clone.insert(b"\x01" * 32)
    assert tree.root == root and tree.size == 1000
    tree.insert(b"\x02" * 32)
    assert clone.get_node(0, 1000) == b"\x01" * 32
    assert tree.get_node(0, 1000) == b"\x02" * 32


@pytest.mark.parametrize("count", [0, 1, 5, 4097, 70_000])
def test_a_copy_grows_like_the_original(count):
    """The copy borrows its levels from buffers it was read into; growing it
    past chunk boundaries must give the roots of a tree built by inserts."""
    data = leaves(count + 3000)
    tree = filled(0, arity=3)
    if count:
        tree.insert_many(data[:32 * count])
    clone = copy.copy(tree)
    clone.insert_many(data[32 * count:32 * (count + 2999)])
    clone.insert(data[-32:])
    assert clone.root == compute_root(data, 3)
    assert tree.root == (compute_root(data[:32 * count], 3) if count else None)
    for level in range(clone.depth + 1):
        assert clone.level_len(level) > 0


def test_a_copy_keeps_the_index_and_max_depth():
    tree = filled(300, max_depth=12, index=True)
    clone = copy.deepcopy(tree)
    assert clone.indexed and clone.max_depth == 12
    first = leaves(300)[:32]
    assert clone.index_of(first) == 0
    clone.insert(b"\x07" * 32)
    assert b"\x07" * 32 in clone and b"\x07" * 32 not in tree


def test_copy_of_a_memory_mapped_tree_outlives_the_file(tmp_path):
    path = tmp_path / "tree.rt"
    filled(5000).save(path)
    mapped = LeanIMT.load(path, mmap=True)
    clone = mapped.copy()
    del mapped
    path.unlink()
    clone.insert(b"\x03" * 32)
    assert clone.root == compute_root(leaves(5000) + b"\x03" * 32)


def test_snapshots_copy_to_themselves():
    snap = filled(10).snapshot()
    assert copy.copy(snap) is snap and copy.deepcopy(snap) is snap


# -- pickling --------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 777])
def test_trees_pickle_through_the_save_format(count):
    tree = filled(count, max_depth=20, index=True)
    again = pickle.loads(pickle.dumps(tree))
    assert type(again) is LeanIMT
    assert (again.root, again.size, again.max_depth, again.indexed) == \
        (tree.root, count, 20, True)
    again.insert(b"\x05" * 32)
    assert tree.size == count


def test_a_damaged_pickle_is_refused():
    data = bytearray(pickle.dumps(filled(100)))
    # Flip a byte inside the leaves (the payload's tail), not in pickle's framing.
    data[-200] ^= 1
    with pytest.raises(CorruptionError):
        pickle.loads(bytes(data))


def test_snapshots_pickle_and_compare_equal():
    tree = filled(2000, arity=5)
    snap = tree.snapshot()
    tree.insert(b"\x09" * 32)
    again = pickle.loads(pickle.dumps(snap))
    assert again == snap and again.size == 2000 and again.arity == 5
    assert again.generate_proof(1999).verify_against(snap.root, 2000)


# -- equality, iteration, leaves ---------------------------------------------------------


def test_snapshots_of_one_state_are_equal():
    tree = filled(50)
    first, second = tree.snapshot(), tree.snapshot()
    assert first == second and hash(first) == hash(second)
    assert filled(50).snapshot() == first        # another tree, same leaves
    assert len({first, second}) == 1
    tree.insert(b"\x04" * 32)
    assert tree.snapshot() != first
    assert filled(50, arity=3).snapshot() != first
    assert LeanIMT().snapshot() == LeanIMT(max_depth=8).snapshot()
    assert first != (4, 50, first.root)


def test_leaves_as_bytes_and_numpy():
    data = leaves(100)
    tree = filled(100)
    snap = tree.snapshot()
    for source in (tree, snap):
        assert source.leaves() == data
        assert source.leaves(10, 13) == data[320:416]
        assert source.leaves(100) == b"" and source.leaves(5, 5) == b""
        view = source.leaves(2, 6, array=True)
        assert view.shape == (4, 32) and view.dtype == np.uint8
        assert view.tobytes() == data[64:192]
        for start, stop in ((0, 101), (-1, 3), (4, 3), (101, None)):
            with pytest.raises(NodeIndexError):
                source.leaves(start, stop)
        with pytest.raises(ArgumentTypeError):
            source.leaves("0")
        with pytest.raises(ArgumentTypeError):
            source.leaves(0, 1, array=1)


def test_iteration_yields_the_leaves_of_the_moment_it_started():
    data = leaves(20_000)
    tree = filled(20_000)
    seen = []
    for number, leaf in enumerate(tree):
        if number == 0:
            tree.insert(b"\x06" * 32)   # not seen: the iteration reads a snapshot
        seen.append(leaf)
    assert b"".join(seen) == data
    assert list(tree.snapshot())[-1] == b"\x06" * 32
    assert list(LeanIMT()) == []


def test_snapshot_save_loads_back(tmp_path):
    tree = filled(3000, max_depth=16, index=True)
    snap = tree.snapshot()
    tree.insert_many(leaves(10, b"later"))
    snap.save(tmp_path / "snap.rt")
    loaded = LeanIMT.load(tmp_path / "snap.rt")
    assert loaded.snapshot() == snap
    assert (loaded.max_depth, loaded.indexed) == (16, True)
    filled(3).snapshot().save(tmp_path / "plain.rt")
    assert not LeanIMT.load(tmp_path / "plain.rt").indexed


# -- proofs -------------------------------------------------------------------------


def test_proof_reprs_are_short_hex():
    tree = filled(100_000, arity=16)
    proof = tree.generate_proof(12345)
    text = repr(proof)
    assert len(text) < 200 and "\\x" not in text
    assert proof.root.hex()[:8] in text and "leaf_index=12345" in text
    old_root = compute_root(leaves(100_000)[:32 * 999], 16)
    consistency = tree.generate_consistency_proof(999, old_root)
    text = repr(consistency)
    assert len(text) < 200 and "\\x" not in text and old_root.hex()[:8] in text


def test_proof_json_says_what_it_is():
    tree = filled(40)
    inclusion = tree.generate_proof(7).to_dict()
    consistency = tree.generate_consistency_proof(
        9, compute_root(leaves(40)[:32 * 9])).to_dict()
    assert inclusion["type"] == "inclusion" and consistency["type"] == "consistency"
    assert InclusionProof.from_dict(json.loads(json.dumps(inclusion))).verify()
    # Documents written before the key existed still load.
    assert InclusionProof.from_dict({k: v for k, v in inclusion.items() if k != "type"})
    assert ConsistencyProof.from_dict({k: v for k, v in consistency.items() if k != "type"})
    with pytest.raises(InvalidProofError, match="type"):
        InclusionProof.from_dict({**inclusion, "type": "consistency"})
    with pytest.raises(InvalidProofError, match="type"):
        ConsistencyProof.from_dict({**consistency, "type": "inclusion"})


# -- durable trees ---------------------------------------------------------------------


def manual(path) -> RotorTree:
    return RotorTree.open(path, create=True, flush_policy=FlushPolicy.manual(),
                          checkpoint_policy=CheckpointPolicy.manual())


@pytest.mark.parametrize("action", [copy.copy, copy.deepcopy, pickle.dumps])
def test_durable_trees_refuse_copies_and_pickles(tmp_path, action):
    tree = manual(tmp_path / "t")
    tree.insert(b"\x01" * 32)
    with pytest.raises(ArgumentTypeError, match=r"snapshot\(\)\.save"):
        action(tree)
    assert isinstance(ArgumentTypeError("x"), TypeError)
    tree.close()
    with pytest.raises(ClosedTreeError):
        action(tree)


def test_durable_trees_read_their_leaves(tmp_path):
    with manual(tmp_path / "t") as tree:
        tree.insert_many(leaves(30))
        assert tree.leaves(3, 4) == leaves(30)[96:128]
        assert b"".join(tree) == leaves(30)


def test_tokens_are_awaitable_without_blocking_the_loop(tmp_path):
    tree = manual(tmp_path / "t")
    ticks = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(1)
            await asyncio.sleep(0.001)

    async def main() -> bool:
        _root, token = tree.insert(b"\x01" * 32)
        assert not token.durable
        stop = asyncio.Event()
        task = asyncio.create_task(ticker(stop))
        # The flush comes from another thread once the loop has run the ticker.
        timer = threading.Timer(0.05, tree.flush)
        timer.start()
        result = await token
        stop.set()
        await task
        timer.join()
        assert ticks, "the event loop was blocked while the token was awaited"
        # An entry already durable is awaited at once.
        assert await token is True
        return result

    try:
        assert asyncio.run(main()) is True
    finally:
        tree.close()


_MANY_AWAITS = """
import asyncio, os, sys
from rotortree import FlushPolicy, RotorTree

tree = RotorTree.open(sys.argv[1], create=True, flush_policy=FlushPolicy.manual())

async def main():
    tokens = [tree.insert(os.urandom(32))[1] for _ in range(40)]
    waits = [asyncio.ensure_future(token) for token in tokens]
    cancelled = asyncio.ensure_future(tokens[0])
    await asyncio.sleep(0.05)
    cancelled.cancel()
    # Forty pending awaits must leave the loop's executor free for this.
    await asyncio.wait_for(asyncio.to_thread(tree.flush), 20)
    return await asyncio.wait_for(asyncio.gather(*waits), 20)

results = asyncio.run(main())
tree.close()
print("ok" if results == [True] * 40 else results)
"""


def test_many_awaited_tokens_leave_the_loops_executor_free(tmp_path):
    # Each await used to park a thread of the loop's default executor (6 on
    # 2 CPUs) until its entry was durable: with more awaits than threads, a
    # flush sent through asyncio.to_thread queued behind them forever. Run in
    # a child so that the old behaviour fails by timeout instead of hanging.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _MANY_AWAITS, str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_awaiting_a_token_that_cannot_become_durable_raises(tmp_path):
    tree = manual(tmp_path / "t")
    _root, token = tree.insert(b"\x01" * 32)
    tree._state.fail(rotortree.DurabilityError(5, "injected"))

    async def main() -> bool:
        return await token

    with pytest.raises(rotortree.DurabilityError):
        asyncio.run(main())
    with pytest.raises(rotortree.DurabilityError):
        tree.close()
