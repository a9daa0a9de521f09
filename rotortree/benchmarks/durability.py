"""Durable trees: WAL throughput, fsync latency, checkpoints, recovery,
save/load and the resident memory of memory-mapped levels.

    python bench/durability.py [--leaves N] [--rss-leaves M] [--single-leaves S]
                               [--durable-calls C] [--repeat R] [--arity A]
                               [--scratch DIR] [--out DIR] [--quick]

Prints a Markdown table and writes OUT/durability.{md,json}. Files go to a
temporary directory under --scratch (default: the system temp dir); their
filesystem decides fsync costs, so it is recorded.

Method:
- insert throughput: ``insert_many`` with the WAL (interval flush policy,
  10 ms; manual checkpoints; a final flush() included) for batches of 1, 100
  and 10,000 leaves (``insert`` for 1), against the in-memory LeanIMT doing
  the same calls right after; leaves/s over the whole run, median of rounds.
- insert_durable latency: one leaf per call, sequential, one thread, so
  every call pays one fsync (no group commit); median and p99.
- checkpoint: the first checkpoint of a tree of N leaves (all levels
  written and fsynced), and an incremental one after 1% more leaves.
- recovery: RotorTree.open of the N-leaf checkpoint with and without
  verify_checkpoint (verify = CRC of every level file + the root recomputed
  from the leaves on the pool), and of the same N leaves held only in the WAL
  (100 entries). The page cache is warm (the files were just written): this
  measures CPU cost, not disk reads.
- save/load: LeanIMT.save and LeanIMT.load (verify on/off, and mmap=True:
  nodes served in place from the mapped file) of N leaves, against
  rebuilding the tree with insert_many from the leaves (all hashing threads,
  and one). Loading copies the nodes and so costs about as much as the page
  faults of the new tree's memory; rebuilding adds the hashing.
- memory: RSS growth of a fresh process opening a checkpointed tree of M
  leaves (verify off and on) with mmap_levels 0, 1 and 2. The child process
  imports the same rotortree as this one (its directory goes first on the
  child's sys.path), so it works from an installed package or a checkout.
Medians of --repeat runs after one warm-up where a figure is repeatable.
Every tree's root is checked against the in-memory one; a mismatch is listed
under "Problems" and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple, Union

import rotortree
from rotortree import CheckpointPolicy, FlushPolicy, LeanIMT, RotorTree

from . import ingest
from .environment import LoadMeter, fmt_load
from ._common import (
    deterministic_leaves,
    fmt_ms,
    machine,
    median,
    stderr,
    time_runs,
    write_results_to,
)

MANUAL_CKPT = CheckpointPolicy.manual()

Row = Dict[str, Any]


class Checks:
    """Root and size checks: failures are collected, not raised, so a run
    inside ``rotortree bench`` reports them and exits with status 1."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


def fresh_dir(scratch: pathlib.Path, name: str) -> pathlib.Path:
    path = scratch / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def bench_insert(scratch: pathlib.Path, data: bytes, arity: int, batch: int,
                 total: int, repeat: int, checks: Checks) -> Row:
    """Median over ``repeat`` rounds; each round times the WAL-backed tree and
    the in-memory tree back to back on the same calls."""
    total -= total % batch
    view = memoryview(data)

    def run(tree: Union[RotorTree, LeanIMT]) -> None:
        if batch == 1:
            for i in range(total):
                tree.insert(data[32 * i:32 * i + 32])
        else:
            for i in range(0, total, batch):
                tree.insert_many(view[32 * i:32 * (i + batch)])

    wal: List[float] = []
    mem: List[float] = []
    for round_ in range(repeat + 1):
        path = fresh_dir(scratch, f"insert-{batch}")
        tree = RotorTree.open(path, arity=arity, create=True, checkpoint_policy=MANUAL_CKPT)
        start = time.perf_counter()
        run(tree)
        tree.flush()
        wal_s = time.perf_counter() - start
        root = tree.root
        tree.close()
        shutil.rmtree(path)
        memory = LeanIMT(arity)
        start = time.perf_counter()
        run(memory)
        mem_s = time.perf_counter() - start
        checks.expect(memory.root == root,
                      f"insert, batch {batch}: the WAL tree's root differs from LeanIMT's")
        if round_:  # the first round warms up
            wal.append(wal_s)
            mem.append(mem_s)
    return {"batch": batch, "leaves": total, "wal_s": median(wal),
            "wal_leaves_per_s": total / median(wal), "memory_s": median(mem),
            "memory_leaves_per_s": total / median(mem),
            "wal_samples_s": wal, "memory_samples_s": mem}


