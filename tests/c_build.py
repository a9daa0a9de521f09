"""What the tests that build C drivers share: finding a C compiler,
checking that programs built with sanitizer flags build and run here, and
building csrc/ with the drivers in tests/c/ (any compiler, any flags)."""

from __future__ import annotations

import atexit
import concurrent.futures
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVERS = ROOT / "tests" / "c"
VECTORS = ROOT / "tests" / "data" / "rotortree-0.15.json"
DRIVER_TIMEOUT = 600
SUMMARY = re.compile(r"(\w[\w ]*) driver: (\d+) passed, (\d+) failed")
# The ASan+UBSan build of the hashing kernels' drivers (hash, storing,
# SHA-256): one flag list, so the sanitized SIMD kernels, the slowest
# objects to compile, are compiled once per session for all three.
ASAN_UBSAN = ["-O1", "-g", "-std=c11", "-D_GNU_SOURCE", "-fsanitize=address,undefined",
              "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer",
              "-Wall", "-Wextra", "-Werror"]
HASH_SOURCES = [CSRC / name for name in ("blake3_portable.c", "blake3_sse41.c",
                                         "blake3_avx2.c", "blake3_avx512.c",
                                         "blake3_neon.c", "hash_dispatch.c")]



def asan_ubsan_env() -> dict:
    """Environment for a driver built with ASAN_UBSAN. The driver is its own
    process: no ASan preload inherited from a debug test session."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env

def compiler():
    """$CC, else the first of gcc, cc and clang on PATH; None if none."""
    env_cc = os.environ.get("CC")
    if env_cc:
        return shlex.split(env_cc)
    for name in ("gcc", "cc", "clang"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def sanitizer_prefix(cc, flags, tmp_path, what, env, timeout):
    """Command prefix that runs programs built with `flags` here, or skip
    saying why they cannot be built or run."""
    src = tmp_path / "probe.c"
    exe = tmp_path / "probe"
    src.write_text("#include <pthread.h>\n#include <stdlib.h>\n"
                   "int main(void) { void *p = malloc(8); free(p); return 0; }\n")
    res = subprocess.run(cc + flags + [str(src), "-o", str(exe), "-pthread"],
                         capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        pytest.skip(f"the C compiler lacks {what} ({' '.join(flags)} failed): "
                    f"{res.stderr.strip()[:300]}")
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode == 0:
        return []
    # Some sanitizer runtimes refuse high-entropy ASLR layouts; running
    # without randomisation is the documented workaround.
    setarch = shutil.which("setarch")
    if setarch:
        prefix = [setarch, os.uname().machine, "-R"]
        res2 = subprocess.run(prefix + [str(exe)], capture_output=True, text=True,
                              timeout=timeout, env=env)
        if res2.returncode == 0:
            return prefix
    pytest.skip(f"{what} programs do not run on this machine: {res.stderr.strip()[:300]}")


@pytest.fixture(scope="module")
def cc():
    """The C compiler command, or skip the module's C tests saying why."""
    found = compiler()
    if found is None:
        pytest.skip("no C compiler (gcc, cc or clang) on PATH")
    return found


def summary(run: subprocess.CompletedProcess) -> tuple:
    """(passed, failed) from a driver's last summary line."""
    found = SUMMARY.findall(run.stdout)
    assert found, run.stdout[-3000:] + run.stderr[-3000:]
    _, passed, failed = found[-1]
    return int(passed), int(failed)


def vectors_file(tmp_path: Path) -> Path:
    """The crate's vectors as the kernel-trees driver reads them."""
    data = json.loads(VECTORS.read_text())
    lines = []
    for v in data["vectors"]:
        assert v["root"] == v["root_batched"] == v["root_single_inserts"]
        lines.append(f"{v['n']} {v['size']} {v['root']} "
                     f"{','.join(str(b) for b in v['batches'])}\n")
    path = tmp_path / "vectors.txt"
    path.write_text("".join(lines))
    return path


# Objects compiled this session, by what determines them (see object_key):
# several tests build the same sources with the same compiler and flags (the
# native and the aarch64 builds of the kernel-trees and CRC drivers, the
# sanitized hashing kernels of the hash, storing and SHA-256 drivers), and
# the sanitized SIMD kernels take most of a build's time. Per session only,
# so an edit to csrc/ between runs can never reuse a stale object.
_OBJECTS = Path(tempfile.mkdtemp(prefix="rotortree-c-objects-"))
atexit.register(shutil.rmtree, _OBJECTS, True)


def _headers_digest() -> bytes:
    """Every header a source could include: a header edit changes every key."""
    digest = hashlib.sha256()
    for header in sorted(CSRC.glob("*.h")) + sorted(DRIVERS.glob("*.h")):
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    return digest.digest()


def object_key(compiler: list, flags: list, src: Path, headers: bytes) -> str:
    """What an object file depends on: the compiler command, the flags in
    their order, the source's path (its directory is on the include path)
    and text, and the headers."""
    digest = hashlib.sha256(headers)
    digest.update(json.dumps([compiler, flags, str(src)]).encode())
    digest.update(src.read_bytes())
    return digest.hexdigest()


def build_drivers(compiler: list, flags: list, out_dir: Path, drivers: list,
                  sources: list | None = None) -> dict:
    """Compile ``sources`` (default: every csrc/*.c) with ``flags`` and link
    each driver against them: {driver stem: binary}. An object already
    compiled this session from the same source, compiler and flags is
    reused rather than compiled again."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(CSRC.glob("*.c")) if sources is None else sources
    headers = _headers_digest()

    def compile_one(src: Path) -> Path:
        obj = _OBJECTS / (object_key(compiler, flags, src, headers) + ".o")
        if obj.exists():
            return obj
        partial = obj.with_suffix(".partial")
        res = subprocess.run(compiler + flags + [f"-I{CSRC}", "-c", str(src), "-o", str(partial)],
                             capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
        assert res.returncode == 0, f"{src.name}:\n{res.stderr}"
        # Renamed only once complete: a failed or timed-out compile leaves
        # nothing a later test could take for a finished object.
        partial.replace(obj)
        return obj

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        objects = list(pool.map(compile_one, sources + drivers))
    library = objects[: len(sources)]
    binaries = {}
    for driver, obj in zip(drivers, objects[len(sources):]):
        exe = out_dir / driver.stem
        res = subprocess.run(compiler + flags + ["-pthread", str(obj), *map(str, library),
                                                 "-o", str(exe)],
                             capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
        assert res.returncode == 0, f"link {driver.name}:\n{res.stderr}"
        binaries[driver.stem] = exe
    return binaries
