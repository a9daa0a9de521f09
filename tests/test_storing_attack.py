"""Adversarial tests of insert_many's storing path (the AVX2 and AVX-512
lane kernels that store level 0 from the registers they hash, csrc/build.c
hash_and_store_leaves_directly). A wrong kernel gives wrong roots silently,
so every result is checked against the pure-Python reference
(tests/reference.py, hashing with the blake3 package) or against the
portable kernel, which stages the leaves instead:

* random arities (every 2..64 and the wide 100, 128, 200, 255), both BLAKE3
  rules, sequences of batches of random sizes and sizes around level-0
  chunk and group boundaries into one tree (the old-leaf head path), 1 and
  2 threads, small and large pool units;
* caller buffers at every alignment and of every kind (bytes, bytearray,
  memoryview slices, numpy views, read-only), and batches that end just
  before, or start just after, an unmapped page: a read past either end of
  the batch faults;
* trees loaded from a file (level 0 in place from a mapping) and durable
  trees, extended through the storing path;
* the C driver tests/c/test_read_once.c, built with each compiler: leaves
  on pages that change at every read, so any second read of a leaf byte
  (a kernel's, or the optimiser's forwarding of a private copy) stores
  leaves that do not hash to their parents.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import platform
import shutil
import subprocess
import sys
from typing import List, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rotortree
from rotortree import config as rt_config

from c_build import DRIVERS, build_drivers, summary
from reference import root_of

STORING_KERNELS = [k for k in rt_config.available_kernels() if k in ("avx2", "avx512")]
PORTABLE = "portable"
ARITIES = list(range(2, 65)) + [100, 128, 200, 255]
RULES = ["rotortree-0.15", "leanimt"]
CHUNK_NODES = 128  # RT_CHUNK_TARGET_NODES
PAGE = mmap.PAGESIZE
PROT_NONE = 0  # <sys/mman.h>; the mmap module does not export it

needs_storing = pytest.mark.skipif(not STORING_KERNELS,
                                   reason="needs a CPU with AVX2 (no storing kernel otherwise)")


def chunk_leaves(arity: int) -> int:
    """Leaves per level-0 chunk: the smallest multiple of the arity holding
    CHUNK_NODES (rt_chunk_capacity in csrc/level.c)."""
    return -(-CHUNK_NODES // arity) * arity


def leaves_of(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32), dtype=np.uint8)


def reference_root(leaves: np.ndarray, arity: int, rule: str) -> bytes:
    return root_of([bytes(x) for x in leaves], arity, rule=rule)


def grown(kernel: str, threads: int, unit: int, arity: int, rule: str,
          batches: Sequence[np.ndarray]) -> List[bytes]:
    """Roots after each batch of a tree grown under `kernel`; the tree's
    stored leaves must be the batches'."""
    rt_config.configure(simd=kernel, num_threads=threads, parallel_threshold=1,
                        par_chunk_size=unit)
    tree = rotortree.LeanIMT(arity=arity, rule=rule)
    roots = [tree.insert_many(batch) for batch in batches]
    assert tree.leaves() == b"".join(batch.tobytes() for batch in batches), kernel
    return roots


def batch_sizes(arity: int):
    chunk = chunk_leaves(arity)
    edges = sorted({n for n in (1, 2, arity - 1, arity, arity + 1, chunk - 1, chunk, chunk + 1,
                                2 * chunk - arity - 1, 2 * chunk + 1, 8 * arity * 16 + 1)
                    if 1 <= n <= 5000})
    return st.lists(st.one_of(st.sampled_from(edges), st.integers(1, 5000)),
                    min_size=1, max_size=4)


@st.composite
def growth_cases(draw):
    arity = draw(st.sampled_from(ARITIES))
    return (arity, draw(st.sampled_from(RULES)), draw(batch_sizes(arity)),
            draw(st.sampled_from(STORING_KERNELS or [PORTABLE])), draw(st.sampled_from([1, 2])),
            draw(st.sampled_from([1, 4096])), draw(st.integers(0, 2**32 - 1)))


