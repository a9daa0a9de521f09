"""``rotortree bench``: run the benchmark suite and write a report.

Writes OUT/report.md (every table), OUT/results.json (settings, raw samples
and roots of every section) and, with matplotlib installed, three plots:
OUT/speedup_vs_threads.png, OUT/threshold_impact.png and
OUT/throughput_vs_arity.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import pathlib
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import rotortree

from . import churn, durability, kernels, operations, scaling
from . import proofs as proof_bench
from ._common import fmt_ms, fmt_rate, load_pyplot, machine, stderr, write_json

SECTIONS = ("scaling", "kernels", "operations", "proofs", "durability", "churn")

Payload = Dict[str, Any]


# -- sizes -------------------------------------------------------------------


def scaling_args(quick: bool, leaves: Optional[int]) -> argparse.Namespace:
    # Quick keeps the full sizes (the report's figures are 1M-leaf figures)
    # with fewer repetitions than the standalone script's full run.
    argv = ["--quick", "--repeat", "7"] if quick else []
    if leaves is not None:
        small = max(1, min(10_000, leaves // 4))
        argv += ["--leaves", str(leaves), "--small-batch", str(small),
                 "--base-leaves", str(leaves), "--small-repeat", "5" if quick else "40",
                 "--repeat", "2" if quick else "5"]
    return scaling.parse_args(argv, prog="rotortree bench")


def durability_argv(quick: bool, leaves: Optional[int]) -> List[str]:
    if leaves is not None:
        return ["--quick"]
    if quick:
        return ["--leaves", "200000", "--rss-leaves", "1000000", "--single-leaves", "20000",
                "--durable-calls", "100", "--repeat", "3"]
    return []


# -- sections ----------------------------------------------------------------


def run_scaling(quick: bool, leaves: Optional[int], progress: bool) -> Tuple[Payload, str]:
    args = scaling_args(quick, leaves)
    return scaling.run(args, command="rotortree bench", show_progress=progress)


def run_kernels(quick: bool, leaves: Optional[int], progress: bool) -> Tuple[Payload, str]:
    scale = 4 if quick else 1
    if leaves is not None:
        scale = max(scale, 1_000_000 // max(1, leaves))
    return kernels.run(3 if quick else 7, scale, show_progress=progress)


def run_operations(quick: bool, leaves: Optional[int],
                   progress: bool) -> Tuple[Payload, str]:
    size = leaves if leaves is not None else 1_000_000
    proofs = 5_000 if quick else 10_000
    singles = 50_000 if quick else 200_000
    if leaves is not None:
        proofs, singles = min(proofs, max(1, leaves // 10)), min(singles, leaves)
    return operations.run(size, 4, proofs, singles, 3 if quick else 5, show_progress=progress)


def run_proofs(quick: bool, leaves: Optional[int], progress: bool) -> Tuple[Payload, str]:
    # Quick keeps the 1M-leaf proof tree the targets speak of and drops the
    # 10M snapshot tree, whose rebuilds are most of a full run's time.
    max_leaves = 1_000_000 if quick else proof_bench.SNAPSHOT_SIZES[-1]
    proof_leaves, count, repeat = proof_bench.TARGET_LEAVES, 100_000, 5 if quick else 7
    if leaves is not None:
        max_leaves = proof_leaves = leaves
        count, repeat = max(1, min(count, leaves // 10)), 3
    return proof_bench.run(max_leaves, proof_leaves, count, repeat, show_progress=progress)


def run_durability(quick: bool, leaves: Optional[int], progress: bool) -> Tuple[Payload, str]:
    stderr("durability: running", progress)
    # Its main() prints the table for standalone use; here the report has it.
    sink = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="rotortree-bench-") as scratch, \
            contextlib.redirect_stdout(sink), \
            contextlib.redirect_stderr(sys.stderr if progress else sink):
        status = durability.main([*durability_argv(quick, leaves), "--out", scratch])
        md = pathlib.Path(scratch) / "durability.md"
        js = pathlib.Path(scratch) / "durability.json"
        if status != 0 or not md.exists():
            return ({"benchmark": "durability", "problems": [f"exit status {status}"]},
                    f"The durability benchmark failed (exit status {status}).")
        payload: Payload = json.loads(js.read_text()) if js.exists() else {}
        return payload, md.read_text().rstrip("\n")


def run_churn(quick: bool, leaves: Optional[int], progress: bool) -> Tuple[Payload, str]:
    base, ops = (20_000, 20_000) if quick else (100_000, 100_000)
    if leaves is not None:
        base = ops = max(1, min(leaves, 100_000))
    return churn.run(base, ops, show_progress=progress)


# -- report ------------------------------------------------------------------


def demote(markdown: str, levels: int = 2) -> str:
    """Push a section's headings down so they nest under the report's."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):  # the section's own title: the report has one
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return "\n".join("#" * levels + line if line.startswith("#") else line for line in lines)


def scaling_rows(payload: Payload, arity: int) -> List[Dict[str, Any]]:
    for block in payload["thread_scaling"]:
        if block["arity"] == arity:
            rows: List[Dict[str, Any]] = block["rows"]
            return rows
    return []


