"""What the tests that build C drivers share: finding a C compiler, and
checking that programs built with sanitizer flags build and run here."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest


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
