"""Every vector made by the Rust crate, under every kernel and thread count."""

from __future__ import annotations

import pytest

import rotortree
from conftest import kernels, vectors
from reference import vector_leaf

MAX_SIZE = max(v["size"] for v in vectors())
LEAVES = [vector_leaf(i) for i in range(MAX_SIZE)]
LEAF_BYTES = b"".join(LEAVES)

# (threads, threshold): sequential, and the pool forced on even for tiny
# levels with 1, 2 and 4 threads (4 oversubscribes this 2-core machine).
ENGINES = [(1, 1024), (1, 1), (2, 1), (4, 1)]


def vector_id(vector):
    return f"n{vector['n']}-size{vector['size']}"


@pytest.fixture(params=kernels())
def kernel(request):
    rotortree.configure(simd=request.param)
    return request.param


@pytest.mark.parametrize("threads,threshold", ENGINES, ids=lambda x: str(x))
def test_all_vectors(kernel, threads, threshold):
    rotortree.configure(num_threads=threads, parallel_threshold=threshold, par_chunk_size=4)
    checked = 0
    for vector in vectors():
        arity, size = vector["n"], vector["size"]
        expected = bytes.fromhex(vector["root"])
        assert vector["root_batched"] == vector["root"] == vector["root_single_inserts"]

        whole = rotortree.LeanIMT(arity, max_depth=32)
        assert whole.insert_many(LEAF_BYTES[: 32 * size]) == expected, vector_id(vector)
        assert whole.depth == vector["depth"]

        batched = rotortree.LeanIMT(arity)
        offset = 0
        for batch in vector["batches"]:
            root = batched.insert_many(LEAF_BYTES[32 * offset: 32 * (offset + batch)])
            offset += batch
        assert offset == size
        assert root == bytes.fromhex(vector["root_batched"]), vector_id(vector)
        checked += 1
    assert checked == len(vectors()) == 128


@pytest.mark.parametrize("vector", [v for v in vectors() if v["size"] <= 4097], ids=vector_id)
def test_vector_single_inserts(vector):
    tree = rotortree.LeanIMT(vector["n"])
    for i in range(vector["size"]):
        root = tree.insert(LEAVES[i])
    assert root == bytes.fromhex(vector["root_single_inserts"])
    assert tree.root == root and tree.size == vector["size"]


@pytest.mark.parametrize("vector", [v for v in vectors() if v["size"] > 4097], ids=vector_id)
def test_large_vector_single_inserts_per_kernel(vector, kernel):
    tree = rotortree.LeanIMT(vector["n"])
    insert = tree.insert
    for leaf in LEAVES[: vector["size"]]:
        root = insert(leaf)
    assert root == bytes.fromhex(vector["root_single_inserts"])


def test_vector_nodes_match_reference_levels():
    # Beyond the root: every stored node of a mid-sized vector tree equals
    # the reference's, so get_node and level_len are checked on real data.
    from reference import build_levels

    for vector in vectors():
        if vector["size"] not in (100, 1025):
            continue
        tree = rotortree.LeanIMT(vector["n"])
        tree.insert_many(LEAF_BYTES[: 32 * vector["size"]])
        levels = build_levels(LEAVES[: vector["size"]], vector["n"])
        assert tree.depth == len(levels) - 1
        for level, nodes in enumerate(levels):
            assert tree.level_len(level) == len(nodes)
            assert [tree.get_node(level, i) for i in range(len(nodes))] == nodes


@pytest.mark.parametrize("threads", [1, 2])
def test_every_kernel_agrees_on_every_arity_2_to_40(kernel, threads):
    # Arity 32 and above makes parent messages longer than one BLAKE3 chunk,
    # which the lane kernels handle in-lane: compare against the portable
    # single-thread result and the reference, roots and proofs alike.
    import random

    from reference import build_levels

    rng = random.Random(40)
    for arity in range(2, 41):
        size = rng.randrange(2, 3 * arity * arity + 50)
        data = rng.randbytes(32 * size)
        leaves = [data[i: i + 32] for i in range(0, len(data), 32)]
        rotortree.configure(simd="portable", num_threads=1)
        portable = rotortree.LeanIMT(arity)
        portable.insert_many(data)
        expected_proofs = portable.generate_proofs([0, size // 2, size - 1]).to_bytes()
        rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=1,
                            par_chunk_size=2)
        tree = rotortree.LeanIMT(arity)
        assert tree.insert_many(data) == portable.root == build_levels(leaves, arity)[-1][0]
        assert tree.generate_proofs([0, size // 2, size - 1]).to_bytes() == expected_proofs