def check_growth(case) -> None:
    arity, rule, sizes, kernel, threads, unit, seed = case
    leaves = leaves_of(seed, sum(sizes))
    bounds = np.cumsum([0] + sizes)
    batches = [leaves[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
    roots = grown(kernel, threads, unit, arity, rule, batches)
    # Every intermediate root as the staging path computes it, the last one
    # also as the reference does.
    assert roots == grown(PORTABLE, 1, 4096, arity, rule, batches)
    assert roots[-1] == reference_root(leaves, arity, rule)


@needs_storing
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(growth_cases())
def test_random_batches_match_reference(case):
    check_growth(case)


@pytest.mark.slow
@needs_storing
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(growth_cases())
def test_random_batches_match_reference_long(case):
    check_growth(case)


@pytest.mark.slow
@needs_storing
@pytest.mark.parametrize("rule", RULES)
def test_every_arity_every_storing_kernel(rule):
    """Each arity once per storing kernel and thread count, in batches that
    leave a partial group, cross chunk boundaries and start mid-group."""
    for arity in ARITIES:
        chunk = chunk_leaves(arity)
        sizes = [arity + 1, 3 * chunk - 1, 17 * arity + 3, 1]
        leaves = leaves_of(arity, sum(sizes))
        bounds = np.cumsum([0] + sizes)
        batches = [leaves[lo:hi] for lo, hi in zip(bounds, bounds[1:])]
        expected = grown(PORTABLE, 1, 4096, arity, rule, batches)
        assert expected[-1] == reference_root(leaves, arity, rule)
        for kernel in STORING_KERNELS:
            for threads in (1, 2):
                assert grown(kernel, threads, 1, arity, rule, batches) == expected, \
                    (arity, kernel, threads)


# ---- caller buffers ------------------------------------------------------


def buffer_kinds(raw: bytearray, offset: int, count: int):
    """The same `count` leaves at byte `offset` of `raw`, as every kind of
    buffer insert_many takes without a copy."""
    size = count * 32
    view = memoryview(raw)[offset:offset + size]
    yield "memoryview", view
    yield "readonly memoryview", view.toreadonly()
    yield "numpy", np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset).reshape(-1, 32)
    readonly = np.frombuffer(bytes(raw), dtype=np.uint8, count=size, offset=offset)
    yield "readonly numpy", readonly
    yield "bytes", bytes(view)
    yield "bytearray", bytearray(view)


@needs_storing
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("arity", [2, 3, 16, 17, 64])
def test_every_alignment_and_buffer_kind(arity, rule):
    count = 9 * arity + 5  # a full 8-lane group, a remainder, a partial group
    leaves = leaves_of(arity, arity + 1 + count)
    head, body = leaves[:arity + 1], leaves[arity + 1:]
    expected = reference_root(leaves, arity, rule)
    raw = bytearray(count * 32 + 64)
    for offset in range(64):
        raw[offset:offset + count * 32] = body.tobytes()
        for kernel in STORING_KERNELS:
            rt_config.configure(simd=kernel)
            for kind, buffer in buffer_kinds(raw, offset, count):
                tree = rotortree.LeanIMT(arity=arity, rule=rule)
                tree.insert_many(head)
                assert tree.insert_many(buffer) == expected, (offset, kernel, kind)
                assert tree.leaves() == leaves.tobytes(), (offset, kernel, kind)


class GuardedRegion:
    """`pages` readable pages between two unmapped (PROT_NONE) ones: a batch
    placed against either guard faults on any read past its ends."""

    def __init__(self, pages: int) -> None:
        self.map = mmap.mmap(-1, (pages + 2) * PAGE)
        self.pages = pages
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        anchor = ctypes.c_char.from_buffer(self.map)
        base = ctypes.addressof(anchor)
        del anchor
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for page in (0, pages + 1):
            if libc.mprotect(base + page * PAGE, PAGE, PROT_NONE) != 0:
                raise OSError(ctypes.get_errno(), "mprotect")
        self.data = np.frombuffer(self.map, dtype=np.uint8)

    def at_end(self, leaves: np.ndarray) -> np.ndarray:
        end = (self.pages + 1) * PAGE
        start = end - leaves.size
        self.data[start:end] = leaves.reshape(-1)
        return self.data[start:end].reshape(-1, 32)

    def at_start(self, leaves: np.ndarray) -> np.ndarray:
        start = PAGE
        self.data[start:start + leaves.size] = leaves.reshape(-1)
        return self.data[start:start + leaves.size].reshape(-1, 32)


@needs_storing
@pytest.mark.parametrize("rule", RULES)
def test_batches_against_unmapped_pages(rule):
    """Every storing kernel, batches ending at an unmapped page (over-reads
    past the last leaf, the last lane's children, a partial last piece) and
    starting right after one (under-reads), through both the storing path
    and, with old leaves sharing the first parent, the head path."""
    region = GuardedRegion(pages=8)
    capacity = 8 * PAGE // 32
    for arity in (2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 100, 128, 200, 255):
        chunk = chunk_leaves(arity)
        for count in sorted({arity, arity + 1, 2 * arity - 1, 8 * arity, 16 * arity + 1,
                             chunk - 1, chunk + 1, capacity}):
            if count > capacity:
                continue
            leaves = leaves_of(count * 1000 + arity, count + 1)
            old, new = leaves[:1], leaves[1:]
            expected_fresh = reference_root(new, arity, rule)
            expected_grown = reference_root(leaves, arity, rule)
            for kernel in STORING_KERNELS:
                rt_config.configure(simd=kernel)
                for place in (region.at_end, region.at_start):
                    batch = place(new)
                    tree = rotortree.LeanIMT(arity=arity, rule=rule)
                    assert tree.insert_many(batch) == expected_fresh, (arity, count, kernel)
                    tree = rotortree.LeanIMT(arity=arity, rule=rule)
                    tree.insert(bytes(old[0]))
                    assert tree.insert_many(batch) == expected_grown, (arity, count, kernel)


@pytest.mark.parametrize("rule", RULES)
def test_kernels_read_from_caller_memory_against_unmapped_pages(rule):
    """Every kernel, the lane driver's reads of the caller's leaves (compute_root
    hashes them in place; insert_many too where the kernel stores level 0):
    the last lane group of a call prefetches what follows the call's
    children, which past the end of a buffer is an unmapped page here; a
    prefetch must stay a hint there, and every real read stays inside."""
    region = GuardedRegion(pages=8)
    capacity = 8 * PAGE // 32
    for arity in (2, 3, 4, 5, 8, 16, 17, 32, 33, 64, 255):
        for count in sorted({arity, 16 * arity, 16 * arity + 1, 128 * arity + 3, capacity}):
            if count > capacity:
                continue
            leaves = leaves_of(count * 7 + arity, count)
            expected = reference_root(leaves, arity, rule)
            for kernel in rt_config.available_kernels():
                rt_config.configure(simd=kernel)
                for place in (region.at_end, region.at_start):
                    batch = place(leaves)
                    assert rotortree.compute_root(batch, arity, rule=rule) == expected, (
                        arity, count, kernel)
                    tree = rotortree.LeanIMT(arity=arity, rule=rule)
                    assert tree.insert_many(batch) == expected, (arity, count, kernel)


# ---- restored and durable trees ------------------------------------------


@needs_storing
@pytest.mark.parametrize("mapped", [False, True])
@pytest.mark.parametrize("arity", [2, 5, 16, 33])
def test_loaded_tree_extended(tmp_path, arity, mapped):
    """A tree loaded from its file (level 0 read in place from the mapping
    with mmap=True) and then extended: the new leaves start in the chunk
    after the mapped ones, or inside the loaded tree's last chunk."""
    chunk = chunk_leaves(arity)
    for kernel in STORING_KERNELS:
        rt_config.configure(simd=kernel)
        for saved_size in (3 * chunk, 3 * chunk + arity + 1, 4 * chunk - 1):
            leaves = leaves_of(saved_size + arity, saved_size + 5 * chunk)
            tree = rotortree.LeanIMT(arity=arity)
            tree.insert_many(leaves[:saved_size])
            path = tmp_path / f"{kernel}-{saved_size}.rt"
            tree.save(path)
            loaded = rotortree.LeanIMT.load(path, mmap=mapped)
            loaded.insert_many(leaves[saved_size:saved_size + 2 * chunk + 1])
            root = loaded.insert_many(leaves[saved_size + 2 * chunk + 1:])
            assert root == reference_root(leaves, arity, "rotortree-0.15"), (kernel, saved_size)
            assert loaded.leaves() == leaves.tobytes()


@needs_storing
@pytest.mark.parametrize("rule", RULES)
def test_durable_tree_through_storing_path(tmp_path, rule):
    """A durable tree's insert_many takes the same path; reopened with its
    level 0 served from the checkpoint's mapping, it is extended again and
    its recovered leaves and root are the reference's."""
    arity = 6
    chunk = chunk_leaves(arity)
    leaves = leaves_of(77, 9 * chunk + 7)
    cuts = [0, chunk + 1, 4 * chunk, 6 * chunk - 1, len(leaves)]
    kernel = STORING_KERNELS[-1]
    rt_config.configure(simd=kernel, num_threads=2, parallel_threshold=1, par_chunk_size=1)
    path = tmp_path / "durable"
    tree = rotortree.RotorTree.open(path, arity, create=True, rule=rule)
    for lo, hi in zip(cuts[:2], cuts[1:3]):
        tree.insert_many(leaves[lo:hi])
    tree.checkpoint()
    tree.close()
    tree = rotortree.RotorTree.open(path, mmap_levels=1)
    for lo, hi in zip(cuts[2:], cuts[3:]):
        root, _ = tree.insert_many(leaves[lo:hi])
    assert root == reference_root(leaves, arity, rule)
    tree.close()
    tree = rotortree.RotorTree.open(path, mmap_levels=1)
    assert tree.root == reference_root(leaves, arity, rule)
    assert tree.leaves() == leaves.tobytes()
    tree.close()


# ---- each leaf byte read once, whatever the compiler ---------------------


@pytest.mark.slow
@pytest.mark.parametrize("compiler", ["gcc", "clang"])
def test_each_leaf_byte_read_once(compiler, tmp_path):
    """The driver traps every read of the batch and changes its bytes in
    between; built at -O2, since whether the lone-parent and lifted-leaf
    copies are read twice depends on the optimiser (clang forwarded them)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        pytest.skip("the driver single-steps with the x86-64 trap flag under Linux")
    if not STORING_KERNELS:
        pytest.skip("needs a CPU with AVX2 (no storing kernel otherwise)")
    path = shutil.which(compiler)
    if path is None:
        pytest.skip(f"{compiler} is not on PATH")
    flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"]
    binary = build_drivers([path], flags, tmp_path, [DRIVERS / "test_read_once.c"])[
        "test_read_once"]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    passed, failed = summary(run)
    assert passed > 0 and failed == 0
    tested = run.stdout.split("kernels tested:")[1].split("\n")[0].split()
    assert set(tested) == set(STORING_KERNELS)
