"""Thread scaling and parallel-threshold impact of insert_many, the two tables
of the Rust crate's documentation, measured on this machine.

    python bench/scaling.py [--quick] [--repeat N] [--arities 2,4,8,16] [--out DIR]

(``rotortree bench`` runs the same measurements as part of its suite.)
Writes DIR/scaling.md (tables), DIR/scaling.json (settings, raw samples, pool
counters, the root of every configuration) and DIR/scaling.png (needs the
optional matplotlib; skipped with a note otherwise).

Method (also printed in the Markdown):
- Every configuration is measured in the same run, round-robin: each
  repetition visits every configuration once, in an order rotated by one
  place per repetition, so drift on this shared machine hits all alike. One
  untimed repetition of everything runs first. Reported figures are medians.
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
import ctypes
import gc
import os
import pathlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import rotortree
from rotortree.config import DEFAULT_PAR_CHUNK_SIZE, DEFAULT_PARALLEL_THRESHOLD

from ._common import (
    Progress,
    deterministic_leaves,
    fmt_ms,
    fmt_rate,
    load_pyplot,
    machine,
    median,
    write_results_to,
)

try:
    import resource
except ImportError:  # not on Windows; page faults are then not counted
    resource = None  # type: ignore[assignment]

Row = Dict[str, Any]
Config = Dict[str, Any]

# The Rust crate's documentation, measured earlier on this machine kind
# (arity 4, 1,000,000 leaves): (low, high) milliseconds.
RUST_REFERENCE = {
    "sequential_ms": (107.0, 110.0),
    "two_threads_ms": (67.0, 76.0),
    "two_threads_speedup": (1.4, 1.6),
}
TARGET_ONE_THREAD_OVERHEAD = 0.02   # 1-thread pool at most 2% over sequential
TARGET_TWO_THREAD_SPEEDUP = 1.85    # at 1M leaves, arity 4
WARM_LEAVES = 1 << 17               # compute_root that starts the pool untimed


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
    (the C core runs every level on the caller), so there is no separate
    "1 thread through the pool" configuration to measure."""
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


def threshold_configs(cpus: int, thresholds: List[int]) -> List[Config]:
    configs: List[Config] = [
        {"label": "sequential", "threads": 1, "threshold": DEFAULT_PARALLEL_THRESHOLD}]
    for t in thresholds:
        label = f"{t}" + (" (default)" if t == DEFAULT_PARALLEL_THRESHOLD else "")
        configs.append({"label": label, "threads": max(cpus, 2), "threshold": t})
    return configs


class LoadMeter:
    """How busy the machine was with other processes while we measured: CPU
    time used by everything but this process, as a share of all CPUs."""

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> Tuple[float, Optional[float], Optional[float], float]:
        busy = steal = None
        try:
            with open("/proc/stat") as stat:
                fields = [int(x) for x in stat.readline().split()[1:]]
            tick = os.sysconf("SC_CLK_TCK")
            # user nice system idle iowait irq softirq steal: busy excludes
            # idle, iowait and steal (time the hypervisor ran something else).
            busy = (sum(fields[:7]) - fields[3] - fields[4]) / tick
            steal = fields[7] / tick
        except (OSError, ValueError, IndexError):
            pass
        mine = os.times()
        return time.perf_counter(), busy, steal, mine.user + mine.system

    def report(self) -> Dict[str, Any]:
        (t0, b0, s0, m0), (t1, b1, s1, m1) = self.start, self._sample()
        cpus = os.cpu_count() or 1
        out: Dict[str, Any] = {"seconds": t1 - t0, "loadavg_end": list(os.getloadavg()),
               "own_cpu_s": m1 - m0}
        if b0 is not None and b1 is not None and s0 is not None and s1 is not None \
                and t1 > t0:
            out["other_processes_cpu_share"] = max(0.0, (b1 - b0) - (m1 - m0)) / (
                (t1 - t0) * cpus)
            out["steal_share"] = (s1 - s0) / ((t1 - t0) * cpus)
        return out


def fmt_load(load: Dict[str, Any]) -> str:
    share = load.get("other_processes_cpu_share")
    text = f"load average {load['loadavg_end'][0]:.2f}"
    if share is not None:
        text += (f", other processes used {share:.0%} and the hypervisor stole "
                 f"{load.get('steal_share', 0):.0%} of all CPUs")
    return text


