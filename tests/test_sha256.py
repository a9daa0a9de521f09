"""SHA-256 (FIPS 180-4) in the C core and RFC 6962 leaf hashes, against
``hashlib.sha256`` as the oracle: every implementation this CPU runs, every
message length 0..300 and random longer ones, single messages and batches,
each kernel the process can select, and the pool at one and two threads."""

from __future__ import annotations

import hashlib
import random

import pytest

import rotortree
from rotortree import rfc6962
from rotortree._native import ffi, lib

IMPLS = {
    "portable": lib.RT_SHA256_PORTABLE,
    "sha-ni": lib.RT_SHA256_SHANI,
    "avx2-8way": lib.RT_SHA256_AVX2,
    "avx512-16way": lib.RT_SHA256_AVX512,
}
AVAILABLE = [name for name, impl in IMPLS.items() if lib.rt_sha256_impl_available(impl)]
LENGTHS = list(range(0, 301))
# Lengths past the lane kernels' 16-block limit and across many blocks.
LONG_LENGTHS = sorted(random.Random(16).sample(range(301, 5000), 12) + [1014, 1015, 4096])


def rand_bytes(rng, n):
    return bytes(rng.getrandbits(8) for _ in range(n))


def c_sha256(impl, message):
    out = ffi.new("uint8_t[32]")
    status = lib.rt_sha256_with(impl, message, len(message), out)
    assert status == lib.RT_OK
    return bytes(out)


def c_prefixed_many(impl, prefix, bodies, body_len, count):
    out = ffi.new("uint8_t[]", 32 * count)
    status = lib.rt_sha256_prefixed_many(impl, prefix, bodies, body_len, count, out)
    assert status == lib.RT_OK
    return bytes(out)


def expected_many(prefix, bodies, body_len, count):
    head = bytes([prefix])
    return b"".join(hashlib.sha256(head + bodies[i * body_len:(i + 1) * body_len]).digest()
                    for i in range(count))


def test_impl_names_are_distinct_and_known():
    names = [ffi.string(lib.rt_sha256_impl_name(impl)).decode() for impl in IMPLS.values()]
    assert names == list(IMPLS)
    assert ffi.string(lib.rt_sha256_impl_name(99)) == b"unknown"
    assert lib.rt_sha256_impl_available(lib.RT_SHA256_PORTABLE) == 1
    assert lib.rt_sha256_impl_available(99) == 0


@pytest.mark.parametrize("name", AVAILABLE)
def test_single_message_every_length(name):
    rng = random.Random(f"single {name}")
    data = rand_bytes(rng, 5000)
    for n in LENGTHS + LONG_LENGTHS:
        message = data[:n]
        assert c_sha256(IMPLS[name], message) == hashlib.sha256(message).digest(), n


@pytest.mark.parametrize("name", AVAILABLE)
@pytest.mark.parametrize("prefix", [0x00, 0x01])
def test_prefixed_batches_every_length(name, prefix):
    """Batches of same-length messages behind one prefix byte: RFC 6962
    leaves (0x00) and parents (0x01, body 64) are this shape. 37 messages
    fill two 16-lane groups (four 8-lane groups) and leave a remainder."""
    rng = random.Random(f"many {name} {prefix}")
    count = 37
    for body_len in LENGTHS + LONG_LENGTHS[:3]:
        bodies = rand_bytes(rng, body_len * count)
        got = c_prefixed_many(IMPLS[name], prefix, bodies, body_len, count)
        assert got == expected_many(prefix, bodies, body_len, count), body_len


@pytest.mark.parametrize("name", AVAILABLE)
def test_parents_every_batch_size(name):
    """Every count from 0 to 40 parents, so each lane width meets every
    remainder, and no output is written past the batch."""
    rng = random.Random(f"parents {name}")
    for count in range(0, 41):
        children = rand_bytes(rng, 64 * count)
        out = ffi.new("uint8_t[]", 32 * count + 32)
        ffi.memmove(out + 32 * count, b"\xa5" * 32, 32)
        assert lib.rt_sha256_prefixed_many(IMPLS[name], 1, children, 64, count, out) == 0
        assert bytes(ffi.buffer(out)[:32 * count]) == expected_many(1, children, 64, count)
        assert bytes(ffi.buffer(out)[32 * count:]) == b"\xa5" * 32


def test_unavailable_or_unknown_impl_is_refused():
    out = ffi.new("uint8_t[32]")
    assert lib.rt_sha256_with(99, b"x", 1, out) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_sha256_prefixed_many(-2, 0, b"x", 1, 1, out) == lib.RT_ERR_INVALID_ARGUMENT
    for name, impl in IMPLS.items():
        if name not in AVAILABLE:
            assert lib.rt_sha256_with(impl, b"x", 1, out) == lib.RT_ERR_UNSUPPORTED


