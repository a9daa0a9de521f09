"""Builds and runs the standalone C driver for SHA-256 (tests/c/test_sha256.c)
under AddressSanitizer and UndefinedBehaviorSanitizer: known answers, then
every implementation this CPU runs against the portable one, with inputs at
the very end of their heap blocks so an overread is caught, and the pool
path of the leaf-hash batch."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess

from c_build import cc  # noqa: F401  (fixture)
from rotortree._native import ffi, lib

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVER = ROOT / "tests" / "c" / "test_sha256.c"
SOURCES = sorted(CSRC.glob("sha256_*.c")) + sorted(CSRC.glob("blake3_*.c")) + [
    CSRC / "hash_dispatch.c", CSRC / "pool.c", CSRC / "status.c"]


def test_sha256_driver_under_sanitizers(cc, tmp_path):  # noqa: F811
    from c_build import sanitizer_prefix

    flags = ["-O1", "-g", "-std=c11", "-fsanitize=address,undefined",
             "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer"]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    prefix = sanitizer_prefix(cc, flags, tmp_path, "AddressSanitizer", env, 120)
    binary = tmp_path / "test_sha256"
    build = subprocess.run(
        cc + flags + ["-Wall", "-Wextra", "-Werror", "-pthread", f"-I{CSRC}", str(DRIVER),
                      *map(str, SOURCES), "-o", str(binary)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-4000:]
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