def build_facts() -> Dict[str, Any]:
    """Which extension and sources were measured (read-only git queries)."""
    import hashlib
    import subprocess

    from rotortree import _native

    facts: Dict[str, Any] = {}
    # The checkout the imported package lives in, which may not be ours.
    package_root = pathlib.Path(rotortree.__file__).resolve().parent.parent
    so = getattr(_native.lib, "__file__", None) or getattr(
        sys.modules.get("rotortree._rotortree_cffi"), "__file__", None)
    if so and os.path.exists(so):
        facts["extension"] = so
        facts["extension_sha256"] = hashlib.sha256(pathlib.Path(so).read_bytes()).hexdigest()
        facts["extension_mtime"] = time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.localtime(os.path.getmtime(so)))
    try:
        def git(*argv: str) -> str:
            return subprocess.run(["git", *argv], cwd=package_root, capture_output=True,
                                  text=True, timeout=10, check=True).stdout.rstrip("\n")
        facts["git_head"] = git("rev-parse", "--short", "HEAD")
        facts["modified_sources"] = [line[3:] for line in
                                     git("status", "--porcelain", "--", "csrc").splitlines()]
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def rotated(items: List[int], rep: int) -> List[int]:
    k = rep % len(items)
    return items[k:] + items[:k]


class Heap:
    """Makes the memory state of a fresh tree explicit (glibc only).

    Whether a fresh tree's memory is already mapped depends on the allocator's
    history: glibc returns freed memory to the OS above a trim threshold that
    it moves by itself, and faulting 40 MB back in can double the time of a
    1M-leaf insert. So the threshold is raised once (freed memory stays
    mapped: "reused memory", the steady state of a long-running process), and
    the "fresh pages" configurations call malloc_trim(0) and empty the C
    core's cache of freed level mappings, untimed, before the tree is
    created, so that the insert faults in every page it writes (a first
    build in a new process, or a tree growing into new memory)."""

    M_TRIM_THRESHOLD = -1

    def __init__(self) -> None:
        self.controlled = False
        self._trim: Any = None
        try:
            libc = ctypes.CDLL(None)
            self._trim = libc.malloc_trim
            self.controlled = libc.mallopt(self.M_TRIM_THRESHOLD, 1 << 30) == 1
        except (OSError, AttributeError):
            pass

    def release(self) -> None:
        if self.controlled:
            self._trim(0)
        from rotortree._native import lib

        release_cached = getattr(lib, "rt_release_cached_memory", None)
        if release_cached is not None:
            release_cached()


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else 0


class Runner:
    """Applies a configuration and times one call with the conditions the
    module docstring describes, collecting samples and pool counters."""

    STAT_FIELDS = ("jobs", "units", "helped", "parks", "idle_ns", "minor_faults")

    def __init__(self, gap_s: float, simd: Optional[str]) -> None:
        self.gap_s = gap_s
        self.simd = simd
        self.warm: Dict[int, bytes] = {}

    def apply(self, config: Config, arity: int) -> None:
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
            "memory": "fresh pages" if config.get("fresh_pages") else "reused",
            "parallel_threshold": config["threshold"], "samples_ms": [],
            "minor_faults_samples": [], "pool_totals": {f: 0 for f in Runner.STAT_FIELDS},
            "root": None}


def record(row: Row, elapsed: float, stats: Dict[str, int]) -> None:
    row["samples_ms"].append(elapsed * 1e3)
    row["minor_faults_samples"].append(stats["minor_faults"])
    for key, value in stats.items():
        row["pool_totals"][key] += value


def summarise(rows: List[Row], leaves: int) -> None:
    base = median(rows[0]["samples_ms"])
    for row in rows:
        m = median(row["samples_ms"])
        calls = len(row["samples_ms"])
        row["median_ms"] = m
        row["min_ms"] = min(row["samples_ms"])
        row["leaves_per_s"] = leaves / (m / 1e3)
        row["ratio_vs_sequential"] = m / base
        row["speedup_vs_sequential"] = base / m
        row["pool_per_call"] = {k: v / calls for k, v in row["pool_totals"].items()}
        # Units run by pool workers (stolen) out of all units run on the pool;
        # 0.5 is an even split between the caller and one helper.
        units = row["pool_totals"]["units"]
        row["helper_share"] = row["pool_totals"]["helped"] / units if units else None


