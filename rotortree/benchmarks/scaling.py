"""Thread scaling and parallel-threshold impact of insert_many, with the Rust
crate rotortree (0.15 and 0.17) measured in the same run when its harness is
built (see tools/rust_harness/README.md).

    python bench/scaling.py [--quick] [--repeat N] [--arities 2,4,8,16] [--out DIR]
                            [--harness DIR | --no-harness]

(``rotortree bench`` runs the same measurements as part of its suite.)
Writes DIR/scaling.md (tables), DIR/scaling.json (settings, raw samples, pool
counters, the root of every configuration) and DIR/scaling.png (needs the
optional matplotlib; skipped with a note otherwise).

Method (also printed in the Markdown):
- Every configuration is measured in the same run, round-robin: each
  repetition visits every configuration once, in an order rotated by one
  place per repetition, so drift on this shared machine hits all alike. One
  untimed repetition of everything runs first. Every figure is given as
  median, minimum and interquartile range; comparisons as the median and 90%
  interval of the per-repetition ratios (rotortree/benchmarks/stats.py).
- The Rust crate's configurations (sequential build; rayon build inside a
  pool of 1 and of 2 threads; 0.15 and 0.17) are timed by the harness, a
  separate process, in the same repetitions with the same leaves.
- Before each timed call the pool is reconfigured, started by an untimed
  compute_root (thread start-up is never timed), and the process then idles
  --gap-ms so that pool workers have parked, as between a service's batches.
- Large batches go into a fresh tree (creation untimed). Small batches are
  appended to one long-lived tree per configuration, pre-filled untimed with
  --base-leaves leaves; every configuration appends the same sequence of
  batches, so all of them must produce the same root after every batch.
- Memory state is made explicit (glibc): freed memory stays mapped, so a
  fresh tree reuses pages and takes no page faults; the thread-scaling table
  also has "fresh pages" columns, where freed memory is returned to the OS
  (malloc_trim and the C core's rt_release_cached_memory, untimed) first, so
  the insert faults in all of its pages.
- Per call the JSON also records pool counters (jobs, units, units run by
  workers, wake-ups) and minor page faults.
- The roots of all configurations are compared; a mismatch is reported in
  the output and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import rotortree
from rotortree.config import DEFAULT_PAR_CHUNK_SIZE, DEFAULT_PARALLEL_THRESHOLD

from . import harness as rust_harness
from . import scaling_report
from ._common import Progress, deterministic_leaves, machine, write_results_to
from .environment import Heap, LoadMeter, build_facts, machine_ceiling, minor_faults
from .stats import paired_ratios, ratio_summary, summary

Row = Dict[str, Any]
Config = Dict[str, Any]

WARM_LEAVES = 1 << 17               # compute_root that starts the pool untimed
# The crate's builds and thread counts measured beside ours: (label, build, threads).
RUST_CONFIGS = (("sequential", "sequential", 0), ("rayon, 1 thread", "parallel", 1),
                ("rayon, 2 threads", "parallel", 2))
RUST_VERSIONS = (15, 17)


def parse_args(argv: Optional[List[str]] = None,
               default_out: pathlib.Path = pathlib.Path("."),
               prog: Optional[str] = None) -> argparse.Namespace:
    lines = (__doc__ or "").splitlines()
    parser = argparse.ArgumentParser(
        prog=prog,
        description=lines[0] + " " + lines[1].strip(),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (well under a minute); explicit counts win")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions for large batches (default 21, quick 3)")
    parser.add_argument("--small-repeat", type=int, default=None,
                        help="timed repetitions for small batches (default 200, quick 40)")
    parser.add_argument("--arities", default="2,4,8,16",
                        help="arities for the thread-scaling table")
    parser.add_argument("--out", type=pathlib.Path, default=default_out,
                        help="directory for scaling.{md,json,png}")
    # Sizes: the defaults are the documented tables; smaller values exist for
    # the smoke test and for quick experiments.
    parser.add_argument("--leaves", type=int, default=1_000_000,
                        help="leaves per large batch (fresh tree)")
    parser.add_argument("--small-batch", type=int, default=10_000,
                        help="leaves per small batch (appended)")
    parser.add_argument("--base-leaves", type=int, default=None,
                        help="leaves in the tree before the small batches (default --leaves)")
    parser.add_argument("--thresholds", default="256,1024,4096,16384",
                        help="parallel_threshold values for the threshold table")
    parser.add_argument("--threshold-arity", type=int, default=4)
    parser.add_argument("--max-depth", type=int, default=32)
    parser.add_argument("--threads", default=None,
                        help="thread counts for the scaling table (default 2..CPUs, CPUs+2)")
    parser.add_argument("--gap-ms", type=float, default=1.0,
                        help="idle time before each timed call (workers park after ~50 us)")
    parser.add_argument("--simd", default=None, help="force a SIMD kernel")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw DIR/scaling.png from an existing DIR/scaling.json")
    parser.add_argument("--no-fresh-pages", action="store_true",
                        help="skip the fresh-pages columns of the thread-scaling table")
    rust_harness.add_options(parser)
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 21
    if args.small_repeat is None:
        args.small_repeat = 40 if args.quick else 200
    if args.base_leaves is None:
        args.base_leaves = args.leaves
    for name in ("repeat", "small_repeat", "leaves", "small_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.base_leaves < 0 or args.gap_ms < 0:
        parser.error("--base-leaves and --gap-ms must be >= 0")
    args.arities = [int(a) for a in args.arities.split(",") if a.strip()]
    args.thresholds = [int(t) for t in args.thresholds.split(",") if t.strip()]
    args.quiet = False
    return args


# ---- configurations ----------------------------------------------------------


def thread_configs(cpus: int, explicit: Optional[str],
                   fresh_pages: bool) -> List[Config]:
    """Rows of the thread-scaling table. num_threads=1 never enters the pool
    (the C core runs every level on the caller), so there is no "1 thread
    through the pool" configuration of this package to measure."""
    if explicit:
        counts = [int(t) for t in explicit.split(",") if t.strip()]
    else:
        counts = list(range(2, cpus + 1)) + [cpus + 2]
    configs: List[Config] = [
        {"label": "sequential", "threads": 1, "threshold": DEFAULT_PARALLEL_THRESHOLD}]
    for n in counts:
        if n < 2:
            continue
        label = f"{n}" + (" (oversubscribed)" if n > cpus else "")
        configs.append({"label": label, "threads": n, "threshold": DEFAULT_PARALLEL_THRESHOLD})
    if fresh_pages:
        configs += [dict(c, fresh_pages=True) for c in configs]
    return configs