@pytest.mark.parametrize("kernel", rotortree.config.available_kernels())
def test_active_implementation_follows_the_kernel(kernel):
    rotortree.configure(simd=kernel)
    single = lib.rt_sha256_impl_active(0)
    batch = lib.rt_sha256_impl_active(1)
    if kernel == "portable":
        # ROTORTREE_SIMD=portable must test the portable SHA-256 too.
        assert single == batch == lib.RT_SHA256_PORTABLE
    else:
        if "sha-ni" in AVAILABLE:
            assert single == lib.RT_SHA256_SHANI
        if kernel == "avx512":
            assert batch == lib.RT_SHA256_AVX512
        elif "sha-ni" in AVAILABLE:
            assert batch == lib.RT_SHA256_SHANI
    assert lib.rt_sha256_impl_available(single) and lib.rt_sha256_impl_available(batch)
    rng = random.Random(f"active {kernel}")
    for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000):
        message = rand_bytes(rng, n)
        out = ffi.new("uint8_t[32]")
        lib.rt_sha256_hash(message, n, out)
        assert bytes(out) == hashlib.sha256(message).digest()
    children = rand_bytes(rng, 64 * 50)
    assert c_prefixed_many(lib.RT_SHA256_ACTIVE, 1, children, 64, 50) == \
        expected_many(1, children, 64, 50)


def oracle_leaf_hashes(entries):
    return b"".join(hashlib.sha256(b"\x00" + bytes(e)).digest() for e in entries)


def test_leaf_hash_every_length():
    rng = random.Random("leaf")
    data = rand_bytes(rng, 5000)
    for n in LENGTHS + LONG_LENGTHS:
        assert rfc6962.leaf_hash(data[:n]) == hashlib.sha256(b"\x00" + data[:n]).digest(), n
    assert rfc6962.leaf_hash(bytearray(b"abc")) == rfc6962.leaf_hash(memoryview(b"abc"))


@pytest.mark.parametrize("kernel", rotortree.config.available_kernels())
@pytest.mark.parametrize("threads", [1, 2])
def test_leaf_hashes_batches_on_the_pool(kernel, threads):
    """Batches large enough to be split over the pool (a threshold of 1
    parent), fixed-size and variable-size, match hashlib at one and two
    threads under every kernel."""
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=1, par_chunk_size=3)
    rng = random.Random(f"batch {kernel} {threads}")
    for entry_len in (0, 1, 31, 32, 55, 64, 200):
        count = 301
        buffer = rand_bytes(rng, entry_len * count)
        entries = [buffer[i * entry_len:(i + 1) * entry_len] for i in range(count)]
        if entry_len:
            assert rfc6962.leaf_hashes(buffer, entry_len) == oracle_leaf_hashes(entries)
        assert rfc6962.leaf_hashes(entries) == oracle_leaf_hashes(entries)
    # Runs of equal lengths inside a list of mixed lengths go to the batch
    # kernels: runs shorter and longer than a lane group, of every shape.
    runs = [rand_bytes(rng, n) for n in [5] * 20 + [7] * 3 + [0] * 4 + [64] * 40 + [3] + [33] * 17
            + [1014] * 18 + [1015] * 2 + [2] * 16]
    assert rfc6962.leaf_hashes(runs) == oracle_leaf_hashes(runs)
    mixed = [rand_bytes(rng, rng.randrange(0, 700)) for _ in range(500)]
    assert rfc6962.leaf_hashes(mixed) == oracle_leaf_hashes(mixed)
    assert rfc6962.leaf_hashes(iter(mixed)) == oracle_leaf_hashes(mixed)


def test_leaf_hashes_accepts_buffers_of_every_kind():
    data = bytes(range(96))
    expected = oracle_leaf_hashes([data[:48], data[48:]])
    assert rfc6962.leaf_hashes(bytearray(data), 48) == expected
    assert rfc6962.leaf_hashes(memoryview(data), 48) == expected
    # Non-contiguous: every other byte of a 192-byte buffer.
    strided = memoryview(bytes(b for x in data for b in (x, 0)))[::2]
    assert rfc6962.leaf_hashes(strided, 48) == expected
    assert rfc6962.leaf_hashes([strided[:48], data[48:]]) == expected
    assert rfc6962.leaf_hashes([bytearray(data[:48]), memoryview(data)[48:]]) == expected
    # A 2-D byte view is its bytes, though len() counts its rows.
    square = memoryview(data[48:]).cast("B", (6, 8))
    assert rfc6962.leaf_hashes([data[:48], square]) == expected
    assert rfc6962.leaf_hashes([b"", b"", b""]) == oracle_leaf_hashes([b""] * 3)
    assert rfc6962.leaf_hashes([]) == b""
    assert rfc6962.leaf_hashes(b"", 32) == b""
    assert rfc6962.leaf_hashes(b"", 0) == b""


