"""The leaf index (issue 17) at 1M and 10M leaves, arity 4: memory per leaf,
``has`` from Python, ``contains_many`` on 2 threads, ``insert_many(unique=
True)`` against plain ``insert_many``, and durable recovery with and without
the index. Every target is judged by code from the figures.

Configurations compared with each other are interleaved in one repetition
(the same machine state hits both) and compared through per-repetition
ratios; the 90% interval of those ratios (or of the per-repetition
figures) is what a target is judged on (:mod:`.stats`).
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

from ._common import machine, stderr
from .environment import LoadMeter, fmt_load
from .stats import fmt_interval, fmt_time, paired_ratios, quantile, ratio_summary, summary, target

Payload = Dict[str, Any]
ARITY = 4


def _interval(samples: Sequence[float]) -> Tuple[float, float]:
    return quantile(samples, 0.05), quantile(samples, 0.95)


def _rate(samples_s: Sequence[float], count: int) -> Dict[str, float]:
    rates = [count / s for s in samples_s]
    stats = summary(rates)
    stats["low"], stats["high"] = _interval(rates)
    return stats


def _fmt_rate(per_s: float) -> str:
    return f"{per_s / 1e6:.1f}M/s"


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure_size(leaves: int, repeat: int, has_calls: int, progress: bool) -> Payload:
    """Memory, ``has`` and ``contains_many`` on an indexed tree of ``leaves``."""
    import rotortree

    data = os.urandom(32 * leaves)
    absent = os.urandom(32 * min(leaves, 1_000_000))
    rotortree.configure(num_threads=2)
    tree = rotortree.LeanIMT(ARITY, 32, index=True)
    build_s = _timed(lambda: tree.insert_many(data))
    stats = tree.index_stats()
    stderr(f"leaf index: {leaves:,} leaves indexed in {build_s:.2f} s", progress)
    # Half present, half absent: a miss probes until an empty slot, a hit
    # compares one stored leaf, and a service asks both.
    probe_count = min(leaves, 1_000_000)
    step = max(1, leaves // probe_count)
    present = b"".join(data[32 * i * step:32 * i * step + 32] for i in range(probe_count // 2))
    probes = present + absent[:32 * (probe_count - probe_count // 2)]
    singles = [probes[32 * i:32 * i + 32]
               for i in range(0, probe_count, max(1, probe_count // has_calls))]
    singles = singles[:has_calls]
    has = tree.has
    has_s: List[float] = []
    has_cpu: List[float] = []
    many: Dict[int, List[float]] = {1: [], 2: []}
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.thread_time()
        for value in singles:
            has(value)
        has_s.append((time.perf_counter() - start) / len(singles))
        # CPU time too: on a loaded machine wall time includes waiting for a
        # core, which says more about the machine than about has().
        has_cpu.append((time.thread_time() - cpu) / len(singles))
        for threads in (1, 2):   # interleaved
            rotortree.configure(num_threads=threads)
            many[threads].append(_timed(lambda: tree.contains_many(probes)))
    rotortree.configure(num_threads=2)
    found = tree.contains_many(probes)
    if sum(found) != len(present) // 32:
        raise RuntimeError("contains_many disagrees with the leaves inserted")
    has_stats = summary(has_s)
    has_stats["low"], has_stats["high"] = _interval(has_s)
    return {"leaves": leaves, "index": stats, "bytes_per_leaf": stats["bytes"] / leaves,
            "build_s": build_s, "has_s": has_stats, "has_cpu_s": summary(has_cpu),
            "has_calls": len(singles),
            "lookups": probe_count,
            "contains_many_rate": {str(t): _rate(s, probe_count) for t, s in many.items()}}


def measure_unique(leaves: int, repeat: int, progress: bool) -> Payload:
    """insert_many of ``leaves`` fresh leaves into an empty tree: plain into
    a tree without an index (what a user has without this feature), plain
    into an indexed tree (``bytes``: indexed while hashed; a ``bytearray``,
    which another thread could change: indexed after the hashing), and
    unique=True; interleaved, on 2 threads."""
    import rotortree

    rotortree.configure(num_threads=2)
    names = ("plain", "plain_indexed", "plain_indexed_after", "unique")
    times: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(repeat):
        data = os.urandom(32 * leaves)
        mutable = bytearray(data)
        for name in names:
            tree = rotortree.LeanIMT(ARITY, 32, index=name != "plain")
            if name == "unique":
                times[name].append(_timed(lambda: tree.insert_many(data, unique=True)))
            elif name == "plain_indexed_after":
                times[name].append(_timed(lambda: tree.insert_many(mutable)))
            else:
                times[name].append(_timed(lambda: tree.insert_many(data)))
            del tree
        stderr(f"leaf index: unique insert repetition {r + 1}/{repeat}", progress)
    # Throughput ratio unique/plain = plain time / unique time.
    return {"leaves": leaves, "times_s": {k: summary(v) for k, v in times.items()},
            "unique_vs_plain": ratio_summary(paired_ratios(times["plain"], times["unique"])),
            "plain_indexed_vs_plain": ratio_summary(
                paired_ratios(times["plain"], times["plain_indexed"])),
            "plain_indexed_after_vs_plain": ratio_summary(
                paired_ratios(times["plain"], times["plain_indexed_after"])),
            "unique_vs_plain_indexed": ratio_summary(
                paired_ratios(times["plain_indexed"], times["unique"]))}


def measure_recovery(leaves: int, repeat: int, progress: bool) -> Payload:
    """Open (recover) a durable tree of ``leaves``: 90% in the checkpoint,
    the rest in the WAL (the tree was not closed cleanly after them),
    without the index, with it (the checkpoint's leaves indexed in the
    background during recovery), and with it built after the replay (the
    previous way, for comparison); opens interleaved."""
    import rotortree
    from rotortree import CheckpointPolicy, FlushPolicy, RotorTree
    from rotortree.durable import recovery as recovery_module

    rotortree.configure(num_threads=2)
    base = tempfile.mkdtemp(prefix="rotortree-index-bench-")
    data = os.urandom(32 * leaves)
    cut = 32 * (leaves * 9 // 10)
    manual: Dict[str, Any] = {"flush_policy": FlushPolicy.manual(),
                              "checkpoint_policy": CheckpointPolicy.manual()}
    try:
        for name in ("plain", "indexed"):
            path = os.path.join(base, name)
            tree = RotorTree.open(path, create=True, arity=ARITY, index=name == "indexed",
                                  **manual)
            tree.insert_many(data[:cut])
            tree.checkpoint()
            tree.insert_many(data[cut:])
            tree.flush()
            tree.close()   # manual policy: no checkpoint, the tail stays in the WAL
        del data
        times: Dict[str, List[float]] = {"plain": [], "indexed": [], "indexed_after": []}
        index_s: Dict[str, List[float]] = {"indexed": [], "indexed_after": []}
        background = recovery_module.BACKGROUND_INDEX
        for r in range(repeat):
            for name in ("plain", "indexed", "indexed_after"):
                path = os.path.join(base, "plain" if name == "plain" else "indexed")
                recovery_module.BACKGROUND_INDEX = name == "indexed"
                start = time.perf_counter()
                try:
                    tree = RotorTree.open(path, **manual)
                finally:
                    recovery_module.BACKGROUND_INDEX = background
                times[name].append(time.perf_counter() - start)
                if name in index_s:
                    index_s[name].append(tree.recovery["index_seconds"])
                if tree.size != leaves:
                    raise RuntimeError(f"recovered {tree.size} leaves, expected {leaves}")
                tree.close()
            stderr(f"leaf index: recovery repetition {r + 1}/{repeat}", progress)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"leaves": leaves, "times_s": {k: summary(v) for k, v in times.items()},
            "index_build_s": summary(index_s["indexed"]),
            "index_after_s": summary(index_s["indexed_after"]),
            "indexed_over_plain": ratio_summary(paired_ratios(times["indexed"],
                                                              times["plain"])),
            "after_over_plain": ratio_summary(paired_ratios(times["indexed_after"],
                                                            times["plain"]))}


def judge(sizes: List[Payload], unique: Payload, recovery: Payload) -> List[Dict[str, Any]]:
    out = []
    for s in sizes:
        n = f"{s['leaves']:,} leaves"
        bpl = s["bytes_per_leaf"]
        out.append(target(f"index memory <= 12 bytes per leaf, {n}",
                          f"{bpl:.2f} bytes per leaf ({s['index']['bytes']:,} bytes, "
                          f"{s['index']['slots']:,} slots of {s['index']['slot_bytes']})",
                          (bpl, bpl), 12.0, at_least=False))
        h = s["has_s"]
        out.append(target(f"has() from Python <= 1 µs, {n}",
                          f"{fmt_time(h['median'])} [{fmt_time(h['low'])}-{fmt_time(h['high'])}]",
                          (h["low"], h["high"]), 1e-6, at_least=False))
        c = s["contains_many_rate"]["2"]
        out.append(target(f"contains_many >= 20M lookups/s on 2 threads, {n}",
                          f"{_fmt_rate(c['median'])} [{_fmt_rate(c['low'])}-"
                          f"{_fmt_rate(c['high'])}]", (c["low"], c["high"]), 20e6))
    r = unique["unique_vs_plain"]
    out.append(target(f"insert_many(unique=True) >= 50% of plain insert_many's throughput, "
                      f"{unique['leaves']:,} leaves", fmt_interval(r),
                      (r["low"], r["high"]), 0.5))
    r = recovery["indexed_over_plain"]
    out.append(target(f"recovery with the index <= 1.5x without, {recovery['leaves']:,} leaves",
                      fmt_interval(r), (r["low"], r["high"]), 1.5, at_least=False))
    return out


def markdown(payload: Payload) -> str:
    lines = ["# Leaf index", "",
             f"Arity {ARITY}, {payload['repeat']} repetitions; {payload['load']}; kernel "
             f"{payload['kernel']}. Timings on this shared machine are noisy: the "
             "intervals (5th-95th percentile over repetitions) say how much.", "",
             "| leaves | index bytes/leaf | has() per call | has() CPU per call | "
             "contains_many 1 thread | contains_many 2 threads | build (insert_many, 2 threads) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for s in payload["sizes"]:
        c1, c2 = s["contains_many_rate"]["1"], s["contains_many_rate"]["2"]
        lines.append(f"| {s['leaves']:,} | {s['bytes_per_leaf']:.2f} | "
                     f"{fmt_time(s['has_s']['median'])} (min {fmt_time(s['has_s']['min'])}) | "
                     f"{fmt_time(s['has_cpu_s']['median'])} | "
                     f"{_fmt_rate(c1['median'])} | {_fmt_rate(c2['median'])} "
                     f"(min {_fmt_rate(c2['min'])}) | {fmt_time(s['build_s'])} |")
    u = payload["unique"]
    t = u["times_s"]
    lines += ["", f"insert_many of {u['leaves']:,} leaves into an empty tree, 2 threads "
              "(median, min):", "",
              "| configuration | time | throughput vs plain (per-repetition ratio) |",
              "|---|---:|---:|",
              f"| plain, tree without index | {fmt_time(t['plain']['median'])} "
              f"({fmt_time(t['plain']['min'])}) | 1 |",
              f"| plain, indexed tree (bytes: indexed while hashed) | "
              f"{fmt_time(t['plain_indexed']['median'])} "
              f"({fmt_time(t['plain_indexed']['min'])}) | "
              f"{fmt_interval(u['plain_indexed_vs_plain'])} |",
              f"| plain, indexed tree (bytearray: indexed after the hashing) | "
              f"{fmt_time(t['plain_indexed_after']['median'])} "
              f"({fmt_time(t['plain_indexed_after']['min'])}) | "
              f"{fmt_interval(u['plain_indexed_after_vs_plain'])} |",
              f"| unique=True, indexed tree | {fmt_time(t['unique']['median'])} "
              f"({fmt_time(t['unique']['min'])}) | {fmt_interval(u['unique_vs_plain'])} |",
              "", f"unique=True vs plain on the same indexed tree: "
              f"{fmt_interval(u['unique_vs_plain_indexed'])}."]
    r = payload["recovery"]
    t = r["times_s"]
    lines += ["", f"Recovery (open) of a durable tree of {r['leaves']:,} leaves, 90% "
              "checkpointed and 10% replayed from the WAL, checkpoint verified:", "",
              "| configuration | open time (median, min) |", "|---|---:|",
              f"| without index | {fmt_time(t['plain']['median'])} "
              f"({fmt_time(t['plain']['min'])}) |",
              f"| with index (checkpoint indexed in the background) | "
              f"{fmt_time(t['indexed']['median'])} "
              f"({fmt_time(t['indexed']['min'])}), of which waiting for the index after the "
              f"replay {fmt_time(r['index_build_s']['median'])} |",
              f"| with index, built after the replay | "
              f"{fmt_time(t['indexed_after']['median'])} "
              f"({fmt_time(t['indexed_after']['min'])}), of which the index build "
              f"{fmt_time(r['index_after_s']['median'])} |",
              "", f"Ratio with/without: {fmt_interval(r['indexed_over_plain'])} (built after "
              f"the replay: {fmt_interval(r['after_over_plain'])}).", "",
              "| target | measured | verdict |", "|---|---|---|"]
    for row in payload["targets"]:
        lines.append(f"| {row['target']} | {row['measured']} | {row['status']} |")
    return "\n".join(lines) + "\n"


def run(sizes: Sequence[int] = (1_000_000, 10_000_000), repeat: int = 7,
        unique_leaves: int = 1_000_000, recovery_leaves: int = 10_000_000,
        recovery_repeat: int = 5, has_calls: int = 200_000,
        show_progress: bool = True) -> Tuple[Payload, str]:
    import rotortree

    before = rotortree.pool_info()["num_threads"]
    meter = LoadMeter()
    try:
        measured = [measure_size(n, repeat, has_calls, show_progress) for n in sizes]
        unique = measure_unique(unique_leaves, repeat, show_progress)
        recovery = measure_recovery(recovery_leaves, recovery_repeat, show_progress)
    finally:
        rotortree.configure(num_threads=before)
    load = meter.report()
    payload: Payload = {"benchmark": "leaf_index", "machine": machine(), "repeat": repeat,
                        "kernel": platform.release(), "load": fmt_load(load),
                        "load_raw": load, "sizes": measured, "unique": unique,
                        "recovery": recovery, "problems": []}
    payload["targets"] = judge(measured, unique, recovery)
    return payload, markdown(payload)


__all__ = ["run", "measure_size", "measure_unique", "measure_recovery", "judge", "markdown"]