def rust_configs(fresh_pages: bool) -> List[Config]:
    """The crate's configurations, both versions; "threads" is the rayon
    pool size (0 = the sequential build, no pool). Fresh pages only for the
    like-for-like pairs (0.15 sequential and on 2 threads): the crate's
    builds are 3-8x slower than this package's, and the other fresh-page
    rows would double the section's time for figures no comparison uses."""
    configs: List[Config] = [
        {"label": f"0.{version} {label}", "rust": version, "build": build, "threads": threads,
         "threshold": None}
        for version in RUST_VERSIONS for label, build, threads in RUST_CONFIGS]
    if fresh_pages:
        configs += [dict(c, fresh_pages=True) for c in configs
                    if c["rust"] == 15 and c["threads"] != 1]
    return configs


def threshold_configs(cpus: int, thresholds: List[int]) -> List[Config]:
    configs: List[Config] = [
        {"label": "sequential", "threads": 1, "threshold": DEFAULT_PARALLEL_THRESHOLD}]
    for t in thresholds:
        label = f"{t}" + (" (default)" if t == DEFAULT_PARALLEL_THRESHOLD else "")
        configs.append({"label": label, "threads": max(cpus, 2), "threshold": t})
    return configs


def rotated(items: List[int], rep: int) -> List[int]:
    k = rep % len(items)
    return items[k:] + items[:k]