# ---- the measurements ----------------------------------------------------------


def fresh_batches(runner: Runner, configs: List[Config], arities: List[int], data: bytes,
                  leaves: int, repeat: int, max_depth: int, problems: List[str], what: str,
                  heap: Heap, progress: Optional[Progress] = None) -> Dict[int, List[Row]]:
    """insert_many of `data` into a fresh tree, per arity and configuration;
    rows come back in the order of `configs`, summarised per memory state."""
    rows = {a: [new_row(c) for c in configs] for a in arities}
    for rep in range(-1, repeat):                      # rep -1: untimed warm-up
        for arity in arities:
            primed = False
            for index in rotated(list(range(len(configs))), max(rep, 0)):
                config, row = configs[index], rows[arity][index]
                runner.apply(config, arity)
                if config.get("fresh_pages"):
                    heap.release()
                    primed = False
                elif not primed:
                    # Untimed: map as much memory as a tree of this arity needs
                    # (after another arity or a malloc_trim), so that "reused
                    # memory" calls take no page faults.
                    primer = rotortree.LeanIMT(arity, max_depth)
                    primer.insert_many(data)
                    del primer
                    primed = True
                fresh_tree = rotortree.LeanIMT(arity, max_depth)
                root, elapsed, stats = runner.timed(lambda: fresh_tree.insert_many(data))
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
            if row["root"] != expected:
                problems.append(f"{what}, arity {arity}, {row['label']}: root {row['root']} "
                                f"!= compute_root {expected}")
        for memory in ("reused", "fresh pages"):
            part = [r for r in rows[arity] if r["memory"] == memory]
            if part:
                summarise(part, leaves)   # each part starts with its sequential row
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


# ---- report --------------------------------------------------------------------