def test_lists_of_one_total_but_different_lengths_split_at_their_own_boundaries():
    """A list's entries are read from one concatenation; when the total is
    a whole number of equal-size entries but the lengths differ, each entry
    must still end where it ends, whatever kind of buffer it is."""
    rng = random.Random("boundaries")
    cases = [
        [b"ab", b"", b"abcd"],                      # 6 bytes, three entries, not 2 each
        [b"abc", b"a", b"ab"],
        [b"a" * 32] * 50 + [b"b" * 31, b"c" * 33],  # equal but for one pair
        [rand_bytes(rng, 300) for _ in range(40)],  # one size past the cached ints
        [rand_bytes(rng, 1015) for _ in range(3)] + [rand_bytes(rng, 1014), rand_bytes(rng, 1016)],
        [bytearray(b"wxyz"), memoryview(b"abcd"), b"1234"],
        [memoryview(bytes(range(48))).cast("B", (6, 8)), bytes(40), bytes(56)],
    ]
    for entries in cases:
        expected = oracle_leaf_hashes([bytes(e) for e in entries])
        assert rfc6962.leaf_hashes(entries) == expected
        tree = rotortree.LeanIMT(2, rule="rfc6962")
        assert rfc6962.insert_entries(tree, entries) == \
            rotortree.compute_root(expected, 2, rule="rfc6962")


@pytest.mark.parametrize("call, error", [
    (lambda: rfc6962.leaf_hash("text"), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hash(5), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hash(memoryview(bytes(8)).cast("I")), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes("text"), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"a", "b"]), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"a", None]), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"a", 7]), rotortree.ArgumentTypeError),
    # Buffers whose len() is not their byte length, alone or beside bytes.
    (lambda: rfc6962.leaf_hashes([memoryview(bytes(8)).cast("I")] * 2),
     rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"abcdefgh", memoryview(bytes(8)).cast("I")]),
     rotortree.ArgumentTypeError),
    # Sized but not buffers: a length is trusted only once the item is known
    # to be bytes, so a huge one is refused without being allocated.
    (lambda: rfc6962.leaf_hashes([range(10**15)]), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"ab", range(10**15)]), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([[1, 2], [3, 4]]), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes(5), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes(b"abcd"), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes([b"ab"], 2), rotortree.ArgumentTypeError),
    (lambda: rfc6962.leaf_hashes(b"abcd", 3), rotortree.InvalidArgumentError),
    (lambda: rfc6962.leaf_hashes(b"abcd", -1), rotortree.InvalidArgumentError),
    (lambda: rfc6962.leaf_hashes(b"abcd", 0), rotortree.InvalidArgumentError),
    (lambda: rfc6962.leaf_hashes(b"abcd", 2.0), rotortree.ArgumentTypeError),
])
def test_bad_input_raises_clear_errors(call, error):
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, rotortree.RotorTreeError)
    assert isinstance(info.value, (TypeError, ValueError))


def test_c_leaf_hashes_checks_everything_before_writing():
    """Bad offsets or lengths are refused with nothing written."""
    data = b"abcdefgh"
    out = ffi.new("uint8_t[]", 96)
    ffi.memmove(out, b"\x5a" * 96, 96)

    def untouched():
        return bytes(ffi.buffer(out)) == b"\x5a" * 96

    cases = [
        (ffi.new("uint64_t[]", [0, 4, 2, 8]), 3),   # decreasing
        (ffi.new("uint64_t[]", [0, 4, 9]), 2),      # past the data
    ]
    for offsets, count in cases:
        assert lib.rt_rfc6962_leaf_hashes(data, 8, offsets, count, 0, out) == \
            lib.RT_ERR_INVALID_ARGUMENT
        assert untouched()
    assert lib.rt_rfc6962_leaf_hashes(data, 8, ffi.NULL, 3, 3, out) == lib.RT_ERR_INVALID_ARGUMENT
    assert lib.rt_rfc6962_leaf_hashes(data, 8, ffi.NULL, 2**62, 2**3, out) == \
        lib.RT_ERR_INVALID_ARGUMENT
    assert untouched()
    ok = lib.rt_rfc6962_leaf_hashes(data, 8, ffi.new("uint64_t[]", [2, 5, 8]), 2, 0, out)
    assert ok == lib.RT_OK
    assert bytes(ffi.buffer(out)[:64]) == oracle_leaf_hashes([data[2:5], data[5:8]])