class Runner:
    """Applies a configuration and times one call with the conditions the
    module docstring describes, collecting samples and pool counters."""

    STAT_FIELDS = ("jobs", "units", "helped", "parks", "idle_ns", "minor_faults")

    def __init__(self, gap_s: float, simd: Optional[str]) -> None:
        self.gap_s = gap_s
        self.simd = simd
        self.warm: Dict[int, bytes] = {}

    def apply(self, config: Config, arity: int) -> None:
        if "rust" in config:
            return
        rotortree.configure(num_threads=config["threads"],
                            parallel_threshold=config["threshold"],
                            par_chunk_size=DEFAULT_PAR_CHUNK_SIZE, simd=self.simd)
        if config["threads"] > 1:
            if arity not in self.warm:
                self.warm[arity] = deterministic_leaves(WARM_LEAVES, b"scaling warm-up")
            rotortree.compute_root(self.warm[arity], arity)

    def timed(self, call: Callable[[], bytes]) -> Tuple[bytes, float, Dict[str, int]]:
        if self.gap_s:
            time.sleep(self.gap_s)
        before = rotortree.pool_stats()
        before["minor_faults"] = minor_faults()
        start = time.perf_counter()
        result = call()
        elapsed = time.perf_counter() - start
        after = rotortree.pool_stats()
        after["minor_faults"] = minor_faults()
        return result, elapsed, {f: after[f] - before[f] for f in self.STAT_FIELDS}


def new_row(config: Config) -> Row:
    return {"label": config["label"], "threads": config["threads"],
            "rust": config.get("rust"), "build": config.get("build"),
            "memory": "fresh pages" if config.get("fresh_pages") else "reused",
            "parallel_threshold": config["threshold"], "samples_ms": [],
            "minor_faults_samples": [], "pool_totals": {f: 0 for f in Runner.STAT_FIELDS},
            "root": None}


def record(row: Row, elapsed: float, stats: Dict[str, int]) -> None:
    row["samples_ms"].append(elapsed * 1e3)
    row["minor_faults_samples"].append(stats["minor_faults"])
    for key, value in stats.items():
        row["pool_totals"][key] += value


def summarise(rows: List[Row], leaves: int, base: Optional[Row] = None) -> None:
    """Statistics of each row; ratios against ``base`` (default the first
    row) per paired repetition: ratio = time / base time, speedup = its
    inverse, each as a median with a 90% interval."""
    base = base or rows[0]
    for row in rows:
        samples = row["samples_ms"]
        stats = summary(samples)
        calls = len(samples)
        row["stats_ms"] = stats
        row["median_ms"] = stats["median"]
        row["min_ms"] = stats["min"]
        row["leaves_per_s"] = leaves / (stats["median"] / 1e3)
        ratio = ratio_summary(paired_ratios(samples, base["samples_ms"]))
        speedup = ratio_summary(paired_ratios(base["samples_ms"], samples))
        row["ratio"] = ratio
        row["speedup"] = speedup
        row["ratio_vs_sequential"] = ratio["median"]
        row["speedup_vs_sequential"] = speedup["median"]
        row["pool_per_call"] = {k: v / calls for k, v in row["pool_totals"].items()}
        # Units run by pool workers (stolen) out of all units run on the pool;
        # 0.5 is an even split between the caller and one helper.
        units = row["pool_totals"]["units"]
        row["helper_share"] = row["pool_totals"]["helped"] / units if units else None


# ---- the measurements ----------------------------------------------------------


def rust_insert(harness: rust_harness.Harness, config: Config, arity: int,
                leaves: int) -> Tuple[bytes, float, Dict[str, int]]:
    """One timed insert_many of the crate into a fresh tree, in the harness."""
    reply = harness.call(config["build"], "insert_many", v=config["rust"], arity=arity,
                         leaves=leaves, threads=config["threads"], warmup=0, reps=1,
                         memory="fresh" if config.get("fresh_pages") else "reused")
    stats = {f: 0 for f in Runner.STAT_FIELDS}
    stats["minor_faults"] = reply["minor_faults"][0]
    return bytes.fromhex(reply["root"]), reply["samples_ns"][0] / 1e9, stats


