"""Builds tools/rust_harness and checks it against this package: opt-in,
since a Rust build takes minutes (ROTORTREE_TEST_RUST_HARNESS=1). Crates come
from crates.io, or from ROTORTREE_TEST_CRATE_SOURCE (a folder with
rotortree-0.15/ and rotortree-0.17/) with ROTORTREE_TEST_OFFLINE_REGISTRY (a
directory of unpacked crates, e.g. /usr/share/cargo/registry)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import rotortree
from rotortree.benchmarks import harness
from rotortree.benchmarks._common import deterministic_leaves

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUILD = ROOT / "tools" / "rust_harness" / "build.py"

pytestmark = pytest.mark.skipif(
    not os.environ.get("ROTORTREE_TEST_RUST_HARNESS"),
    reason="building the Rust harness takes minutes: set ROTORTREE_TEST_RUST_HARNESS=1")


def cargo() -> str:
    found = shutil.which("cargo") or str(pathlib.Path.home() / ".cargo" / "bin" / "cargo")
    if not os.path.exists(found):
        pytest.skip("cargo (Rust >= 1.87) is not installed")
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tool = cargo()
    argv = [sys.executable, str(BUILD), "--cargo", tool,
            "--target-dir", str(tmp_path_factory.mktemp("harness"))]
    source = os.environ.get("ROTORTREE_TEST_CRATE_SOURCE")
    registry = os.environ.get("ROTORTREE_TEST_OFFLINE_REGISTRY")
    if source:
        argv += ["--source", source]
    if registry:
        if not (pathlib.Path(registry) / "blake3-1.3.1").exists() and \
                not any(pathlib.Path(registry).glob("blake3-*")):
            pytest.skip(f"{registry} holds no blake3 crate (Debian: apt-get install "
                        "librust-blake3-dev librust-rayon-dev)")
        argv += ["--offline-registry", registry]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if proc.returncode == 2:
        pytest.skip("a prerequisite of the Rust build is missing: " + proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pathlib.Path(argv[argv.index("--target-dir") + 1])


def test_built_harness_reproduces_the_published_and_our_roots(built):
    with harness.open_harness(built) as h:
        assert h.check_anchor_roots([2, 4, 8, 16]) == []
        leaves = 5_000
        expected = rotortree.compute_root(deterministic_leaves(leaves), 4).hex()
        for build, threads in (("sequential", 0), ("parallel", 1), ("parallel", 2)):
            reply = h.call(build, "insert_many", v=15, arity=4, leaves=leaves,
                           threads=threads, reps=1)
            assert reply["root"] == expected, (build, threads)
        single = h.call("sequential", "insert", v=15, leaves=leaves, count=10, reps=1)
        assert single["size"] == leaves + 20
