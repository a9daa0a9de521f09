from __future__ import annotations

import atexit
import gc
import json
import os
import pathlib
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

# Tests never read or write the user's config file: before rotortree is
# imported (it loads the file at import), point both ways of locating it at
# an empty directory. XDG_CONFIG_HOME also covers subprocesses that drop the
# ROTORTREE_* variables to test defaults.
_CONFIG_HOME = tempfile.mkdtemp(prefix="rotortree-test-config-")
atexit.register(shutil.rmtree, _CONFIG_HOME, True)
os.environ["XDG_CONFIG_HOME"] = _CONFIG_HOME
os.environ["ROTORTREE_CONFIG"] = os.path.join(_CONFIG_HOME, "absent", "config.json")

import rotortree  # noqa: E402
from rotortree import config as rt_config  # noqa: E402


def under_asan() -> bool:
    """True when AddressSanitizer runs in this process: its runtime is
    mapped (preloaded for an instrumented extension) or the extension is
    instrumented. Tests that measure RSS or lower RLIMIT_AS skip under it."""
    if os.environ.get("ROTORTREE_UNDER_ASAN"):
        return True
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            if any("libasan" in line or "clang_rt.asan" in line for line in maps):
                return True
    except OSError:  # no /proc (macOS): the extension itself tells
        pass
    try:
        from rotortree import _rotortree_cffi
    except ImportError:
        return False
    with open(_rotortree_cffi.__file__, "rb") as module:
        return b"__asan_init" in module.read()


# The test modules read ROTORTREE_UNDER_ASAN when imported, and subprocesses
# inherit it: detecting ASan here means the documented command needs no
# extra variable.
if under_asan():
    os.environ["ROTORTREE_UNDER_ASAN"] = "1"

DATA = pathlib.Path(__file__).resolve().parent / "data"
VECTORS = json.loads((DATA / "rotortree-0.15.json").read_text())


def vectors():
    return VECTORS["vectors"]


def kernels():
    return rt_config.available_kernels()


@pytest.fixture(autouse=True)
def restore_configuration():
    """Each test starts from, and leaves behind, the configuration in force
    at session start, so a test that changes threads or kernels cannot leak
    its setting into the next."""
    before = rotortree.pool_info()
    yield
    rotortree.configure(
        num_threads=before["num_threads"],
        parallel_threshold=before["parallel_threshold"],
        par_chunk_size=before["par_chunk_size"],
        simd=before["simd"],
    )


@pytest.fixture
def frozen_heap():
    """For tests that call gc.collect() many times (to run a finalizer, or
    before counting descriptors): collect once, then freeze every object
    alive, so each later collection scans only what the test creates, not
    the whole session's heap (a full collection costs about 0.1 s here).
    Stricter, never laxer: frozen objects are never freed during the test,
    and what the test creates is still collected as before."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
