"""Build group commit's gate driver (tests/c/test_sync_gate.c, linked with
csrc/wal.c, where the gate lives, and stubs for the rest) under ThreadSanitizer and
under AddressSanitizer+UBSan, and run it: many threads leading and
following fsync rounds, a failed gate, gathering with nobody to gather."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from c_build import CSRC, DRIVERS, build_drivers, cc, sanitizer_prefix  # noqa: F401

TIMEOUT = 600
SUMMARY = re.compile(r"sync gate driver: (\d+) passed, 0 failed")
TSAN = ["-O1", "-g", "-fsanitize=thread"]
ASAN = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all"]


def _env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["TSAN_OPTIONS"] = "halt_on_error=1 second_deadlock_stack=1"
    env["ASAN_OPTIONS"] = "detect_leaks=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1 halt_on_error=1"
    return env


def _run(cc, flags, tmp_path, what):
    prefix = sanitizer_prefix(cc, flags, tmp_path, what, _env(), TIMEOUT)
    exe = build_drivers(cc, flags, tmp_path / "build", [DRIVERS / "test_sync_gate.c"],
                        [CSRC / "wal.c"])
    run = subprocess.run(prefix + [str(exe["test_sync_gate"])], capture_output=True,
                         text=True, timeout=TIMEOUT, env=_env())
    report = f"rc={run.returncode}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr[-6000:]}"
    assert run.returncode == 0, report
    assert SUMMARY.search(run.stdout), report
    return run


def test_sync_gate_driver_tsan(cc, tmp_path):
    run = _run(cc, TSAN, tmp_path, "ThreadSanitizer")
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr[-6000:]


def test_sync_gate_driver_asan_ubsan(cc, tmp_path):
    run = _run(cc, ASAN, tmp_path, "AddressSanitizer/UBSan")
    for marker in ("runtime error", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"):
        assert marker not in run.stderr, run.stderr[-6000:]
