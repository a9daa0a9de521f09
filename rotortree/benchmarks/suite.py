"""``rotortree bench``: run the benchmark suite and write a report.

Writes OUT/report.md (every table, every target judged by code),
OUT/readme_performance.md (the README's performance section, from this run),
OUT/results.json (settings, raw samples and roots of every section) and,
with matplotlib installed, OUT/speedup_vs_threads.png,
OUT/threshold_impact.png, OUT/throughput_vs_arity.png and OUT/growth.png.

With the Rust harness built (tools/rust_harness/README.md), the crate
rotortree 0.15 and 0.17 is measured in the same run, interleaved with this
package's measurements, and the roots are checked: the crate 0.15's against
this package's (same hash rule), both versions' against their published
roots of 1M anchor leaves.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple


from . import (churn, durability, growth, kernels, operations, rules, scaling, scaling_report,
               single_ops)
from . import sha256 as sha256_bench
from . import harness as rust_harness
from . import leaf_index as index_bench
from . import logviews
from . import proofs as proof_bench
from .._util import BENCH_SECTIONS
from ._common import fmt_ms, fmt_rate, load_pyplot, machine, stderr, write_json
from .environment import LoadMeter, blake3_package_simd, cpu_flags, fmt_load
from .stats import INCONCLUSIVE, MET, NOT_MEASURED, NOT_MET, fmt_interval, fmt_time

SECTIONS = BENCH_SECTIONS

Payload = Dict[str, Any]
Harness = Optional[rust_harness.Harness]


# -- sizes -------------------------------------------------------------------


def scaling_args(quick: bool, leaves: Optional[int]) -> argparse.Namespace:
    # Quick keeps the full sizes (the report's figures are 1M-leaf figures)
    # with fewer repetitions than the full run.
    argv = ["--quick", "--repeat", "5"] if quick else ["--repeat", "21"]
    if leaves is not None:
        small = max(1, min(10_000, leaves // 4))
        argv += ["--leaves", str(leaves), "--small-batch", str(small),
                 "--base-leaves", str(leaves), "--small-repeat", "5" if quick else "40",
                 "--repeat", "3" if quick else "5"]
    return scaling.parse_args(argv, prog="rotortree bench")


def durability_argv(quick: bool, leaves: Optional[int]) -> List[str]:
    if leaves is not None:
        return ["--quick"]
    if quick:
        return ["--leaves", "200000", "--rss-leaves", "1000000", "--single-leaves", "20000",
                "--durable-calls", "100", "--repeat", "3"]
    return []


# -- sections ----------------------------------------------------------------


def run_scaling(quick: bool, leaves: Optional[int], progress: bool,
                harness: Harness, command: str = "rotortree bench") -> Tuple[Payload, str]:
    args = scaling_args(quick, leaves)
    return scaling.run(args, command=command, show_progress=progress, harness=harness)


def run_kernels(quick: bool, leaves: Optional[int], progress: bool,
                harness: Harness) -> Tuple[Payload, str]:
    scale = 4 if quick else 1
    if leaves is not None:
        scale = max(scale, 1_000_000 // max(1, leaves))
    return kernels.run(3 if quick else 7, scale, show_progress=progress, harness=harness)


def run_rules(quick: bool, leaves: Optional[int], progress: bool,
              harness: Harness) -> Tuple[Payload, str]:
    return rules.run(3 if quick else 9, leaves or rules.LEAVES, show_progress=progress,
                     harness=harness)


def run_operations(quick: bool, leaves: Optional[int], progress: bool,
                   harness: Harness) -> Tuple[Payload, str]:
    size = leaves if leaves is not None else 1_000_000
    proofs = 5_000 if quick else 10_000
    singles = 50_000 if quick else 100_000
    if leaves is not None:
        proofs, singles = min(proofs, max(1, leaves // 10)), min(singles, leaves)
    return operations.run(size, 4, proofs, singles, 3 if quick else 9, show_progress=progress,
                          harness=harness)


def run_single(quick: bool, leaves: Optional[int], progress: bool,
               harness: Harness) -> Tuple[Payload, str]:
    size = leaves if leaves is not None else 1_000_000
    singles, proofs = (20_000, 1_000) if quick else (50_000, 2_000)
    batch = 100_000
    if leaves is not None:
        singles, proofs, batch = min(singles, leaves), min(proofs, leaves), min(batch, leaves)
    return single_ops.run(size, singles, proofs, batch, 5 if quick else 9,
                          show_progress=progress, harness=harness)


def run_proofs(quick: bool, leaves: Optional[int], progress: bool,
               harness: Harness) -> Tuple[Payload, str]:
    # Quick keeps the 1M-leaf proof tree the targets speak of and drops the
    # 10M snapshot tree, whose rebuilds are most of a full run's time.
    max_leaves = 1_000_000 if quick else proof_bench.SNAPSHOT_SIZES[-1]
    proof_leaves, count, repeat = proof_bench.TARGET_LEAVES, 100_000, 4 if quick else 9
    if leaves is not None:
        max_leaves = proof_leaves = leaves
        count, repeat = max(1, min(count, leaves // 10)), 3
    return proof_bench.run(max_leaves, proof_leaves, count, repeat, show_progress=progress,
                           harness=harness)


def run_growth(quick: bool, leaves: Optional[int], progress: bool,
               harness: Harness) -> Tuple[Payload, str]:
    workloads = None
    if leaves is not None:
        workloads = [(leaves, 4 * leaves), (min(4_096, leaves), leaves)]
    return growth.run(quick, workloads, show_progress=progress, harness=harness)


def run_durability(quick: bool, leaves: Optional[int], progress: bool,
                   harness: Harness, command: str = "rotortree bench") -> Tuple[Payload, str]:
    stderr("durability: running", progress)
    # run(), not main(): main() writes files and prints their paths, which
    # here would be a temporary folder deleted before the user reads it, and
    # records its own command line instead of the bench command.
    args = durability.parse_args(durability_argv(quick, leaves), pathlib.Path("."),
                                 "rotortree bench")
    with contextlib.redirect_stderr(sys.stderr if progress else io.StringIO()):
        return durability.run(args, command)


def run_churn(quick: bool, leaves: Optional[int], progress: bool,
              harness: Harness) -> Tuple[Payload, str]:
    base, ops = (20_000, 20_000) if quick else (100_000, 100_000)
    if leaves is not None:
        base = ops = max(1, min(leaves, 100_000))
    return churn.run(base, ops, show_progress=progress)


def run_sha256(quick: bool, leaves: Optional[int], progress: bool,
               harness: Harness) -> Tuple[Payload, str]:
    args = ["--quick"] if quick else []
    if leaves is not None:  # a smoke run: everything scaled to the leaves asked for
        args += ["--buffer-mb", "1", "--parents", str(max(16, min(leaves, 1 << 20))),
                 "--tree-leaves", str(max(1, min(leaves, 100_000))),
                 "--scaling-leaves", str(leaves), "--repeat", "3"]
    settings = sha256_bench.parse_args(args, prog="rotortree bench")
    return sha256_bench.run(settings.buffer_mb, settings.parents, settings.tree_leaves,
                            settings.scaling_leaves, settings.repeat, show_progress=progress)


def run_index(quick: bool, leaves: Optional[int], progress: bool,
              harness: Harness) -> Tuple[Payload, str]:
    # The targets are at 1M and 10M leaves; quick keeps 1M only.
    if leaves is not None:
        return index_bench.run((leaves,), 3, leaves, leaves, 3, min(leaves, 200_000),
                               show_progress=progress)
    if quick:
        return index_bench.run((1_000_000,), 3, 1_000_000, 1_000_000, 3,
                               show_progress=progress)
    return index_bench.run(show_progress=progress)


def run_distributed(quick: bool, leaves: Optional[int], progress: bool,
                    harness: Harness) -> Tuple[Payload, str]:
    from . import distributed

    try:
        import distributed as _dask_distributed  # noqa: F401
    except ImportError:
        reason = "dask.distributed is not installed (pip install 'rotortree[distributed]')"
        return ({"targets": [{"target": "distributed builds", "measured": reason,
                              "status": NOT_MEASURED, "interval": None, "goal": None}]},
                f"Not run: {reason}.")
    count = leaves if leaves is not None else 10_000_000 if quick else 100_000_000
    stderr(f"distributed: {count:,} leaves on a 2-worker LocalCluster", progress)
    proofs = 20_000 if quick else 100_000
    # A given (tiny) leaf count is a smoke run: fewer tiny segments and proofs too.
    segments = 2_000 if leaves is None else 100
    payload = distributed.run(count, 16, 2 if quick else 3, 2,
                              proofs if leaves is None else min(proofs, leaves),
                              min(count, 1 << 22), None, overhead_segments=segments)
    return payload, distributed.markdown(payload)


# -- report ------------------------------------------------------------------


def run_logviews(quick: bool, leaves: Optional[int], progress: bool,
                 harness: Harness) -> Tuple[Payload, str]:
    size = leaves if leaves is not None else 1_000_000
    return logviews.run(size, 4, 500 if quick else 2_000, min(10_000, size),
                        3 if quick else 9, show_progress=progress)


def demote(markdown: str, levels: int = 2) -> str:
    """Push a section's headings down so they nest under the report's."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):  # the section's own title: the report has one
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in lines)


