"""Durable trees: WAL throughput, fsync latency, checkpoints, recovery,
save/load and the resident memory of memory-mapped levels.

    python bench/durability.py [--leaves N] [--rss-leaves M] [--repeat R]
                               [--arity A] [--scratch DIR] [--out DIR] [--quick]

Prints a Markdown table and writes OUT/durability.{md,json} (OUT defaults to
bench/results). Files go to a temporary directory under --scratch (default:
the system temp dir); their filesystem decides fsync costs, so it is recorded.

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
  leaves (verify off and on) with mmap_levels 0, 1 and 2.
Medians of --repeat runs after one warm-up where a figure is repeatable.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import rotortree
except ImportError:  # run from a checkout whose package is built in place
    sys.path.insert(0, str(HERE.parent))
    import rotortree

from _common import RESULTS, machine, median, time_runs, write_results_to  # noqa: E402
from rotortree import CheckpointPolicy, FlushPolicy, RotorTree  # noqa: E402
from rotortree.__main__ import deterministic_leaves  # noqa: E402

MANUAL_CKPT = CheckpointPolicy.manual()


def fresh_dir(scratch: pathlib.Path, name: str) -> pathlib.Path:
    path = scratch / name
    shutil.rmtree(path, ignore_errors=True)
    return path


def bench_insert(scratch: pathlib.Path, data: bytes, arity: int, batch: int,
                 total: int, repeat: int) -> Dict[str, object]:
    """Median over ``repeat`` rounds; each round times the WAL-backed tree and
    the in-memory tree back to back on the same calls."""
    total -= total % batch
    view = memoryview(data)

    def run(tree) -> None:
        if batch == 1:
            for i in range(total):
                tree.insert(data[32 * i:32 * i + 32])
        else:
            for i in range(0, total, batch):
                tree.insert_many(view[32 * i:32 * (i + batch)])

    wal, mem = [], []
    for round_ in range(repeat + 1):
        path = fresh_dir(scratch, f"insert-{batch}")
        tree = RotorTree.open(path, arity=arity, checkpoint_policy=MANUAL_CKPT)
        start = time.perf_counter()
        run(tree)
        tree.flush()
        wal_s = time.perf_counter() - start
        root = tree.root
        tree.close()
        shutil.rmtree(path)
        memory = rotortree.LeanIMT(arity)
        start = time.perf_counter()
        run(memory)
        mem_s = time.perf_counter() - start
        assert memory.root == root
        if round_:  # the first round warms up
            wal.append(wal_s)
            mem.append(mem_s)
    return {"batch": batch, "leaves": total, "wal_s": median(wal),
            "wal_leaves_per_s": total / median(wal), "memory_s": median(mem),
            "memory_leaves_per_s": total / median(mem),
            "wal_samples_s": wal, "memory_samples_s": mem}


def bench_durable_latency(scratch: pathlib.Path, data: bytes, arity: int,
                          calls: int) -> Dict[str, float]:
    path = fresh_dir(scratch, "latency")
    samples: List[float] = []
    with RotorTree.open(path, arity=arity, checkpoint_policy=MANUAL_CKPT) as tree:
        for i in range(calls + 20):
            start = time.perf_counter()
            tree.insert_durable(data[32 * i:32 * i + 32])
            if i >= 20:  # warm-up
                samples.append(time.perf_counter() - start)
    shutil.rmtree(path)
    samples.sort()
    return {"calls": calls, "median_ms": statistics.median(samples) * 1e3,
            "p99_ms": samples[min(len(samples) - 1, int(0.99 * len(samples)))] * 1e3,
            "max_ms": samples[-1] * 1e3}


def build_checkpointed(path: pathlib.Path, data: bytes, arity: int) -> bytes:
    with RotorTree.open(path, arity=arity, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=MANUAL_CKPT) as tree:
        tree.insert_many(data)
        tree.checkpoint()
        return tree.root


def bench_checkpoint(scratch: pathlib.Path, data: bytes, arity: int,
                     repeat: int) -> Dict[str, object]:
    count = len(data) // 32
    extra = deterministic_leaves(max(1, count // 100), b"extra")
    full, incremental = [], []
    for run in range(repeat + 1):
        path = fresh_dir(scratch, "checkpoint")
        with RotorTree.open(path, arity=arity, flush_policy=FlushPolicy.manual(),
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


def bench_recovery(scratch: pathlib.Path, data: bytes, arity: int,
                   repeat: int) -> Dict[str, object]:
    path = fresh_dir(scratch, "recovery")
    root = build_checkpointed(path, data, arity)
    results: Dict[str, object] = {"leaves": len(data) // 32}
    for verify in (True, False):
        def run() -> None:
            with RotorTree.open(path, arity=arity, verify_checkpoint=verify,
                                flush_policy=FlushPolicy.manual(),
                                checkpoint_policy=MANUAL_CKPT) as tree:
                assert tree.root == root
        samples = time_runs(run, repeat)
        results[f"checkpoint_verify_{'on' if verify else 'off'}_ms"] = median(samples) * 1e3
    shutil.rmtree(path)

    # The same leaves held only in the WAL: 100 entries, no checkpoint.
    path = fresh_dir(scratch, "recovery-wal")
    count = len(data) // 32
    step = max(1, count // 100)
    view = memoryview(data)
    with RotorTree.open(path, arity=arity, flush_policy=FlushPolicy.manual(),
                        checkpoint_policy=MANUAL_CKPT) as tree:
        for i in range(0, count, step):
            tree.insert_many(view[32 * i:32 * min(count, i + step)])
    def replay() -> None:
        with RotorTree.open(path, arity=arity, flush_policy=FlushPolicy.manual(),
                            checkpoint_policy=MANUAL_CKPT) as tree:
            assert tree.root == root
    results["wal_replay_ms"] = median(time_runs(replay, repeat)) * 1e3
    results["wal_entries"] = -(-count // step)
    shutil.rmtree(path)
    return results


def bench_save_load(scratch: pathlib.Path, data: bytes, arity: int,
                    repeat: int) -> Dict[str, object]:
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(data)
    path = scratch / "tree.rt"
    save = time_runs(lambda: tree.save(path), repeat)
    load_verify = time_runs(lambda: rotortree.LeanIMT.load(path, verify=True), repeat)
    load_fast = time_runs(lambda: rotortree.LeanIMT.load(path, verify=False), repeat)
    load_mapped = time_runs(lambda: rotortree.LeanIMT.load(path, verify=False, mmap=True),
                            repeat)
    rebuild = time_runs(lambda: rotortree.LeanIMT(arity).insert_many(data), repeat)
    threads = rotortree.pool_info()["num_threads"]
    rotortree.configure(num_threads=1)
    try:
        rebuild_1 = time_runs(lambda: rotortree.LeanIMT(arity).insert_many(data), repeat)
    finally:
        rotortree.configure(num_threads=threads)
    assert rotortree.LeanIMT.load(path).root == tree.root
    size = path.stat().st_size
    path.unlink()
    return {"leaves": len(data) // 32, "file_bytes": size,
            "save_ms": median(save) * 1e3, "load_verify_ms": median(load_verify) * 1e3,
            "load_no_verify_ms": median(load_fast) * 1e3,
            "load_mmap_ms": median(load_mapped) * 1e3,
            "rebuild_insert_many_ms": median(rebuild) * 1e3,
            "rebuild_insert_many_1_thread_ms": median(rebuild_1) * 1e3}


_RSS_CHILD = """
import gc, json, sys
sys.path.insert(0, {root!r})
import psutil, rotortree
proc = psutil.Process()
gc.collect()
before = proc.memory_info().rss
start = __import__("time").perf_counter()
tree = rotortree.RotorTree.open({path!r}, arity={arity}, mmap_levels=int(sys.argv[1]),
                                verify_checkpoint=sys.argv[2] == "1",
                                flush_policy=rotortree.FlushPolicy.manual(),
                                checkpoint_policy=rotortree.CheckpointPolicy.manual())
