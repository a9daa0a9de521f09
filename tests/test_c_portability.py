"""The C core builds where it says it does.

* Every csrc/*.c compiles with plain ``-std=c11`` and no ``-D`` flags: the
  feature macros come from csrc/rt_config.h, not from the build (level.c used
  to need the build's ``-D_GNU_SOURCE`` for mmap/madvise).
* Against musl, where glibc-only calls (``pthread_rwlockattr_setkind_np``)
  do not exist, the library builds and the core driver passes.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

from c_build import cc  # noqa: F401 (cc is a fixture)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
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


@pytest.mark.slow
def test_core_builds_and_passes_against_musl(tmp_path):
    musl = shutil.which("musl-gcc")
    if musl is None:
        pytest.skip("musl-gcc not installed (Debian/Ubuntu: apt-get install musl-tools)")
    headers = musl_kernel_headers(tmp_path)
    exe = tmp_path / "test_core"
    build = subprocess.run(
        [musl, "-std=c11", "-pthread", "-O1", "-Werror", *WARNINGS, f"-I{CSRC}",
         "-idirafter", str(headers), str(ROOT / "tests" / "c" / "test_core.c"),
         *map(str, SOURCES), "-o", str(exe)],
        capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    # The "asan" profile (no sanitizer is linked here): its concurrency rounds
    # run long enough that readers always get the lock between batches.
    run = subprocess.run([str(exe), "asan"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert " 0 failed" in run.stdout.splitlines()[-1], run.stdout[-2000:]


def test_every_macro_the_build_defines_is_read_by_the_sources():
    """A -D flag in a build flavour must mean something: the profile flavour
    used to pass -DRT_POOL_STATS=1, which no source read."""
    import importlib.util

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
