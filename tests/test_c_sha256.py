"""Builds and runs the standalone C driver for SHA-256 (tests/c/test_sha256.c)
under AddressSanitizer and UndefinedBehaviorSanitizer: known answers, then
every implementation this CPU runs against the portable one, with inputs at
the very end of their heap blocks so an overread is caught, and the pool
path of the leaf-hash batch."""

from __future__ import annotations

import pathlib
import re
import subprocess

from c_build import ASAN_UBSAN, DRIVERS, build_drivers, cc  # noqa: F401  (cc is a fixture)
from rotortree._native import ffi, lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SOURCES = sorted(CSRC.glob("sha256_*.c")) + sorted(CSRC.glob("blake3_*.c")) + [
    CSRC / "hash_dispatch.c", CSRC / "pool.c", CSRC / "status.c"]


def test_sha256_driver_under_sanitizers(cc, tmp_path):  # noqa: F811
    from c_build import asan_ubsan_env, sanitizer_prefix

    env = asan_ubsan_env()
    prefix = sanitizer_prefix(cc, ASAN_UBSAN, tmp_path, "AddressSanitizer", env, 120)
    # The hash drivers' flags: the sanitized BLAKE3 kernels linked here are
    # the objects those drivers already compiled.
    binary = build_drivers(cc, ASAN_UBSAN, tmp_path / "build", [DRIVERS / "test_sha256.c"],
                           SOURCES)["test_sha256"]
    run = subprocess.run(prefix + [str(binary)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = re.search(r"sha256 driver: (\d+) passed, (\d+) failed", run.stdout)
    assert summary is not None, run.stdout[-2000:]
    assert int(summary.group(1)) > 0 and int(summary.group(2)) == 0
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    # The driver probes the CPU itself; it must have tested every
    # implementation the extension offers.
    tested = re.search(r"impls tested:(.*)", run.stdout)
    assert tested is not None, run.stdout[-2000:]
    offered = [ffi.string(lib.rt_sha256_impl_name(i)).decode() for i in range(4)
               if lib.rt_sha256_impl_available(i)]
    assert tested.group(1).split() == offered
