"""Durable ingest (issue 20's targets): insert_many into a durable tree
against an in-memory one, insert_durable from many threads and from one,
and the pause a checkpoint causes a concurrent writer.

Run by ``python bench/durability.py`` (and ``rotortree bench``) as part of the
durability benchmark; ``--ingest-only`` runs only this part.

Method:
- insert_many: ``--ingest-leaves`` leaves in batches of 1,000 and 100,000,
  2 hashing threads, arity 4, manual checkpoints, the default flush policy
  (a background fsync every 10 ms), a final flush() included, against a
  LeanIMT doing the same calls. Each repetition runs every configuration
  once, durable and in-memory back to back (interleaved), so the per-
  repetition ratios compare runs under the same machine state. Wall time
  and the process's user and system time (all threads: the pool, the WAL
  writer, the flusher) are recorded.
- insert_durable, 8 threads: each thread calls insert_durable with one leaf
  (and, second row, with 100 leaves) in a loop; acknowledged leaves per
  second over the whole run, and the calls' p50 and p99 latency.
- insert_durable, 1 thread: one leaf per call, alternating with "one
  fsync" (pwrite of one 80-byte frame-sized record appended to a file in
  the same directory, then fsync), so both see the same disk; the target
  compares their medians per repetition.
- Both insert_durable measurements run under each ``acknowledge`` setting
  of the flush policy ("record": the sync record is written before the
  acknowledgement; "wal": after it, by the recorder thread), the two
  alternating within each repetition.
- checkpoint pause: one thread inserts 1,000-leaf batches without pause;
  another checkpoints each time 100,000 leaves were added. The writer's
  calls that overlapped a checkpoint are the pauses it saw (p50, p99, max),
  beside the latency of its other calls.
Targets are judged by :func:`rotortree.benchmarks.stats.verdict` on the 90%
interval of the per-repetition figures (met / not met / inconclusive).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Tuple, Union

import rotortree
from rotortree import CheckpointPolicy, FlushPolicy, LeanIMT, RotorTree

from .environment import cpu_times
from .stats import paired_ratios, quantile, ratio_summary, summary, target

MANUAL_CKPT = CheckpointPolicy.manual()
Row = Dict[str, Any]
BATCHES = (1_000, 100_000)
GOALS = {1_000: 0.40, 100_000: 0.60}   # durable / in-memory throughput
ACKS = ("record", "wal")   # FlushPolicy(acknowledge=...) settings measured


def _timed(work: Callable[[], None]) -> Tuple[float, float, float]:
    """(wall, user, system) seconds of ``work()``."""
    user0, sys0 = cpu_times()
    start = time.perf_counter()
    work()
    wall = time.perf_counter() - start
    user1, sys1 = cpu_times()
    return wall, user1 - user0, sys1 - sys0


def _fresh(path: pathlib.Path) -> pathlib.Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


def bench_insert_many(scratch: pathlib.Path, data: bytes, arity: int, repeat: int,
                      check: Callable[[bool, str], None]) -> List[Row]:
    view = memoryview(data)
    total = len(data) // 32
    samples: Dict[Tuple[int, str], List[Tuple[float, float, float]]] = {
        (batch, kind): [] for batch in BATCHES for kind in ("durable", "memory")}

    def feed(tree: Union[RotorTree, LeanIMT], batch: int) -> None:
        for i in range(0, total - total % batch, batch):
            tree.insert_many(view[32 * i:32 * (i + batch)])

    for round_ in range(repeat + 1):   # round 0 warms up
        for batch in BATCHES:
            path = _fresh(scratch / f"ingest-{batch}")
            tree = RotorTree.open(path, arity=arity, create=True, checkpoint_policy=MANUAL_CKPT)

            def durable(tree: RotorTree = tree, batch: int = batch) -> None:
                feed(tree, batch)
                tree.flush()
            durable_t = _timed(durable)
            root = tree.root
            tree.close()
            shutil.rmtree(path)
            memory = LeanIMT(arity)

            def in_memory(memory: LeanIMT = memory, batch: int = batch) -> None:
                feed(memory, batch)
            memory_t = _timed(in_memory)
            check(memory.root == root, f"ingest, batch {batch}: durable root differs")
            if round_:
                samples[(batch, "durable")].append(durable_t)
                samples[(batch, "memory")].append(memory_t)
    rows = []
    for batch in BATCHES:
        leaves = total - total % batch
        dur, mem = samples[(batch, "durable")], samples[(batch, "memory")]
        ratios = paired_ratios([m[0] for m in mem], [d[0] for d in dur])
        rows.append({
            "batch": batch, "leaves": leaves,
            "durable_wall_s": summary([d[0] for d in dur]),
            "memory_wall_s": summary([m[0] for m in mem]),
            "durable_user_s": summary([d[1] for d in dur]),
            "durable_sys_s": summary([d[2] for d in dur]),
            "memory_user_s": summary([m[1] for m in mem]),
            "memory_sys_s": summary([m[2] for m in mem]),
            "durable_leaves_per_s": leaves / summary([d[0] for d in dur])["median"],
            "memory_leaves_per_s": leaves / summary([m[0] for m in mem])["median"],
            "ratio": ratio_summary(ratios), "ratios": ratios,
            "samples": {"durable": dur, "memory": mem}})
    return rows


def _durable_threads(path: pathlib.Path, arity: int, threads: int, calls: int,
                     batch: int, ack: str = "record") -> Row:
    tree = RotorTree.open(_fresh(path), arity=arity, create=True, checkpoint_policy=MANUAL_CKPT,
                          flush_policy=FlushPolicy.interval(acknowledge=ack))
    latencies: List[List[float]] = [[] for _ in range(threads)]
    start_line = threading.Barrier(threads + 1)

    def worker(k: int) -> None:
        mine = latencies[k]
        start_line.wait()
        for i in range(calls):
            base = (k * calls + i) * batch
            leaves = b"".join((base + j).to_bytes(32, "little") for j in range(batch))
            t0 = time.perf_counter()
            tree.insert_durable(leaves)
            mine.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for thread in pool:
        thread.start()
    start_line.wait()
    user0, sys0 = cpu_times()
    t0 = time.perf_counter()
    for thread in pool:
        thread.join()
    wall = time.perf_counter() - t0
    user1, sys1 = cpu_times()
    tree.close()
    shutil.rmtree(path)
    flat = [x for mine in latencies for x in mine]
    return {"threads": threads, "batch": batch, "ack": ack, "calls": threads * calls,
            "wall_s": wall,
            "user_s": user1 - user0, "sys_s": sys1 - sys0,
            "leaves_per_s": threads * calls * batch / wall,
            "p50_ms": quantile(flat, 0.5) * 1e3, "p99_ms": quantile(flat, 0.99) * 1e3}


def bench_durable_threads(scratch: pathlib.Path, arity: int, calls: int,
                          repeat: int) -> List[Row]:
    rows = []
    for batch in (1, 100):
        by_ack: Dict[str, List[Row]] = {ack: [] for ack in ACKS}
        for _ in range(repeat):   # the settings alternate: same machine state
            for ack in ACKS:
                by_ack[ack].append(_durable_threads(scratch / "threads", arity, 8, calls,
                                                    batch, ack))
        for ack, runs in by_ack.items():
            rows.append(_threads_row(batch, ack, runs))
    return rows


def _threads_row(batch: int, ack: str, runs: List[Row]) -> Row:
    rates = [r["leaves_per_s"] for r in runs]
    return {"threads": 8, "batch": batch, "ack": ack, "runs": runs,
            "leaves_per_s": summary(rates),
            "p50_ms": summary([r["p50_ms"] for r in runs]),
            "p99_ms": summary([r["p99_ms"] for r in runs]),
            "user_s": summary([r["user_s"] for r in runs]),
            "sys_s": summary([r["sys_s"] for r in runs])}


def bench_single_latency(scratch: pathlib.Path, arity: int, calls: int,
                         repeat: int) -> List[Row]:
    """insert_durable of one leaf against one pwrite+fsync, alternated; one
    row per ``acknowledge`` setting, the settings alternating per repetition."""
    runs: Dict[str, List[Tuple[float, float, float, float]]] = {ack: [] for ack in ACKS}
    for _ in range(repeat):
        for ack in ACKS:
            runs[ack].append(_single_latency(scratch, arity, calls, ack))
    rows = []
    for ack, results in runs.items():
        medians = [(d, r) for d, r, _, _ in results]
        ratios = [d / r for d, r in medians]
        rows.append({"calls": calls, "ack": ack,
                     "durable_p50_ms": summary([d * 1e3 for d, _ in medians]),
                     "fsync_p50_ms": summary([r * 1e3 for _, r in medians]),
                     "ratio": ratio_summary(ratios), "ratios": ratios,
                     "user_s": summary([u for _, _, u, _ in results]),
                     "sys_s": summary([s for _, _, _, s in results])})
    return rows


def _single_latency(scratch: pathlib.Path, arity: int, calls: int,
                    ack: str) -> Tuple[float, float, float, float]:
    """(insert_durable p50, pwrite+fsync p50, user, system seconds)."""
    path = _fresh(scratch / "single")
    tree = RotorTree.open(path, arity=arity, create=True, checkpoint_policy=MANUAL_CKPT,
                          flush_policy=FlushPolicy.interval(acknowledge=ack))
    fd = os.open(path / "fsync-probe", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    record = bytes(80)
    durable: List[float] = []
    raw: List[float] = []
    user0, sys0 = cpu_times()
    try:
        for i in range(calls + 10):
            t0 = time.perf_counter()
            tree.insert_durable(i.to_bytes(32, "little"))
            t1 = time.perf_counter()
            os.pwrite(fd, record, 80 * i)
            os.fsync(fd)
            t2 = time.perf_counter()
            if i >= 10:
                durable.append(t1 - t0)
                raw.append(t2 - t1)
    finally:
        os.close(fd)
        tree.close()
    user1, sys1 = cpu_times()
    shutil.rmtree(path)
    return (quantile(durable, 0.5), quantile(raw, 0.5), user1 - user0, sys1 - sys0)


def bench_checkpoint_pause(scratch: pathlib.Path, arity: int, increment: int,
                           checkpoints: int, repeat: int) -> Row:
    batch = 1_000
    overlapped: List[float] = []
    others: List[float] = []
    ckpt_s: List[float] = []
    p99s: List[float] = []
    for _ in range(repeat):
        path = _fresh(scratch / "pause")
        tree = RotorTree.open(path, arity=arity, create=True, checkpoint_policy=MANUAL_CKPT)
        stop = threading.Event()
        windows: List[Tuple[float, float]] = []
        calls: List[Tuple[float, float]] = []
        inserted = [0]

        def writer() -> None:
            n = 0
            while not stop.is_set():
                leaves = b"".join((n + j).to_bytes(32, "little") for j in range(batch))
                t0 = time.perf_counter()
                tree.insert_many(leaves)
                calls.append((t0, time.perf_counter()))
                n += batch
                inserted[0] = n

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for k in range(1, checkpoints + 1):
                while inserted[0] < k * increment and thread.is_alive():
                    time.sleep(0.0005)
                t0 = time.perf_counter()
                tree.checkpoint()
                windows.append((t0, time.perf_counter()))
        finally:
            stop.set()
            thread.join()
            tree.close()
            shutil.rmtree(path)
        mine: List[float] = []
        for start, end in calls:
            if any(start < w_end and end > w_start for w_start, w_end in windows):
                mine.append(end - start)
            else:
                others.append(end - start)
        overlapped.extend(mine)
        if mine:
            p99s.append(quantile(mine, 0.99))
        ckpt_s.extend(end - start for start, end in windows)
    return {"increment": increment, "checkpoints": checkpoints * repeat, "batch": batch,
            "pause_ms": summary([x * 1e3 for x in overlapped]) if overlapped else None,
            "pause_p99_ms": quantile(overlapped, 0.99) * 1e3 if overlapped else None,
            "pause_p99_per_run_ms": [x * 1e3 for x in p99s],
            "other_calls_ms": summary([x * 1e3 for x in others]) if others else None,
            "checkpoint_ms": summary([x * 1e3 for x in ckpt_s])}


def run_ingest(scratch: pathlib.Path, leaves: int, repeat: int, threads_calls: int,
               check: Callable[[bool, str], None]) -> Row:
    """Every ingest measurement at arity 4 with 2 hashing threads."""
    from ._common import deterministic_leaves, stderr

    arity = 4
    before = rotortree.pool_info()["num_threads"]
    rotortree.configure(num_threads=2)
    try:
        data = deterministic_leaves(leaves, b"ingest")
        stderr("ingest: insert_many durable vs in-memory...")
        inserts = bench_insert_many(scratch, data, arity, repeat, check)
        stderr("ingest: insert_durable from 8 threads...")
        threads = bench_durable_threads(scratch, arity, threads_calls, repeat)
        stderr("ingest: insert_durable latency against one fsync...")
        single = bench_single_latency(scratch, arity, 200, repeat)
        stderr("ingest: checkpoint pause...")
        pause = bench_checkpoint_pause(scratch, arity, 100_000, 10, max(1, repeat // 2))
    finally:
        rotortree.configure(num_threads=before)
    targets = []
    for row in inserts:
        goal = GOALS[row["batch"]]
        targets.append(target(
            f"insert_many durable >= {goal:.0%} of in-memory, batch {row['batch']:,}",
            f"{row['ratio']['median']:.0%} [{row['ratio']['low']:.0%}-"
            f"{row['ratio']['high']:.0%}]",
            (row["ratio"]["low"], row["ratio"]["high"]), goal))
    for row in threads:
        rates = [r["leaves_per_s"] for r in row["runs"]]
        per_call = "1 leaf" if row["batch"] == 1 else f"{row['batch']} leaves"
        targets.append(target(
            f"insert_durable from 8 threads ({per_call} per call, acknowledge="
            f"{row['ack']!r}) >= 50,000 leaves/s",
            f"{quantile(rates, 0.5):,.0f} leaves/s [{min(rates):,.0f}-{max(rates):,.0f}], "
            f"p50 {row['p50_ms']['median']:.2f} ms, p99 {row['p99_ms']['median']:.2f} ms",
            (min(rates), max(rates)), 50_000))
    for one in single:
        targets.append(target(
            f"insert_durable, 1 thread, acknowledge={one['ack']!r}: p50 latency <= one "
            f"fsync + 10%",
            f"{one['ratio']['median']:.2f}x one fsync [{one['ratio']['low']:.2f}-"
            f"{one['ratio']['high']:.2f}] ({one['durable_p50_ms']['median']:.3f} ms vs "
            f"{one['fsync_p50_ms']['median']:.3f} ms)",
            (one["ratio"]["low"], one["ratio"]["high"]), 1.10, at_least=False))
    per_run = pause["pause_p99_per_run_ms"]
    targets.append(target(
        "checkpoint pause seen by a writer, 100k-leaf increments: p99 <= 10 ms",
        (f"p50 {pause['pause_ms']['median']:.2f} ms, p99 {pause['pause_p99_ms']:.2f} ms, "
         f"max {pause['pause_ms']['max']:.2f} ms" if pause["pause_ms"] else ""),
        (min(per_run), max(per_run)) if per_run else None, 10.0, at_least=False,
        reason="no writer call overlapped a checkpoint"))
    return {"arity": arity, "hashing_threads": 2, "leaves": leaves, "repeat": repeat,
            "crc32c": rotortree.storage.crc32c_impl(), "insert_many": inserts,
            "insert_durable_threads": threads, "insert_durable_single": single,
            "checkpoint_pause": pause, "targets": targets}


def markdown(result: Row, rust_documented: float = 71e6) -> List[str]:
    """The ingest table (README block) and the targets with verdicts."""
    lines = [
        "## Durable ingest (issue 20)",
        "",
        f"arity {result['arity']}, {result['hashing_threads']} hashing threads, manual "
        f"checkpoints, WAL frames checksummed with CRC-32C ({result['crc32c']}); "
        f"medians of {result['repeat']} interleaved repetitions; user and system time are "
        f"the whole process's (all threads)",
        "",
        "| workload | durable | in-memory | durable / in-memory | durable user + sys CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["insert_many"]:
        lines.append(
            f"| insert_many, batches of {row['batch']:,} ({row['leaves']:,} leaves, final "
            f"flush included) | {row['durable_leaves_per_s'] / 1e6:.1f}M leaves/s | "
            f"{row['memory_leaves_per_s'] / 1e6:.1f}M leaves/s | "
            f"{row['ratio']['median']:.0%} [{row['ratio']['low']:.0%}-"
            f"{row['ratio']['high']:.0%}] | {row['durable_user_s']['median']:.3f} + "
            f"{row['durable_sys_s']['median']:.3f} s (in-memory "
            f"{row['memory_user_s']['median']:.3f} + {row['memory_sys_s']['median']:.3f} s) |")
    for row in result["insert_durable_threads"]:
        lines.append(
            f"| insert_durable, 8 threads, {row['batch']} "
            f"{'leaf' if row['batch'] == 1 else 'leaves'} per call, acknowledge="
            f"{row['ack']!r} | "
            f"{row['leaves_per_s']['median']:,.0f} leaves/s (p50 "
            f"{row['p50_ms']['median']:.2f} ms, p99 {row['p99_ms']['median']:.2f} ms) | | | "
            f"{row['user_s']['median']:.3f} + {row['sys_s']['median']:.3f} s |")
    for single in result["insert_durable_single"]:
        lines.append(
            f"| insert_durable, 1 thread, 1 leaf, acknowledge={single['ack']!r}: p50 "
            f"latency | {single['durable_p50_ms']['median']:.3f} ms | one pwrite+fsync: "
            f"{single['fsync_p50_ms']['median']:.3f} ms | {single['ratio']['median']:.2f}x | "
            f"{single['user_s']['median']:.3f} + {single['sys_s']['median']:.3f} s |")
    pause = result["checkpoint_pause"]
    if pause["pause_ms"]:
        lines.append(
            f"| checkpoint pause seen by a writer (1,000-leaf inserts, checkpoint every "
            f"{pause['increment']:,} leaves, {pause['checkpoints']} checkpoints) | p50 "
            f"{pause['pause_ms']['median']:.2f} ms, p99 {pause['pause_p99_ms']:.2f} ms, max "
            f"{pause['pause_ms']['max']:.2f} ms | other calls: p50 "
            f"{pause['other_calls_ms']['median']:.2f} ms | | |")
    lines.append(
        f"| Rust crate, WAL insert_many, arity 4, manual flush (documented, other machine: "
        f"M4 Pro) | {rust_documented / 1e6:.0f}M leaves/s | | | |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['status']} |" for t in result["targets"]]
    return lines


__all__ = ["run_ingest", "markdown", "bench_insert_many", "bench_durable_threads",
           "bench_single_latency", "bench_checkpoint_pause"]
