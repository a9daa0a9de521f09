"""The NEON kernel, on an x86 host: the C drivers cross-compiled for aarch64
(statically, so no aarch64 libc is needed at run time) and run under
user-mode emulation.

* tests/c/test_hash.c: known answers, and every kernel (portable, neon)
  against the portable single-message path for every arity 2..255 and
  0..20 parents, with guard bytes around the output;
* tests/c/test_core.c (its "emulated" profile: small, no fork): trees,
  snapshots, proofs, restore and concurrency, random trees alternating the
  kernels;
* tests/c/test_kernel_trees.c: the Rust crate's vectors under every kernel
  at 1 and 2 threads, and random trees of every arity 2..40 whose every
  node must equal the portable kernel's.

Needs Debian's ``gcc-aarch64-linux-gnu`` and ``qemu-user`` (``.ci/run``
installs them when it runs as root); without them these tests skip and name
what is missing. The kernel-trees driver also runs natively, so the x86
kernels get the same whole-tree check on every machine; and the kernel list
the Python layer shows is checked against the machine it runs on.
"""

from __future__ import annotations

import concurrent.futures
import platform
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import rotortree
from c_build import build_drivers, cc, summary, vectors_file  # noqa: F401 (cc is a fixture)
from rotortree.errors import UnsupportedKernelError

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVERS = ROOT / "tests" / "c"
CROSS_CC = "aarch64-linux-gnu-gcc"
EMULATORS = ("qemu-aarch64", "qemu-aarch64-static")
INSTALL = "apt-get install gcc-aarch64-linux-gnu qemu-user"
FLAGS = ["-std=c11", "-O2", "-pthread", "-g0", "-Wall", "-Wextra", "-Wshadow"]
TIMEOUT = 600
ON_AARCH64 = platform.machine().lower() in ("aarch64", "arm64")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """(emulator command, {driver: aarch64 binary}), or skip naming what is
    missing."""
    cross = shutil.which(CROSS_CC)
    emulator = next((shutil.which(e) for e in EMULATORS if shutil.which(e)), None)
    missing = [name for name, found in ((CROSS_CC, cross), ("qemu-aarch64", emulator))
               if not found]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: cannot cross-build and "
                    f"emulate the aarch64 (NEON) drivers; Debian/Ubuntu: {INSTALL}")
    out = tmp_path_factory.mktemp("aarch64")
    probe = out / "probe.c"
    probe.write_text("#include <stdio.h>\nint main(void) { puts(\"ok\"); return 0; }\n")
    res = subprocess.run([cross, "-static", str(probe), "-o", str(out / "probe")],
                         capture_output=True, text=True, timeout=TIMEOUT)
    if res.returncode != 0:
        pytest.skip(f"{CROSS_CC} cannot link a static program (Debian: apt-get install "
                    f"libc6-dev-arm64-cross): {res.stderr.strip()[:300]}")
    res = subprocess.run([emulator, str(out / "probe")], capture_output=True, text=True,
                         timeout=TIMEOUT)
    if res.returncode != 0 or res.stdout != "ok\n":
        pytest.skip(f"{emulator} cannot run a static aarch64 program here: "
                    f"{res.stderr.strip()[:300]}")
    drivers = [DRIVERS / "test_hash.c", DRIVERS / "test_core.c",
               DRIVERS / "test_kernel_trees.c", DRIVERS / "test_sha256.c"]
    return [emulator], build_drivers([cross], FLAGS + ["-static"], out, drivers)