seconds = __import__("time").perf_counter() - start
after = proc.memory_info().rss
proof = tree.generate_proof(tree.size // 2).verify()
print(json.dumps({{"rss_delta": after - before, "open_s": seconds, "size": tree.size,
                  "proof": proof, "cold": tree.stats()["cold_nodes"]}}))
"""


def bench_rss(scratch: pathlib.Path, count: int, arity: int) -> List[Dict[str, object]]:
    path = fresh_dir(scratch, "rss")
    build_checkpointed(path, deterministic_leaves(count, b"rss"), arity)
    script = scratch / "rss_child.py"
    script.write_text(_RSS_CHILD.format(root=str(HERE.parent), path=str(path), arity=arity))
    rows = []
    for levels in (0, 1, 2):
        for verify in ("0", "1"):
            out = subprocess.run([sys.executable, str(script), str(levels), verify],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout)
            assert result["size"] == count and result["proof"]
            rows.append({"mmap_levels": levels, "verify": verify == "1",
                         "rss_mib": result["rss_delta"] / 2**20,
                         "open_ms": result["open_s"] * 1e3,
                         "cold_nodes": result["cold"]})
    shutil.rmtree(path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--rss-leaves", type=int, default=4_000_000)
    parser.add_argument("--single-leaves", type=int, default=100_000,
                        help="leaves inserted one call each (batch size 1)")
    parser.add_argument("--durable-calls", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--arity", type=int, default=4)
    parser.add_argument("--scratch", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, for a smoke test")
    args = parser.parse_args()
    if args.quick:
        args.leaves, args.rss_leaves, args.single_leaves = 20_000, 50_000, 2_000
        args.durable_calls, args.repeat = 20, 2

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="rotortree-durability-",
                                            dir=args.scratch))
    try:
        fs = subprocess.run(["df", "-T", str(scratch)], capture_output=True,
                            text=True).stdout.splitlines()[-1].split()[1]
    except (OSError, IndexError):
        fs = "unknown"
    arity = args.arity
    data = deterministic_leaves(args.leaves)
    try:
        print("insert throughput...", file=sys.stderr)
        inserts = [bench_insert(scratch, data, arity, 1, min(args.single_leaves, args.leaves),
                                args.repeat),
                   bench_insert(scratch, data, arity, 100, args.leaves, args.repeat),
                   bench_insert(scratch, data, arity, 10_000, args.leaves, args.repeat)]
        print("insert_durable latency...", file=sys.stderr)
        latency = bench_durable_latency(scratch, data, arity, args.durable_calls)
        print("checkpoint...", file=sys.stderr)
        checkpoint = bench_checkpoint(scratch, data, arity, args.repeat)
        print("recovery...", file=sys.stderr)
        recovery = bench_recovery(scratch, data, arity, args.repeat)
        print("save/load...", file=sys.stderr)
        save_load = bench_save_load(scratch, data, arity, args.repeat)
        print("resident memory...", file=sys.stderr)
        rss = bench_rss(scratch, args.rss_leaves, arity)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    facts = machine()
    n = f"{args.leaves:,}"
    lines = [
        "# Durable trees",
        "",
        f"arity {arity}, kernel {rotortree.pool_info()['simd']}, "
        f"{rotortree.pool_info()['num_threads']} hashing threads; files on {fs}; "
        f"machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, Python {facts['python']}; "
        f"medians of {args.repeat} runs unless noted",
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
        f"| checkpoint of {n} leaves (first, all levels) | {checkpoint['full_ms']:.0f} ms |",
        f"| incremental checkpoint (+{checkpoint['extra_leaves']:,} leaves) | "
        f"{checkpoint['incremental_ms']:.1f} ms |",
        f"| recovery of {n} leaves from a checkpoint, verify on | "
        f"{recovery['checkpoint_verify_on_ms']:.0f} ms |",
        f"| recovery of {n} leaves from a checkpoint, verify off | "
        f"{recovery['checkpoint_verify_off_ms']:.0f} ms |",
        f"| recovery of {n} leaves from the WAL only ({recovery['wal_entries']} entries) | "
        f"{recovery['wal_replay_ms']:.0f} ms |",
        f"| LeanIMT.save, {n} leaves ({save_load['file_bytes'] / 2**20:.1f} MiB) | "
        f"{save_load['save_ms']:.0f} ms |",
        f"| LeanIMT.load, verify on | {save_load['load_verify_ms']:.0f} ms |",
        f"| LeanIMT.load, verify off | {save_load['load_no_verify_ms']:.0f} ms |",
        f"| LeanIMT.load, verify off, mmap=True (nodes read in place) | "
        f"{save_load['load_mmap_ms']:.2f} ms |",
        f"| rebuild with insert_many, all threads (for comparison) | "
        f"{save_load['rebuild_insert_many_ms']:.0f} ms |",
        f"| rebuild with insert_many, 1 thread (for comparison) | "
        f"{save_load['rebuild_insert_many_1_thread_ms']:.0f} ms |",
    ]
    for row in rss:
        lines.append(
            f"| RSS growth opening {args.rss_leaves:,} leaves, mmap_levels={row['mmap_levels']}, "
            f"verify {'on' if row['verify'] else 'off'} | {row['rss_mib']:.1f} MiB "
            f"(open {row['open_ms']:.0f} ms) |")
    markdown = "\n".join(lines)
    print(markdown)
    payload = {"machine": facts, "filesystem": fs, "arity": arity, "leaves": args.leaves,
               "rss_leaves": args.rss_leaves, "repeat": args.repeat,
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
               "insert": inserts, "insert_durable": latency, "checkpoint": checkpoint,
               "recovery": recovery, "save_load": save_load, "rss": rss}
    write_results_to(pathlib.Path(args.out), "durability", payload, markdown)


if __name__ == "__main__":
    main()
