"""Run Python tests against an AddressSanitizer + UBSan build of the extension.

The in-place extension is never touched: the package sources (rotortree/,
csrc/, build_ffi.py) are copied into a temporary directory, built there
with ``ROTORTREE_BUILD=debug`` (``-fsanitize=address,undefined``, see
build_ffi.py), and a representative subset of the test suite runs in a
subprocess that imports the copy. The interpreter itself is not
instrumented, so the ASan runtime is preloaded and leak detection is off
(CPython keeps objects alive until exit by design).

Manual equivalent (from the repository root)::

    rm -rf /tmp/rt-asan && mkdir /tmp/rt-asan
    cp -r rotortree csrc build_ffi.py /tmp/rt-asan/ && rm -f /tmp/rt-asan/rotortree/*.so
    (cd /tmp/rt-asan && ROTORTREE_BUILD=debug python build_ffi.py)
    cd /tmp/rt-asan && PYTHONPATH=/tmp/rt-asan \\
        LD_PRELOAD=$(gcc -print-file-name=libasan.so) \\
        ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 \\
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \\
        ROTORTREE_UNDER_ASAN=1 \\
        python -m pytest -p no:cacheprovider /path/to/repo/tests

(the working directory must be the copy, or ``import rotortree`` finds the
in-place build first). ``ROTORTREE_UNDER_ASAN=1`` makes the tests that
measure resident memory or lower the address-space limit skip themselves:
ASan's shadow memory and quarantine make both meaningless.

Here the default subset (tree, snapshot, proof, parallel, restore, vector,
config, durable and the hardening input/fuzz tests) takes about a minute;
``ROTORTREE_ASAN_FULL=1`` runs the whole suite instead (several minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
BUILD_TIMEOUT = 900
RUN_TIMEOUT = 1800

SUBSET = [
    "test_tree.py",
    "test_snapshot.py",
    "test_snapshot_memory.py",
    "test_fork_tree.py",
    "test_proofs.py",
    "test_parallel.py",
    "test_restore.py",
    "test_vectors.py",
    "test_config.py",
    "test_durable.py",
    "test_index_recovery.py",   # a C thread reading a file mapping during recovery
    "test_hardening_inputs.py",
    "test_hardening_fuzz.py",
]
# Slow without adding memory-safety coverage (a child killed with SIGKILL).
DESELECT = "not sigkill"
# Tests that build their own programs or would recurse.
FULL_IGNORE = ["test_asan_python.py"]


def libasan() -> str:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot locate the ASan runtime to preload")
    path = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                          text=True, timeout=60).stdout.strip()
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        pytest.skip(f"gcc has no ASan runtime (gcc -print-file-name=libasan.so gave {path!r})")
    return path


def copy_sources(dest: Path) -> None:
    shutil.copytree(ROOT / "csrc", dest / "csrc")
    shutil.copy2(ROOT / "build_ffi.py", dest / "build_ffi.py")
    shutil.copytree(ROOT / "rotortree", dest / "rotortree",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__", "*.o", "*.c"))


def build(dest: Path) -> Path:
    env = dict(os.environ, ROTORTREE_BUILD="debug")
    env.pop("LD_PRELOAD", None)
    res = subprocess.run(
        [sys.executable, "-c", "import build_ffi; build_ffi.ffibuilder.compile(tmpdir='.')"],
        cwd=dest, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    if res.returncode != 0 and re.search(r"cannot find -l(asan|ubsan)|unrecognized.*sanitize",
                                         res.stderr + res.stdout):
        pytest.skip(f"the C compiler lacks ASan/UBSan: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, f"ASan build failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    built = list((dest / "rotortree").glob("_rotortree_cffi*.so"))
    assert len(built) == 1, built
    assert b"__asan_init" in built[0].read_bytes(), "the debug build is not instrumented"
    return built[0]


def asan_env(dest: Path, preload: str) -> dict:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(dest),
        LD_PRELOAD=preload,
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        ROTORTREE_UNDER_ASAN="1",
        PYTHONDONTWRITEBYTECODE="1",
        # Keep the hypothesis-driven tests short here: the point is to run
        # each code path under ASan, not to search.
        ROTORTREE_FUZZ_EXAMPLES=os.environ.get("ROTORTREE_ASAN_FUZZ_EXAMPLES", "60"),
    )
    return env


@pytest.mark.slow
def test_python_suite_under_asan(tmp_path):
    preload = libasan()
    dest = tmp_path / "src"
    dest.mkdir()
    copy_sources(dest)
    so = build(dest)
    env = asan_env(dest, preload)

    # The subprocess must import the instrumented copy, not the in-place build.
    probe = subprocess.run(
        [sys.executable, "-c",
         "import rotortree, rotortree._native as n; t = rotortree.LeanIMT(3); "
         "t.insert_many(bytes(32 * 1000)); print(n.__file__)"],
        cwd=dest, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert probe.returncode == 0, probe.stderr[-4000:]
    assert Path(probe.stdout.strip()).resolve().parent == so.parent.resolve(), probe.stdout

    if os.environ.get("ROTORTREE_ASAN_FULL"):
        targets = [str(TESTS)] + [f"--ignore={TESTS / name}" for name in FULL_IGNORE]
    else:
        targets = [str(TESTS / name) for name in SUBSET if (TESTS / name).exists()]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-k", DESELECT, *targets]
    run = subprocess.run(command, cwd=dest, env=env, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    output = run.stdout + run.stderr
    report = f"rc={run.returncode}\n{' '.join(command)}\n{output[-12000:]}"
    assert "ERROR: AddressSanitizer" not in output, report
    assert "runtime error:" not in output, report
    assert run.returncode == 0, report
    print("\nunder ASan: " + (run.stdout.strip().splitlines() or ["?"])[-1])
    summary = re.search(r"(\d+) passed", run.stdout)
    assert summary is not None and int(summary.group(1)) > 100, report
    assert not re.search(r"\d+ failed|\d+ error", run.stdout), report