def summary_table(sections: Dict[str, Payload]) -> List[str]:
    """The headline table: this run beside the Rust crate's figures."""
    rust = scaling.RUST_REFERENCE
    lines = []
    sc = sections.get("scaling")
    if sc:
        leaves = sc["settings"]["leaves"]
        rows = scaling_rows(sc, 4)
        lines += [f"| arity 4, {leaves:,} leaves | rotortree (this run) | "
                  "Rust crate rotortree 0.15 (same machine kind) |", "|---|---:|---:|"]
        if rows:
            seq = rows[0]
            lines.append(f"| insert_many, sequential | {fmt_ms(seq['median_ms'])} ms "
                         f"({fmt_rate(seq['leaves_per_s'])} leaves/s) | "
                         f"{rust['sequential_ms'][0]:.0f}-{rust['sequential_ms'][1]:.0f} ms "
                         "(9.1-9.4M leaves/s) |")
            for row in rows[1:]:
                if row["threads"] == 2:
                    lines.append(
                        f"| insert_many, 2 threads | {fmt_ms(row['median_ms'])} ms "
                        f"({fmt_rate(row['leaves_per_s'])} leaves/s, "
                        f"{row['speedup_vs_sequential']:.2f}x) | "
                        f"{rust['two_threads_ms'][0]:.0f}-{rust['two_threads_ms'][1]:.0f} ms "
                        f"(13-15M leaves/s, {rust['two_threads_speedup'][0]}-"
                        f"{rust['two_threads_speedup'][1]}x) |")
                elif row["threads"] > 2:
                    lines.append(f"| insert_many, {row['label']} threads | "
                                 f"{fmt_ms(row['median_ms'])} ms "
                                 f"({fmt_rate(row['leaves_per_s'])} leaves/s) | |")
    ops = sections.get("operations")
    if ops:
        if not lines:
            lines += ["| measurement | rotortree (this run) | Rust crate rotortree 0.15 |",
                      "|---|---:|---:|"]
        single = next((r for r in ops["rows"] if r["operation"].startswith("insert")), None)
        if single:
            lines.append(f"| single insert | {single['per_call_us']:.2f} µs (Python call "
                         f"included) | {ops['reference_rust_single_insert_us']} µs "
                         "(Rust call) |")
    pr = sections.get("proofs")
    if pr:
        if not lines:
            lines += ["| measurement | rotortree (this run) | Rust crate rotortree 0.15 |",
                      "|---|---:|---:|"]
        lines += [f"| {row['what']} | {row['ours']} | {row['rust']} (Rust call) |"
                  for row in pr["comparison"]]
    if lines and ((sc and sc["settings"]["leaves"] != 1_000_000)
                  or (pr and pr["proofs"]["leaves"] != proof_bench.TARGET_LEAVES)):
        lines += ["", "The Rust figures are for 1,000,000 leaves; this run used another size."]
    return lines


def arity_table(sc: Payload) -> List[str]:
    lines = ["| arity | sequential leaves/s | " + " | ".join(
        f"{r['label']} threads leaves/s" for r in sc["thread_scaling"][0]["rows"][1:])
        + " |"]
    lines.append("|---:|---:|" + "---:|" * (len(sc["thread_scaling"][0]["rows"]) - 1))
    for block in sc["thread_scaling"]:
        cells = [fmt_rate(r["leaves_per_s"]) + (
            f" ({r['speedup_vs_sequential']:.2f}x)" if r["threads"] > 1 else "")
            for r in block["rows"]]
        lines.append(f"| {block['arity']} | " + " | ".join(cells) + " |")
    return lines


def plot_arity(axes: Any, sc: Payload) -> None:
    blocks = sc["thread_scaling"]
    arities = [b["arity"] for b in blocks]
    labels = [r["label"] for r in blocks[0]["rows"]]
    width = 0.8 / max(1, len(labels))
    for position, label in enumerate(labels):
        values = [next((r["leaves_per_s"] / 1e6 for r in b["rows"] if r["label"] == label), 0.0)
                  for b in blocks]
        xs = [i + (position - (len(labels) - 1) / 2) * width for i in range(len(arities))]
        axes.bar(xs, values, width, label=label if label == "sequential"
                 else f"{label} threads")
    ticks = [str(a) for a in arities]
    if 4 in arities and sc["settings"]["leaves"] == 1_000_000:
        # The Rust crate's figures (arity 4, 1M leaves) as their own group,
        # drawn as ranges: they were measured as ranges.
        rust = scaling.RUST_REFERENCE
        at = len(arities)
        for offset, label, (low_ms, high_ms) in (
                (-width / 2, "Rust crate, sequential", rust["sequential_ms"]),
                (width / 2, "Rust crate, 2 threads", rust["two_threads_ms"])):
            low, high = 1e3 / high_ms, 1e3 / low_ms  # M leaves/s for 1M leaves
            axes.bar([at + offset], [(low + high) / 2], width, yerr=[[(high - low) / 2],
                     [(high - low) / 2]], capsize=3, hatch="//", fill=False,
                     edgecolor="grey" if offset < 0 else "black", label=label)
        ticks.append("4\n(Rust crate)")
    axes.set_xticks(range(len(ticks)))
    axes.set_xticklabels(ticks)
    axes.set_xlabel("arity")
    axes.set_ylabel("million leaves/s (higher is better)")
    axes.set_title(f"insert_many throughput vs arity, {sc['settings']['leaves']:,} leaves")
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8)


