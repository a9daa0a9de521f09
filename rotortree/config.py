"""Thread pool and SIMD kernel configuration.

Defaults come from the environment when the package is imported:

========================================  ==========================================
``ROTORTREE_NUM_THREADS``                 threads that hash (the caller included)
``ROTORTREE_PARALLEL_THRESHOLD``          parents in a level before the pool is used
``ROTORTREE_PAR_CHUNK_SIZE``              parents per work unit
``ROTORTREE_SIMD``                        ``auto``, ``portable``, ``sse41`` or ``avx2``
========================================  ==========================================

Without ``ROTORTREE_NUM_THREADS`` the thread count is the number of CPUs this
process may really use: its CPU affinity, further capped by a cgroup CPU quota
when one is set (containers), never the machine's total.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Dict, Optional, Union

from ._native import check, ffi, lib
from .errors import ArgumentTypeError, InvalidArgumentError, UnsupportedKernelError

DEFAULT_PARALLEL_THRESHOLD = 1024
DEFAULT_PAR_CHUNK_SIZE = 64
MAX_THREADS = 1024

KERNELS: Dict[str, int] = {
    "portable": lib.RT_KERNEL_PORTABLE,
    "sse41": lib.RT_KERNEL_SSE41,
    "avx2": lib.RT_KERNEL_AVX2,
}

# Where each effective value came from, for pool_info().
_sources: Dict[str, str] = {}


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import psutil

        affinity = psutil.Process().cpu_affinity()
        if affinity:
            return len(affinity)
        return psutil.cpu_count(logical=True) or 1
    except Exception:  # psutil lacks affinity on some platforms
        return os.cpu_count() or 1


def _cgroup_cpu_quota(root: pathlib.Path = pathlib.Path("/sys/fs/cgroup")) -> Optional[float]:
    """CPUs granted by a cgroup quota, or None when no quota applies."""
    v2 = root / "cpu.max"
    try:
        quota, period = v2.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            return int(quota) / int(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


def available_cpus() -> int:
    """CPUs this process may use: affinity, capped by a cgroup quota."""
    cpus = _affinity_cpus()
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _positive_int(name: str, value: object, upper: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 1 or (upper is not None and value > upper):
        bound = f"1..{upper}" if upper is not None else ">= 1"
        raise InvalidArgumentError(f"{name} must be {bound}, got {value}")
    if value >= 1 << 64:
        raise InvalidArgumentError(f"{name} must be below 2**64, got {value}")
    return value


def _kernel_number(simd: object) -> int:
    if not isinstance(simd, str):
        raise ArgumentTypeError(f"simd must be a str, not {type(simd).__name__}")
    name = simd.strip().lower()
    if name == "auto":
        return best_kernel_number()
    if name not in KERNELS:
        raise InvalidArgumentError(
            f"unknown SIMD kernel {simd!r}: expected auto, {', '.join(KERNELS)}"
        )
    number = KERNELS[name]
    if not lib.rt_kernel_available(number):
        raise UnsupportedKernelError(
            f"SIMD kernel {name!r} is not supported on this CPU; available: "
            f"{', '.join(available_kernels())}"
        )
    return number


def available_kernels() -> list:
    return [name for name, number in KERNELS.items() if lib.rt_kernel_available(number)]


def best_kernel_number() -> int:
    return max(number for number in KERNELS.values() if lib.rt_kernel_available(number))


def configure(
    num_threads: Optional[int] = None,
    parallel_threshold: Optional[int] = None,
    par_chunk_size: Optional[int] = None,
    simd: Optional[str] = None,
) -> None:
    """Change the pool and kernel settings; ``None`` keeps a setting as it is.

    Every value is validated before anything changes. Changing ``num_threads``
    while another thread is inside a parallel insert raises
    :class:`~rotortree.PoolBusyError` and changes nothing.
    """
    _configure(num_threads, parallel_threshold, par_chunk_size, simd, "argument")


def _configure(num_threads, parallel_threshold, par_chunk_size, simd, source: str) -> None:
    config = ffi.new("struct rt_pool_config *")
    lib.rt_pool_get_config(config)
    updates = {}
    if num_threads is not None:
        config.num_threads = updates["num_threads"] = _positive_int(
            "num_threads", num_threads, MAX_THREADS
        )
    if parallel_threshold is not None:
        config.parallel_threshold = updates["parallel_threshold"] = _positive_int(
            "parallel_threshold", parallel_threshold
        )
    if par_chunk_size is not None:
        config.par_chunk_size = updates["par_chunk_size"] = _positive_int(
            "par_chunk_size", par_chunk_size
        )
    kernel = _kernel_number(simd) if simd is not None else None
    check(lib.rt_pool_configure(config), "configure")
    if kernel is not None:
        check(lib.rt_kernel_select(kernel), "configure(simd)")
        updates["simd"] = simd
    for key in updates:
        _sources[key] = source


def pool_info() -> Dict[str, Union[int, str, list, Dict[str, str]]]:
    """The settings in force and where each came from."""
    config = ffi.new("struct rt_pool_config *")
    lib.rt_pool_get_config(config)
    stats = ffi.new("struct rt_pool_stats *")
    lib.rt_pool_get_stats(stats)
    return {
        "num_threads": int(config.num_threads),
        "parallel_threshold": int(config.parallel_threshold),
        "par_chunk_size": int(config.par_chunk_size),
        "simd": ffi.string(lib.rt_kernel_name(lib.rt_kernel_active())).decode(),
        "available_simd": available_kernels(),
        "threads_started": int(stats.threads_started),
        "available_cpus": available_cpus(),
        "sources": {
            key: _sources.get(key, "default")
            for key in ("num_threads", "parallel_threshold", "par_chunk_size", "simd")
        },
    }


def pool_stats() -> Dict[str, int]:
    """Pool counters since start: jobs, tasks, steals, parks, idle_ns."""
    stats = ffi.new("struct rt_pool_stats *")
    lib.rt_pool_get_stats(stats)
    return {
        field: int(getattr(stats, field))
        for field in ("jobs", "tasks", "steals", "parks", "idle_ns", "threads_started")
    }


def _env_int(name: str) -> Optional[int]:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise InvalidArgumentError(f"{name}={raw!r} is not an integer") from None


def apply_environment() -> None:
    """Apply defaults and ``ROTORTREE_*`` variables; run once at import."""
    try:
        env_threads = _env_int("ROTORTREE_NUM_THREADS")
        env_threshold = _env_int("ROTORTREE_PARALLEL_THRESHOLD")
        env_chunk = _env_int("ROTORTREE_PAR_CHUNK_SIZE")
        _configure(available_cpus(), DEFAULT_PARALLEL_THRESHOLD, DEFAULT_PAR_CHUNK_SIZE,
                   None, "default")
        _configure(env_threads, env_threshold, env_chunk, None, "environment")
        simd = os.environ.get("ROTORTREE_SIMD", "").strip()
        if simd:
            _configure(None, None, None, simd, "environment")
    except (InvalidArgumentError, UnsupportedKernelError) as error:
        raise type(error)(f"bad rotortree environment setting: {error}") from None
