"""Facts about the machine and the process that the benchmarks record beside
their figures: load from other processes, the allocator's memory state, the
build measured, CPU flags and this machine's two-thread ceiling."""

from __future__ import annotations

import ctypes
import os
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import rotortree

from .stats import paired_ratios, ratio_summary

try:
    import resource
except ImportError:  # not on Windows; page faults are then not counted
    resource = None  # type: ignore[assignment]

# CPU flags that decide which SIMD code runs (ours and the blake3 package's).
SIMD_FLAGS = ("sse4_1", "avx2", "avx512f", "avx512vl")


def cpu_flags() -> Dict[str, bool]:
    """The SIMD_FLAGS of the first CPU in /proc/cpuinfo (all False elsewhere)."""
    flags: Set[str] = set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {flag: flag in flags for flag in SIMD_FLAGS}


def blake3_package_simd(flags: Dict[str, bool]) -> str:
    """The widest code path the blake3 package's runtime detection picks on
    these flags (it needs both avx512f and avx512vl for AVX-512)."""
    if flags.get("avx512f") and flags.get("avx512vl"):
        return "avx512"
    if flags.get("avx2"):
        return "avx2"
    return "sse41" if flags.get("sse4_1") else "portable"


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


def cpu_times() -> Tuple[float, float]:
    """(user, system) seconds of this process, all threads."""
    if resource is None:
        times = os.times()
        return times.user, times.system
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


class LoadMeter:
    """How busy the machine was with other processes while we measured: CPU
    time used by everything but this process, as a share of all CPUs."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> Tuple[float, Optional[float], Optional[float], float]:
        busy = steal = None
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
            # user nice system idle iowait irq softirq steal: busy excludes
            # idle, iowait and steal (time the hypervisor ran something else).
            busy = (sum(fields[:7]) - fields[3] - fields[4]) / tick
            steal = fields[7] / tick
        except (OSError, ValueError, IndexError):
            pass
        mine = os.times()
        return time.perf_counter(), busy, steal, mine.user + mine.system

    def report(self) -> Dict[str, Any]:
        (t0, b0, s0, m0), (t1, b1, s1, m1) = self.start, self._sample()
        cpus = os.cpu_count() or 1
        out: Dict[str, Any] = {"seconds": t1 - t0, "loadavg_end": list(os.getloadavg()),
               "own_cpu_s": m1 - m0}
        if b0 is not None and b1 is not None and s0 is not None and s1 is not None \
                and t1 > t0:
            out["other_processes_cpu_share"] = max(0.0, (b1 - b0) - (m1 - m0)) / (
                (t1 - t0) * cpus)
            out["steal_share"] = (s1 - s0) / ((t1 - t0) * cpus)
        return out


def fmt_load(load: Dict[str, Any]) -> str:
    share = load.get("other_processes_cpu_share")
    text = f"load average {load['loadavg_end'][0]:.2f}"
    if share is not None:
        text += (f", other processes used {share:.0%} and the hypervisor stole "
                 f"{load.get('steal_share', 0):.0%} of all CPUs")
    return text


def build_facts() -> Dict[str, Any]:
    """Which extension and sources were measured (read-only git queries)."""
    import hashlib
    import subprocess

    from rotortree import _native

    facts: Dict[str, Any] = {}
    # The checkout the imported package lives in, which may not be ours.
    package_root = pathlib.Path(rotortree.__file__).resolve().parent.parent
    so = getattr(_native.lib, "__file__", None) or getattr(
        sys.modules.get("rotortree._rotortree_cffi"), "__file__", None)
    if so and os.path.exists(so):
        facts["extension"] = so
        facts["extension_sha256"] = hashlib.sha256(pathlib.Path(so).read_bytes()).hexdigest()
        facts["extension_mtime"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(so)))
    try:
        def git(*argv: str) -> str:
            return subprocess.run(["git", *argv], cwd=package_root, capture_output=True,
                                  text=True, timeout=10, check=True).stdout.rstrip("\n")
        facts["git_head"] = git("rev-parse", "--short", "HEAD")
        facts["modified_sources"] = [line[3:] for line in
                                     git("status", "--porcelain", "--", "csrc").splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


class Heap:
    """Makes the memory state of a fresh tree explicit (glibc only).

    Whether a fresh tree's memory is already mapped depends on the allocator's
    history: glibc returns freed memory to the OS above a trim threshold that
    it moves by itself, and faulting 40 MB back in can double the time of a
    1M-leaf insert. So the threshold is raised once (freed memory stays
    mapped: "reused memory", the steady state of a long-running process), and
    the "fresh pages" configurations call malloc_trim(0) and empty the C
    core's cache of freed level mappings, untimed, before the tree is
    created, so that the insert faults in every page it writes (a first
    build in a new process, or a tree growing into new memory)."""

    M_TRIM_THRESHOLD = -1

    def __init__(self) -> None:
        self.controlled = False
        self._trim: Any = None
        try:
            libc = ctypes.CDLL(None)
            self._trim = libc.malloc_trim
            self.controlled = libc.mallopt(self.M_TRIM_THRESHOLD, 1 << 30) == 1
        except (OSError, AttributeError):
            pass

    def release(self) -> None:
        if self.controlled:
            self._trim(0)
        from rotortree._native import lib

        release_cached = getattr(lib, "rt_release_cached_memory", None)
        if release_cached is not None:
            release_cached()


def machine_ceiling(threads: int, repeat: int) -> Optional[Dict[str, float]]:
    """Speedup of ``threads`` independent threads over one, each hashing a
    cache-resident buffer with the blake3 package (GIL released, nothing
    shared, no memory traffic): the most any parallel code could gain on this
    machine at this moment. A VM's vCPUs can be SMT siblings or share a host
    core with other guests, so this is often below ``threads``."""
    if threads < 2:
        return None
    import threading

    import blake3

    # 1 MiB per call: cache-resident (L2/L3), and long enough (~0.3 ms) that
    # the GIL handoff between calls is noise.
    buffer = bytes(1 << 20)
    calls = 192

    def work(count: int) -> None:
        for _ in range(count):
            blake3.blake3(buffer, max_threads=1).digest()

    def timed(parallel: int) -> float:
        workers = [threading.Thread(target=work, args=(calls // parallel,))
                   for _ in range(parallel)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start

    timed(threads)  # warm-up
    one: List[float] = []
    many: List[float] = []
    for _ in range(repeat):
        one.append(timed(1))
        many.append(timed(threads))
    # Speedup per paired repetition: median and 90% interval.
    return ratio_summary(paired_ratios(one, many))


