"""cffi build script: compiles csrc/ into the out-of-line API module
``rotortree._rotortree_cffi``.

The C declarations are not repeated here: the region of ``csrc/rotortree.h``
between ``/* CFFI_BEGIN */`` and ``/* CFFI_END */`` is handed to cffi as is,
so the public header stays the single place the C API is declared.

``ROTORTREE_BUILD`` selects the flavour:

* ``release`` (default): ``-O3``, warnings on.
* ``debug``: ``-O1 -g`` with AddressSanitizer and UndefinedBehaviorSanitizer.
  The interpreter is not instrumented, so the ASan runtime must be preloaded:
  ``LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0``.
* ``profile``: ``-O3 -g -fno-omit-frame-pointer`` so that
  ``perf record -g`` shows the kernels and pool functions by name. The
  pool's counters (``pool_stats()``) are always on, in every flavour.
"""

from __future__ import annotations

import os
import pathlib
import re

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
    "csrc/blake3_portable.c",
    "csrc/blake3_sse41.c",
    "csrc/blake3_avx2.c",
    "csrc/blake3_avx512.c",
    "csrc/blake3_neon.c",
]

WARNINGS = ["-Wall", "-Wextra", "-Wshadow", "-Wstrict-prototypes", "-Wno-unused-parameter"]
# Feature macros (_GNU_SOURCE) come from csrc/rt_config.h, not from here.
COMMON = ["-std=c11", "-pthread"]

FLAVOURS = {
    "release": (["-O3"], []),
    "debug": (
        ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined"],
        ["-fsanitize=address,undefined"],
    ),
    "profile": (["-O3", "-g", "-fno-omit-frame-pointer"], []),
}


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
    compile_flags, link_flags = FLAVOURS[build_flavour()]
    builder = FFI()
    builder.cdef(cdef_region(HEADER.read_text()))
    builder.set_source(
        "rotortree._rotortree_cffi",
        '#include "rotortree.h"',
        sources=SOURCES,
        include_dirs=[str(CSRC)],
        extra_compile_args=COMMON + WARNINGS + compile_flags,
        extra_link_args=["-pthread"] + link_flags,
        depends=[str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.h"))],
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
