"""Hostile-input regressions for the sharded tree (rotortree.distributed)
and the encoded inclusion-proof path."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os

import pytest

import rotortree
from rotortree import InclusionProof, InvalidProofError

np = pytest.importorskip("numpy")
da = pytest.importorskip("dask.array")

from rotortree.distributed import CounterLeaves, ShardedTree, build  # noqa: E402


@pytest.mark.parametrize("size", [48, 40])  # right edge full, right edge short
def test_appending_no_leaves_keeps_the_tree_openable(tmp_path, size):
    # An empty append used to rewrite top-<size>.rtt under its own name and
    # then delete it as the "old" top, leaving a manifest naming a missing file.
    out = tmp_path / "tree"
    root = build(CounterLeaves(), size=size, arity=4, segment_leaves=16, out=out)
    files = sorted(os.listdir(out))
    sharded = ShardedTree.open(out)
    assert sharded.append(da.zeros((0, 32), dtype="uint8")) == root
    assert sorted(os.listdir(out)) == files
    reopened = ShardedTree.open(out)
    assert (reopened.size, reopened.root) == (size, root)
    assert reopened.generate_proof(size - 1).verify_against(root, size)


def _mutations(data: bytes):
    for at in range(len(data)):
        for value in {data[at] ^ 1, data[at] ^ 0x80, 0, 255}:
            if value != data[at]:
                yield data[:at] + bytes((value,)) + data[at + 1:]
    for end in range(len(data)):
        yield data[:end]
    yield data + b"\0"
    yield data + b"\0\0"
    yield data + b"\0\1" + bytes(32)


@pytest.mark.parametrize("arity, size", [(2, 5), (3, 10), (4, 17), (16, 18)])
def test_encoded_and_field_verification_agree_on_every_mutation(arity, size):
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(bytes(CounterLeaves(seed=3)(0, size)))
    snapshot = tree.snapshot()
    for index in (0, size // 2, size - 1):
        original = snapshot.generate_proof(index)
        encoded = original.to_bytes()
        for data in _mutations(encoded):
            try:
                lazy = InclusionProof.from_bytes(data)
            except InvalidProofError:
                continue
            # The rule byte is part of the encoding: a flipped rule must hash
            # under the rule it now names on both paths.
            fields = InclusionProof(lazy.root, lazy.leaf, lazy.leaf_index, lazy.tree_size,
                                    lazy.arity, lazy.levels, rule=lazy.rule)
            assert InclusionProof.from_bytes(data).verify() == fields.verify()
            # Against the trusted head only the true statement passes.
            assert not InclusionProof.from_bytes(data).verify_against(tree.root, size)


@pytest.mark.parametrize("change", [lambda data: data[:-1], lambda data: data + bytes(32)])
def test_a_segment_file_of_the_wrong_length_is_corruption(tmp_path, change):
    # The length check closed the mapping before reading its length for the
    # message, so a truncated or extended segment raised "mmap closed".
    out = tmp_path / "tree"
    build(CounterLeaves(), size=40, arity=4, segment_leaves=16, out=out)
    segment = out / "seg-000000001-16.rts"
    segment.write_bytes(change(segment.read_bytes()))
    sharded = ShardedTree.open(out)
    with pytest.raises(rotortree.CorruptionError, match="seg-000000001-16.rts"):
        sharded.generate_proof(20)
    assert sharded.generate_proof(3).verify_against(sharded.root, 40)


@pytest.mark.parametrize("processes", [False, True])
def test_append_refuses_a_right_edge_whose_leaves_do_not_hash_to_its_root(tmp_path, processes):
    # The right edge's leaves are read back from its file to be rebuilt with
    # the new ones; only its header was checked, so a changed leaf became
    # part of the new tree and its root silently stopped extending the old.
    out = tmp_path / "tree"
    build(CounterLeaves(), size=40, arity=4, segment_leaves=16, out=out)
    edge = out / "seg-000000002-8.rts"
    data = bytearray(edge.read_bytes())
    data[56 + 3 * 32] ^= 1  # leaf 35, in level 0 after the 56-byte header
    edge.write_bytes(bytes(data))
    files = {name: (out / name).read_bytes() for name in os.listdir(out)}
    sharded = ShardedTree.open(out)
    # In another process too: the check runs where the edge is read.
    with cf.ProcessPoolExecutor(1) if processes else contextlib.nullcontext() as client:
        with pytest.raises(rotortree.CorruptionError, match="seg-000000002-8.rts"):
            sharded.append(CounterLeaves(seed=5), size=4, client=client)
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == files
    assert (sharded.size, ShardedTree.open(out).size) == (40, 40)


def test_an_fsspec_directory_given_as_a_file_of_leaves_is_named_a_directory():
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe_file("/rt-review-dir/inside/leaf", bytes(32))
    try:
        with pytest.raises(rotortree.LeafSourceError, match="is a directory"):
            build(["memory://rt-review-dir/inside"], arity=4, segment_leaves=4)
    finally:
        memory.rm("/rt-review-dir", recursive=True)


def test_threads_serving_proofs_share_the_segment_cache_safely(tmp_path, monkeypatch):
    # Evicting a mapped segment closed it, under another thread's slices or
    # numpy views: "mmap closed" or BufferError once a tree has more
    # segments than the cache holds (half the file descriptor limit).
    import random
    import threading

    import rotortree.distributed as distributed_module

    out = tmp_path / "tree"
    size = 64 * 16 + 5
    root = build(CounterLeaves(), size=size, arity=4, segment_leaves=16, out=out)
    monkeypatch.setattr(distributed_module, "_MAPPED_SEGMENTS", 2)
    sharded = ShardedTree.open(out)
    failures: list = []

    def serve(seed: int) -> None:
        draw = random.Random(seed)
        try:
            for _ in range(150):
                if draw.random() < 0.5:
                    proof = sharded.generate_proof(draw.randrange(size))
                    assert proof.verify_against(root, size)
                else:
                    batch = sharded.generate_proofs([draw.randrange(size) for _ in range(40)])
                    assert all(proof.verify_against(root, size) for proof in batch)
        except Exception as error:  # reported to the main thread
            failures.append(error)

    threads = [threading.Thread(target=serve, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
