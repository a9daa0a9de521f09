"""The single writer's puts into the leaf index decided from the home slot's
cache line (issue 17): tests/c/test_index_lines.c compiles leaf_index.c into
itself and checks, slot for slot, that the plain-store puts, the
compare-exchange puts and the regions' puts build the same table as a linear
probe written from the table's rules, for positions of 16 to 32 bits and
leaves crowded at line ends, the table's end and region ends; and that a
table whose positions take all 32 bits (no tag: trees of 2**30 leaves and
more) still sees every repeat through the public calls. Built as the
extension is (-O3) and under ASan + UBSan (a shift by the slot's width is
undefined behaviour, which the plain build turned into a lost repeat)."""

from __future__ import annotations

import os
import subprocess

import pytest
from c_build import (ASAN_UBSAN, CSRC, DRIVERS, asan_ubsan_env, build_drivers,  # noqa: F401
                     cc, sanitizer_prefix, summary)

DRIVER = DRIVERS / "test_index_lines.c"
# Every csrc/ object but the one the driver compiles into itself.
SOURCES = [path for path in sorted(CSRC.glob("*.c")) if path.name != "leaf_index.c"]
RELEASE = ["-O3", "-std=c11", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror"]
ROUNDS = "30"


def run_driver(exe, prefix=(), env=None):
    seed = str(int.from_bytes(os.urandom(6), "little"))
    run = subprocess.run([*prefix, str(exe), ROUNDS, seed], capture_output=True, text=True,
                         timeout=600, env=env)
    report = f"seed {seed} rc={run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    passed, failed = summary(run)
    assert run.returncode == 0 and failed == 0 and passed > 0, report
    assert "runtime error" not in run.stderr, report


def test_line_puts_match_the_linear_probe(cc, tmp_path):  # noqa: F811
    exe = build_drivers(cc, RELEASE, tmp_path, [DRIVER], SOURCES)
    run_driver(exe["test_index_lines"])


@pytest.mark.slow
def test_line_puts_under_asan_and_ubsan(cc, tmp_path):  # noqa: F811
    env = asan_ubsan_env()
    prefix = sanitizer_prefix(cc, ASAN_UBSAN, tmp_path, "ASan/UBSan", env, 120)
    exe = build_drivers(cc, ASAN_UBSAN, tmp_path / "build", [DRIVER], SOURCES)
    run_driver(exe["test_index_lines"], prefix, env)


# ---------------------------------------------------------------------------
# The background build (recovery), now one thread's plain puts: a table it
# cannot have (too large to size, or to allocate) leaves adopt the full build.

def first_positions(leaves, probes):
    first = {}
    for position, row in enumerate(leaves):
        first.setdefault(row.tobytes(), position)
    return [first.get(row.tobytes(), -1) for row in probes], len(first)


@pytest.mark.parametrize("expected", [2**61, 2**50], ids=["unsizable", "unallocatable"])
def test_a_build_without_its_table_falls_back_to_a_full_build(expected):
    import numpy as np

    from rotortree import LeanIMT
    from rotortree._native import ffi, lib

    rng = np.random.default_rng(17)
    leaves = rng.integers(0, 256, size=(5_000, 32), dtype=np.uint8)
    leaves[4_000:] = leaves[rng.integers(0, 4_000, size=1_000)]   # repeats
    buffer = leaves[:3_000].tobytes()
    out = ffi.new("rt_index_build **")
    assert lib.rt_index_build_start(ffi.from_buffer("uint8_t[]", buffer), 3_000, expected,
                                    out) == lib.RT_OK
    tree = LeanIMT(4, 20)
    tree.insert_many(leaves)
    assert lib.rt_tree_index_adopt(tree._tree, out[0]) == lib.RT_OK
    assert tree.indexed
    probes = np.concatenate([leaves, rng.integers(0, 256, size=(50, 32), dtype=np.uint8)])
    positions, distinct = first_positions(leaves, probes)
    assert list(np.frombuffer(tree.index_of_many(probes), dtype=np.int64)) == positions
    assert tree.index_stats()["entries"] == distinct
    # A table sized for the tree it serves, not for the build's request.
    assert tree.index_stats()["slots"] <= 16_384