def invert(ratio: Dict[str, float]) -> Dict[str, float]:
    """b/a from the summary of a/b (the interval's ends swap)."""
    return dict(ratio, median=1 / ratio["median"], low=1 / ratio["high"],
                high=1 / ratio["low"])


def comparison_verdict(ratio: Optional[Dict[str, float]]) -> str:
    """crate time / rotortree time: > 1 everywhere in the interval means
    rotortree is faster."""
    if ratio is None:
        return ""
    if ratio["low"] > 1:
        return "rotortree faster"
    if ratio["high"] < 1:
        return "**rotortree slower**"
    return "no clear difference"


def scaling_pair(sc: Payload, arity: int, threads: int, memory: str,
                 version: int) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    ours_key = "rows" if memory == "reused" else "fresh_page_rows"
    ours = scaling_report.find(scaling_report.rows_at(sc, arity, ours_key), threads)
    crate_threads = 0 if threads == 1 else threads
    crate = next((r for r in scaling_report.rows_at(sc, arity, "rust_rows")
                  if r["rust"] == version and r["threads"] == crate_threads
                  and r["memory"] == memory), None)
    return ours, crate


def summary_rows(sections: Dict[str, Payload]) -> List[Dict[str, Any]]:
    """Like for like, one row per operation: this package, the crate 0.15
    (same hash rule) and 0.17 (another rule), and crate time / our time per
    paired repetition."""
    rows: List[Dict[str, Any]] = []

    def add(what: str, ours: str, crate15: str = "", crate17: str = "",
            ratio: Optional[Dict[str, float]] = None) -> None:
        rows.append({"what": what, "rotortree": ours, "crate_0.15": crate15,
                     "crate_0.17": crate17, "ratio": ratio,
                     "verdict": comparison_verdict(ratio)})

    sc = sections.get("scaling")
    if sc:
        leaves = sc["settings"]["leaves"]
        for memory in ("reused", "fresh pages"):
            for threads, label in ((1, "sequential"), (2, "2 threads")):
                ours, c15 = scaling_pair(sc, 4, threads, memory, 15)
                _, c17 = scaling_pair(sc, 4, threads, memory, 17)
                if ours is None:
                    continue
                add(f"insert_many {leaves:,} leaves into a fresh tree, {label} "
                    f"({'rayon pool of 2' if threads == 2 else 'sequential build'} for the "
                    f"crate), {'reused memory' if memory == 'reused' else memory}",
                    f"{fmt_ms(ours['median_ms'])} ms", 
                    f"{fmt_ms(c15['median_ms'])} ms" if c15 else "",
                    f"{fmt_ms(c17['median_ms'])} ms" if c17 else "",
                    c15.get("crate_over_python") if c15 else None)
    gr = sections.get("growth")
    if gr:
        for workload in gr["workloads"]:
            by = {r["label"]: r for r in workload["rows"]}
            for ours_label, c15_label, c17_label in (
                    ("rotortree, 1 thread", "crate 0.15, sequential", "crate 0.17, sequential"),
                    ("rotortree, 2 threads", "crate 0.15, rayon 2 threads", None)):
                ours, c15 = by.get(ours_label), by.get(c15_label)
                c17 = by.get(c17_label) if c17_label else None
                if ours is None:
                    continue
                add(f"insert_many of a {workload['batch']:,}-leaf batch appended to a growing "
                    f"tree (to {workload['total']:,}), {ours_label.split(', ')[1]}, per batch",
                    f"{fmt_ms(ours['wall_s']['median'] * 1e3)} ms "
                    f"(system {fmt_ms(ours['system_s']['median'] * 1e3)} ms)",
                    f"{fmt_ms(c15['wall_s']['median'] * 1e3)} ms "
                    f"(system {fmt_ms(c15['system_s']['median'] * 1e3)} ms)" if c15 else "",
                    f"{fmt_ms(c17['wall_s']['median'] * 1e3)} ms" if c17 else "",
                    c15.get("crate_over_python") if c15 else None)
    ops = sections.get("operations")
    if ops:
        names = {"insert (one leaf per call)": "single insert, one call",
                 "snapshot": "snapshot, one call",
                 "generate_proof (one per call)": "generate_proof, one call",
                 "InclusionProof.verify_against (pure Python)":
                     "verify one proof (this package: pure Python, the only single-proof "
                     "verifier; crate: NaryProof::verify)"}
        for row in ops["rows"]:
            if row["operation"] not in names:
                continue
            c15, c17 = row["crate"].get("0.15"), row["crate"].get("0.17")
            add(f"{names[row['operation']]}, {ops['leaves']:,} leaves",
                fmt_time(row["stats_s"]["median"]) + " (Python call included)",
                fmt_time(c15["stats_s"]["median"]) if c15 else "",
                fmt_time(c17["stats_s"]["median"]) if c17 else "",
                c15["crate_over_python"] if c15 else None)
    pr = sections.get("proofs")
    if pr:
        proofs = pr["proofs"]
        rows_p = proofs["rows"]
        for key, crate_key, what in (
                ("generate", "generate", "batch of {n:,} inclusion proofs, 2 threads (crate: "
                                         "generate_proof over par_iter, each proof dropped)"),
                ("verify", "verify", "batch verification of {n:,} proofs, 2 threads (crate: "
                                     "NaryProof::verify over par_iter)")):
            ours = proof_bench.find(rows_p, key, 2)
            c15 = proof_bench.find(rows_p, f"crate15_{crate_key}", 2)
            c17 = proof_bench.find(rows_p, f"crate17_{crate_key}", 2)
            if ours is None:
                continue
            text = f"{fmt_time(ours['per_proof_s']['median'])} per proof"
            listed = proof_bench.find(rows_p, "generate_list", 2)
            if key == "generate" and listed is not None:
                text += (f" (indices in a list: {fmt_time(listed['per_proof_s']['median'])})")
            add(what.format(n=proofs["proofs"]) + f", {proofs['leaves']:,} leaves", text,
                f"{fmt_time(c15['per_proof_s']['median'])}" if c15 else "",
                f"{fmt_time(c17['per_proof_s']['median'])}" if c17 else "",
                invert(c15["ours_over_crate"]) if c15 and "ours_over_crate" in c15 else None)
    return rows