@pytest.mark.slow
def test_neon_drivers_under_emulation(emulated, tmp_path):
    emulator, binaries = emulated
    seed = random.randrange(1 << 32)
    runs = {
        "test_hash": [],
        # Small sizes (emulation is about 10x slower than native), and no
        # fork, which qemu-user does not survive reliably.
        "test_core": ["emulated", str(seed)],
        "test_kernel_trees": [str(vectors_file(tmp_path)), str(seed)],
        # SHA-256 has no aarch64 kernel: its portable C, off x86.
        "test_sha256": [],
    }

    def run(name):
        return name, subprocess.run(emulator + [str(binaries[name])] + runs[name],
                                    capture_output=True, text=True, timeout=TIMEOUT)

    # Two at once: each driver is mostly one emulated thread.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(pool.map(run, runs))

    for name, result in results.items():
        where = f"{name} (seed {seed}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        passed, failed = summary(result)
        assert result.returncode == 0 and failed == 0 and passed > 0, where
    # The drivers test every kernel the machine has; under emulation that
    # must be NEON next to portable, or NEON silently went untested.
    for name in ("test_hash", "test_kernel_trees"):
        assert "kernels tested: portable neon\n" in results[name].stdout, \
            results[name].stdout[-2000:]
    assert "128 vectors" in results["test_kernel_trees"].stdout
    assert "impls tested: portable\n" in results["test_sha256"].stdout


@pytest.mark.slow
def test_kernel_trees_driver_natively(cc, tmp_path):  # noqa: F811 (fixture)
    binaries = build_drivers(cc, FLAGS, tmp_path / "native", [DRIVERS / "test_kernel_trees.c"])
    seed = random.randrange(1 << 32)
    result = subprocess.run([str(binaries["test_kernel_trees"]),
                             str(vectors_file(tmp_path)), str(seed)],
                            capture_output=True, text=True, timeout=TIMEOUT)
    passed, failed = summary(result)
    assert result.returncode == 0 and failed == 0 and passed > 0, \
        f"seed {seed}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    tested = re.search(r"kernels tested: (.*)", result.stdout).group(1).split()
    assert tested == rotortree.pool_info()["available_simd"]


@pytest.mark.parametrize("flags, expected", [
    (["-U__x86_64__", "-D__aarch64__", "-D__ARM_NEON"], 1),
    (["-U__x86_64__", "-D__aarch64__"], 0),                      # no NEON
    (["-U__x86_64__", "-D__aarch64__", "-D__ARM_NEON", "-U__BYTE_ORDER__",
      "-D__BYTE_ORDER__=__ORDER_BIG_ENDIAN__"], 0),              # aarch64_be
    (["-U__x86_64__", "-D__arm__", "-D__ARM_NEON"], 0),          # 32-bit ARM
    ([], 0),                                                     # this x86 host
])
def test_neon_kernel_is_built_for_little_endian_aarch64_only(cc, tmp_path,  # noqa: F811
                                                             flags, expected):
    """RT_NEON (blake3_neon.c compiled in) is 1 exactly for little-endian
    aarch64 with GCC or Clang: the kernel's assembly names v0..v27 and its
    word loads assume little-endian bytes."""
    machine = subprocess.run(cc + ["-dumpmachine"], capture_output=True, text=True).stdout
    if not machine.startswith("x86_64"):
        pytest.skip(f"the macro overrides assume an x86-64 compiler: {machine.strip()}")
    probe = tmp_path / "probe.c"
    probe.write_text('#include "rt_config.h"\n'
                     f'_Static_assert(RT_NEON == {expected}, "RT_NEON");\n'
                     '_Static_assert(!(RT_NEON && RT_X86), "one ISA");\n')
    res = subprocess.run(cc + ["-std=c11", "-fsyntax-only", *flags, f"-I{CSRC}", str(probe)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_neon_is_a_kernel_name_available_on_aarch64_only():
    """"neon" is a known kernel everywhere: on aarch64 it is available and the
    default; elsewhere asking for it is UnsupportedKernelError (a kernel this
    machine lacks), not an unknown name, and pool_info() does not list it."""
    available = rotortree.pool_info()["available_simd"]
    if ON_AARCH64:
        assert available == ["portable", "neon"]
        rotortree.configure(simd="auto")
        assert rotortree.pool_info()["simd"] == "neon"
        rotortree.configure(simd="neon")
        assert rotortree.pool_info()["simd"] == "neon"
    else:
        assert "neon" not in available
        before = rotortree.pool_info()["simd"]
        with pytest.raises(UnsupportedKernelError, match="'neon' is not supported"):
            rotortree.configure(simd="neon")
        assert rotortree.pool_info()["simd"] == before
