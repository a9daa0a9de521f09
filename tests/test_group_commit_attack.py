"""Attacks on group commit's C gate (rt_sync_gate_*, issue 20): a wall
clock stepped back while callers wait, asynchronous exceptions thrown at
random into many writers, close(), fork and a failing fsync while
followers wait at the gate. Whatever happens, no caller returns before an
fsync that covers its entry completed, and nobody is left waiting."""

from __future__ import annotations

import ctypes
import errno
import os
import random
import subprocess
import sys
import textwrap
import threading

import pytest

from c_build import compiler
from rotortree import ClosedTreeError, DurabilityError, FlushPolicy
from rotortree.storage import io as storage_io
from test_durable import leaf, manual
from test_group_commit import new_gate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = {"record": FlushPolicy.manual(), "wal": FlushPolicy.manual(acknowledge="wal")}
JOIN = 120   # seconds: only a stranded thread takes that long

# Reads of the wall clock answer a day ahead: what a caller that computed
# its deadline just before the system time was stepped back a day sees.
# Everything else (the monotonic clock, the kernel's timers) is untouched.
_WALL_CLOCK_SHIM = r"""
#define _GNU_SOURCE
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
int clock_gettime(clockid_t id, struct timespec *ts)
{
    long rc = syscall(SYS_clock_gettime, id, ts);
    if (rc == 0 && id == CLOCK_REALTIME)
        ts->tv_sec += 86400;
    return (int)rc;
}
"""

_GATE_WAITS = textwrap.dedent("""
    import threading, time
    from rotortree._native import ffi, lib
    gate = ffi.gc(lib.rt_sync_gate_new(0, 10**9), lib.rt_sync_gate_free)
    assert lib.rt_sync_gate_wait(gate, 1, 0) == lib.RT_SYNC_LEAD
    out = []
    # A follower's 50 ms wait while the round runs times out.
    follower = threading.Thread(target=lambda: out.append(lib.rt_sync_gate_wait(gate, 1, 50)))
    follower.start(); follower.join()
    assert out == [lib.RT_SYNC_TIMEOUT], out
    # A round of 0.2 s with one follower waiting as it ends ...
    follower = threading.Thread(target=lambda: out.append(lib.rt_sync_gate_wait(gate, 1, 60000)))
    follower.start()
    while lib.rt_sync_gate_waiting(gate) < 1:
        time.sleep(0.001)
    time.sleep(0.2)
    lib.rt_sync_gate_end(gate, 1)
    follower.join()
    # ... makes the next leader gather for one follower, who never comes:
    # it leads once half the last round (about 0.1 s) has passed.
    assert lib.rt_sync_gate_wait(gate, 2, 60000) == lib.RT_SYNC_LEAD
    lib.rt_sync_gate_end(gate, 2)
    print("gate waits returned")
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="the wall-clock shim is an LD_PRELOAD library (Linux)")
def test_gate_waits_ignore_a_wall_clock_step(tmp_path):
    """The gate's timed waits (a follower's 50 ms, a new leader's gathering)
    end on time when the system time is stepped back while they wait: on
    a wall-clock deadline (the old gate) each would last the step, here a
    day, and the subprocess is killed after two minutes."""
    cc = compiler()
    if cc is None:
        pytest.skip("no C compiler (gcc, cc or clang) on PATH to build the clock shim")
    src = tmp_path / "shim.c"
    src.write_text(_WALL_CLOCK_SHIM)
    shim = tmp_path / "shim.so"
    subprocess.run(cc + ["-shared", "-fPIC", str(src), "-o", str(shim)], check=True,
                   capture_output=True, timeout=JOIN)
    env = dict(os.environ, LD_PRELOAD=str(shim), PYTHONPATH=ROOT)
    try:
        run = subprocess.run([sys.executable, "-c", _GATE_WAITS], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=JOIN)
    except subprocess.TimeoutExpired:
        pytest.fail("a gate wait lasted as long as the wall clock's step")
    assert run.returncode == 0, run.stderr
    assert "gate waits returned" in run.stdout