def summary_table(rows: List[Dict[str, Any]]) -> List[str]:
    if not rows:
        return []
    lines = ["| operation (arity 4) | rotortree | crate 0.15 | crate 0.17 (another hash rule) | "
             "crate 0.15 time / rotortree time [90%] | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for row in rows:
        ratio = fmt_interval(row["ratio"]) if row["ratio"] else ""
        lines.append(f"| {row['what']} | {row['rotortree']} | {row['crate_0.15'] or '-'} | "
                     f"{row['crate_0.17'] or '-'} | {ratio} | {row['verdict']} |")
    return lines


def comparison_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The summary table, then in words where this package is slower."""
    out = summary_table(rows) + [""]
    slower = slower_sentences(rows)
    if slower:
        out += ["Where this package is slower than the crate 0.15:", ""] + slower + [""]
    return out


def slower_sentences(rows: List[Dict[str, Any]]) -> List[str]:
    """The single calls and workloads where the crate 0.15 is faster, in words."""
    out = []
    for row in rows:
        if row["verdict"] == "**rotortree slower**":
            ratio = row["ratio"]
            out.append(f"- {row['what']}: rotortree {row['rotortree']} against the crate "
                       f"0.15's {row['crate_0.15']}; the crate is {1 / ratio['median']:.1f}x "
                       "faster.")
    return out


def all_targets(sections: Dict[str, Payload]) -> List[Dict[str, Any]]:
    out = []
    for name in SECTIONS:
        for t in sections.get(name, {}).get("targets", []):
            out.append(dict(t, section=name))
    return out


def targets_table(targets: List[Dict[str, Any]]) -> List[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | **{t['status']}** |" for t in targets]
    counts = {s: sum(t["status"] == s for t in targets)
              for s in (MET, NOT_MET, INCONCLUSIVE, NOT_MEASURED)}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items()) + "."]
    return lines


def arity_table(sc: Payload) -> List[str]:
    lines = ["| arity | rotortree sequential | rotortree 2 threads | crate 0.15 sequential | "
             "crate 0.15 rayon 2 | crate 0.17 sequential (another rule) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for block in sc["thread_scaling"]:
        cells = []
        for ours_threads in (1, 2):
            row = scaling_report.find(block["rows"], ours_threads)
            cells.append(f"{fmt_rate(row['leaves_per_s'])} ({fmt_ms(row['median_ms'])} ms)"
                         if row else "-")
        for version, threads in ((15, 0), (15, 2), (17, 0)):
            row = next((r for r in block.get("rust_rows", []) if r["rust"] == version
                        and r["threads"] == threads and r["memory"] == "reused"), None)
            cells.append(f"{fmt_rate(row['leaves_per_s'])} ({fmt_ms(row['median_ms'])} ms)"
                         if row else "-")
        lines.append(f"| {block['arity']} | " + " | ".join(cells) + " |")
    return lines


# -- plots ----------------------------------------------------------------------


def rate_bars(row: Dict[str, Any], leaves: int) -> Tuple[float, float, float]:
    """(median, minus, plus) in M leaves/s, the bar spanning the IQR of times."""
    stats = row["stats_ms"]
    median = leaves / stats["median"] / 1e3
    fast, slow = leaves / stats["q1"] / 1e3, leaves / stats["q3"] / 1e3
    return median, median - slow, fast - median


def plot_arity(axes: Any, sc: Payload, date: str) -> None:
    leaves = sc["settings"]["leaves"]
    # (label, crate version or None for this package, threads, hatch)
    series: List[Tuple[str, Optional[int], int, Optional[str]]] = [
        ("rotortree sequential", None, 1, None), ("rotortree 2 threads", None, 2, None),
        ("crate 0.15 sequential", 15, 0, "//"), ("crate 0.15 rayon, 2 threads", 15, 2, "//"),
        ("crate 0.17 sequential (another rule)", 17, 0, "..")]

    def pick(block: Dict[str, Any], version: Optional[int],
             threads: int) -> Optional[Dict[str, Any]]:
        if version is None:
            return scaling_report.find(block["rows"], threads)
        return next((r for r in block.get("rust_rows", []) if r["rust"] == version
                     and r["threads"] == threads and r["memory"] == "reused"), None)

    blocks = sc["thread_scaling"]
    width = 0.8 / len(series)
    for position, (label, version, threads, hatch) in enumerate(series):
        bars = [pick(b, version, threads) for b in blocks]
        if not any(bars):
            continue
        values = [rate_bars(r, leaves) if r else (0.0, 0.0, 0.0) for r in bars]
        xs = [i + (position - (len(series) - 1) / 2) * width for i in range(len(blocks))]
        axes.bar(xs, [v[0] for v in values], width, yerr=[[v[1] for v in values],
                                                           [v[2] for v in values]],
                 capsize=2, hatch=hatch, label=label)
    axes.set_xticks(range(len(blocks)))
    axes.set_xticklabels([str(b["arity"]) for b in blocks])
    axes.set_xlabel("arity")
    axes.set_ylabel("million leaves/s (median; bars: IQR of times)")
    axes.set_title(f"insert_many of {leaves:,} leaves into a fresh tree, reused memory\n"
                   f"rotortree bench, one run, {date}; crates via tools/rust_harness",
                   fontsize=9)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=7)


def plot_growth(axes: Any, gr: Payload, date: str) -> None:
    workload = gr["workloads"][0]
    for row in workload["rows"]:
        runs = row["per_run"]
        count = len(runs[0]["wall_s"])
        per_batch = [[run["wall_s"][k] * 1e3 for run in runs] for k in range(count)]
        mids = [sorted(v)[len(v) // 2] for v in per_batch]
        xs = [(k + 1) * workload["batch"] / 1e6 for k in range(count)]
        axes.errorbar(xs, mids, yerr=[[m - min(v) for m, v in zip(mids, per_batch)],
                                      [max(v) - m for m, v in zip(mids, per_batch)]],
                      marker="o", capsize=2, label=row["label"])
    axes.set_xlabel("tree size after the batch (million leaves)")
    axes.set_ylabel("ms per batch (median over repetitions; bars: min-max)")
    axes.set_title(f"{workload['batch']:,}-leaf batches appended to one growing arity-4 "
                   f"tree\nrotortree bench, one run, {date}; crates via tools/rust_harness",
                   fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)


def write_plots(out: pathlib.Path, sections: Dict[str, Payload], date: str) -> List[str]:
    plt = load_pyplot()
    if plt is None:
        return []
    draws: List[Tuple[str, Callable[[Any], None]]] = []
    sc, gr = sections.get("scaling"), sections.get("growth")
    if sc:
        draws += [("speedup_vs_threads.png", lambda a: scaling_report.plot_speedup(a, sc)),
                  ("threshold_impact.png", lambda a: scaling_report.plot_threshold(a, sc)),
                  ("throughput_vs_arity.png", lambda a: plot_arity(a, sc, date))]
    if gr:
        draws.append(("growth.png", lambda a: plot_growth(a, gr, date)))
    written = []
    for name, draw in draws:
        fig, axes = plt.subplots(figsize=(7.5, 4.8))
        draw(axes)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


# -- the documents ------------------------------------------------------------------


def run_facts(load: Dict[str, Any], load_start: List[float]) -> Dict[str, Any]:
    facts = machine()
    flags = cpu_flags()
    facts.update({
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "kernel": platform.release(), "cpu_flags": flags,
        "blake3_package_simd": blake3_package_simd(flags),
        "load": load, "loadavg_start": load_start,
    })
    return facts


def machine_lines(facts: Dict[str, Any], command: str, runtime_s: float) -> List[str]:
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in facts["cpu_flags"].items())
    package = facts["blake3_package_simd"]
    load = facts["load"]
    return [
        f"- date: {facts['date_utc']}; command: `{command}` ({runtime_s:.0f} s)",
        f"- machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs "
        f"({facts['available_cpus']} available), {facts['memory_gib']} GiB; Linux "
        f"{facts['kernel']}; Python {facts['python']}; rotortree {facts['rotortree']}",
        f"- CPU flags that decide the SIMD code: {flags}. This package's kernel in this run: "
        f"**{facts['simd']}** (available: {', '.join(facts['available_simd'])}). The "
        f"`blake3` package (the bound) runs its {package} code here"
        + (": the bound is what AVX-512 reaches on this CPU, above what an AVX2 kernel can "
           "reach wherever AVX-512 runs at full width."
           if package == "avx512" else "."),
        f"- load: load average {facts['loadavg_start'][0]:.2f} at the start, "
        f"{load['loadavg_end'][0]:.2f} at the end; during the run "
        + fmt_load(load).split(", ", 1)[-1] + ".",
    ]


def report(facts: Dict[str, Any], command: str, runtime_s: float,
           sections: Dict[str, Payload], texts: Dict[str, str], plots: List[str],
           notes: List[str], crates: Dict[str, Any]) -> str:
    rows = summary_rows(sections)
    out = ["# rotortree benchmark report", ""] + machine_lines(facts, command, runtime_s)
    out += [f"- Rust crate: {crates['text']}", ""] + notes
    if rows:
        out += ["## Summary", "",
                "Like for like, arity 4, from this one run: single call against single call, "
                "batch against batch. Times are medians; the ratio is the crate 0.15's time "
                "over this package's, per paired repetition, median [90% interval]; verdict "
                "from the interval (faster / slower / no clear difference). The crate 0.17 "
                "hashes parents as plain blake3(children), another rule than this package's "
                "(0.15's): its times are reported, not compared.", ""]
        out += comparison_lines(rows)
    targets = all_targets(sections)
    if targets:
        out += ["## Targets", "",
                "Every target of the project, judged by code on the 90% interval of its "
                "measurement: met (whole interval on the right side), not met (whole interval "
                "on the wrong side), inconclusive (the interval straddles the goal), not "
                "measured (the run could not measure it).", ""]
        out += targets_table(targets) + [""]
    if "scaling" in sections:
        out += ["## Throughput vs arity", "",
                "insert_many into a fresh tree, reused memory, medians (from the thread "
                "scaling section below).", ""] + arity_table(sections["scaling"]) + [""]
    if plots:
        out += ["## Plots", "", "Every plot is drawn from this run's results.json."]
        out += [""] + [f"![{name[:-4].replace('_', ' ')}]({name})" for name in plots] + [""]
    titles = {"scaling": "Thread scaling and parallel threshold",
              "kernels": "SIMD kernels",
              "operations": "Single inserts, snapshots and proofs",
              "single": "Single operations against issue 15's targets",
              "proofs": "Snapshot cost and proof throughput",
              "growth": "Growing tree",
              "durability": "Durable trees",
              "churn": "Memory under snapshot churn",
              "rules": "The leanimt rule against the crate 0.17",
              "sha256": "SHA-256 and RFC 6962 trees",
              "index": "Leaf index",
              "distributed": "Distributed builds and sharded trees",
              "logviews": "Log views: roots and proofs at past sizes"}
    for name in SECTIONS:
        if name in texts:
            out += [f"## {titles[name]}", "", demote(texts[name]), ""]
    return "\n".join(out).rstrip("\n") + "\n"


BENCHMARKS_HOWTO = [
    "### Benchmarks",
    "",
    "`rotortree bench` runs the suite from the installed package: thread scaling of "
    "`insert_many` for arities 2, 4, 8 and 16 (reused memory and fresh pages), the parallel "
    "threshold's impact on 10,000- and 1,000,000-leaf batches, the SIMD kernels against the "
    "`blake3` package's exact compression rate, single calls and proof batches, a growing "
    "tree (1M-leaf batches to 10M leaves, 4,096-leaf batches to 1M, with user and system "
    "time) and the durable tree. Configurations are interleaved round-robin in one "
    "process; every time is given as median, minimum and IQR, every comparison as the "
    "median and 90% interval of per-repetition ratios, and every target is judged by code "
    "(rotortree/benchmarks/stats.py). Roots are compared everywhere; a mismatch makes the "
    "exit status 1. It writes `report.md`, `readme_performance.md` (this section), "
    "`results.json` (raw samples, roots, machine load) and, with matplotlib, four plots. "
    "`--quick` runs fewer repetitions and a shorter growth workload.",
    "",
    "The Rust crate is measured in the same run when its harness is built "
    "([`tools/rust_harness/README.md`](tools/rust_harness/README.md)):",
    "",
    "```sh",
    "python tools/rust_harness/build.py          # rotortree 0.15 and 0.17 from crates.io",
    "# offline: local crate folders and a directory of unpacked crates (Debian's packages)",
    "python tools/rust_harness/build.py --source DIR_WITH_rotortree-0.15_AND_-0.17 \\",
    "    --offline-registry /usr/share/cargo/registry",
    "rotortree bench --out bench-out             # --harness DIR / --no-harness to choose",
    "python tools/publish_bench.py bench-out     # report and plots to docs/bench, this "
    "section to README.md",
    "```",
    "",
    "The scripts in `bench/` are the developer entry points for single benchmarks, writing "
    "to `bench/results/`: `scaling.py`, `kernels.py`, `proofs.py`, `growth.py` and "
    "`durability.py` (the same code as `rotortree bench`) and `insert_many.py` (against the "
    "pure-Python reference in `tests/reference.py`).",
    "",
]


def readme_section(facts: Dict[str, Any], command: str, runtime_s: float,
                   sections: Dict[str, Payload], plots: List[str],
                   crates: Dict[str, Any], docs: str = "docs/bench") -> str:
    """The README's performance section, from this run only."""
    rows = summary_rows(sections)
    out = ["## Performance", "",
           f"From one `{command}` run; every figure below and in "
           f"[`{docs}/report.md`]({docs}/report.md) comes from it, with the Rust crate "
           "rotortree measured in the same run by the project's harness "
           "([`tools/rust_harness`](tools/rust_harness/README.md)).", ""]
    out += machine_lines(facts, command, runtime_s)
    out += [f"- Rust crate: {crates['text']}", ""]
    if rows:
        out += ["Arity 4, medians; ratio = the crate 0.15's time / this package's, per paired "
                "repetition, median [90% interval]. \"reused memory\" is a fresh tree built "
                "in memory a previous tree freed (no page faults, glibc's trim threshold "
                "raised); \"fresh pages\" returns that memory to the OS first, as a first "
                "build does; the growing-tree rows append batches to one tree, whose new "
                "memory is always fresh. This package's single calls include the Python "
                "call.", ""]
        out += comparison_lines(rows)
    targets = all_targets(sections)
    if targets:
        out += ["Targets, judged by code on the 90% interval (met / not met / inconclusive "
                "when the interval straddles the goal / not measured):", ""]
        out += targets_table(targets) + [""]
    if "scaling" in sections:
        out += ["insert_many of 1,000,000 leaves into a fresh tree (reused memory), leaves/s "
                "(median time):", ""] + arity_table(sections["scaling"]) + [""]
    for name in ("throughput_vs_arity.png", "growth.png"):
        if name in plots:
            out += [f"![{name[:-4].replace('_', ' ')}]({docs}/{name})", ""]
    out += BENCHMARKS_HOWTO
    return "\n".join(wrap_prose(out)).rstrip("\n") + "\n"


def wrap_prose(lines: List[str], width: int = 78) -> List[str]:
    """Paragraphs and list items wrapped as the README's prose is; tables,
    images, headings and code blocks as they are."""
    import textwrap

    out: List[str] = []
    code = False
    for line in lines:
        if line.startswith("```"):
            code = not code
        if code or line.startswith(("```", "|", "#", "!")) or len(line) <= width:
            out.append(line)
        elif line.startswith("- "):
            out += textwrap.wrap(line, width, subsequent_indent="  ", break_on_hyphens=False,
                                 break_long_words=False)
        else:
            out += textwrap.wrap(line, width, break_on_hyphens=False, break_long_words=False)
    return out


# -- entry point ---------------------------------------------------------------


def open_crates(harness_dir: Optional[pathlib.Path], use: bool,
                progress: bool) -> Tuple[Harness, Dict[str, Any]]:
    """The harness (or None) and what the report says about it; the anchor
    roots are checked once here."""
    if not use:
        return None, {"measured": False, "problems": [],
                      "text": "not measured (--no-harness)."}
    harness = rust_harness.open_harness(harness_dir)
    if harness is None:
        return None, {"measured": False, "problems": [],
                      "text": "not measured: the harness is not built (python "
                              "tools/rust_harness/build.py; see tools/rust_harness/README.md)."}
    stderr("crates: checking the published anchor roots", progress)
    problems = harness.check_anchor_roots([2, 4, 8, 16])
    paths = {build: str(path) for build, path in harness.paths.items()}
    return harness, {
        "measured": True, "problems": problems, "paths": paths,
        "text": "rotortree 0.15 (the hash rule of this package) and 0.17 (parents hashed as "
                "plain blake3(children)), built by tools/rust_harness (sequential and rayon "
                "builds, lto fat), interleaved with this package's measurements. "
                + ("Both versions reproduce their published roots of 1,000,000 anchor leaves "
                   "at arities 2, 4, 8 and 16." if not problems else
                   "ANCHOR ROOTS DIFFER: " + "; ".join(problems))}


def run_suite(out: pathlib.Path, quick: bool = False, only: Sequence[str] = SECTIONS,
              leaves: Optional[int] = None, plots: bool = True, progress: bool = True,
              command: str = "rotortree bench", harness_dir: Optional[pathlib.Path] = None,
              use_harness: bool = True) -> int:
    """Run the chosen sections and write the report; returns the exit status
    (1 when a section found a problem such as differing roots)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    load_start = list(os.getloadavg())
    meter = LoadMeter()
    sections: Dict[str, Payload] = {}
    texts: Dict[str, str] = {}
    notes: List[str] = []
    # The sections that record a command line get the one the user typed.
    Runner = Callable[[bool, Optional[int], bool, Harness], Tuple[Payload, str]]
    runners: Dict[str, Runner] = {
        "scaling": functools.partial(run_scaling, command=command),
        "kernels": run_kernels, "operations": run_operations,
        "single": run_single, "proofs": run_proofs, "growth": run_growth,
        "durability": functools.partial(run_durability, command=command),
        "churn": run_churn, "rules": run_rules, "sha256": run_sha256,
        "index": run_index, "distributed": run_distributed,
        "logviews": run_logviews}
    harness, crates = open_crates(harness_dir, use_harness, progress)
    try:
        for name in SECTIONS:
            if name in only:
                sections[name], texts[name] = runners[name](quick, leaves, progress, harness)
    finally:
        if harness is not None:
            harness.close()
    facts = run_facts(meter.report(), load_start)
    written = []
    if plots and sections:
        written = write_plots(out, sections, facts["date_utc"])
        if not written and ("scaling" in sections or "growth" in sections):
            notes += ["Plots: matplotlib is not installed, so no PNG was written "
                      "(pip install 'rotortree[bench]').", ""]
    if quick:
        notes += ["Quick run: fewer repetitions, smaller kernel trees, no 10M-leaf snapshot "
                  "tree and a shorter growth workload, unlike the full `rotortree bench`; "
                  "figures are noisier.", ""]
    runtime = time.perf_counter() - started
    text = report(facts, command, runtime, sections, texts, written, notes, crates)
    (out / "report.md").write_text(text)
    (out / "readme_performance.md").write_text(
        readme_section(facts, command, runtime, sections, written, crates))
    problems = {name: p["problems"] for name, p in sections.items() if p.get("problems")}
    if crates["problems"]:
        problems["crates"] = crates["problems"]
    write_json(out / "results.json", {
        "command": command, "machine": facts, "quick": quick, "leaves": leaves,
        "runtime_s": runtime, "crates": crates, "sections": sections,
        "summary": summary_rows(sections), "targets": all_targets(sections),
        "plots": written, "problems": problems,
    })
    stderr(f"wrote {out / 'report.md'}, {out / 'readme_performance.md'}, "
           f"{out / 'results.json'}" + "".join(f", {out / name}" for name in written), progress)
    if problems:
        for name, items in problems.items():
            for item in items:
                print(f"rotortree bench: {name}: {item}", file=sys.stderr)
        return 1
    return 0


__all__ = ["run_suite", "SECTIONS"]
