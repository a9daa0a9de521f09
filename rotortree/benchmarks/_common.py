"""Shared helpers for the benchmarks: timing, machine facts, output files,
progress reporting and optional plotting."""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence


def int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: a base-10 integer (underscores allowed) >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


# The sections of ``rotortree bench``, in the order they run (here so that the
# CLI can list them without importing the benchmarks).
BENCH_SECTIONS = ("scaling", "kernels", "operations", "proofs", "growth", "durability")

positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


def deterministic_leaves(count: int, seed: bytes = b"rotortree demo") -> bytes:
    """``count`` pseudo-random 32-byte leaves from BLAKE3's extendable output:
    the same bytes on every machine, generated in one fast call."""
    import blake3

    leaves: bytes = blake3.blake3(seed).digest(length=32 * count)
    return leaves


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


class Progress:
    """A progress bar on stderr: tqdm when it is installed, otherwise plain
    lines, at most one every few seconds, so logs stay short. ``total`` may
    be None when the amount of work is unknown (a stream). Without tqdm and
    ``announce``, work that ends within the first interval prints nothing."""

    LINE_INTERVAL_S = 5.0

    def __init__(self, total: Optional[float], description: str, enabled: bool = True,
                 unit: str = "step", unit_scale: bool = False,
                 announce: bool = True) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled
        self.unit = unit
        self.done = 0.0
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._printed = False
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            if announce:
                self._line("started")
        else:
            self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
                             leave=True, dynamic_ncols=True, unit_scale=unit_scale,
                             unit_divisor=1024 if unit == "B" else 1000)

    def _line(self, text: str) -> None:
        print(f"{self.description}: {text}", file=sys.stderr, flush=True)
        self._printed = True

    def _amount(self) -> str:
        if self.unit == "B":
            return f"{self.done / 2**20:,.0f} MiB"
        return f"{self.done:,.0f} {self.unit}"

    def update(self, amount: float = 1) -> None:
        self.done += amount
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(amount)
            return
        now = time.monotonic()
        if now - self._last_line >= self.LINE_INTERVAL_S:
            self._line(f"{self.done / self.total:.0%}" if self.total else self._amount())
            self._last_line = now

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._printed:
            self._line(f"done in {time.monotonic() - self._started:.0f} s")
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


__all__ = ["deterministic_leaves", "time_runs", "median", "machine", "cpu_model",
           "write_results_to", "load_pyplot", "Progress", "write_json", "fmt_rate",
           "fmt_ms", "stderr"]
