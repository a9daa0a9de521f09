"""``rotortree tune``: measure this machine and recommend pool settings.

The Rust crate lists an "adaptive threshold" as future work; this is the
measured version of it. Three phases, each measuring every candidate in the
same run, round-robin (order rotated per repetition, one untimed warm-up
repetition), medians:

1. ``num_threads``: 1 .. the CPUs this process may use.
2. ``par_chunk_size`` (parents per work unit), with the best thread count.
3. ``parallel_threshold`` (parents in a level before the pool is used),
   with the best thread count and chunk size.

The workloads are those of a service: one large batch into a fresh tree, and
batches of several sizes appended to a pre-filled tree (sizes chosen so the
first level above the leaves spans the threshold candidates). A candidate's
score is the geometric mean, over the workloads, of its median time divided
by the best candidate's median for that workload (1.0 = fastest
everywhere). The default value is kept unless another beats it by more than
``margin`` (2%): smaller differences are noise on a shared machine.
With one thread the pool is never used, so threshold and chunk size keep
their defaults.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Any, Dict, List, Optional, Sequence

import rotortree
from rotortree.config import DEFAULT_PAR_CHUNK_SIZE, DEFAULT_PARALLEL_THRESHOLD

from ._common import Progress, cpu_model, deterministic_leaves, fmt_ms, median
from .environment import Heap, LoadMeter

THRESHOLDS = (256, 512, 1024, 2048, 4096, 8192, 16384)
CHUNK_SIZES = (16, 32, 64, 128, 256)
# Leaves already in the tree before an appended batch: not a multiple of any
# arity's power, so batches start mid-group as they do in a live tree.
BASE_LEAVES = 65_537

Setting = Dict[str, int]


def thread_candidates(cpus: int) -> List[int]:
    if cpus <= 8:
        return list(range(1, cpus + 1))
    counts = [1]
    while counts[-1] * 2 < cpus:
        counts.append(counts[-1] * 2)
    return counts + [cpus]


class Workloads:
    """One large batch into a fresh tree, and appended batches of several
    sizes; every candidate runs exactly the same calls."""

    def __init__(self, arity: int, large_leaves: int, batch_sizes: Sequence[int]) -> None:
        self.arity = arity
        self.large = deterministic_leaves(large_leaves, b"tune large")
        self.base = deterministic_leaves(BASE_LEAVES, b"tune base")
        self.batches = {size: deterministic_leaves(size, b"tune batch") for size in batch_sizes}
        self.warm = deterministic_leaves(1 << 15, b"tune warm-up")

    def all_names(self) -> List[str]:
        return [f"{len(self.large) // 32:,} leaves, fresh tree"] + [
            f"{size:,} leaves appended" for size in self.batches]

    def run(self, name: str) -> float:
        """Seconds of the one timed call of workload ``name`` (setup untimed)."""
        if name.endswith("fresh tree"):
            tree = rotortree.LeanIMT(self.arity)
            data = self.large
        else:
            size = int(name.split()[0].replace(",", ""))
            tree = rotortree.LeanIMT(self.arity)
            tree.insert_many(self.base)
            data = self.batches[size]
        start = time.perf_counter()
        tree.insert_many(data)
        return time.perf_counter() - start


def apply(setting: Setting, warm: bytes, arity: int) -> None:
    rotortree.configure(num_threads=setting["num_threads"],
                        parallel_threshold=setting["parallel_threshold"],
                        par_chunk_size=setting["par_chunk_size"])
    if setting["num_threads"] > 1:
        # Start the workers untimed: thread creation is a one-off cost.
        rotortree.compute_root(warm, arity)


# Appended batches take well under a millisecond, where a scheduler hiccup
# on a shared machine is as long as the call: they get more samples.
APPENDED_RUNS_PER_REPETITION = 5


def measure(candidates: List[Setting], workloads: Workloads, names: List[str],
            repeat: int, progress: Progress) -> List[Dict[str, List[float]]]:
    samples: List[Dict[str, List[float]]] = [{n: [] for n in names} for _ in candidates]
    for rep in range(-1, repeat):  # rep -1: untimed warm-up
        order = list(range(len(candidates)))
        shift = max(rep, 0) % len(order)
        for index in order[shift:] + order[:shift]:
            apply(candidates[index], workloads.warm, workloads.arity)
            for name in names:
                runs = 1 if name.endswith("fresh tree") else APPENDED_RUNS_PER_REPETITION
                for _ in range(runs):
                    seconds = workloads.run(name)
                    if rep >= 0:
                        samples[index][name].append(seconds)
        progress.update()
    return samples


def score(samples: List[Dict[str, List[float]]], names: List[str]) -> List[float]:
    medians = [{n: median(s[n]) for n in names} for s in samples]
    best = {n: min(m[n] for m in medians) for n in names}
    return [math.exp(sum(math.log(m[n] / best[n]) for n in names) / len(names))
            for m in medians]


def choose(values: List[int], scores: List[float], default: int, margin: float) -> int:
    best = min(range(len(values)), key=lambda i: scores[i])
    if default in values and scores[values.index(default)] <= scores[best] * (1 + margin):
        return default
    return values[best]


def tune(arity: int = 4, quick: bool = False, margin: float = 0.02,
         show_progress: bool = True, large_leaves: Optional[int] = None,
         repeat: Optional[int] = None) -> Dict[str, Any]:
    """Measure and return {"recommended": {...}, "phases": [...], ...}; the
    pool settings in force before are restored afterwards."""
    started = time.perf_counter()
    cpus = rotortree.available_cpus()
    if large_leaves is None:
        large_leaves = 200_000 if quick else 1_000_000
    if repeat is None:
        repeat = 3 if quick else 21
    sizes = [arity * 256, arity * 1024, arity * 4096] + ([] if quick else [arity * 16384])
    workloads = Workloads(arity, large_leaves, sizes)
    names = workloads.all_names()
    large_and_biggest = [names[0], names[-1]]
    threads = thread_candidates(cpus)
    phases: List[Dict[str, Any]] = []
    before = rotortree.pool_info()
    chosen: Setting = {"num_threads": cpus, "parallel_threshold": DEFAULT_PARALLEL_THRESHOLD,
                       "par_chunk_size": DEFAULT_PAR_CHUNK_SIZE}

    def phase(key: str, values: Sequence[int], default: int, names_used: List[str],
              progress: Progress) -> None:
        candidates = [dict(chosen, **{key: value}) for value in values]
        samples = measure(candidates, workloads, names_used, repeat, progress)
        scores = score(samples, names_used)
        chosen[key] = choose(list(values), scores, default, margin)
        phases.append({
            "setting": key, "values": list(values), "default": default,
            "fixed": {k: v for k, v in chosen.items() if k != key},
            "workloads": names_used, "scores": scores, "chosen": chosen[key],
            "median_ms": [{n: median(s[n]) * 1e3 for n in names_used} for s in samples],
            "samples_ms": [{n: [x * 1e3 for x in s[n]] for n in names_used} for s in samples],
        })

    # Freed trees' memory stays mapped, so a fresh tree's time is hashing,
    # not page faults whose number depends on what ran before (see Heap).
    Heap()
    meter = LoadMeter()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        steps = (repeat + 1) * (3 if cpus > 1 else 1)
        with Progress(steps, "tune", enabled=show_progress, unit="rep") as progress:
            phase("num_threads", threads, cpus, large_and_biggest, progress)
            if chosen["num_threads"] > 1:
                phase("par_chunk_size", CHUNK_SIZES, DEFAULT_PAR_CHUNK_SIZE, large_and_biggest,
                      progress)
                phase("parallel_threshold", THRESHOLDS, DEFAULT_PARALLEL_THRESHOLD, names,
                      progress)
    finally:
        if gc_was_enabled:
            gc.enable()
        rotortree.configure(num_threads=before["num_threads"],
                            parallel_threshold=before["parallel_threshold"],
                            par_chunk_size=before["par_chunk_size"])
    load = meter.report()
    return {
        "recommended": dict(chosen),
        "phases": phases,
        "other_processes_cpu_share": load.get("other_processes_cpu_share"),
        "arity": arity,
        "quick": quick,
        "repeat": repeat,
        "margin": margin,
        "available_cpus": cpus,
        "runtime_s": time.perf_counter() - started,
        "metadata": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "cpu": cpu_model(),
            "available_cpus": cpus,
            "rotortree": rotortree.__version__,
            "arity": arity,
            "quick": quick,
        },
    }


def format_tables(result: Dict[str, Any]) -> List[str]:
    """Plain-text tables of each phase for the terminal."""
    lines: List[str] = []
    for phase in result["phases"]:
        fixed = ", ".join(f"{k}={v}" for k, v in phase["fixed"].items())
        lines += ["", f"{phase['setting']} (with {fixed}); median ms per workload, "
                      "score 1.00 = fastest everywhere"]
        names = phase["workloads"]
        header = [phase["setting"]] + names + ["score"]
        rows = []
        for value, medians, value_score in zip(phase["values"], phase["median_ms"],
                                               phase["scores"]):
            mark = " <" if value == phase["chosen"] else ""
            label = f"{value}" + (" (default)" if value == phase["default"] else "")
            rows.append([label] + [fmt_ms(medians[n]) for n in names]
                        + [f"{value_score:.3f}{mark}"])
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines.append("  ".join(h.rjust(w) for h, w in zip(header, widths)))
        for row in rows:
            lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return lines