def write_plots(out: pathlib.Path, sc: Payload) -> List[str]:
    plt = load_pyplot()
    if plt is None:
        return []
    written = []
    for name, draw in (("speedup_vs_threads.png", scaling.plot_speedup),
                       ("threshold_impact.png", scaling.plot_threshold),
                       ("throughput_vs_arity.png", plot_arity)):
        fig, axes = plt.subplots(figsize=(7, 4.5))
        draw(axes, sc)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def report(facts: Dict[str, Any], command: str, runtime_s: float,
           sections: Dict[str, Payload], texts: Dict[str, str], plots: List[str],
           notes: List[str]) -> str:
    out = [
        "# rotortree benchmark report",
        "",
        f"- machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs "
        f"({facts['available_cpus']} available), {facts['memory_gib']} GiB, SIMD kernel "
        f"{facts['simd']}",
        f"- software: rotortree {facts['rotortree']}, Python {facts['python']}, "
        f"{facts['platform']}",
        f"- date: {facts['date']}",
        f"- command: `{command}` ({runtime_s:.0f} s)",
        "",
    ]
    out += notes
    summary = summary_table(sections)
    if summary:
        out += ["## Summary", ""] + summary + [""]
    if "scaling" in sections:
        out += ["## Throughput vs arity", "",
                "insert_many into a fresh tree, reused memory, medians (from the thread "
                "scaling section below).", ""] + arity_table(sections["scaling"]) + [""]
    if plots:
        out += ["## Plots", ""] + [f"![{name[:-4].replace('_', ' ')}]({name})"
                                   for name in plots] + [""]
    titles = {"scaling": "Thread scaling and parallel threshold",
              "kernels": "SIMD kernels",
              "operations": "Single inserts, snapshots and proofs",
              "proofs": "Snapshot cost and proof throughput",
              "durability": "Durable trees",
              "churn": "Memory under snapshot churn"}
    for name in SECTIONS:
        if name in texts:
            out += [f"## {titles[name]}", "", demote(texts[name]), ""]
    return "\n".join(out).rstrip("\n") + "\n"


# -- entry point ---------------------------------------------------------------


def run_suite(out: pathlib.Path, quick: bool = False, only: Sequence[str] = SECTIONS,
              leaves: Optional[int] = None, plots: bool = True, progress: bool = True,
              command: str = "rotortree bench") -> int:
    """Run the chosen sections and write the report; returns the exit status
    (1 when a section found a problem such as differing roots)."""
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sections: Dict[str, Payload] = {}
    texts: Dict[str, str] = {}
    notes: List[str] = []
    for name in SECTIONS:
        if name not in only:
            continue
        if name == "scaling":
            sections[name], texts[name] = run_scaling(quick, leaves, progress)
        elif name == "kernels":
            sections[name], texts[name] = run_kernels(quick, leaves, progress)
        elif name == "operations":
            sections[name], texts[name] = run_operations(quick, leaves, progress)
        elif name == "proofs":
            sections[name], texts[name] = run_proofs(quick, leaves, progress)
        elif name == "durability":
            sections[name], texts[name] = run_durability(quick, leaves, progress)
        elif name == "churn":
            sections[name], texts[name] = run_churn(quick, leaves, progress)
    written = []
    if plots and "scaling" in sections:
        written = write_plots(out, sections["scaling"])
        if not written:
            notes += ["Plots: matplotlib is not installed, so no PNG was written "
                      "(pip install 'rotortree[bench]').", ""]
    if quick:
        notes += ["Quick run: fewer repetitions, smaller kernel trees and no 10M-leaf "
                  "snapshot tree, unlike the full `rotortree bench`; figures are noisier.",
                  ""]
    facts = machine()
    runtime = time.perf_counter() - started
    text = report(facts, command, runtime, sections, texts, written, notes)
    (out / "report.md").write_text(text)
    problems = {name: p["problems"] for name, p in sections.items() if p.get("problems")}
    write_json(out / "results.json", {
        "command": command, "machine": facts, "quick": quick, "leaves": leaves,
        "runtime_s": runtime, "sections": sections, "plots": written,
        "problems": problems,
    })
    stderr(f"wrote {out / 'report.md'}, {out / 'results.json'}"
           + "".join(f", {out / name}" for name in written), progress)
    if problems:
        for name, items in problems.items():
            for item in items:
                print(f"rotortree bench: {name}: {item}", file=sys.stderr)
        return 1
    return 0


__all__ = ["run_suite", "SECTIONS"]
