"""SIMD kernels side by side with the physical bound, measured in one run.

    python bench/kernels.py [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

For arity 2, 4, 8 and 16, each kernel's parents/s and BLAKE3 compressions/s
on one thread (a parent of k children costs ceil((2 + 32k) / 64)
compressions), measured through rotortree.compute_root over N**k leaves so
every group is full. The bound is the `blake3` PyPI package hashing one
64 MiB buffer with max_threads=1 and with max_threads=2, counted exactly:
one compression per 64-byte block of every 1 KiB chunk plus one per parent
node of BLAKE3's chunk tree (chunks - 1). Beside it, this machine's
two-thread ceiling (two threads hashing independently). Then insert_many
of 1M leaves at arity 4 with 1 and 2 threads per kernel, against the bound
at the same thread count. Configurations are interleaved round-robin so
machine drift hits all alike; ratios are taken per repetition against the
bound measured in the same repetition. With the Rust harness built, Rust's
blake3 crate over the same buffer joins the repetitions, and with its avx2
build (AVX-512 code compiled out) gives an AVX2 bound beside the package's.
Writes DIR/kernels.{md,json}.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import blake3

import rotortree

from . import harness as rust_harness
from ._common import Progress, deterministic_leaves, fmt_rate, machine, write_results_to
from .environment import blake3_package_simd, cpu_flags, machine_ceiling
from .stats import fmt_interval, paired_ratios, quantile, ratio_summary, summary, target

ARITY_LEAVES = {2: 2**20, 4: 4**10, 8: 8**7, 16: 16**5}
TARGET_KERNEL_SHARE = 0.80          # AVX2 kernel >= 80% of the bound per thread
TARGET_KERNEL = "avx2"
TARGET_INSERT_RATE = {1: 35e6, 2: 65e6}   # insert_many leaves/s, arity 4, 1M leaves
# The default kernel's insert_many of 1M leaves against the bound at the same
# thread count, at every arity: what is left once hashing is near the bound is
# the leaves' copy and the tree's memory, which the bound does not pay for.
TARGET_INSERT_SHARE = 0.85
INSERT_ARITIES = (2, 4, 8, 16)
INSERT_LEAVES = 1_000_000


def compressions_per_parent(children: int, prefix: int = 2) -> int:
    """BLAKE3 compressions of one parent: ``prefix`` tag bytes (2 for the
    rotortree-0.15 rule's 0x01 || k, 0 for the untagged leanimt rule) and
    32 bytes per child, one compression per started 64-byte block."""
    return math.ceil((prefix + 32 * children) / 64)


def parents_in_full_tree(leaves: int, arity: int) -> int:
    return (leaves - 1) // (arity - 1)


def tree_compressions(leaves: int, arity: int, prefix: int = 2) -> int:
    """Compressions to hash a tree of ``leaves`` leaves: every group of two
    or more children is one parent (``prefix`` as in
    :func:`compressions_per_parent`); a group of one is lifted, unhashed."""
    total, size = 0, leaves
    while size > 1:
        full, rest = divmod(size, arity)
        total += full * compressions_per_parent(arity, prefix)
        if rest > 1:
            total += compressions_per_parent(rest, prefix)
        size = full + (1 if rest else 0)
    return total


def blake3_compressions(length: int) -> int:
    """Exact compressions of BLAKE3 over ``length`` bytes: each 1 KiB chunk
    costs one per 64-byte block (at least one), and the chunk tree has
    chunks - 1 parent nodes of one compression each."""
    chunks = max(1, math.ceil(length / 1024))
    blocks = max(1, math.ceil(length / 64))
    return blocks + chunks - 1


def bound_sample(buffer: bytes, threads: int) -> float:
    """Compressions/s of the blake3 package over the buffer."""
    start = time.perf_counter()
    blake3.blake3(buffer, max_threads=threads).digest()
    return blake3_compressions(len(buffer)) / (time.perf_counter() - start)


def bound_cpu_sample(buffer: bytes) -> float:
    """Compressions per second of this thread's CPU time, the blake3 package
    on one thread (it hashes on the calling thread)."""
    start = time.thread_time()
    blake3.blake3(buffer, max_threads=1).digest()
    return blake3_compressions(len(buffer)) / max(time.thread_time() - start, 1e-9)


def interval(samples: List[float]) -> Tuple[float, float]:
    return quantile(samples, 0.05), quantile(samples, 0.95)


def rust_bounds(harness: Optional[rust_harness.Harness]) -> Dict[str, str]:
    """The harness builds whose BLAKE3 gives a second bound: {key: build}."""
    if harness is None:
        return {}
    bounds = {"rust_blake3": "sequential"}
    if harness.has_avx2_bound:
        bounds["rust_blake3_avx2"] = rust_harness.AVX2_BUILD
    return bounds


def run(repeat: int, scale: int = 1, show_progress: bool = True,
        kernels: Optional[List[str]] = None,
        harness: Optional[rust_harness.Harness] = None) -> Tuple[Dict[str, Any], str]:
    """``scale`` divides every size (quick runs); returns (payload, markdown).
    With ``harness``, Rust's BLAKE3 (blake3 crate, one thread) over the same
    buffer is measured in the same repetitions too: as built, and, with the
    harness's avx2 build, with its AVX-512 code compiled out (the AVX2 bound)."""
    before = rotortree.pool_info()
    kernels = kernels or list(before["available_simd"])
    leaves = {arity: deterministic_leaves(max(arity, count // scale))
              for arity, count in ARITY_LEAVES.items()}
    insert_count = INSERT_LEAVES // scale
    insert_leaves = deterministic_leaves(insert_count)
    bound_buffer = deterministic_leaves(max(2, (64 << 20) // 32 // scale))

    hash_samples: Dict[Tuple[str, int], List[float]] = {
        (k, a): [] for k in kernels for a in ARITY_LEAVES}
    default_kernel = before["simd"] if before["simd"] in kernels else kernels[-1]

    def insert_arities(kernel: str) -> Tuple[int, ...]:
        return INSERT_ARITIES if kernel == default_kernel else (4,)

    insert_samples: Dict[Tuple[str, int, int], List[float]] = {
        (k, t, a): [] for k in kernels for t in (1, 2) for a in insert_arities(k)}
    bounds: Dict[int, List[float]] = {1: [], 2: []}
    # On a shared machine wall time mostly measures the scheduler; on one
    # thread both sides run on the calling thread, so their CPU times compare
    # the work itself (the background pre-faulter's time is not counted).
    bound_cpu: List[float] = []
    insert_cpu: Dict[Tuple[str, int], List[float]] = {}
    extra = rust_bounds(harness)
    rust: Dict[str, List[float]] = {key: [] for key in extra}
    roots: Dict[object, Set[bytes]] = {}
    try:
        with Progress(repeat + 1, "kernels", enabled=show_progress, unit="rep") as progress:
            for _ in range(repeat + 1):  # the first round is the warm-up
                for threads in (1, 2):
                    bounds[threads].append(bound_sample(bound_buffer, threads))
                bound_cpu.append(bound_cpu_sample(bound_buffer))
                for key, build in extra.items():
                    assert harness is not None
                    reply = harness.call(build, "blake3", bytes=len(bound_buffer), warmup=0,
                                         reps=1)
                    rust[key].append(blake3_compressions(len(bound_buffer))
                                     / (reply["samples_ns"][0] / 1e9))
                for kernel in kernels:
                    rotortree.configure(simd=kernel, num_threads=1)
                    for arity, data in leaves.items():
                        start = time.perf_counter()
                        root = rotortree.compute_root(data, arity)
                        hash_samples[kernel, arity].append(time.perf_counter() - start)
                        roots.setdefault(arity, set()).add(root)
                    for threads in (1, 2):
                        rotortree.configure(num_threads=threads)
                        for arity in insert_arities(kernel):
                            tree = rotortree.LeanIMT(arity)
                            cpu_start = time.thread_time()
                            start = time.perf_counter()
                            root = tree.insert_many(insert_leaves)
                            insert_samples[kernel, threads, arity].append(
                                time.perf_counter() - start)
                            if threads == 1:
                                insert_cpu.setdefault((kernel, arity), []).append(
                                    max(time.thread_time() - cpu_start, 1e-9))
                            roots.setdefault(("insert", arity), set()).add(root)
                            del tree
                progress.update()
    finally:
        rotortree.configure(num_threads=before["num_threads"], simd=before["simd"])
    problems = [f"kernels disagree on the root of {what}" for what, r in roots.items()
                if len(r) != 1]
    ceiling = machine_ceiling(2, max(5, repeat))
    bound = {t: samples[1:] for t, samples in bounds.items()}
    rust = {key: samples[1:] for key, samples in rust.items()}
    bound_cpu = bound_cpu[1:]

    rows: List[Dict[str, Any]] = []
    for kernel in kernels:
        for arity, data in leaves.items():
            samples = hash_samples[kernel, arity][1:]
            parents = parents_in_full_tree(len(data) // 32, arity)
            work = parents * compressions_per_parent(arity)
            rates = [work / s for s in samples]
            row = {"kernel": kernel, "arity": arity,
                   "parents_per_s": parents / summary(samples)["median"],
                   "compressions_per_s": summary(rates),
                   "ratio_to_bound": ratio_summary(paired_ratios(rates, bound[1])),
                   "samples_s": samples}
            if "rust_blake3_avx2" in rust:
                row["ratio_to_avx2_bound"] = ratio_summary(
                    paired_ratios(rates, rust["rust_blake3_avx2"]))
            rows.append(row)
    insert_rows: List[Dict[str, Any]] = []
    work = tree_compressions(insert_count, 4)
    for (kernel, threads, arity), timed in insert_samples.items():
        samples = timed[1:]
        rates = [insert_count / s for s in samples]
        arity_work = tree_compressions(insert_count, arity)
        insert_rows.append({
            "kernel": kernel, "threads": threads, "arity": arity,
            "compressions": arity_work, "ms": summary([s * 1e3 for s in samples]),
            "leaves_per_s": summary(rates), "leaves_per_s_interval": interval(rates),
            "ratio_to_bound": ratio_summary(paired_ratios(
                [arity_work / s for s in samples], bound[threads])),
            "samples_s": samples})
        if threads == 1:
            cpu = insert_cpu[kernel, arity][1:]
            insert_rows[-1].update({
                "cpu_ms": summary([s * 1e3 for s in cpu]),
                "ratio_to_bound_cpu": ratio_summary(paired_ratios(
                    [arity_work / s for s in cpu], bound_cpu)),
                "cpu_samples_s": cpu})

    facts = machine()
    flags = cpu_flags()
    payload: Dict[str, Any] = {
        "benchmark": "kernels", "machine": facts, "repeat": repeat, "scale": scale,
        "cpu_flags": flags, "blake3_package_simd": blake3_package_simd(flags),
        "bound_compressions_per_s": {t: summary(b) for t, b in bound.items()},
        "bound_samples": bound, "bound_cpu_samples": bound_cpu,
        "bound_compressions_per_s_cpu": summary(bound_cpu), "bound_bytes": len(bound_buffer),
        "bound_compressions": blake3_compressions(len(bound_buffer)),
        "bound_two_thread_speedup": ratio_summary(paired_ratios(bound[2], bound[1])),
        "two_thread_ceiling": ceiling, "insert_leaves": insert_count,
        "rust_bounds_compressions_per_s": {k: summary(v) for k, v in rust.items()},
        "rust_bound_samples": rust,
        "insert_compressions": work, "hash": rows, "insert_many": insert_rows,
        "default_kernel": default_kernel,
        "problems": problems}
    payload["targets"] = targets(payload)
    return payload, render(payload)


def targets(payload: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for row in payload["hash"]:
        if row["kernel"] != TARGET_KERNEL:
            continue
        ratio = row["ratio_to_bound"]
        out.append(target(
            f"{TARGET_KERNEL} kernel >= {TARGET_KERNEL_SHARE:.0%} of the bound per thread, "
            f"arity {row['arity']}",
            f"{fmt_interval(ratio, 2, '')} of the blake3 package's single-thread speed "
            f"({payload['blake3_package_simd']} here)",
            (ratio["low"], ratio["high"]), TARGET_KERNEL_SHARE))
    if not any(r["kernel"] == TARGET_KERNEL for r in payload["hash"]):
        out.append(target(f"{TARGET_KERNEL} kernel >= {TARGET_KERNEL_SHARE:.0%} of the bound "
                          "per thread", "", reason=f"no {TARGET_KERNEL} kernel on this CPU"))
    best = payload["machine"]["simd"]
    for threads, goal in TARGET_INSERT_RATE.items():
        name = (f"insert_many >= {goal / 1e6:.0f}M leaves/s on {threads} thread"
                f"{'s' if threads > 1 else ''} (arity 4, 1M leaves, default kernel)")
        row = next((r for r in payload["insert_many"]
                    if r["kernel"] == best and r["threads"] == threads
                    and r.get("arity", 4) == 4), None)
        if row is None:
            out.append(target(name, "", reason=f"kernel {best} not measured"))
            continue
        low, high = row["leaves_per_s_interval"]
        measured = (f"{fmt_rate(row['leaves_per_s']['median'])} leaves/s "
                    f"[{fmt_rate(low)}-{fmt_rate(high)}] with {best}")
        if payload["insert_leaves"] != INSERT_LEAVES:
            out.append(target(name, measured + " (smaller tree: not judged)"))
        else:
            out.append(target(name, measured, (low, high), goal))
    for row in payload["insert_many"]:
        if row["kernel"] != payload.get("default_kernel") or "arity" not in row:
            continue
        threads = row["threads"]
        name = (f"insert_many of 1M leaves >= {TARGET_INSERT_SHARE:.0%} of the bound at "
                f"{threads} thread{'s' if threads > 1 else ''}, arity {row['arity']} "
                f"(default kernel {row['kernel']})")
        ratio = row["ratio_to_bound"]
        measured = (f"{fmt_interval(ratio, 2, '')} of the blake3 package's {threads}-thread "
                    f"speed ({payload['blake3_package_simd']} here), exact compressions")
        judged = [(name, measured, ratio)]
        if "ratio_to_bound_cpu" in row:
            cpu = row["ratio_to_bound_cpu"]
            judged.append((name + ", thread CPU time",
                           f"{fmt_interval(cpu, 2, '')} of the blake3 package's CPU-time "
                           "speed on one thread, exact compressions", cpu))
        for what, text, r in judged:
            if payload["insert_leaves"] != INSERT_LEAVES:
                out.append(target(what, text + " (smaller tree: not judged)"))
            else:
                out.append(target(what, text, (r["low"], r["high"]), TARGET_INSERT_SHARE))
    return out


def render(payload: Dict[str, Any]) -> str:
    facts, flags = payload["machine"], payload["cpu_flags"]
    b1, b2 = (payload["bound_compressions_per_s"][t] for t in (1, 2))
    ceiling = payload["two_thread_ceiling"]
    package = payload["blake3_package_simd"]
    kernels = sorted({r["kernel"] for r in payload["hash"]})
    lines = [
        f"Kernels, one thread, {payload['repeat']} repetitions after a warm-up, interleaved. "
        f"Machine: {facts['cpu']}, {facts['logical_cpus']} CPUs; CPU flags: "
        + ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in flags.items()) + ".",
        "",
        f"This package's kernels: {', '.join(kernels)}; the default here is {facts['simd']}. "
        f"The bound, the `blake3` package, runs its {package} code on this CPU"
        + (" (16 blocks per instruction stream against the AVX2 kernel's 8): the bound is "
           "what AVX-512 reaches on this CPU, above what an AVX2 kernel can reach wherever "
           "AVX-512 runs at full width"
           + ("; this package's avx512 kernel runs the same width."
              if "avx512" in kernels else "; this package has no AVX-512 kernel here.")
           if package == "avx512" else "."),
        "",
        f"Bound: blake3 package over {payload['bound_bytes'] >> 20} MiB = "
        f"{payload['bound_compressions']:,} compressions (chunk blocks + chunk-tree parents): "
        f"1 thread {b1['median'] / 1e6:.1f}M compressions/s (min {b1['min'] / 1e6:.1f}M, IQR "
        f"{b1['iqr'] / 1e6:.1f}M); 2 threads {b2['median'] / 1e6:.1f}M/s (min "
        f"{b2['min'] / 1e6:.1f}M, IQR {b2['iqr'] / 1e6:.1f}M), "
        f"{fmt_interval(payload['bound_two_thread_speedup'])} the single-thread speed"
        + (f"; machine's two-thread ceiling (independent hashing): {fmt_interval(ceiling)}."
           if ceiling else "."),
        "",
    ]
    rust = payload.get("rust_bounds_compressions_per_s", {})
    what = {"rust_blake3": "Rust's blake3 crate (1 thread, as built: runtime SIMD detection)",
            "rust_blake3_avx2": "Rust's blake3 crate with its AVX-512 code compiled out (1 "
                                "thread): the AVX2 bound"}
    for key, stats in rust.items():
        lines.append(f"- Same run, same buffer: {what[key]}: {stats['median'] / 1e6:.1f}M "
                     f"compressions/s (min {stats['min'] / 1e6:.1f}M, IQR "
                     f"{stats['iqr'] / 1e6:.1f}M).")
    avx2 = "rust_blake3_avx2" in rust
    lines += (["", "| kernel | arity | parents/s | compressions/s (median, min, IQR) | vs 1-thread "
               "bound [90%] |" + (" vs AVX2 bound [90%] |" if avx2 else ""),
               "|---|---:|---:|---:|---:|" + ("---:|" if avx2 else "")] if rust else [
        "| kernel | arity | parents/s | compressions/s (median, min, IQR) | vs 1-thread bound "
        "[90%] |", "|---|---:|---:|---:|---:|"])
    for row in payload["hash"]:
        c = row["compressions_per_s"]
        lines.append(f"| {row['kernel']} | {row['arity']} | {row['parents_per_s'] / 1e6:.2f}M | "
                     f"{c['median'] / 1e6:.1f}M ({c['min'] / 1e6:.1f}M, {c['iqr'] / 1e6:.1f}M) "
                     f"| {fmt_interval(row['ratio_to_bound'], 2, '')} |"
                     + (f" {fmt_interval(row['ratio_to_avx2_bound'], 2, '')} |"
                        if "ratio_to_avx2_bound" in row else ""))
    lines += ["", f"insert_many of {payload['insert_leaves']:,} leaves into a fresh tree, arity "
                  "4 for every kernel and 2, 4, 8 and 16 for the default one (compressions "
                  "counted exactly per arity), calls back to back (no idle gap before each, "
                  "unlike the thread-scaling section, so pool workers may still be awake):", "",
              "| kernel | arity | threads | ms (median, min, IQR) | leaves/s [90%] | vs bound at "
              "the same thread count [90%] |", "|---|---:|---:|---:|---:|---:|"]
    for row in payload["insert_many"]:
        ms, (low, high) = row["ms"], row["leaves_per_s_interval"]
        lines.append(f"| {row['kernel']} | {row.get('arity', 4)} | {row['threads']} | "
                     f"{ms['median']:.1f} "
                     f"({ms['min']:.1f}, {ms['iqr']:.1f}) | "
                     f"{fmt_rate(row['leaves_per_s']['median'])} [{fmt_rate(low)}-"
                     f"{fmt_rate(high)}] | {fmt_interval(row['ratio_to_bound'], 2, '')} |")
    cpu_rows = [r for r in payload["insert_many"] if "ratio_to_bound_cpu" in r]
    if cpu_rows:
        b = payload["bound_compressions_per_s_cpu"]
        lines += ["", "The same one-thread inserts by the calling thread's CPU time, against "
                      f"the blake3 package's CPU time on one thread ({b['median'] / 1e6:.1f}M "
                      "compressions per CPU-second): where the machine is shared this compares "
                      "the work, not the scheduler's share; it leaves out the background "
                      "pre-faulter, which does not run on the calling thread:", "",
                  "| kernel | arity | CPU ms (median, min, IQR) | vs bound by CPU time [90%] |",
                  "|---|---:|---:|---:|"]
        for row in cpu_rows:
            ms = row["cpu_ms"]
            lines.append(f"| {row['kernel']} | {row.get('arity', 4)} | {ms['median']:.1f} "
                         f"({ms['min']:.1f}, {ms['iqr']:.1f}) | "
                         f"{fmt_interval(row['ratio_to_bound_cpu'], 2, '')} |")
    lines += ["", "Targets (judged by code):", "", "| target | measured | status |",
              "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | **{t['status']}** |"
              for t in payload["targets"]]
    if payload["problems"]:
        lines += ["", "## ROOT MISMATCHES", ""] + [f"- {p}" for p in payload["problems"]]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, smaller trees")
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    rust_harness.add_options(parser)
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    with rust_harness.from_options(args) as harness:
        payload, markdown = run(repeat, 16 if args.quick else 1, harness=harness)
    print(markdown)
    path = write_results_to(args.out, "kernels", payload, markdown)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if payload["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
