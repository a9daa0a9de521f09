"""Thread pool and SIMD kernel configuration.

Every setting comes from the first of these that gives it:

1. an argument to :func:`configure` (source ``"argument"``);
2. an environment variable, read at import (source ``"environment"``):

   ========================================  ==========================================
   ``ROTORTREE_NUM_THREADS``                 threads that hash (the caller included)
   ``ROTORTREE_PARALLEL_THRESHOLD``          parents in a level before the pool is used
   ``ROTORTREE_PAR_CHUNK_SIZE``              parents per work unit
   ``ROTORTREE_SIMD``                        ``auto``, ``portable``, ``sse41``, ``avx2``,
                                             ``avx512`` (x86-64) or ``neon`` (aarch64)
   ========================================  ==========================================

   (``ROTORTREE_MEMORY_CACHE_MB``, a decimal number of MiB, is read by the C
   core itself; it is checked here too, so a bad value is reported like the
   others.)

3. the config file, read at import (source ``"config file"``): a JSON object
   with any of the keys ``num_threads``, ``parallel_threshold``,
   ``par_chunk_size`` and ``simd`` (``null`` = not set), plus ``tuned``, free
   metadata that ``rotortree tune`` writes and the loader ignores. It lives at
   ``$ROTORTREE_CONFIG`` if set, else ``$XDG_CONFIG_HOME/rotortree/config.json``,
   else ``~/.config/rotortree/config.json``; a missing file is no error;
4. the default (source ``"default"``).

A bad setting never makes ``import rotortree`` fail: an invalid environment
variable, an unknown key or invalid value in the config file, or a config file
that cannot be read or parsed is ignored (as if it were not given, so the next
source in the list applies), with a :class:`~rotortree.RotorTreeWarning`, a
warning on the ``rotortree`` logger, and a one-line message in
``pool_info()["config_errors"]``. The ``rotortree`` command refuses to run
with such settings (one line on stderr, exit status 2), except ``rotortree
config --reset`` and ``--path``, which help fix them.

Without any setting the thread count is the number of CPUs this process may
really use: its CPU affinity, further capped by a cgroup CPU quota when one is
set (containers), never the machine's total.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import stat
import tempfile
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypedDict

from ._native import check, ffi, lib
from ._validate import positive_int
from ._validate import shown as _shown
from .errors import (
    ArgumentTypeError,
    InvalidArgumentError,
    RotorTreeError,
    RotorTreeWarning,
    UnsupportedKernelError,
)


# The C pool's own defaults and limit, so the two cannot disagree.
DEFAULT_PARALLEL_THRESHOLD: int = lib.RT_POOL_DEFAULT_THRESHOLD
DEFAULT_PAR_CHUNK_SIZE: int = lib.RT_POOL_DEFAULT_CHUNK
MAX_THREADS: int = lib.RT_POOL_MAX_THREADS

SETTINGS = ("num_threads", "parallel_threshold", "par_chunk_size", "simd")
ENVIRONMENT_VARIABLES: Dict[str, str] = {
    "num_threads": "ROTORTREE_NUM_THREADS",
    "parallel_threshold": "ROTORTREE_PARALLEL_THRESHOLD",
    "par_chunk_size": "ROTORTREE_PAR_CHUNK_SIZE",
    "simd": "ROTORTREE_SIMD",
}
CONFIG_ENV = "ROTORTREE_CONFIG"
CONFIG_METADATA_KEY = "tuned"
MEMORY_CACHE_ENV = "ROTORTREE_MEMORY_CACHE_MB"
# The C core shifts the MiB count left by 20 into a size_t; csrc/level.c
# ignores larger values, and so must the check here.
MEMORY_CACHE_MAX_MB = ((1 << (8 * ffi.sizeof("size_t"))) - 1) >> 20
# A config file is a few lines; the cap keeps ROTORTREE_CONFIG=/dev/zero (or
# a huge file named by mistake) from exhausting memory at import.
CONFIG_FILE_MAX_BYTES = 1 << 20

# Libraries leave output to the application: without this, Python's
# last-resort handler would print every warning logged here a second time
# next to the RotorTreeWarning.
logger = logging.getLogger("rotortree")
logger.addHandler(logging.NullHandler())

KERNELS: Dict[str, int] = {
    "portable": lib.RT_KERNEL_PORTABLE,
    "sse41": lib.RT_KERNEL_SSE41,
    "avx2": lib.RT_KERNEL_AVX2,
    "avx512": lib.RT_KERNEL_AVX512,
    "neon": lib.RT_KERNEL_NEON,
}

# Where each effective value came from, for pool_info().
_sources: Dict[str, str] = {}
# The config file applied at import, if one existed.
_loaded_config_file: Optional[str] = None
# One line per setting ignored by the last apply_environment(), for pool_info().
_config_errors: List[str] = []


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
    config_errors: List[str]


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


def _kernel_number(simd: object) -> int:
    if not isinstance(simd, str):
        raise ArgumentTypeError(f"simd must be a str, not {type(simd).__name__}")
    name = simd.strip().lower()
    if name == "auto":
        return best_kernel_number()
    if name not in KERNELS:
        raise InvalidArgumentError(
            f"unknown SIMD kernel {_shown(simd)}: expected auto, {', '.join(KERNELS)}"
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
    *,
    num_threads: Optional[int] = None,
    parallel_threshold: Optional[int] = None,
    par_chunk_size: Optional[int] = None,
    simd: Optional[str] = None,
) -> None:
    """Change the pool and kernel settings; ``None`` keeps a setting as it is.
    Every argument is keyword-only: four optional settings in a row are
    easy to pass in the wrong order.

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
        config.num_threads = updates["num_threads"] = positive_int(
            "num_threads", num_threads, MAX_THREADS
        )
    if parallel_threshold is not None:
        config.parallel_threshold = updates["parallel_threshold"] = positive_int(
            "parallel_threshold", parallel_threshold
        )
    if par_chunk_size is not None:
        config.par_chunk_size = updates["par_chunk_size"] = positive_int(
            "par_chunk_size", par_chunk_size
        )
    kernel = _kernel_number(simd) if simd is not None else None
    check(lib.rt_pool_configure(config), "configure")
    if kernel is not None:
        check(lib.rt_kernel_select(kernel), "configure(simd)")
        updates["simd"] = simd
    for key in updates:
        _sources[key] = source