def machine_ceiling(threads: int, repeat: int) -> Optional[float]:
    """Speedup of ``threads`` independent threads over one, each hashing a
    cache-resident buffer with the blake3 package (GIL released, nothing
    shared, no memory traffic): the most any parallel code could gain on this
    machine at this moment. A VM's vCPUs can be SMT siblings or share a host
    core with other guests, so this is often below ``threads``."""
    if threads < 2:
        return None
    import threading

    import blake3

    # 1 MiB per call: cache-resident (L2/L3), and long enough (~0.3 ms) that
    # the GIL handoff between calls is noise.
    buffer = bytes(1 << 20)
    calls = 192

    def work(count: int) -> None:
        for _ in range(count):
            blake3.blake3(buffer, max_threads=1).digest()

    def timed(parallel: int) -> float:
        workers = [threading.Thread(target=work, args=(calls // parallel,))
                   for _ in range(parallel)]
        start = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.perf_counter() - start

    timed(threads)  # warm-up
    one: List[float] = []
    many: List[float] = []
    for _ in range(repeat):
        one.append(timed(1))
        many.append(timed(threads))
    return median(one) / median(many)


def targets(scaling: Dict[int, List[Row]], small: List[Row],
            args: argparse.Namespace,
            ceiling: Optional[float] = None) -> List[Dict[str, str]]:
    """Each target marked met/missed from this run's medians; "not measured"
    when the run did not use the sizes the target speaks of."""
    results = [{
        "target": f"1-thread pool costs at most {TARGET_ONE_THREAD_OVERHEAD:.0%} over "
                  "sequential",
        "measured": "0% by design: num_threads=1 never enters the pool (the C core "
                    "runs every level on the calling thread), so 1 thread is the "
                    "sequential path; the pool's own cost shows in the 10,000-leaf "
                    "threshold rows",
        "status": "met (by design)",
    }]
    name = (f"2 threads >= {TARGET_TWO_THREAD_SPEEDUP}x over sequential "
            f"(1,000,000 leaves, arity 4)")
    rows4 = scaling.get(4) or []
    two = next((r for r in rows4 if r["threads"] == 2), None)
    if two is None:
        results.append({"target": name, "measured": "arity 4 with 2 threads not in this run",
                        "status": "not measured"})
    else:
        speedup = two["speedup_vs_sequential"]
        status = "met" if speedup >= TARGET_TWO_THREAD_SPEEDUP else "missed"
        results.append({
            "target": name,
            "measured": f"{speedup:.2f}x ({fmt_ms(two['median_ms'])} ms vs "
                        f"{fmt_ms(rows4[0]['median_ms'])} ms) at {args.leaves:,} leaves"
                        + (f"; this machine's ceiling in the same run: {ceiling:.2f}x "
                           "(two threads of pure, cache-resident hashing)"
                           if ceiling is not None else ""),
            "status": status if args.leaves == 1_000_000 else "not measured (other size)",
        })
    name = ("10,000-leaf batches never slower than sequential at the default threshold "
            f"({DEFAULT_PARALLEL_THRESHOLD})")
    default = next((r for r in small if r["threads"] > 1
                    and r["parallel_threshold"] == DEFAULT_PARALLEL_THRESHOLD), None)
    if default is None:
        results.append({"target": name, "measured": "default threshold not in this run",
                        "status": "not measured"})
    else:
        ratio = default["ratio_vs_sequential"]
        status = "met" if ratio <= 1.0 else "missed"
        results.append({
            "target": name,
            "measured": f"median {fmt_ms(default['median_ms'])} ms vs "
                        f"{fmt_ms(small[0]['median_ms'])} ms (ratio {ratio:.3f}) at "
                        f"{args.small_batch:,} leaves; slower in "
                        f"{default['slower_than_sequential_fraction']:.0%} of paired "
                        f"repetitions",
            "status": status if args.small_batch == 10_000 else "not measured (other size)",
        })
    return results


def share(row: Row) -> str:
    return "-" if row["helper_share"] is None else f"{row['helper_share']:.0%}"


def pool_cell(row: Row) -> str:
    per = row["pool_per_call"]
    return (f"{per['jobs']:.1f} / {per['parks']:.1f} / {share(row)} / "
            f"{per['minor_faults']:.0f}")


def markdown(args: argparse.Namespace, facts: Dict[str, Any], cpus: int,
             scaling: Dict[int, List[Row]], fresh: Dict[int, List[Row]], large: List[Row],
             small: List[Row], target_rows: List[Dict[str, str]], problems: List[str],
             command: str, runtime_s: float, loads: Dict[str, Dict[str, Any]],
             heap_controlled: bool) -> str:
    out = [
        "# insert_many: thread scaling and parallel threshold",
        "",
        f"machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs, "
        f"{cpus} available to this process, {facts['memory_gib']} GiB, kernel "
        f"{facts['simd']}, Python {facts['python']}",
        f"command: `{command}` ({runtime_s:.0f} s)",
        "",
        "Method: every configuration measured in this one run, round-robin (each repetition "
        "visits all configurations once, order rotated per repetition), after one untimed "
        "repetition; medians. Before each timed call the pool is reconfigured and started by "
        "an untimed compute_root, then the process idles "
        f"{args.gap_ms:g} ms so workers have parked, as between a service's batches. "
        f"par_chunk_size {DEFAULT_PAR_CHUNK_SIZE}, max_depth {args.max_depth}. "
        "The machine is shared: see the load noted under each table.",
        "",
        f"## Thread scaling: {args.leaves:,} leaves into a fresh tree",
        "",
        f"Tree creation untimed; parallel_threshold {DEFAULT_PARALLEL_THRESHOLD}; median of "
        f"{args.repeat}. \u2020 num_threads=1 never enters the pool (the C core hashes every "
        "level on the calling thread), so a 1-thread pool cannot be forced through the API: "
        "the row \"1 \u2020\" repeats the sequential measurement. helper units = share of "
        "the pool's work units run by pool workers rather than the calling thread (50% is "
        "an even split with one helper).",
        "",
        ("Memory: the main columns reuse memory freed by the previous tree (glibc's trim "
         "threshold is raised, so the insert takes no page faults: the steady state of a "
         "long-running process). The \"fresh pages\" columns return freed memory to the OS "
         "(malloc_trim and the C core's mapping cache, untimed) before creating the tree, "
         "so the insert faults in every "
         "page it writes, as a first build or a tree growing into new memory does; faults "
         "= minor page faults per call."
         if heap_controlled else
         "Memory: the allocator is not glibc, so whether fresh trees reuse mapped memory is "
         "not controlled; faults = minor page faults per call."),
        "",
    ]
    for arity, rows in scaling.items():
        fresh_rows = {r["label"]: r for r in fresh.get(arity, [])}
        head = ("| threads | median ms | leaves/s | speedup vs sequential | min ms | faults "
                "| helper units |")
        rule = "|---|---:|---:|---:|---:|---:|---:|"
        if fresh_rows:
            head += " fresh pages: median ms | speedup | faults |"
            rule += "---:|---:|---:|"
        out += [f"### arity {arity}", "", head, rule]
        for row in rows:
            cells = (f"{fmt_ms(row['median_ms'])} | {fmt_rate(row['leaves_per_s'])} | "
                     f"{row['speedup_vs_sequential']:.2f}x | {fmt_ms(row['min_ms'])} | "
                     f"{row['pool_per_call']['minor_faults']:.0f} | {share(row)}")
            other = fresh_rows.get(row["label"])
            if other:
                cells += (f" | {fmt_ms(other['median_ms'])} | "
                          f"{other['speedup_vs_sequential']:.2f}x | "
                          f"{other['pool_per_call']['minor_faults']:.0f}")
            out.append(f"| {row['label']} | {cells} |")
            if row["threads"] == 1:
                out.append(f"| 1 \u2020 | {cells} |")
        out.append("")
    if "thread_scaling" in loads:
        out += [f"During this table: {fmt_load(loads['thread_scaling'])}.", ""]

    out += [
        f"## Threshold impact: arity {args.threshold_arity}, "
        f"{max(cpus, 2)} threads",
        "",
        f"{args.small_batch:,}-leaf batches are appended to one tree per configuration that "
        f"starts with {args.base_leaves:,} leaves (pre-filled untimed) and keeps growing "
        f"(to {small[0]['final_size']:,}); only the insert_many call is timed; median of "
        f"{args.small_repeat}. {args.leaves:,}-leaf batches go into a fresh tree, median of "
        f"{args.repeat}. Ratio = median / sequential median. \"pool\" = per call: pool jobs "
        "(levels hashed on the pool) / worker wake-ups (parks ended) / share of the pool's "
        "units run by workers rather than the caller / minor page faults, from "
        "rotortree.pool_stats() and getrusage.",
        "",
        f"| parallel_threshold | {args.small_batch:,} leaves ms | ratio | pool "
        f"| {args.leaves:,} leaves ms | ratio | pool |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s_row, l_row in zip(small, large):
        out.append(
            f"| {s_row['label']} | {fmt_ms(s_row['median_ms'])} | "
            f"{s_row['ratio_vs_sequential']:.3f} | {pool_cell(s_row)} | "
            f"{fmt_ms(l_row['median_ms'])} | {l_row['ratio_vs_sequential']:.3f} | "
            f"{pool_cell(l_row)} |")
    out.append("")
    never = [r for r in small[1:] if r["pool_per_call"]["jobs"] == 0]
    if never:
        spread = max(abs(r["ratio_vs_sequential"] - 1) for r in never)
        out += [f"Noise floor: configurations whose {args.small_batch:,}-leaf batches never "
                f"reach the pool ({', '.join(r['label'] for r in never)}) differ from "
                f"sequential by up to {spread:.1%}.", ""]
    slow = [f"{r['label']}: {sum(s > 3 * median(r['samples_ms']) for s in r['samples_ms'])}"
            for r in small]
    out += [f"{args.small_batch:,}-leaf calls slower than 3x their median, out of "
            f"{args.small_repeat}: " + ", ".join(slow) + ".", ""]
    for key, what in (("threshold_large", f"{args.leaves:,}-leaf columns"),
                      ("threshold_small", f"{args.small_batch:,}-leaf columns")):
        if key in loads:
            out.append(f"During the {what}: {fmt_load(loads[key])}.")
    out.append("")

    low, high = RUST_REFERENCE["sequential_ms"]
    tlow, thigh = RUST_REFERENCE["two_threads_ms"]
    slow_x, shigh_x = RUST_REFERENCE["two_threads_speedup"]
    rows4 = scaling.get(4)
    two = next((r for r in rows4 or [] if r["threads"] == 2), None)
    same_size = args.leaves == 1_000_000
    ours_seq = f"{fmt_ms(rows4[0]['median_ms'])} ms" if rows4 and same_size else "not measured"
    ours_two = (f"{fmt_ms(two['median_ms'])} ms ({two['speedup_vs_sequential']:.2f}x)"
                if two and same_size else "not measured")
    out += [
        "## Beside the Rust crate",
        "",
        "The Rust crate rotortree's documentation figures (arity 4, 1,000,000 leaves), "
        "measured earlier on this machine kind, as the crate's docs report them:",
        "",
        "| arity 4, 1,000,000 leaves | Rust crate rotortree | this run |",
        "|---|---:|---:|",
        f"| sequential | {low:.0f}-{high:.0f} ms | {ours_seq} |",
        f"| 2 threads | {tlow:.0f}-{thigh:.0f} ms ({slow_x}-{shigh_x}x) | {ours_two} |",
        "",
        "## Targets (reported from the measurements above, not asserted)",
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    for t in target_rows:
        out.append(f"| {t['target']} | {t['measured']} | **{t['status']}** |")
    out.append("")
    if problems:
        out += ["## ROOT MISMATCHES", ""] + [f"- {p}" for p in problems] + [""]
    else:
        out.append("Roots: every configuration produced the same root as compute_root "
                   "(and, for appended batches, the same root after every batch).")
    return "\n".join(out)


def unpack(payload: Dict[str, Any]) -> Tuple[int, Dict[int, List[Row]], Dict[int, List[Row]],
                                             List[Row], List[Row]]:
    """(cpus, scaling, fresh, large, small) from a payload of :func:`run`."""
    scaling = {b["arity"]: b["rows"] for b in payload["thread_scaling"]}
    fresh = {b["arity"]: b.get("fresh_page_rows", []) for b in payload["thread_scaling"]}
    impact = payload["threshold_impact"]
    return (payload["settings"]["available_cpus"], scaling, fresh, impact["large"]["rows"],
            impact["small"]["rows"])


def plot_speedup(axes: Any, payload: Dict[str, Any]) -> None:
    """Speedup vs threads, one line per arity (fresh-page runs dashed)."""
    cpus, scaling, fresh, _, _ = unpack(payload)
    most = 1
    for arity, rows in scaling.items():
        xs = [r["threads"] for r in rows]
        most = max(most, *xs)
        line, = axes.plot(xs, [r["speedup_vs_sequential"] for r in rows], marker="o",
                          label=f"arity {arity}")
        if fresh.get(arity):
            axes.plot([r["threads"] for r in fresh[arity]],
                      [r["speedup_vs_sequential"] for r in fresh[arity]], marker="x",
                      ls="--", color=line.get_color(), alpha=0.6,
                      label=f"arity {arity}, fresh pages")
    ideal = list(range(1, most + 1))
    axes.plot(ideal, [min(x, cpus) for x in ideal], "k:", label="ideal (CPUs)")
    axes.axvline(cpus, color="grey", lw=0.8, ls="--")
    axes.axhline(TARGET_TWO_THREAD_SPEEDUP, color="tab:red", lw=0.8, ls="--",
                 label=f"target {TARGET_TWO_THREAD_SPEEDUP}x (arity 4, 2 threads)")
    axes.set_xlabel("threads (1 = sequential)")
    axes.set_ylabel("speedup vs sequential")
    axes.set_title(f"Thread scaling, {payload['settings']['leaves']:,} leaves, fresh tree")
    axes.set_xticks(sorted({r["threads"] for rows in scaling.values() for r in rows}))
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2, loc="lower right")


def plot_threshold(axes: Any, payload: Dict[str, Any]) -> None:
    """Time relative to sequential per parallel_threshold, small and large batches."""
    cpus, _, _, large, small = unpack(payload)
    settings = payload["settings"]
    labels = [r["label"].replace(" (default)", "*") for r in small]
    xs = range(len(labels))
    width = 0.38
    axes.bar([x - width / 2 for x in xs], [r["ratio_vs_sequential"] for r in small], width,
             label=f"{settings['small_batch']:,} leaves (appended)")
    axes.bar([x + width / 2 for x in xs], [r["ratio_vs_sequential"] for r in large], width,
             label=f"{settings['leaves']:,} leaves (fresh tree)")
    axes.axhline(1.0, color="k", lw=0.8)
    tallest = max(r["ratio_vs_sequential"] for r in small + large)
    axes.set_ylim(0, max(1.0, tallest) * 1.3)
    axes.set_xticks(list(xs))
    axes.set_xticklabels(labels)
    axes.set_xlabel("parallel_threshold (* default)")
    axes.set_ylabel("time / sequential time (lower is better)")
    axes.set_title(f"Threshold impact, arity {settings['threshold_arity']}, "
                   f"{max(cpus, 2)} threads")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8, loc="upper right")


def plot(path: pathlib.Path, payload: Dict[str, Any], args: argparse.Namespace) -> bool:
    """Both panels side by side in one PNG; False without matplotlib."""
    plt = load_pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    plot_speedup(left, payload)
    plot_threshold(right, payload)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def replot(args: argparse.Namespace) -> int:
    import json

    payload = json.loads((args.out / "scaling.json").read_text())
    png = args.out / "scaling.png"
    if plot(png, payload, args):
        print(f"wrote {png}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace, command: str,
        show_progress: bool = True) -> Tuple[Dict[str, Any], str]:
    """Measure everything; returns the JSON payload and the Markdown report.
    ``payload["problems"]`` lists root mismatches (empty when all agree)."""
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
    try:
        t_configs = thread_configs(cpus, args.threads,
                                   heap.controlled and not args.no_fresh_pages)
        th_configs = threshold_configs(cpus, args.thresholds)
        # One step per repetition (the untimed warm-up included) of each part.
        with Progress(2 * (args.repeat + 1) + args.small_repeat + 1,
                      "scaling", enabled=show_progress, unit="rep") as progress:
            meter = LoadMeter()
            both = fresh_batches(runner, t_configs, args.arities, data, args.leaves,
                                 args.repeat, args.max_depth, problems, "thread scaling", heap,
                                 progress)
            scaling = {a: [r for r in rows if r["memory"] == "reused"]
                       for a, rows in both.items()}
            fresh = {a: [r for r in rows if r["memory"] != "reused"]
                     for a, rows in both.items()}
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

    ceiling = machine_ceiling(min(cpus, 2), max(3, min(args.repeat, 9)))
    target_rows = targets(scaling, small, args, ceiling)
    facts = machine()
    runtime = time.perf_counter() - started
    text = markdown(args, facts, cpus, scaling, fresh, large, small, target_rows, problems,
                    command, runtime, loads, heap.controlled)
    payload = {
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
        },
        "thread_scaling": [{"arity": a, "rows": rows, "fresh_page_rows": fresh[a]}
                           for a, rows in scaling.items()],
        "threshold_impact": {
            "arity": args.threshold_arity, "threads": max(cpus, 2),
            "small": {"batch": args.small_batch, "rows": small},
            "large": {"batch": args.leaves, "rows": large},
        },
        "reference_rust": RUST_REFERENCE,
        "targets": target_rows,
        "two_thread_ceiling": ceiling,
        "machine_load": loads,
        "roots_identical": not problems,
        "problems": problems,
        "runtime_s": runtime,
    }
    return payload, text


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: str = "python -m rotortree.benchmarks.scaling") -> int:
    args = parse_args(argv, default_out, prog)
    if args.replot:
        return replot(args)
    command = prog + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    payload, text = run(args, command)
    problems = payload["problems"]
    path = write_results_to(args.out, "scaling", payload, text)
    print(text)
    print(f"wrote {path} and {path.with_suffix('.json')}", file=sys.stderr)
    if not args.no_plot:
        png = args.out / "scaling.png"
        if plot(png, payload, args):
            print(f"wrote {png}", file=sys.stderr)
    if problems:
        print("ERROR: roots differ between configurations:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