def bench_durable_latency(scratch: pathlib.Path, data: bytes, arity: int,
                          calls: int) -> Row:
    """``calls`` sequential insert_durable calls of one leaf after 20 warm-up
    calls: each one waits for its own fsync."""
    path = fresh_dir(scratch, "latency")
    count = len(data) // 32
    samples: List[float] = []
    with RotorTree.open(path, arity=arity, create=True, checkpoint_policy=MANUAL_CKPT) as tree:
        for i in range(calls + 20):
            leaf = data[32 * (i % count):32 * (i % count) + 32]  # reused past --leaves
            start = time.perf_counter()
            tree.insert_durable(leaf)
            if i >= 20:  # warm-up
                samples.append(time.perf_counter() - start)
    shutil.rmtree(path)
    samples.sort()
    return {"calls": calls, "median_ms": statistics.median(samples) * 1e3,
            "p99_ms": samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1e3,
            "max_ms": samples[-1] * 1e3}


def build_checkpointed(path: pathlib.Path, data: bytes, arity: int) -> Optional[bytes]:
    with RotorTree.open(path, arity=arity, create=True, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=MANUAL_CKPT) as tree:
        tree.insert_many(data)
        tree.checkpoint()
        return tree.root


def bench_checkpoint(scratch: pathlib.Path, data: bytes, arity: int, repeat: int) -> Row:
    count = len(data) // 32
    extra = deterministic_leaves(max(1, count // 100), b"extra")
    full: List[float] = []
    incremental: List[float] = []
    for run in range(repeat + 1):
        path = fresh_dir(scratch, "checkpoint")
        with RotorTree.open(path, arity=arity, create=True, flush_policy=FlushPolicy.manual(),
                            checkpoint_policy=MANUAL_CKPT) as tree:
            tree.insert_many(data)
            tree.flush()
            start = time.perf_counter()
            tree.checkpoint()
            first = time.perf_counter() - start
            tree.insert_many(extra)
            tree.flush()
            start = time.perf_counter()
            tree.checkpoint()
            second = time.perf_counter() - start
        if run:
            full.append(first)
            incremental.append(second)
        shutil.rmtree(path)
    return {"leaves": count, "extra_leaves": len(extra) // 32,
            "full_ms": median(full) * 1e3, "incremental_ms": median(incremental) * 1e3,
            "full_samples_ms": [s * 1e3 for s in full],
            "incremental_samples_ms": [s * 1e3 for s in incremental]}


def verify_note(recovery: Row) -> str:
    """What the verify on/off pair of recovery times says, judged from the
    interleaved samples: verification's cost, or noise when "off" is not
    faster by more than the samples spread."""
    on = recovery.get("checkpoint_verify_on_samples_ms") or [recovery["checkpoint_verify_on_ms"]]
    off = recovery.get("checkpoint_verify_off_samples_ms") or [recovery["checkpoint_verify_off_ms"]]
    saved = median(on) - median(off)
    spread = max(max(on) - min(on), max(off) - min(off))
    if saved > spread:
        return f"verification costs {saved:.1f} ms of the open"
    return (f"within the samples' spread of {spread:.1f} ms of verify on: the difference is "
            f"noise at this size")


def bench_recovery(scratch: pathlib.Path, data: bytes, arity: int, repeat: int,
                   checks: Checks) -> Row:
    path = fresh_dir(scratch, "recovery")
    root = build_checkpointed(path, data, arity)
    results: Row = {"leaves": len(data) // 32}

    def reopen(verify: bool) -> None:
        label = "on" if verify else "off"
        with RotorTree.open(path, arity=arity, verify_checkpoint=verify,
                            flush_policy=FlushPolicy.manual(),
                            checkpoint_policy=MANUAL_CKPT) as tree:
            checks.expect(tree.root == root,
                          f"recovery from a checkpoint, verify {label}: wrong root")

    # Interleaved: every writable open leaves the directory a little
    # different (a new WAL segment), and the page cache warms up, so timing
    # all "on" opens before all "off" ones made "off" look slower.
    samples: Dict[bool, List[float]] = {True: [], False: []}
    for verify in (True, False):
        reopen(verify)  # warm-up
    for _ in range(repeat):
        for verify in (True, False):
            samples[verify] += time_runs(lambda: reopen(verify), 1, warmup=0)
    for verify, label in ((True, "on"), (False, "off")):
        results[f"checkpoint_verify_{label}_ms"] = median(samples[verify]) * 1e3
        results[f"checkpoint_verify_{label}_samples_ms"] = [t * 1e3 for t in samples[verify]]
    shutil.rmtree(path)

    # The same leaves held only in the WAL: 100 entries, no checkpoint.
    path = fresh_dir(scratch, "recovery-wal")
    count = len(data) // 32
    step = max(1, count // 100)
    view = memoryview(data)
    with RotorTree.open(path, arity=arity, create=True, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=MANUAL_CKPT) as tree:
        for i in range(0, count, step):
            tree.insert_many(view[32 * i:32 * min(count, i + step)])

    def replay() -> None:
        with RotorTree.open(path, arity=arity, flush_policy=FlushPolicy.manual(),
                            checkpoint_policy=MANUAL_CKPT) as tree:
            checks.expect(tree.root == root, "recovery from the WAL: wrong root")
    results["wal_replay_ms"] = median(time_runs(replay, repeat)) * 1e3
    results["wal_entries"] = -(-count // step)
    shutil.rmtree(path)
    return results


def bench_save_load(scratch: pathlib.Path, data: bytes, arity: int, repeat: int,
                    checks: Checks) -> Row:
    tree = LeanIMT(arity)
    tree.insert_many(data)
    path = scratch / "tree.rt"
    save = time_runs(lambda: tree.save(path), repeat)
    load_verify = time_runs(lambda: LeanIMT.load(path, verify=True), repeat)
    load_fast = time_runs(lambda: LeanIMT.load(path, verify=False), repeat)
    load_mapped = time_runs(lambda: LeanIMT.load(path, verify=False, mmap=True), repeat)
    rebuild = time_runs(lambda: LeanIMT(arity).insert_many(data), repeat)
    threads = rotortree.pool_info()["num_threads"]
    rotortree.configure(num_threads=1)
    try:
        rebuild_1 = time_runs(lambda: LeanIMT(arity).insert_many(data), repeat)
    finally:
        rotortree.configure(num_threads=threads)
    checks.expect(LeanIMT.load(path).root == tree.root, "LeanIMT.load: wrong root")
    size = path.stat().st_size
    path.unlink()
    return {"leaves": len(data) // 32, "file_bytes": size,
            "save_ms": median(save) * 1e3, "load_verify_ms": median(load_verify) * 1e3,
            "load_no_verify_ms": median(load_fast) * 1e3,
            "load_mmap_ms": median(load_mapped) * 1e3,
            "rebuild_insert_many_ms": median(rebuild) * 1e3,
            "rebuild_insert_many_1_thread_ms": median(rebuild_1) * 1e3}


# Run with ``python -c``: argv[1] = the directory holding the rotortree package
# this process imported, argv[2] = the tree, argv[3] = arity, argv[4] =
# mmap_levels, argv[5] = "1" to verify the checkpoint.
_RSS_CHILD = """
import gc, json, sys, time
sys.path.insert(0, sys.argv[1])
import psutil, rotortree
proc = psutil.Process()
gc.collect()
before = proc.memory_info().rss
start = time.perf_counter()
tree = rotortree.RotorTree.open(sys.argv[2], arity=int(sys.argv[3]),
                                mmap_levels=int(sys.argv[4]),
                                verify_checkpoint=sys.argv[5] == "1",
                                flush_policy=rotortree.FlushPolicy.manual(),
                                checkpoint_policy=rotortree.CheckpointPolicy.manual())
seconds = time.perf_counter() - start
after = proc.memory_info().rss
proof = tree.generate_proof(tree.size // 2).verify()
print(json.dumps({"rss_delta": after - before, "open_s": seconds, "size": tree.size,
                  "proof": proof, "cold": tree.stats()["cold_nodes"],
                  "module": rotortree.__file__}))
"""


def bench_rss(scratch: pathlib.Path, count: int, arity: int, checks: Checks) -> List[Row]:
    path = fresh_dir(scratch, "rss")
    build_checkpointed(path, deterministic_leaves(count, b"rss"), arity)
    package = pathlib.Path(rotortree.__file__).resolve().parent
    rows: List[Row] = []
    for levels in (0, 1, 2):
        for verify in ("0", "1"):
            proc = subprocess.run(
                [sys.executable, "-c", _RSS_CHILD, str(package.parent), str(path),
                 str(arity), str(levels), verify],
                capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"the RSS child process failed (exit status "
                                   f"{proc.returncode}):\n{proc.stderr}")
            result = json.loads(proc.stdout)
            where = f"RSS child, mmap_levels={levels}, verify {verify}"
            checks.expect(result["size"] == count,
                          f"{where}: size {result['size']}, expected {count}")
            checks.expect(bool(result["proof"]), f"{where}: the proof does not verify")
            checks.expect(pathlib.Path(result["module"]).resolve().parent == package,
                          f"{where}: imported {result['module']}, not {package}")
            rows.append({"mmap_levels": levels, "verify": verify == "1",
                         "rss_mib": result["rss_delta"] / 2**20,
                         "open_ms": result["open_s"] * 1e3,
                         "cold_nodes": result["cold"]})
    shutil.rmtree(path)
    return rows


def filesystem(path: pathlib.Path) -> str:
    try:
        return subprocess.run(["df", "-T", str(path)], capture_output=True,
                              text=True).stdout.splitlines()[-1].split()[1]
    except (OSError, IndexError):
        return "unknown"


def parse_args(argv: Optional[List[str]], default_out: pathlib.Path,
               prog: Optional[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--rss-leaves", type=int, default=4_000_000)
    parser.add_argument("--single-leaves", type=int, default=100_000,
                        help="leaves inserted one call each (batch size 1)")
    parser.add_argument("--durable-calls", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--arity", type=int, default=4)
    parser.add_argument("--scratch", default=None,
                        help="where the temporary files go (default: the system temp dir)")
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    parser.add_argument("--ingest-leaves", type=int, default=2_000_000,
                        help="leaves per durable ingest run (issue 20's targets)")
    parser.add_argument("--threads-calls", type=int, default=200,
                        help="insert_durable calls per thread in the 8-thread run")
    parser.add_argument("--ingest-only", action="store_true",
                        help="run only the durable ingest targets")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, for a smoke test (overrides the sizes and --repeat)")
    args = parser.parse_args(argv)
    if args.quick:
        args.leaves, args.rss_leaves, args.single_leaves = 20_000, 50_000, 2_000
        args.durable_calls, args.repeat = 20, 2
        args.ingest_leaves, args.threads_calls = 200_000, 20
    for name in ("leaves", "rss_leaves", "single_leaves", "durable_calls", "repeat",
                 "ingest_leaves", "threads_calls"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.arity < 2:
        parser.error("--arity must be at least 2")
    return args


def run(args: argparse.Namespace, command: str) -> Tuple[Dict[str, Any], str]:
    """Every measurement; returns (payload, markdown)."""
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="rotortree-durability-",
                                            dir=args.scratch))
    fs = filesystem(scratch)
    arity = args.arity
    data = deterministic_leaves(args.leaves)
    checks = Checks()
    load = LoadMeter()
    try:
        ingest_result = ingest.run_ingest(scratch, args.ingest_leaves, args.repeat,
                                          args.threads_calls, checks.expect)
        if args.ingest_only:
            return _ingest_only(args, command, fs, ingest_result, load, checks)
        stderr("insert throughput...")
        inserts = [bench_insert(scratch, data, arity, 1, min(args.single_leaves, args.leaves),
                                args.repeat, checks)]
        inserts += [bench_insert(scratch, data, arity, batch, args.leaves, args.repeat, checks)
                    for batch in (100, 10_000) if batch <= args.leaves]  # else: no full batch
        stderr("insert_durable latency...")
        latency = bench_durable_latency(scratch, data, arity, args.durable_calls)
        stderr("checkpoint...")
        checkpoint = bench_checkpoint(scratch, data, arity, args.repeat)
        stderr("recovery...")
        recovery = bench_recovery(scratch, data, arity, args.repeat, checks)
        stderr("save/load...")
        save_load = bench_save_load(scratch, data, arity, args.repeat, checks)
        stderr("resident memory...")
        rss = bench_rss(scratch, args.rss_leaves, arity, checks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    facts = machine()
    info = rotortree.pool_info()
    n = f"{args.leaves:,}"
    lines = [
        "# Durable trees",
        "",
        f"arity {arity}, kernel {info['simd']}, {info['num_threads']} hashing threads; "
        f"files on {fs}; machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, "
        f"Python {facts['python']}; medians of {args.repeat} runs unless noted",
        "",
        "| measurement | result |",
        "|---|---:|",
    ]
    for row in inserts:
        lines.append(
            f"| insert_many, batch {row['batch']:,}, WAL ({row['leaves']:,} leaves) | "
            f"{row['wal_leaves_per_s'] / 1e6:.3f}M leaves/s "
            f"(in-memory: {row['memory_leaves_per_s'] / 1e6:.3f}M) |")
    lines += [
        f"| insert_durable latency, 1 leaf ({latency['calls']} calls) | median "
        f"{latency['median_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms |",
        f"| checkpoint of {n} leaves (first, all levels) | {fmt_ms(checkpoint['full_ms'])} ms |",
        f"| incremental checkpoint (+{checkpoint['extra_leaves']:,} leaves) | "
        f"{fmt_ms(checkpoint['incremental_ms'])} ms |",
        f"| recovery of {n} leaves from a checkpoint, verify on | "
        f"{fmt_ms(recovery['checkpoint_verify_on_ms'])} ms |",
        f"| recovery of {n} leaves from a checkpoint, verify off | "
        f"{fmt_ms(recovery['checkpoint_verify_off_ms'])} ms ({verify_note(recovery)}) |",
        f"| recovery of {n} leaves from the WAL only ({recovery['wal_entries']} entries) | "
        f"{fmt_ms(recovery['wal_replay_ms'])} ms |",
        f"| LeanIMT.save, {n} leaves ({save_load['file_bytes'] / 2**20:.1f} MiB) | "
        f"{fmt_ms(save_load['save_ms'])} ms |",
        f"| LeanIMT.load, verify on | {fmt_ms(save_load['load_verify_ms'])} ms |",
        f"| LeanIMT.load, verify off | {fmt_ms(save_load['load_no_verify_ms'])} ms |",
        f"| LeanIMT.load, verify off, mmap=True (nodes read in place) | "
        f"{fmt_ms(save_load['load_mmap_ms'])} ms |",
        f"| rebuild with insert_many, all threads (for comparison) | "
        f"{fmt_ms(save_load['rebuild_insert_many_ms'])} ms |",
        f"| rebuild with insert_many, 1 thread (for comparison) | "
        f"{fmt_ms(save_load['rebuild_insert_many_1_thread_ms'])} ms |",
    ]
    for rss_row in rss:
        lines.append(
            f"| RSS growth opening {args.rss_leaves:,} leaves, "
            f"mmap_levels={rss_row['mmap_levels']}, "
            f"verify {'on' if rss_row['verify'] else 'off'} | {rss_row['rss_mib']:.1f} MiB "
            f"(open {fmt_ms(rss_row['open_ms'])} ms) |")
    lines += ["", f"Run: {fmt_load(load.report())}; kernel {platform.release()}", ""]
    lines += ingest.markdown(ingest_result)
    if checks.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in checks.problems]
    payload: Dict[str, Any] = {
        "benchmark": "durability", "machine": facts, "filesystem": fs, "arity": arity,
        "leaves": args.leaves, "rss_leaves": args.rss_leaves,
        "single_leaves": args.single_leaves, "durable_calls": args.durable_calls,
        "repeat": args.repeat, "command": command, "insert": inserts,
        "insert_durable": latency, "checkpoint": checkpoint, "recovery": recovery,
        "save_load": save_load, "rss": rss, "ingest": ingest_result,
        "load": load.report(), "kernel": platform.release(), "problems": checks.problems}
    return payload, "\n".join(lines)


def _ingest_only(args: argparse.Namespace, command: str, fs: str, result: Dict[str, Any],
                 load: LoadMeter, checks: Checks) -> Tuple[Dict[str, Any], str]:
    facts = machine()
    report = load.report()
    lines = ["# Durable trees: ingest", "",
             f"files on {fs}; machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, "
             f"Python {facts['python']}, kernel {platform.release()}; {fmt_load(report)}", ""]
    lines += ingest.markdown(result)
    if checks.problems:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in checks.problems]
    payload: Dict[str, Any] = {
        "benchmark": "durability", "machine": facts, "filesystem": fs, "command": command,
        "kernel": platform.release(), "load": report, "ingest": result,
        "problems": checks.problems}
    return payload, "\n".join(lines)


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: Optional[str] = None) -> int:
    args = parse_args(argv, default_out, prog)
    name = prog or "python -m rotortree.benchmarks.durability"
    command = name + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    payload, markdown = run(args, command)
    print(markdown)
    path = write_results_to(args.out, "durability", payload, markdown)
    print(f"wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    if payload["problems"]:
        print("ERROR:\n  " + "\n  ".join(payload["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
