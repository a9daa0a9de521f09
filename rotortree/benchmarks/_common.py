"""Shared helpers for the benchmarks: timing, machine facts, output files,
progress reporting and optional plotting."""

from __future__ import annotations

import json
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

# Re-exported for the benchmarks: shared with the command line and defined in
# a neutral module so that neither imports the other.
from .._util import (  # noqa: F401
    Progress, deterministic_leaves, int_at_least, non_negative_int, positive_int)


def time_runs(run: Callable[[], object], repeat: int, warmup: int = 1,
              setup: Callable[[], object] = lambda: None) -> List[float]:
    """Seconds per run; `setup` runs untimed before each run."""
    for _ in range(warmup):
        setup()
        run()
    samples = []
    for _ in range(repeat):
        setup()
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples


def median(samples: Sequence[float]) -> float:
    return float(statistics.median(samples))


def cpu_model() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def machine() -> Dict[str, Any]:
    import psutil

    import rotortree

    info = rotortree.pool_info()
    return {
        "cpu": cpu_model(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "available_cpus": info["available_cpus"],
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "simd": info["simd"],
        "available_simd": info["available_simd"],
        "rotortree": rotortree.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def write_results_to(directory: pathlib.Path, name: str, payload: Mapping[str, object],
                     markdown: str) -> pathlib.Path:
    """Write DIRECTORY/NAME.json and DIRECTORY/NAME.md (creating the
    directory); returns the Markdown path."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    path = directory / f"{name}.md"
    path.write_text(markdown + "\n")
    return path


_PLOT_NOTE_SHOWN = False


def load_pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend, or None (with a
    note on stderr, once) when matplotlib, an optional dependency, is missing."""
    global _PLOT_NOTE_SHOWN
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _PLOT_NOTE_SHOWN:
            print("note: matplotlib is not installed, skipping the plots "
                  "(pip install 'rotortree[bench]' or pip install matplotlib)",
                  file=sys.stderr)
            _PLOT_NOTE_SHOWN = True
        return None
    return plt


def write_json(path: pathlib.Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def fmt_rate(per_s: float) -> str:
    return f"{per_s / 1e6:.1f}M" if per_s >= 1e6 else f"{per_s / 1e3:.0f}k"


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def stderr(message: str, enabled: bool = True) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


__all__ = ["deterministic_leaves", "int_at_least", "positive_int", "non_negative_int", "time_runs", "median", "machine", "cpu_model",
           "write_results_to", "load_pyplot", "Progress", "write_json", "fmt_rate",
           "fmt_ms", "stderr"]
