"""The C core builds where it says it does.

* Every csrc/*.c compiles with plain ``-std=c11`` and no ``-D`` flags: the
  feature macros come from csrc/rt_config.h, not from the build (level.c used
  to need the build's ``-D_GNU_SOURCE`` for mmap/madvise).
* With clang, against musl (where glibc-only calls such as
  ``pthread_rwlockattr_setkind_np`` do not exist), and with the portable
  (condition variable) parking path forced on Linux, every C driver builds
  warning-free and passes; for macOS (cross-compiled with Zig's Clang)
  they build and link.
"""

from __future__ import annotations

import importlib.util
import pathlib
import random
import shutil
import subprocess
import sys

import pytest

from c_build import (CSRC, DRIVER_TIMEOUT, DRIVERS, ROOT, build_drivers, cc,  # noqa: F401
                     compiler, summary, vectors_file)
SOURCES = sorted(CSRC.glob("*.c"))
WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wno-unused-parameter"]


@pytest.mark.parametrize("source", SOURCES, ids=[p.name for p in SOURCES])
def test_source_compiles_without_feature_flags(cc, tmp_path, source):
    res = subprocess.run(
        cc + ["-std=c11", "-U_GNU_SOURCE", "-pthread", "-O1", "-Werror", *WARNINGS,
              f"-I{CSRC}", "-c", str(source), "-o", str(tmp_path / "out.o")],
        capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


def musl_kernel_headers(tmp_path: pathlib.Path) -> pathlib.Path:
    """musl-gcc searches only musl's headers; pool.c needs <linux/futex.h>
    too, which a musl system gets from its kernel-headers package. Link the
    host's kernel headers (not its libc headers) into a directory of their
    own, or skip naming what is missing."""
    include = pathlib.Path("/usr/include")
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip()
    parts = {"linux": include / "linux", "asm": include / arch / "asm",
             "asm-generic": include / "asm-generic"}
    missing = [str(p) for p in parts.values() if not p.is_dir()]
    if missing:
        pytest.skip(f"kernel headers not found for musl-gcc: {', '.join(missing)}")
    out = tmp_path / "kernel-headers"
    out.mkdir()
    for name, target in parts.items():
        (out / name).symlink_to(target)
    return out


def clang_toolchain(tmp_path):
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang not installed (Debian/Ubuntu: apt-get install clang)")
    return [clang], []


def musl_toolchain(tmp_path):
    musl = shutil.which("musl-gcc")
    if musl is None:
        pytest.skip("musl-gcc not installed (Debian/Ubuntu: apt-get install musl-tools)")
    return [musl], ["-idirafter", str(musl_kernel_headers(tmp_path))]


def portable_park_toolchain(tmp_path):
    found = compiler()
    if found is None:
        pytest.skip("no C compiler (gcc, cc or clang) on PATH")
    return found, ["-DRT_PORTABLE_PARK=1"]


TOOLCHAINS = {"clang": clang_toolchain, "musl": musl_toolchain,
              "portable-park": portable_park_toolchain}


@pytest.mark.slow
@pytest.mark.parametrize("toolchain", sorted(TOOLCHAINS))
def test_drivers_pass_with_other_toolchains(toolchain, tmp_path):
    """Every C driver (pool, hash, core, kernel trees) builds warning-free
    and passes with clang, against musl (no glibc-only calls: the rwlock
    attribute is guarded), and with the condition-variable parking path
    that macOS and the BSDs get, forced on Linux."""
    command, extra = TOOLCHAINS[toolchain](tmp_path)
    drivers = [DRIVERS / f"{name}.c"
               for name in ("test_pool", "test_hash", "test_core", "test_kernel_trees")]
    binaries = build_drivers(command, ["-std=c11", "-pthread", "-O2", "-g0", "-Werror",
                                       *WARNINGS, *extra], tmp_path / "out", drivers)
    seed = str(random.randrange(1 << 32))
    runs = {
        "test_pool": [],
        "test_hash": [],
        # The "asan" profile (no sanitizer is linked here): its concurrency
        # rounds run long enough that readers always get the lock between
        # batches.
        "test_core": ["asan", seed],
        "test_kernel_trees": [str(vectors_file(tmp_path)), seed],
    }
    for name, args in runs.items():
        run = subprocess.run([str(binaries[name]), *args], capture_output=True, text=True,
                             timeout=DRIVER_TIMEOUT)
        where = f"{toolchain} {name} (seed {seed}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        passed, failed = summary(run)
        assert run.returncode == 0 and failed == 0 and passed > 0, where


@pytest.mark.slow
@pytest.mark.parametrize("target", ["aarch64-macos", "x86_64-macos"])
def test_core_and_drivers_build_for_macos(target, tmp_path):
    """No Mac here, but Zig's Clang ships the macOS headers and libSystem
    stubs: the library and the drivers compile warning-free and link for
    macOS, where there is no futex, no sched_getaffinity/sched_getcpu, no
    huge-page mapping and no glibc rwlock attribute (they cannot run here)."""
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("ziglang not installed (pip install ziglang): no macOS cross compiler")
    binaries = build_drivers([sys.executable, "-m", "ziglang", "cc", "-target", target],
                             ["-std=c11", "-pthread", "-O1", "-g0", "-Werror", *WARNINGS],
                             tmp_path / "out", [DRIVERS / "test_core.c", DRIVERS / "test_pool.c"])
    for binary in binaries.values():
        assert binary.read_bytes()[:4] == b"\xcf\xfa\xed\xfe", binary  # Mach-O 64-bit


def test_portable_parking_can_be_forced_on_linux(cc, tmp_path):
    """RT_PORTABLE_PARK=1 really selects the condition-variable path (its
    mutex and condvar exist) and the default on Linux really is the futex
    (they do not): otherwise the driver run above would test the futex
    twice and the macOS path never."""
    if not sys.platform.startswith("linux"):
        pytest.skip(f"the futex path exists on Linux only, not on {sys.platform}")
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) not installed: cannot list pool.o's symbols")

    def symbols(flags):
        obj = tmp_path / "pool.o"
        res = subprocess.run(cc + ["-std=c11", "-O2", *flags, f"-I{CSRC}", "-c",
                                   str(CSRC / "pool.c"), "-o", str(obj)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        return subprocess.run([nm, str(obj)], capture_output=True, text=True,
                              timeout=60).stdout

    assert "futex_emu_cv" not in symbols([])
    portable = symbols(["-DRT_PORTABLE_PARK=1"])
    assert "futex_emu_cv" in portable and " U syscall" not in portable


def test_every_macro_the_build_defines_is_read_by_the_sources():
    """A -D flag in a build flavour must mean something: the profile flavour
    used to pass -DRT_POOL_STATS=1, which no source read."""

    spec = importlib.util.spec_from_file_location("build_ffi", ROOT / "build_ffi.py")
    assert spec is not None and spec.loader is not None
    build_ffi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_ffi)
    flags = list(build_ffi.COMMON)
    for compile_flags, _ in build_ffi.FLAVOURS.values():
        flags += compile_flags
    text = "\n".join(p.read_text() for p in sorted(CSRC.glob("*.[ch]")))
    for flag in flags:
        if flag.startswith("-D"):
            name = flag[2:].split("=", 1)[0]
            assert name in text, f"{flag}: no source in csrc/ reads {name}"


@pytest.mark.parametrize("flags, expected", [
    (["-U__x86_64__", "-D__i386__"], 0),               # 32-bit x86: no xmm8..15
    (["-U__x86_64__", "-U__GNUC__", "-D_M_X64"], 0),   # MSVC's x64 macro, no GNU asm
    (["-U__x86_64__", "-D__aarch64__"], 0),
])
def test_simd_kernels_are_built_for_x86_64_gcc_clang_only(cc, tmp_path, flags, expected):
    """RT_X86 (SIMD kernels compiled in) is 1 exactly for x86-64 with GCC or
    Clang: the kernels' inline assembly names xmm8..xmm15/ymm8..ymm15 and
    uses GNU attributes. The old guard also accepted __i386__ and _M_X64.
    Checked on the preprocessor alone, since no other toolchain is here."""
    probe = tmp_path / "probe.c"
    probe.write_text('#include "rt_config.h"\n'
                     f"_Static_assert(RT_X86 == {expected}, \"RT_X86\");\n")
    res = subprocess.run(cc + ["-std=c11", "-fsyntax-only", *flags, f"-I{CSRC}", str(probe)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_simd_kernels_are_built_here(cc, tmp_path):
    machine = subprocess.run(cc + ["-dumpmachine"], capture_output=True, text=True).stdout
    if not machine.startswith("x86_64"):
        pytest.skip(f"not an x86-64 compiler: {machine.strip()}")
    probe = tmp_path / "probe.c"
    probe.write_text('#include "rt_config.h"\n_Static_assert(RT_X86 == 1, "RT_X86");\n')
    res = subprocess.run(cc + ["-std=c11", "-fsyntax-only", f"-I{CSRC}", str(probe)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
