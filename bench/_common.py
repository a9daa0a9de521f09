"""Shared helpers for the benchmarks: timing, machine facts, output files."""

from __future__ import annotations

import json
import pathlib
import platform
import statistics
import time
from typing import Callable, Dict, List

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


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


def median(samples: List[float]) -> float:
    return statistics.median(samples)


def machine() -> Dict[str, object]:
    import psutil

    import rotortree

    model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = rotortree.pool_info()
    return {
        "cpu": model,
        "logical_cpus": psutil.cpu_count(logical=True),
        "available_cpus": info["available_cpus"],
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "simd": info["simd"],
        "available_simd": info["available_simd"],
    }


def write_results(name: str, payload: Dict[str, object], markdown: str) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    path = RESULTS / f"{name}.md"
    path.write_text(markdown + "\n")
    return path


def write_results_to(directory: pathlib.Path, name: str, payload: Dict[str, object],
                     markdown: str) -> pathlib.Path:
    """Like write_results, into any directory (created if missing)."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    path = directory / f"{name}.md"
    path.write_text(markdown + "\n")
    return path


def load_pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or None (with a
    note on stderr) when matplotlib, an optional dependency, is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import sys

        print("note: matplotlib is not installed, skipping the plot "
              "(pip install matplotlib, or pip install -e '.[bench]')", file=sys.stderr)
        return None
    return plt
