"""rfc6962.insert_entries: entries hashed into leaves and built into the tree
in one pass (one pool run, no buffer of leaf hashes) give exactly the tree
of the two-pass ``insert_many(leaf_hashes(entries))``, under every kernel,
at one and two threads, for every size up to 300, random larger sizes,
entries of every shape, and into trees that already hold leaves (the group
straddling old and new leaves)."""

from __future__ import annotations

import hashlib
import random

import pytest

import rotortree
from rotortree import rfc6962
from test_sha256 import rand_bytes, rfc6962_mth

KERNELS = rotortree.config.available_kernels()


def two_pass(entries, entry_len=None, before=()):
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    for batch in before:
        tree.insert_many(rfc6962.leaf_hashes(batch))
    root = tree.insert_many(rfc6962.leaf_hashes(entries, entry_len))
    return tree, root


def one_pass(entries, entry_len=None, before=()):
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    for batch in before:
        rfc6962.insert_entries(tree, batch)
    root = rfc6962.insert_entries(tree, entries, entry_len)
    return tree, root


def nodes(tree):
    """Every stored node, level by level: equal trees, not just equal roots."""
    out = []
    for level in range(tree.depth + 1):
        out.append([tree.get_node(level, i) for i in range(tree.level_len(level))])
    return out


def assert_same(entries, entry_len=None, before=()):
    expected, expected_root = two_pass(entries, entry_len, before)
    got, root = one_pass(entries, entry_len, before)
    assert root == expected_root == got.root
    assert got.size == expected.size
    assert nodes(got) == nodes(expected)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_every_size_to_300_equals_the_two_pass_build(kernel, threads):
    # A threshold of 4 parents and units of 2 send even small batches to
    # the pool, so that blocks and pieces split everywhere they can.
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=4, par_chunk_size=2)
    rng = random.Random(f"entries {kernel} {threads}")
    data = rand_bytes(rng, 32 * 300)
    for n in range(1, 301):
        expected, root = two_pass(data[:32 * n], 32)
        got = rotortree.LeanIMT(2, rule="rfc6962")
        assert rfc6962.insert_entries(got, data[:32 * n], 32) == root, n
        assert nodes(got) == nodes(expected), n
    leaves = [rfc6962.leaf_hash(data[32 * i:32 * i + 32]) for i in range(300)]
    assert got.root == rfc6962_mth(leaves)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("threads", [1, 2])
def test_random_sizes_shapes_and_trees_that_already_hold_leaves(kernel, threads):
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=4, par_chunk_size=2)
    rng = random.Random(f"shapes {kernel} {threads}")
    for entry_len in (1, 31, 55, 64, 100):
        count = rng.randrange(301, 3000)
        assert_same(rand_bytes(rng, entry_len * count), entry_len)
    # A list of one size, of mixed sizes (runs for the batch kernels and
    # lone entries), and empty entries.
    assert_same([rand_bytes(rng, 40) for _ in range(rng.randrange(301, 2000))])
    mixed = [rand_bytes(rng, rng.randrange(0, 300)) for _ in range(rng.randrange(301, 2000))]
    assert_same(mixed)
    assert_same([b""] * 517)
    # Old sizes odd and even: a straddling group's old leaf is read back
    # from the tree, its new one made by the pass.
    for old in (1, 2, 3, 7, 64, 1023, 1025):
        before = [[rand_bytes(rng, 32) for _ in range(old)]]
        assert_same([rand_bytes(rng, 32) for _ in range(rng.randrange(1, 2500))], before=before)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_large_batch_equals_the_rfc_tree_hash(threads):
    # The default tunables: blocks of 2048 leaves, several per thread.
    rotortree.configure(num_threads=threads)
    rng = random.Random(f"large {threads}")
    count = 70_001
    data = rand_bytes(rng, 32 * count)
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    root = rfc6962.insert_entries(tree, data, 32)
    assert root == two_pass(data, 32)[1]
    leaves = [hashlib.sha256(b"\x00" + data[32 * i:32 * i + 32]).digest() for i in range(count)]
    assert root == rfc6962_mth(leaves)


def test_indexed_tree_finds_the_leaf_hashes():
    tree = rotortree.LeanIMT(2, rule="rfc6962", index=True)
    entries = [bytes([i]) * 5 for i in range(200)]
    rfc6962.insert_entries(tree, entries)
    assert tree.index_of(rfc6962.leaf_hash(entries[137])) == 137


def test_bad_calls_raise_and_insert_nothing():
    tree = rotortree.LeanIMT(2, max_depth=3, rule="rfc6962")
    rfc6962.insert_entries(tree, [b"a", b"b", b"c"])
    root, size = tree.root, tree.size
    cases = [
        (rotortree.LeanIMT(2, rule="leanimt"), [b"x"], None, rotortree.InvalidArgumentError),
        (tree, b"abcde", 2, rotortree.InvalidArgumentError),      # not whole entries
        (tree, b"abcd", None, rotortree.ArgumentTypeError),       # buffer without entry_len
        (tree, ["text"], None, rotortree.ArgumentTypeError),
        (tree, [], None, rotortree.EmptyBatchError),
        (tree, [b"e"] * 6, None, rotortree.MaxDepthExceededError),  # 9 > 2**3
    ]
    for target, entries, entry_len, error in cases:
        with pytest.raises(error):
            rfc6962.insert_entries(target, entries, entry_len)
        assert (tree.root, tree.size) == (root, size)
    with pytest.raises(rotortree.ArgumentTypeError):
        rfc6962.insert_entries(object(), [b"x"])
    assert issubclass(rotortree.InvalidArgumentError, ValueError)
    rfc6962.insert_entries(tree, [b"e"] * 5)    # exactly to capacity
    assert tree.size == 8


def test_light_client_fallback_builds_the_same_tree(monkeypatch):
    """Without the compiled SHA-256 the entries are hashed by hashlib and
    inserted with insert_many: the same tree."""
    entries = [bytes([i % 256]) * (i % 50) for i in range(300)]
    with_c = (one_pass(entries)[1], rfc6962.leaf_hashes(entries))
    assert one_pass(iter(entries))[1] == with_c[0]
    monkeypatch.setattr(rfc6962, "_lib", None)
    assert (one_pass(entries)[1], rfc6962.leaf_hashes(entries)) == with_c
    # An iterator is read once: the fallback hashes what was read.
    assert one_pass(iter(entries))[1] == with_c[0]


@pytest.mark.parametrize("kernel", KERNELS)
def test_a_few_long_entries_reach_the_pool_and_build_the_same_tree(kernel):
    """200 entries of 64 KiB are 13 MB of SHA-256 but only 100 level-1
    parents: the build must weigh its leaves by their hashing (as
    leaf_hashes does) rather than count parents, or the whole batch runs on
    the calling thread while the two-pass build spreads it over the pool."""
    rotortree.configure(simd=kernel, num_threads=2)
    rng = random.Random(f"long {kernel}")
    data = rand_bytes(rng, 200 * 65536)
    jobs = rotortree.config.pool_stats()["jobs"]
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    root = rfc6962.insert_entries(tree, data, 65536)
    assert rotortree.config.pool_stats()["jobs"] > jobs
    expected, expected_root = two_pass(data, 65536)
    assert root == expected_root and nodes(tree) == nodes(expected)
    # Mixed lengths, old leaves, and more threads' worth of pieces than
    # entries: every weight splits blocks differently.
    for old in (0, 1, 3):
        entries = [rand_bytes(rng, rng.choice((0, 70, 5000, 70000))) for _ in range(41)]
        assert_same(entries, before=[[rand_bytes(rng, 9) for _ in range(old)]] if old else ())
