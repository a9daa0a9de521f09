"""Thread pool and SIMD kernel configuration.

Every setting comes from the first of these that gives it:

1. an argument to :func:`configure` (source ``"argument"``);
2. an environment variable, read at import (source ``"environment"``):

   ========================================  ==========================================
   ``ROTORTREE_NUM_THREADS``                 threads that hash (the caller included)
   ``ROTORTREE_PARALLEL_THRESHOLD``          parents in a level before the pool is used
   ``ROTORTREE_PAR_CHUNK_SIZE``              parents per work unit
   ``ROTORTREE_SIMD``                        ``auto``, ``portable``, ``sse41`` or ``avx2``
   ========================================  ==========================================

3. the config file, read at import (source ``"config file"``): a JSON object
   with any of the keys ``num_threads``, ``parallel_threshold``,
   ``par_chunk_size`` and ``simd`` (``null`` = not set), plus ``tuned``, free
   metadata that ``rotortree tune`` writes and the loader ignores. It lives at
   ``$ROTORTREE_CONFIG`` if set, else ``$XDG_CONFIG_HOME/rotortree/config.json``,
   else ``~/.config/rotortree/config.json``; a missing file is no error;
4. the default (source ``"default"``).

An invalid environment variable or config file makes ``import rotortree`` fail
with a message naming the variable or the file.

Without any setting the thread count is the number of CPUs this process may
really use: its CPU affinity, further capped by a cgroup CPU quota when one is
set (containers), never the machine's total.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any, Dict, List, Mapping, Optional, TypedDict

from ._native import check, ffi, lib
from .errors import ArgumentTypeError, InvalidArgumentError, UnsupportedKernelError


DEFAULT_PARALLEL_THRESHOLD = 1024
DEFAULT_PAR_CHUNK_SIZE = 64
MAX_THREADS = 1024

SETTINGS = ("num_threads", "parallel_threshold", "par_chunk_size", "simd")
ENVIRONMENT_VARIABLES: Dict[str, str] = {
    "num_threads": "ROTORTREE_NUM_THREADS",
    "parallel_threshold": "ROTORTREE_PARALLEL_THRESHOLD",
    "par_chunk_size": "ROTORTREE_PAR_CHUNK_SIZE",
    "simd": "ROTORTREE_SIMD",
}
CONFIG_ENV = "ROTORTREE_CONFIG"
CONFIG_METADATA_KEY = "tuned"

KERNELS: Dict[str, int] = {
    "portable": lib.RT_KERNEL_PORTABLE,
    "sse41": lib.RT_KERNEL_SSE41,
    "avx2": lib.RT_KERNEL_AVX2,
}

# Where each effective value came from, for pool_info().
_sources: Dict[str, str] = {}
# The config file applied at import, if one existed.
_loaded_config_file: Optional[str] = None


class PoolInfo(TypedDict):
    num_threads: int
    parallel_threshold: int
    par_chunk_size: int
    simd: str
    available_simd: List[str]
    threads_started: int
    available_cpus: int
    sources: Dict[str, str]
    config_file: Optional[str]


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


def available_kernels() -> List[str]:
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


def _configure(num_threads: object, parallel_threshold: object, par_chunk_size: object,
               simd: object, source: str) -> None:
    config = ffi.new("struct rt_pool_config *")
    lib.rt_pool_get_config(config)
    updates: Dict[str, object] = {}
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


def pool_info() -> PoolInfo:
    """The settings in force, where each came from, and the config file read."""
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
        "sources": {key: _sources.get(key, "default") for key in SETTINGS},
        "config_file": _loaded_config_file,
    }


def pool_stats() -> Dict[str, int]:
    """Pool counters since start: jobs, tasks, steals, parks, idle_ns."""
    stats = ffi.new("struct rt_pool_stats *")
    lib.rt_pool_get_stats(stats)
    return {
        field: int(getattr(stats, field))
        for field in ("jobs", "tasks", "steals", "parks", "idle_ns", "threads_started")
    }


def memory_stats() -> Dict[str, int]:
    """Bytes the C core holds for tree levels, process-wide.

    ``chunk_bytes``: all level storage alive (slabs), including
    ``free_chunk_bytes`` of freed chunks kept in them for reuse (the copies
    dropped snapshots held, for instance); ``slabs``: how many slabs;
    ``cached_bytes``: freed large mappings kept for new trees, up to
    ``ROTORTREE_MEMORY_CACHE_MB``.
    """
    stats = ffi.new("struct rt_memory_stats *")
    lib.rt_memory_get_stats(stats)
    return {
        field: int(getattr(stats, field))
        for field in ("chunk_bytes", "free_chunk_bytes", "slabs", "cached_bytes")
    }


# -- environment and config file ---------------------------------------------


def config_file_path(environ: Optional[Mapping[str, str]] = None) -> Optional[pathlib.Path]:
    """Where the config file is looked for (it need not exist); None when
    there is no home directory to put it in."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(CONFIG_ENV, "").strip()
    if explicit:
        return pathlib.Path(explicit).expanduser()
    xdg = environ.get("XDG_CONFIG_HOME", "").strip()
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return pathlib.Path(xdg) / "rotortree" / "config.json"
    home = environ.get("HOME", "").strip()
    # A caller's own mapping without HOME must not fall back to the real home.
    if not home and environ is os.environ:
        try:
            home = str(pathlib.Path.home())
        except (RuntimeError, KeyError):
            return None
    if not home:
        return None
    return pathlib.Path(home) / ".config" / "rotortree" / "config.json"


