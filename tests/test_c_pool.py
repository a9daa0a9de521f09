"""Build the thread pool's standalone C driver (tests/c/test_pool.c) under
ThreadSanitizer and under AddressSanitizer+UBSan, and run it.

The driver needs only csrc/pool.c and the two headers, so these tests do not
depend on the cffi extension being built.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest
from c_build import cc, sanitizer_prefix  # noqa: F401 (cc is a fixture)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
POOL_C = CSRC / "pool.c"
DRIVER_C = ROOT / "tests" / "c" / "test_pool.c"

SUMMARY = re.compile(r"pool driver: (\d+) passed, 0 failed")
TIMEOUT = 180

TSAN_FLAGS = ["-O1", "-g", "-fsanitize=thread"]
ASAN_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer",
              "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
WARN_FLAGS = ["-O3", "-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes",
              "-std=c11", "-D_GNU_SOURCE", "-pthread", "-Werror"]


def _sanitizer_env():
    env = dict(os.environ)
    env["TSAN_OPTIONS"] = "second_deadlock_stack=1 " + env.get("TSAN_OPTIONS", "")
    env["ASAN_OPTIONS"] = "detect_leaks=1 " + env.get("ASAN_OPTIONS", "")
    env["UBSAN_OPTIONS"] = "print_stacktrace=1 halt_on_error=1 " + env.get("UBSAN_OPTIONS", "")
    return env


def _build_and_run(cc, flags, tmp_path, what):
    prefix = sanitizer_prefix(cc, flags, tmp_path, what, _sanitizer_env(), TIMEOUT)
    exe = tmp_path / "test_pool"
    build = subprocess.run(
        cc + flags + ["-I", str(CSRC), str(DRIVER_C), str(POOL_C), "-o", str(exe), "-pthread"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert build.returncode == 0, f"building the pool driver failed:\n{build.stderr}"
    run = subprocess.run(prefix + [str(exe)], capture_output=True, text=True,
                         timeout=TIMEOUT, env=_sanitizer_env())
    report = f"rc={run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    return run, report


@pytest.mark.slow
def test_pool_driver_tsan(cc, tmp_path):
    run, report = _build_and_run(cc, TSAN_FLAGS, tmp_path, "ThreadSanitizer")
    assert run.returncode == 0, report
    assert "WARNING: ThreadSanitizer" not in run.stderr, report
    assert SUMMARY.search(run.stdout), report


@pytest.mark.slow
def test_pool_driver_asan_ubsan(cc, tmp_path):
    run, report = _build_and_run(cc, ASAN_FLAGS, tmp_path, "AddressSanitizer/UBSan")
    assert run.returncode == 0, report
    assert "runtime error" not in run.stderr, report
    assert "ERROR: AddressSanitizer" not in run.stderr, report
    assert "ERROR: LeakSanitizer" not in run.stderr, report
    assert SUMMARY.search(run.stdout), report


def test_pool_compiles_warning_free(cc, tmp_path):
    res = subprocess.run(cc + WARN_FLAGS + ["-I", str(CSRC), "-c", str(POOL_C),
                                            "-o", str(tmp_path / "pool.o")],
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
