"""Statistics and verdicts shared by the benchmarks.

Every timed figure is summarised as minimum, median and interquartile range
over its repetitions. Two configurations measured in the same repetition
(interleaved, so the same machine state hits both) are compared through
their per-repetition ratios: the report gives the median ratio and the 90%
interval of those ratios (5th to 95th percentile), which shows how much
one repetition's comparison can differ from another's on a noisy machine.

A target is judged against such an interval: met when the whole interval is
on the right side of the goal, not met when the whole interval is on the
wrong side, inconclusive when it straddles the goal. A target the run cannot
measure is "not measured", never "met".
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

MET = "met"
NOT_MET = "not met"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured"
INTERVAL = 0.90


def quantile(samples: Sequence[float], fraction: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("quantile of no samples")
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def summary(samples: Sequence[float]) -> Dict[str, float]:
    """min, median, quartiles and IQR of the samples, in their unit."""
    q1, q3 = quantile(samples, 0.25), quantile(samples, 0.75)
    return {"n": len(samples), "min": float(min(samples)), "median": quantile(samples, 0.5),
            "q1": q1, "q3": q3, "iqr": q3 - q1, "max": float(max(samples))}


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> List[float]:
    """numerator_i / denominator_i for each repetition i measured in both."""
    if len(numerators) != len(denominators):
        raise ValueError(f"unpaired samples: {len(numerators)} and {len(denominators)}")
    return [float(a) / float(b) for a, b in zip(numerators, denominators)]


def ratio_summary(ratios: Sequence[float]) -> Dict[str, float]:
    """Median ratio, its 90% interval (5th-95th percentile) and the share of
    repetitions with a ratio above 1."""
    tail = (1 - INTERVAL) / 2
    return {"n": len(ratios), "median": quantile(ratios, 0.5),
            "low": quantile(ratios, tail), "high": quantile(ratios, 1 - tail),
            "above_one": sum(r > 1 for r in ratios) / len(ratios)}


def verdict(low: float, high: float, goal: float, at_least: bool) -> str:
    """met / not met / inconclusive for an interval against a goal:
    ``at_least`` asks for values >= goal, otherwise <= goal."""
    if low > high:
        raise ValueError(f"interval [{low}, {high}] is reversed")
    if at_least:
        return MET if low >= goal else NOT_MET if high < goal else INCONCLUSIVE
    return MET if high <= goal else NOT_MET if low > goal else INCONCLUSIVE


def target(name: str, measured: str, interval: Optional[Sequence[float]] = None,
           goal: Optional[float] = None, at_least: bool = True,
           reason: str = "") -> Dict[str, Any]:
    """A target row for the report, judged by :func:`verdict`; without an
    interval it is "not measured" and ``reason`` says why."""
    if interval is None or goal is None:
        return {"target": name, "measured": measured or reason, "status": NOT_MEASURED,
                "interval": None, "goal": goal}
    low, high = float(interval[0]), float(interval[1])
    return {"target": name, "measured": measured, "status": verdict(low, high, goal, at_least),
            "interval": [low, high], "goal": goal}


def fmt_interval(stats: Dict[str, float], digits: int = 2, suffix: str = "x") -> str:
    return (f"{stats['median']:.{digits}f}{suffix} "
            f"[{stats['low']:.{digits}f}-{stats['high']:.{digits}f}]")


def fmt_time(seconds: float) -> str:
    """A duration with a unit that keeps 3 significant digits readable."""
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        ms = seconds * 1e3
        return f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"
    us = seconds * 1e6
    return f"{us:.0f} µs" if us >= 100 else f"{us:.1f} µs" if us >= 10 else f"{us:.2f} µs"


def fmt_summary(stats: Dict[str, float], scale: float = 1.0) -> str:
    """'median (min m, IQR i)' for samples in seconds times ``scale``."""
    return (f"{fmt_time(stats['median'] * scale)} (min {fmt_time(stats['min'] * scale)}, "
            f"IQR {fmt_time(stats['iqr'] * scale)})")


__all__ = ["quantile", "summary", "paired_ratios", "ratio_summary", "verdict", "target",
           "fmt_interval", "fmt_time", "fmt_summary", "MET", "NOT_MET", "INCONCLUSIVE",
           "NOT_MEASURED", "INTERVAL"]
