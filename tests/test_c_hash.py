"""Builds and runs the standalone C driver for the BLAKE3 kernels
(tests/c/test_hash.c) under AddressSanitizer and UndefinedBehaviorSanitizer.

The driver checks every kernel this CPU supports against the portable
single-message path and against known answers from the reference `blake3`
package. It links only the hashing sources, so it catches memory errors in
the SIMD kernels that the cffi extension (built without sanitizers) would
silently survive.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from rotortree import config as rt_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVER = ROOT / "tests" / "c" / "test_hash.c"
HASH_SOURCES = [
    CSRC / "blake3_portable.c",
    CSRC / "blake3_sse41.c",
    CSRC / "blake3_avx2.c",
    CSRC / "blake3_avx512.c",
    CSRC / "blake3_neon.c",
    CSRC / "hash_dispatch.c",
]
SANITIZERS = "-fsanitize=address,undefined"


@pytest.mark.slow
def test_hash_driver_under_sanitizers(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found on PATH: cannot build the C hash driver")

    binary = tmp_path / "test_hash"
    build = subprocess.run(
        [gcc, "-O1", "-g", "-std=c11", "-D_GNU_SOURCE", SANITIZERS,
         "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
         "-Wall", "-Wextra", "-Werror", f"-I{CSRC}", str(DRIVER),
         *map(str, HASH_SOURCES), "-o", str(binary)],
        capture_output=True, text=True, timeout=120,
    )
    if build.returncode != 0 and "sanitize" in build.stderr and "cannot find" in build.stderr:
        pytest.skip(f"gcc has no sanitizer runtime: {build.stderr.strip()[:200]}")
    assert build.returncode == 0, build.stderr

    # The interpreter is not instrumented, but the driver is its own process:
    # drop any ASan preload inherited from a debug test session.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    run = subprocess.run([str(binary)], capture_output=True, text=True,
                         timeout=120, env=env)

    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = re.search(r"hash driver: (\d+) passed, (\d+) failed", run.stdout)
    assert summary is not None, run.stdout[-2000:]
    assert int(summary.group(1)) > 0
    assert int(summary.group(2)) == 0
    assert "runtime error" not in run.stderr, run.stderr[-4000:]
    # The driver probes the CPU itself; it must have tested exactly the
    # kernels the extension offers, so a kernel the dispatcher lists is never
    # left out of the sanitizer run.
    tested = re.search(r"kernels tested:(.*)", run.stdout)
    assert tested is not None, run.stdout[-2000:]
    assert tested.group(1).split() == rt_config.available_kernels()