def python_peer(rows: List[Row], rust_row: Row) -> Optional[Row]:
    """This package's row that a crate row is compared with: same memory
    state, sequential for the sequential build and a 1-thread pool, the same
    thread count otherwise."""
    threads = max(1, rust_row["threads"])
    return next((r for r in rows
                 if r["memory"] == rust_row["memory"] and r["threads"] == threads), None)


def fresh_batches(runner: Runner, configs: List[Config], arities: List[int], data: bytes,
                  leaves: int, repeat: int, max_depth: int, problems: List[str], what: str,
                  heap: Heap, progress: Optional[Progress] = None,
                  harness: Optional[rust_harness.Harness] = None) -> Dict[int, List[Row]]:
    """insert_many of `data` into a fresh tree, per arity and configuration;
    rows come back in the order of `configs`, summarised per memory state
    (and per crate version for the crate's rows, which also carry their
    ratio to this package's matching row)."""
    rows = {a: [new_row(c) for c in configs] for a in arities}
    for rep in range(-1, repeat):                      # rep -1: untimed warm-up
        for arity in arities:
            primed = False
            for index in rotated(list(range(len(configs))), max(rep, 0)):
                config, row = configs[index], rows[arity][index]
                if "rust" in config:
                    if harness is None:
                        raise ValueError("a crate configuration needs the harness")
                    root, elapsed, stats = rust_insert(harness, config, arity, leaves)
                else:
                    runner.apply(config, arity)
                    if config.get("fresh_pages"):
                        heap.release()
                        primed = False
                    elif not primed:
                        # Untimed: map as much memory as a tree of this arity
                        # needs (after another arity or a malloc_trim), so that
                        # "reused memory" calls take no page faults.
                        primer = rotortree.LeanIMT(arity, max_depth)
                        primer.insert_many(data)
                        del primer
                        primed = True
                    fresh_tree = rotortree.LeanIMT(arity, max_depth)
                    root, elapsed, stats = runner.timed(
                        lambda: fresh_tree.insert_many(data))  # noqa: B023
                    del fresh_tree
                if row["root"] is None:
                    row["root"] = root.hex()
                elif row["root"] != root.hex():
                    problems.append(f"{what}, arity {arity}, {config['label']} "
                                    f"({row['memory']}): root changed between repetitions")
                if rep >= 0:
                    record(row, elapsed, stats)
        if progress is not None:
            progress.update()
    for arity in arities:
        # An independent check: the stateless path, single-threaded.
        rotortree.configure(num_threads=1)
        expected = rotortree.compute_root(data, arity).hex()
        for row in rows[arity]:
            if row["rust"] == 17:
                # Another hash rule (no 0x01 || k prefix): its roots must agree
                # with each other, not with this package's.
                first = next(r for r in rows[arity] if r["rust"] == 17)
                if row["root"] != first["root"]:
                    problems.append(f"{what}, arity {arity}, {row['label']}: 0.17 root "
                                    f"{row['root']} != {first['label']} {first['root']}")
            elif row["root"] != expected:
                problems.append(f"{what}, arity {arity}, {row['label']}: root {row['root']} "
                                f"!= compute_root {expected}")
        for memory in ("reused", "fresh pages"):
            for version in (None, *RUST_VERSIONS):
                part = [r for r in rows[arity] if r["memory"] == memory
                        and r["rust"] == version]
                if part:
                    summarise(part, leaves)   # each part starts with its sequential row
        ours = [r for r in rows[arity] if r["rust"] is None]
        for row in rows[arity]:
            peer = python_peer(ours, row) if row["rust"] is not None else None
            if peer is not None:
                # > 1: this package is faster than the crate in that repetition.
                row["python_peer"] = peer["label"]
                row["crate_over_python"] = ratio_summary(
                    paired_ratios(row["samples_ms"], peer["samples_ms"]))
    return rows


