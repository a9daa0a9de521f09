"""What the tests that build C drivers share: finding a C compiler,
checking that programs built with sanitizer flags build and run here, and
building csrc/ with the drivers in tests/c/ (any compiler, any flags)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
DRIVERS = ROOT / "tests" / "c"
VECTORS = ROOT / "tests" / "data" / "rotortree-0.15.json"
DRIVER_TIMEOUT = 600
SUMMARY = re.compile(r"(\w[\w ]*) driver: (\d+) passed, (\d+) failed")


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


def build_drivers(compiler: list, flags: list, out_dir: Path, drivers: list,
                  sources: list | None = None) -> dict:
    """Compile ``sources`` (default: every csrc/*.c) once with ``flags`` and
    link each driver against them: {driver stem: binary}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(CSRC.glob("*.c")) if sources is None else sources

    def compile_one(src: Path) -> Path:
        obj = out_dir / (src.stem + ".o")
        res = subprocess.run(compiler + flags + [f"-I{CSRC}", "-c", str(src), "-o", str(obj)],
                             capture_output=True, text=True, timeout=DRIVER_TIMEOUT)
        assert res.returncode == 0, f"{src.name}:\n{res.stderr}"
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