def config_errors() -> List[str]:
    """One line for each setting import ignored (as in ``pool_info()``),
    without asking the C core for the rest."""
    return list(_config_errors)


def pool_info() -> PoolInfo:
    """The settings in force, where each came from, the config file read, and
    ``config_errors``: one line for each setting ignored at import because it
    was invalid (empty when all were valid)."""
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
        "config_errors": list(_config_errors),
    }


def pool_stats() -> Dict[str, int]:
    """Pool counters since start: jobs, units, helped, parks, idle_ns.

    ``helped`` counts the units run by pool workers rather than by the
    thread that called (the rest of ``units``); ``threads_started`` is the
    workers alive now."""
    stats = ffi.new("struct rt_pool_stats *")
    lib.rt_pool_get_stats(stats)
    return {
        field: int(getattr(stats, field))
        for field in ("jobs", "units", "helped", "parks", "idle_ns", "threads_started")
    }


def memory_stats() -> Dict[str, int]:
    """Bytes the C core holds for tree levels, process-wide.

    ``chunk_bytes``: all level storage alive (slabs), including
    ``free_chunk_bytes`` of freed chunks kept in them for reuse (the copies
    dropped snapshots held, for instance) and the slab a growing level
    made ahead of its next batch (address space until that batch or the
    background pre-faulting touches it); ``slabs``: how many slabs;
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


def _shown_path(path: object) -> str:
    text = str(path)
    return text if text.isprintable() else repr(text)


def config_file_path(environ: Optional[Mapping[str, str]] = None) -> Optional[pathlib.Path]:
    """Where the config file is looked for (it need not exist); None when
    there is no home directory to put it in. Raises InvalidArgumentError
    when ``$ROTORTREE_CONFIG`` starts with ``~user`` and there is no such user."""
    environ = os.environ if environ is None else environ
    explicit = environ.get(CONFIG_ENV, "").strip()
    if explicit:
        try:
            return pathlib.Path(explicit).expanduser()
        except RuntimeError:
            raise InvalidArgumentError(
                f"{CONFIG_ENV}={_shown(explicit)}: cannot expand '~' (no such user or "
                "home directory)") from None
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
        f"bad rotortree config file {_shown_path(path)}: {message} (fix or delete the file)"
    )


def _read_config_object(path: pathlib.Path) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """(the JSON object in ``path``, None), (None, None) when there is no
    file, or (None, why it cannot be used). Never raises: it runs at import."""
    # Non-blocking, so that a FIFO named as the config file does not hang
    # the import; the fstat then refuses anything but a regular file.
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        return None, f"cannot be read ({reason})"
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            kind = "is a directory" if stat.S_ISDIR(mode) else "not a regular file"
            return None, f"cannot be read ({kind})"
        with os.fdopen(fd, "rb") as stream:
            raw = stream.read(CONFIG_FILE_MAX_BYTES + 1)
    except OSError as error:
        return None, f"cannot be read ({error.strerror or error})"
    if len(raw) > CONFIG_FILE_MAX_BYTES:
        return None, f"cannot be read (larger than {CONFIG_FILE_MAX_BYTES} bytes)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"cannot be read (not UTF-8: byte {error.start} is {raw[error.start]:#04x})"
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
    except ValueError:  # json's int() of a number longer than Python converts
        return None, "not valid JSON here: a number has too many digits"
    except RecursionError:
        return None, "not valid JSON here: nested too deeply"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    return data, None


def read_config_file(path: pathlib.Path) -> Optional[Dict[str, Any]]:
    """The settings in ``path`` (keys with ``null`` values left out), or None
    if the file does not exist; InvalidArgumentError naming the file if it
    cannot be read, is not a JSON object or has unknown keys. Structure is
    checked here, values when they are applied."""
    data, reason = _read_config_object(path)
    if reason is not None:
        raise _config_error(path, reason)
    if data is None:
        return None
    unknown = sorted(set(data) - set(SETTINGS) - {CONFIG_METADATA_KEY})
    if unknown:
        raise _config_error(
            path, f"unknown key(s) {', '.join(map(_shown, unknown))}; "
                  f"expected {', '.join(SETTINGS)}"
        )
    return {key: data[key] for key in SETTINGS if data.get(key) is not None}


def _check_setting(key: str, value: object) -> object:
    """``value`` if it is valid for ``key``; the error configure() would raise otherwise."""
    if key == "simd":
        _kernel_number(value)
        return value
    return positive_int(key, value, MAX_THREADS if key == "num_threads" else None)


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
        _check_setting(key, value)
    stored: Dict[str, Any] = dict(read_config_file(path) or {})
    stored.update(settings)
    if metadata is not None:
        stored[CONFIG_METADATA_KEY] = dict(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a crash never leaves a half-written file (which
    # every later import would have to ignore).
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


def _parse_int(text: str) -> int:
    try:
        return int(text, 10)
    except ValueError:
        digits = text.lstrip("+-")
        if digits.isascii() and digits.isdigit():  # past Python's int() digit limit
            raise InvalidArgumentError(f"a {len(digits)}-digit integer is out of range") from None
        raise InvalidArgumentError("not an integer") from None


def _file_settings(path: pathlib.Path, problems: List[str]) -> Optional[Dict[str, object]]:
    """The valid settings of the config file, or None if there is no usable
    file; each thing ignored is added to ``problems``."""
    data, reason = _read_config_object(path)
    if reason is not None:
        problems.append(f"config file {_shown_path(path)} ignored: {reason}")
    if data is None:
        return None
    for key in sorted(set(data) - set(SETTINGS) - {CONFIG_METADATA_KEY}):
        problems.append(f"config file {_shown_path(path)}: unknown key {_shown(key)} ignored "
                        f"(expected {', '.join(SETTINGS)})")
    settings: Dict[str, object] = {}
    for key in SETTINGS:
        value = data.get(key)
        if value is not None:
            try:
                settings[key] = _check_setting(key, value)
            except RotorTreeError as error:
                problems.append(f"config file {_shown_path(path)}: {key}={_shown(value)} "
                                f"ignored: {error}")
    return settings


def _environment_settings(environ: Mapping[str, str], problems: List[str]) -> Dict[str, object]:
    settings: Dict[str, object] = {}
    for key in SETTINGS:
        name = ENVIRONMENT_VARIABLES[key]
        raw = environ.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = raw.strip() if key == "simd" else _parse_int(raw.strip())
            settings[key] = _check_setting(key, value)
        except RotorTreeError as error:
            problems.append(f"{name}={_shown(raw)} ignored: {error}")
    return settings


def _memory_cache_problem(environ: Mapping[str, str]) -> Optional[str]:
    """Why the C core ignores ``ROTORTREE_MEMORY_CACHE_MB``, or None. The
    rule is the one csrc/level.c applies: ASCII digits between optional
    C-locale whitespace, at most MEMORY_CACHE_MAX_MB."""
    raw = environ.get(MEMORY_CACHE_ENV)
    text = "" if raw is None else raw.strip(" \t\n\v\f\r")
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        reason = "not a non-negative integer"
    elif len(text.lstrip("0")) > 20 or int(text) > MEMORY_CACHE_MAX_MB:
        reason = f"more than {MEMORY_CACHE_MAX_MB} MiB"
    else:
        return None
    return f"{MEMORY_CACHE_ENV}={_shown(raw)} ignored: {reason} (the default, 256 MiB, applies)"


def _apply(settings: Mapping[str, object], source: str, problems: List[str]) -> None:
    try:
        _configure(settings.get("num_threads"), settings.get("parallel_threshold"),
                   settings.get("par_chunk_size"), settings.get("simd"), source)
    except RotorTreeError as error:  # validated already: only a failing C core gets here
        problems.append(f"{source} settings not applied: {error}")


def apply_environment(environ: Optional[Mapping[str, str]] = None, *,
                      warn: bool = True) -> List[str]:
    """Apply defaults, then the config file, then ``ROTORTREE_*`` variables;
    run once at import (and by tests with a fake ``environ``).

    Never raises because of a setting: whatever is invalid is ignored, so the
    next source applies. Returns one line per ignored thing (also kept for
    ``pool_info()["config_errors"]``); with ``warn`` each is also issued as a
    :class:`~rotortree.RotorTreeWarning` and logged on the ``rotortree`` logger.
    """
    global _loaded_config_file
    environ = os.environ if environ is None else environ
    problems: List[str] = []
    _configure(min(available_cpus(), MAX_THREADS), DEFAULT_PARALLEL_THRESHOLD,
               DEFAULT_PAR_CHUNK_SIZE, "auto", "default")

    _loaded_config_file = None
    try:
        path = config_file_path(environ)
    except InvalidArgumentError as error:
        problems.append(f"{error}; no config file read")
        path = None
    if path is not None:
        file_settings = _file_settings(path, problems)
        if file_settings is not None:
            _apply(file_settings, "config file", problems)
            _loaded_config_file = str(path)
    _apply(_environment_settings(environ, problems), "environment", problems)
    memory_cache = _memory_cache_problem(environ)
    if memory_cache is not None:
        problems.append(memory_cache)

    _config_errors[:] = problems
    if warn:
        for problem in problems:
            # stacklevel 3: the line that imported rotortree (importlib's
            # frames are skipped), which is where a user looks.
            warnings.warn(problem, RotorTreeWarning, stacklevel=3)
            logger.warning("%s", problem)
    return list(problems)
