"""Builds and runs the standalone C driver for the BLAKE3 kernels
(tests/c/test_hash.c) under AddressSanitizer and UndefinedBehaviorSanitizer.

The driver checks every kernel this CPU supports against the portable
single-message path and against known answers from the reference `blake3`
package. It links only the hashing sources, so it catches memory errors in
the SIMD kernels that the cffi extension (built without sanitizers) would
silently survive.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from c_build import (ASAN_UBSAN, DRIVER_TIMEOUT, DRIVERS, HASH_SOURCES,  # noqa: F401
                     asan_ubsan_env, build_drivers, cc, sanitizer_prefix)
from rotortree import config as rt_config


@pytest.mark.slow
def test_hash_driver_under_sanitizers(cc, tmp_path):  # noqa: F811 (cc is a fixture)
    env = asan_ubsan_env()
    prefix = sanitizer_prefix(cc, ASAN_UBSAN, tmp_path, "ASan/UBSan", env, 120)
    binary = build_drivers(cc, ASAN_UBSAN, tmp_path / "build", [DRIVERS / "test_hash.c"],
                           HASH_SOURCES)["test_hash"]
    # A hang guard only: under ASan on a loaded 2-core machine the run alone
    # took over the 120 s this used to allow.
    run = subprocess.run(prefix + [str(binary)], capture_output=True, text=True,
                         timeout=DRIVER_TIMEOUT, env=env)

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