def _config_error(path: pathlib.Path, message: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"bad rotortree config file {path}: {message} (fix or delete the file)"
    )


def read_config_file(path: pathlib.Path) -> Optional[Dict[str, Any]]:
    """The settings in ``path`` (keys with ``null`` values left out), or None
    if the file does not exist. Structure is checked here, values when they
    are applied."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise _config_error(path, f"cannot be read ({reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise _config_error(
            path, f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise _config_error(path, f"expected a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SETTINGS) - {CONFIG_METADATA_KEY})
    if unknown:
        raise _config_error(
            path, f"unknown key(s) {', '.join(map(repr, unknown))}; "
                  f"expected {', '.join(SETTINGS)}"
        )
    return {key: data[key] for key in SETTINGS if data.get(key) is not None}


def write_config_file(settings: Mapping[str, object],
                      path: Optional[pathlib.Path] = None,
                      metadata: Optional[Mapping[str, object]] = None) -> pathlib.Path:
    """Store ``settings`` in the config file (merged over what it holds),
    atomically; returns the path. Values are validated first."""
    if path is None:
        path = config_file_path()
        if path is None:
            raise InvalidArgumentError(
                f"no home directory for the config file; set {CONFIG_ENV}")
    for key, value in settings.items():
        if key not in SETTINGS:
            raise InvalidArgumentError(f"unknown setting {key!r}; expected {', '.join(SETTINGS)}")
        if key == "simd":
            _kernel_number(value)
        else:
            _positive_int(key, value, MAX_THREADS if key == "num_threads" else None)
    stored: Dict[str, Any] = dict(read_config_file(path) or {})
    stored.update(settings)
    if metadata is not None:
        stored[CONFIG_METADATA_KEY] = dict(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a crash never leaves a half-written file that
    # would make every later import fail.
    fd, temporary = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(stored, stream, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def _env_int(environ: Mapping[str, str], name: str) -> Optional[int]:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise InvalidArgumentError(f"{name}={raw!r} is not an integer") from None


def apply_environment(environ: Optional[Mapping[str, str]] = None) -> None:
    """Apply defaults, then the config file, then ``ROTORTREE_*`` variables;
    run once at import (and by tests with a fake ``environ``)."""
    global _loaded_config_file
    environ = os.environ if environ is None else environ
    _configure(available_cpus(), DEFAULT_PARALLEL_THRESHOLD, DEFAULT_PAR_CHUNK_SIZE,
               "auto", "default")

    path = config_file_path(environ)
    _loaded_config_file = None
    settings = read_config_file(path) if path is not None else None
    if path is not None and settings is not None:
        try:
            _configure(settings.get("num_threads"), settings.get("parallel_threshold"),
                       settings.get("par_chunk_size"), settings.get("simd"), "config file")
        except (InvalidArgumentError, ArgumentTypeError, UnsupportedKernelError) as error:
            raise type(error)(
                f"bad rotortree config file {path}: {error} (fix or delete the file)"
            ) from None
        _loaded_config_file = str(path)

    try:
        env_threads = _env_int(environ, "ROTORTREE_NUM_THREADS")
        env_threshold = _env_int(environ, "ROTORTREE_PARALLEL_THRESHOLD")
        env_chunk = _env_int(environ, "ROTORTREE_PAR_CHUNK_SIZE")
        _configure(env_threads, env_threshold, env_chunk, None, "environment")
        simd = environ.get("ROTORTREE_SIMD", "").strip()
        if simd:
            _configure(None, None, None, simd, "environment")
    except (InvalidArgumentError, UnsupportedKernelError) as error:
        raise type(error)(f"bad rotortree environment setting: {error}") from None