def test_leaf_hashes_out_of_memory_is_a_clear_error(monkeypatch):
    """The leaf hashes are written into memory from the core's cache of
    mappings; when none can be had, OutOfMemoryError (a MemoryError) says
    so instead of a crash or a write through NULL."""

    class NoMemory:
        def __getattr__(self, name):
            return getattr(lib, name)

        def rt_buffer_alloc(self, size):
            return ffi.NULL

    monkeypatch.setattr(rfc6962, "_lib", NoMemory())
    with pytest.raises(rotortree.OutOfMemoryError) as info:
        rfc6962.leaf_hashes([b"a", b"b", b"c"])
    assert isinstance(info.value, MemoryError)
    monkeypatch.undo()
    assert rfc6962.leaf_hashes([b"a"]) == hashlib.sha256(b"\x00a").digest()


def test_light_client_fallback_matches(monkeypatch):
    """Without the compiled core the module answers from hashlib, with the
    same values and the same errors."""
    rng = random.Random("light")
    entries = [rand_bytes(rng, n) for n in (0, 1, 32, 65, 300)]
    fixed = rand_bytes(rng, 5 * 40)
    with_c = (rfc6962.leaf_hash(entries[3]), rfc6962.leaf_hashes(entries),
              rfc6962.leaf_hashes(fixed, 40))
    monkeypatch.setattr(rfc6962, "_lib", None)
    assert (rfc6962.leaf_hash(entries[3]), rfc6962.leaf_hashes(entries),
            rfc6962.leaf_hashes(fixed, 40)) == with_c
    assert with_c[1] == oracle_leaf_hashes(entries)
    with pytest.raises(rotortree.InvalidArgumentError):
        rfc6962.leaf_hashes(fixed, 3)


def rfc6962_mth(hashes):
    """RFC 6962 §2.1's Merkle Tree Hash over leaf hashes, straight from its
    recursive definition (split at the largest power of two below n)."""
    n = len(hashes)
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + rfc6962_mth(hashes[:k]) + rfc6962_mth(hashes[k:])).digest()


@pytest.mark.parametrize("kernel", rotortree.config.available_kernels())
@pytest.mark.parametrize("threads", [1, 2])
def test_rfc6962_tree_roots_under_every_kernel(kernel, threads):
    """The rfc6962 rule's parents come from this SHA-256 (batches through the
    kernel's batch implementation, single inserts one parent at a time):
    roots equal RFC 6962's Merkle Tree Hash for every size up to 70 and for
    batches large enough to go parallel."""
    if "rule" not in rotortree.LeanIMT.__init__.__code__.co_varnames:
        pytest.skip("this build has no hash rules (the rules branch is not merged)")
    rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=4, par_chunk_size=2)
    rng = random.Random(f"tree {kernel} {threads}")
    entries = [rand_bytes(rng, rng.randrange(0, 80)) for _ in range(3000)]
    hashes = rfc6962.leaf_hashes(entries)
    leaves = [hashes[32 * i:32 * i + 32] for i in range(len(entries))]
    single = rotortree.LeanIMT(2, rule="rfc6962")
    for n in range(1, 71):
        single.insert(leaves[n - 1])
        assert single.root == rfc6962_mth(leaves[:n]), n
    for n in (71, 1000, 3000):
        tree = rotortree.LeanIMT(2, rule="rfc6962")
        tree.insert_many(hashes[:32 * n])
        assert tree.root == rfc6962_mth(leaves[:n]), n


def test_rotortree_simd_portable_forces_portable_sha256():
    """The environment variable, applied at import, reaches SHA-256 too: so
    a test run under ROTORTREE_SIMD=portable exercises the portable code."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, ROTORTREE_SIMD="portable")
    code = ("from rotortree._native import lib\n"
            "print(lib.rt_sha256_impl_active(0), lib.rt_sha256_impl_active(1))\n")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [str(lib.RT_SHA256_PORTABLE)] * 2


def test_rfc6962_module_is_reachable_from_the_package():
    """``rotortree.rfc6962.leaf_hash`` (as the docs write it) works after a
    plain ``import rotortree`` in a fresh interpreter."""
    import subprocess
    import sys

    code = "import rotortree\nprint(rotortree.rfc6962.leaf_hash(b'abc').hex())\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == hashlib.sha256(b"\x00abc").hexdigest()
