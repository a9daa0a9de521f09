"""cffi build script: compiles csrc/ into the out-of-line API module
``rotortree._rotortree_cffi``.

The C declarations are not repeated here: the region of ``csrc/rotortree.h``
between ``/* CFFI_BEGIN */`` and ``/* CFFI_END */`` is handed to cffi as is,
so the public header stays the single place the C API is declared.

``ROTORTREE_BUILD`` selects the flavour:

* ``release`` (default): ``-O3 -g0``, warnings on. No debug information: the
  interpreter's own ``CFLAGS`` usually carry ``-g``, which would make the
  shipped module several hundred kilobytes larger for symbols nobody reads.
* ``debug``: ``-O1 -g`` with AddressSanitizer and UndefinedBehaviorSanitizer.
  The interpreter is not instrumented, so the ASan runtime must be preloaded:
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``.
* ``profile``: ``-O3 -g -fno-omit-frame-pointer`` so that
  ``perf record -g`` shows the kernels and pool functions by name. The
  pool's counters (``pool_stats()``) are always on, in every flavour.

Flags are chosen by platform and compiler (:func:`flags_for`): the core
builds on Linux (glibc or musl) and macOS with GCC or Clang. Windows is
refused with :class:`UnsupportedPlatform`, and a compiler that rejects the
GNU flags fails the build; ``setup.py`` turns either into a pure-Python
(light client) install with a warning.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import sysconfig

from cffi import FFI

ROOT = pathlib.Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
HEADER = CSRC / "rotortree.h"

SOURCES = [
    "csrc/status.c",
    "csrc/level.c",
    "csrc/mapping.c",
    "csrc/tree.c",
    "csrc/build.c",
    "csrc/fork.c",
    "csrc/snapshot.c",
    "csrc/restore.c",
    "csrc/wal.c",
    "csrc/leaf_index.c",
    "csrc/proof.c",
    "csrc/logview.c",
    "csrc/pool.c",
    "csrc/hash_dispatch.c",
    "csrc/rules.c",
    "csrc/blake3_portable.c",
    "csrc/blake3_sse41.c",
    "csrc/blake3_avx2.c",
    "csrc/blake3_avx512.c",
    "csrc/blake3_neon.c",
    "csrc/sha256_portable.c",
    "csrc/sha256_shani.c",
    "csrc/sha256_avx2.c",
    "csrc/sha256_avx512.c",
    "csrc/sha256_dispatch.c",
]

WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wno-unused-parameter"]
# Feature macros (_GNU_SOURCE) come from csrc/rt_config.h, not from here.
COMMON = ["-std=c11"]

FLAVOURS = {
    "release": (["-O3", "-g0"], []),
    "debug": (
        ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined"],
        ["-fsanitize=address,undefined"],
    ),
    "profile": (["-O3", "-g", "-fno-omit-frame-pointer"], []),
}


class UnsupportedPlatform(RuntimeError):
    """The C core cannot be built for this platform or with this compiler."""


def compiler_command() -> list[str]:
    """The C compiler setuptools will run: ``$CC``, else the interpreter's."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def compiler_family(command: list[str]) -> str:
    """``"clang"``, ``"gcc"`` or ``"unknown"``, from the compiler's own
    ``--version`` banner: on macOS ``gcc`` is Clang, so the name proves
    nothing. A compiler that cannot be run is ``"unknown"``; the build then
    fails where setuptools runs it, with the message a user can act on."""
    try:
        banner = subprocess.run(command + ["--version"], capture_output=True, text=True,
                                timeout=60).stdout.lower()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if "clang" in banner:
        return "clang"
    if "gcc" in banner or "free software foundation" in banner:
        return "gcc"
    return "unknown"


def flags_for(flavour: str, platform: str, family: str) -> tuple[list[str], list[str]]:
    """Every (compile, link) flag of one build of ``flavour`` on ``platform``
    (``sys.platform``) with a compiler of ``family`` (:func:`compiler_family`),
    or :class:`UnsupportedPlatform`.

    * Linux (glibc or musl): release modules are also stripped of their
      symbol table at link (``-s``); the pool parks on futexes.
    * macOS (``darwin``): the pool parks on condition variables (csrc/pool.c
      chooses that itself); ld64 has no ``-s`` (it drops local symbols with
      ``-x``), and ``-pthread`` is implied by the system library.
    * Other POSIX systems build the same portable paths as macOS, untested.
    * Windows: refused; the core uses POSIX threads and mmap. Any other
      compiler is given GCC's flags: one that rejects them fails the build,
      which setup.py reports (and installs the light client).
    * Clang's sanitizers, unlike GCC's, link their runtime statically into
      executables only; a shared module must ask for the shared runtime
      (``-shared-libasan``), which is then the library to preload.
    """
    if platform.startswith(("win32", "cygwin", "msys")):
        raise UnsupportedPlatform(
            f"the C core needs POSIX threads and mmap; {platform} is not supported")
    compile_flags, link_flags = FLAVOURS[flavour]
    link = [] if platform == "darwin" else ["-pthread"]
    if flavour == "release":
        link.append("-Wl,-x" if platform == "darwin" else "-s")
    if flavour == "debug" and family == "clang":
        link.append("-shared-libasan")
    return COMMON + ["-pthread"] + WARNINGS + compile_flags, link + link_flags


def cdef_region(header_text: str) -> str:
    match = re.search(r"/\* CFFI_BEGIN \*/(.*?)/\* CFFI_END \*/", header_text, re.S)
    if match is None:
        raise RuntimeError(f"{HEADER}: no CFFI_BEGIN/CFFI_END region")
    return match.group(1)


def build_flavour() -> str:
    flavour = os.environ.get("ROTORTREE_BUILD", "release").strip().lower() or "release"
    if flavour not in FLAVOURS:
        raise RuntimeError(
            f"ROTORTREE_BUILD={flavour!r}: expected one of {', '.join(sorted(FLAVOURS))}"
        )
    return flavour


def make_builder() -> FFI:
    flavour = build_flavour()
    compile_flags, link_flags = flags_for(flavour, sys.platform,
                                          compiler_family(compiler_command()))
    builder = FFI()
    builder.cdef(cdef_region(HEADER.read_text()))
    builder.set_source(
        "rotortree._rotortree_cffi",
        '#include "rotortree.h"',
        sources=SOURCES,
        include_dirs=[str(CSRC)],
        extra_compile_args=compile_flags,
        extra_link_args=link_flags,
        depends=[str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.h"))],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
