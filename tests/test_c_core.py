"""Build the tree-core C driver (tests/c/test_core.c, linked with every
csrc/*.c) and run it under AddressSanitizer + UndefinedBehaviorSanitizer,
under ThreadSanitizer, and under valgrind memcheck.

The driver checks levels, trees, snapshots, proofs, restore/make_cold and
compute_root against a reference LeanIMT of its own, runs inserts, snapshots,
proofs and pool reconfiguration from several threads at once, and (linked
with ``-Wl,--wrap`` for malloc, calloc, realloc, posix_memalign and mmap)
makes the library's allocations fail one by one to check that every failure
is ``RT_ERR_NOMEM`` with nothing changed. See the driver's header comment.

Knobs:

* ``ROTORTREE_C_SEED=N``: the driver's random seed (default: a fresh one,
  printed in the output and in any failure message).
* ``ROTORTREE_C_PROFILE=long``: the long profile for the ASan run (several
  minutes: bigger trees, more injection sweeps, 2 minutes of concurrency).

The sanitizer tests skip, saying why, only when the compiler lacks the
sanitizer (or its programs cannot run here); the valgrind test skips when
valgrind is not installed. The in-place extension is never rebuilt: the
driver is its own program, built in a temporary directory.
"""

from __future__ import annotations

import concurrent.futures
import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from c_build import cc, sanitizer_prefix  # noqa: F401 (cc is a fixture)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVER = ROOT / "tests" / "c" / "test_core.c"
SUMMARY = re.compile(r"core driver: (\d+) passed, (\d+) failed")
TIMEOUT = 900

COMMON = ["-std=c11", "-pthread", "-g", "-Wall", "-Wextra", "-Wshadow",
          "-DRT_TEST_WRAP=1", f"-I{CSRC}"]
# The driver itself must be warning-free; warnings in csrc/ are the concern
# of the build and of test_c_pool's warning check, not of these runs.
DRIVER_ONLY = ["-Werror"]
WRAP = ["-Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=posix_memalign,--wrap=mmap"]
ASAN = ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all"]
TSAN = ["-O1", "-fsanitize=thread"]
PLAIN = ["-O1"]


def driver_env(extra=None):
    """Environment for a sanitized driver: its own options, and no ASan
    preload inherited from a debug session (the driver links its own)."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    # The driver asks for absurd allocations on purpose (it checks that they
    # fail cleanly with RT_ERR_NOMEM), so ASan must return NULL for them.
    env["ASAN_OPTIONS"] = ("detect_leaks=1:allocator_may_return_null=1:abort_on_error=0:"
                           + os.environ.get("ASAN_OPTIONS", ""))
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1:" + os.environ.get(
        "UBSAN_OPTIONS", "")
    env["TSAN_OPTIONS"] = "halt_on_error=1:second_deadlock_stack=1:" + os.environ.get(
        "TSAN_OPTIONS", "")
    if extra:
        env.update(extra)
    return env


def build_driver(cc, flags, out_dir: Path) -> Path:
    """Compile the driver and every csrc/*.c with `flags` (in parallel, one
    object per source), link with the allocation wrappers."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(CSRC.glob("*.c")) + [DRIVER]

    def compile_one(src: Path):
        obj = out_dir / (src.stem + ".o")
        extra = DRIVER_ONLY if src == DRIVER else []
        res = subprocess.run(cc + COMMON + flags + extra + ["-c", str(src), "-o", str(obj)],
                             capture_output=True, text=True, timeout=TIMEOUT)
        return src, obj, res

    workers = max(1, min(len(sources), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(compile_one, sources))
    errors = [f"{src.name}:\n{res.stderr}" for src, _, res in results if res.returncode]
    assert not errors, "building the core driver failed:\n" + "\n".join(errors)
    exe = out_dir / "test_core"
    link = subprocess.run(cc + flags + [str(obj) for _, obj, _ in results] + WRAP
                          + ["-pthread", "-o", str(exe)],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert link.returncode == 0, f"linking the core driver failed:\n{link.stderr}"
    return exe


def seed() -> int:
    raw = os.environ.get("ROTORTREE_C_SEED", "").strip()
    return int(raw, 0) if raw else random.SystemRandom().randrange(1, 2**63)


def run_driver(command, env, what):
    run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=env)
    report = (f"{what}: rc={run.returncode}\ncommand: {' '.join(map(str, command))}\n"
              f"stdout:\n{run.stdout[-6000:]}\nstderr:\n{run.stderr[-8000:]}")
    return run, report


def assert_clean(run, report):
    assert run.returncode == 0, report
    summary = SUMMARY.search(run.stdout)
    assert summary is not None, report
    assert int(summary.group(1)) > 1000, report
    assert int(summary.group(2)) == 0, report
    for marker in ("runtime error", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "WARNING: ThreadSanitizer", "FAIL "):
        assert marker not in run.stderr, report


@pytest.mark.slow
def test_core_driver_asan_ubsan(cc, tmp_path):
    prefix = sanitizer_prefix(cc, ASAN, tmp_path, "AddressSanitizer/UBSan", driver_env(),
                              TIMEOUT)
    exe = build_driver(cc, ASAN, tmp_path / "asan")
    profile = os.environ.get("ROTORTREE_C_PROFILE", "asan").strip() or "asan"
    run, report = run_driver(prefix + [str(exe), profile, str(seed())], driver_env(),
                             "ASan+UBSan")
    assert_clean(run, report)


@pytest.mark.slow
def test_core_driver_tsan(cc, tmp_path):
    prefix = sanitizer_prefix(cc, TSAN, tmp_path, "ThreadSanitizer", driver_env(), TIMEOUT)
    exe = build_driver(cc, TSAN, tmp_path / "tsan")
    run, report = run_driver(prefix + [str(exe), "tsan", str(seed())], driver_env(), "TSan")
    assert_clean(run, report)


@pytest.mark.slow
def test_core_driver_valgrind_memcheck(cc, tmp_path):
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    exe = build_driver(cc, PLAIN, tmp_path / "plain")
    # --fair-sched: the pool spins briefly while waiting; with valgrind's
    # default scheduler a spinning thread can hold the only running slot.
    command = [valgrind, "--error-exitcode=1", "--leak-check=full", "--fair-sched=yes",
               "--quiet", str(exe), "valgrind", str(seed())]
    run, report = run_driver(command, driver_env(), "valgrind memcheck")
    assert_clean(run, report)
    assert "definitely lost" not in run.stderr and "Invalid read" not in run.stderr, report