def appended_batches(runner: Runner, configs: List[Config], arity: int, stream: bytes,
                     base: int, batch: int, repeat: int, max_depth: int,
                     problems: List[str], progress: Optional[Progress] = None) -> List[Row]:
    """Small batches appended to one pre-filled tree per configuration."""
    rows = [new_row(c) for c in configs]
    view = memoryview(stream)
    trees = []
    rotortree.configure(num_threads=1)
    for _ in configs:
        tree = rotortree.LeanIMT(arity, max_depth)
        if base:
            tree.insert_many(view[: base * 32])
        trees.append(tree)
    mismatched = 0
    for rep in range(-1, repeat):                      # rep -1: untimed warm-up
        first = base + (rep + 1) * batch
        chunk = view[first * 32: (first + batch) * 32]
        roots: Dict[int, bytes] = {}
        for index in rotated(list(range(len(configs))), max(rep, 0)):
            config, row, tree = configs[index], rows[index], trees[index]
            runner.apply(config, arity)
            root, elapsed, stats = runner.timed(lambda: tree.insert_many(chunk))  # noqa: B023
            roots[index] = root
            if rep >= 0:
                record(row, elapsed, stats)
        if len(set(roots.values())) != 1:
            mismatched += 1
        if progress is not None:
            progress.update()
    if mismatched:
        problems.append(f"{batch}-leaf batches: roots differed between configurations "
                        f"after {mismatched} batch(es)")
    total = base + (repeat + 1) * batch
    rotortree.configure(num_threads=1)
    expected = rotortree.compute_root(view[: total * 32], arity).hex()
    for row, tree in zip(rows, trees):
        row["root"] = (tree.root or b"").hex()
        row["final_size"] = tree.size
        if row["root"] != expected:
            problems.append(f"{batch}-leaf batches, {row['label']}: final root {row['root']} "
                            f"!= compute_root {expected}")
    summarise(rows, batch)
    # Paired view: each repetition measures every configuration back to back.
    base_samples = rows[0]["samples_ms"]
    for row in rows:
        row["slower_than_sequential_fraction"] = sum(
            s > b for s, b in zip(row["samples_ms"], base_samples)) / len(base_samples)
    return rows


def run(args: argparse.Namespace, command: str, show_progress: bool = True,
        harness: Optional[rust_harness.Harness] = None) -> Tuple[Dict[str, Any], str]:
    """Measure everything; returns the JSON payload and the Markdown report.
    ``payload["problems"]`` lists root mismatches (empty when all agree).
    With ``harness``, the crate's configurations join the thread-scaling
    repetitions."""
    started = time.perf_counter()
    cpus = rotortree.available_cpus()
    runner = Runner(args.gap_ms / 1e3, args.simd)
    heap = Heap()
    if not heap.controlled and show_progress:
        print("note: cannot control the allocator (not glibc): the memory state of fresh "
              "trees is whatever the allocator gives; see the page-fault counts",
              file=sys.stderr)
    problems: List[str] = []
    stream_leaves = max(args.leaves, args.base_leaves + (args.small_repeat + 1) * args.small_batch)
    stream = deterministic_leaves(stream_leaves)
    data = stream[: args.leaves * 32]

    loads: Dict[str, Dict[str, Any]] = {}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    before = rotortree.pool_info()
    fresh_pages = heap.controlled and not args.no_fresh_pages
    try:
        t_configs = thread_configs(cpus, args.threads, fresh_pages)
        if harness is not None:
            t_configs += rust_configs(fresh_pages)
        th_configs = threshold_configs(cpus, args.thresholds)
        # One step per repetition (the untimed warm-up included) of each part.
        with Progress(2 * (args.repeat + 1) + args.small_repeat + 1,
                      "scaling", enabled=show_progress, unit="rep") as progress:
            meter = LoadMeter()
            both = fresh_batches(runner, t_configs, args.arities, data, args.leaves,
                                 args.repeat, args.max_depth, problems, "thread scaling", heap,
                                 progress, harness)
            loads["thread_scaling"] = meter.report()
            meter = LoadMeter()
            large = fresh_batches(runner, th_configs, [args.threshold_arity], data, args.leaves,
                                  args.repeat, args.max_depth, problems,
                                  "threshold, large batches", heap,
                                  progress)[args.threshold_arity]
            loads["threshold_large"] = meter.report()
            meter = LoadMeter()
            small = appended_batches(runner, th_configs, args.threshold_arity, stream,
                                     args.base_leaves, args.small_batch, args.small_repeat,
                                     args.max_depth, problems, progress)
            loads["threshold_small"] = meter.report()
    finally:
        if gc_was_enabled:
            gc.enable()
        rotortree.configure(num_threads=before["num_threads"],
                            parallel_threshold=before["parallel_threshold"],
                            par_chunk_size=before["par_chunk_size"], simd=before["simd"])

    ceiling = machine_ceiling(min(cpus, 2), max(5, min(args.repeat, 15)))
    facts = machine()
    blocks = []
    for arity, rows in both.items():
        blocks.append({
            "arity": arity,
            "rows": [r for r in rows if r["rust"] is None and r["memory"] == "reused"],
            "fresh_page_rows": [r for r in rows if r["rust"] is None
                                and r["memory"] != "reused"],
            "rust_rows": [r for r in rows if r["rust"] is not None],
        })
    payload: Dict[str, Any] = {
        "benchmark": "scaling",
        "command": command,
        "machine": facts,
        "build": build_facts(),
        "settings": {
            "leaves": args.leaves, "small_batch": args.small_batch,
            "base_leaves": args.base_leaves, "repeat": args.repeat,
            "small_repeat": args.small_repeat, "arities": args.arities,
            "thresholds": args.thresholds, "threshold_arity": args.threshold_arity,
            "max_depth": args.max_depth, "gap_ms": args.gap_ms, "quick": args.quick,
            "available_cpus": cpus, "default_parallel_threshold": DEFAULT_PARALLEL_THRESHOLD,
            "par_chunk_size": DEFAULT_PAR_CHUNK_SIZE, "simd": rotortree.pool_info()["simd"],
            "warmup_repetitions": 1,
            "one_thread_pool": "bypassed: num_threads=1 never enters the pool",
            "small_batch_mode": "append: one long-lived tree per configuration, "
                                "pre-filled with base_leaves, same batches for all",
            "large_batch_mode": "fresh tree per call, creation untimed",
            "memory": ("glibc trim threshold raised: freed memory is reused; 'fresh pages' "
                       "rows call malloc_trim(0) and rt_release_cached_memory() untimed "
                       "before creating the tree")
                      if heap.controlled else "uncontrolled allocator",
            "heap_controlled": heap.controlled,
            "rust_crates": harness is not None,
        },
        "thread_scaling": blocks,
        "threshold_impact": {
            "arity": args.threshold_arity, "threads": max(cpus, 2),
            "small": {"batch": args.small_batch, "rows": small},
            "large": {"batch": args.leaves, "rows": large},
        },
        "two_thread_ceiling": ceiling,
        "machine_load": loads,
        "roots_identical": not problems,
        "problems": problems,
    }
    payload["targets"] = scaling_report.targets(payload)
    payload["runtime_s"] = time.perf_counter() - started
    return payload, scaling_report.markdown(payload)


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: str = "python -m rotortree.benchmarks.scaling") -> int:
    args = parse_args(argv, default_out, prog)
    if args.replot:
        return scaling_report.replot(args.out)
    command = prog + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    with rust_harness.from_options(args) as harness:
        if harness is None and not args.no_harness:
            print("note: the Rust harness is not built (see tools/rust_harness/README.md): "
                  "measuring this package only", file=sys.stderr)
        payload, text = run(args, command, harness=harness)
    problems = payload["problems"]
    path = write_results_to(args.out, "scaling", payload, text)
    print(text)
    print(f"wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    if not args.no_plot:
        png = args.out / "scaling.png"
        if scaling_report.plot(png, payload):
            print(f"wrote {png}", file=sys.stderr)
    if problems:
        print("ERROR: roots differ between configurations:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
