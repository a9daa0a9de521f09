"""The scaling benchmark's report: targets judged by code, Markdown tables and
plots, all from the payload :func:`rotortree.benchmarks.scaling.run` returns
(so ``--replot`` can redraw from a saved JSON)."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any, Dict, List, Optional

from rotortree.config import DEFAULT_PAR_CHUNK_SIZE, DEFAULT_PARALLEL_THRESHOLD

from ._common import fmt_ms, fmt_rate, load_pyplot
from .environment import fmt_load
from .stats import fmt_interval, target

Row = Dict[str, Any]
Payload = Dict[str, Any]

TARGET_ONE_THREAD_OVERHEAD = 0.02   # 1-thread pool at most 2% over sequential
TARGET_TWO_THREAD_SPEEDUP = 1.85    # at 1M leaves, arity 4
TARGET_LEAVES = 1_000_000
TARGET_SMALL_BATCH = 10_000


def rows_at(payload: Payload, arity: int, key: str = "rows") -> List[Row]:
    for block in payload["thread_scaling"]:
        if block["arity"] == arity:
            rows: List[Row] = block.get(key, [])
            return rows
    return []


def find(rows: List[Row], threads: int, rust: Optional[int] = None) -> Optional[Row]:
    return next((r for r in rows if r["threads"] == threads and r.get("rust") == rust), None)


def ceiling_text(ceiling: Optional[Dict[str, float]]) -> str:
    if not ceiling:
        return ""
    return (f"; this machine's two-thread ceiling in the same run (two threads of "
            f"independent cache-resident hashing): {fmt_interval(ceiling)}")


def targets(payload: Payload) -> List[Dict[str, Any]]:
    """Every scaling target, judged by :func:`stats.verdict` on the 90%
    interval of the paired ratios."""
    settings = payload["settings"]
    results = []
    rust4 = rows_at(payload, 4, "rust_rows")
    crate = next((r for r in rust4 if r["rust"] == 15 and r["threads"] == 1
                  and r["memory"] == "reused"), None)
    crate_note = (f" For comparison, the crate 0.15's rayon pool of 1 thread takes "
                  f"{fmt_interval(crate['ratio'])} the time of its sequential build "
                  "(arity 4, same run)." if crate else "")
    results.append(target(
        f"1-thread pool costs at most {TARGET_ONE_THREAD_OVERHEAD:.0%} over sequential",
        "", reason="cannot be measured: this package has no 1-thread pool (num_threads=1 "
                   "runs every level on the calling thread, and the API offers no way to "
                   "send one thread through the pool)." + crate_note))
    name = (f"2 threads >= {TARGET_TWO_THREAD_SPEEDUP}x over sequential "
            f"({TARGET_LEAVES:,} leaves, arity 4)")
    for key, memory in (("rows", "reused memory"), ("fresh_page_rows", "fresh pages")):
        rows4 = rows_at(payload, 4, key)
        two = find(rows4, 2)
        label = f"{name}, {memory}"
        if two is None:
            if key == "rows" or payload["settings"].get("heap_controlled"):
                results.append(target(label, "", reason="arity 4 with 2 threads not in "
                                                       "this run"))
            continue
        measured = (f"speedup {fmt_interval(two['speedup'])} (median "
                    f"{fmt_ms(two['median_ms'])} ms vs {fmt_ms(rows4[0]['median_ms'])} ms) at "
                    f"{settings['leaves']:,} leaves" + ceiling_text(
                        payload.get("two_thread_ceiling")))
        if settings["leaves"] != TARGET_LEAVES:
            results.append(target(label, measured + " (another size: not judged)"))
        else:
            results.append(target(label, measured,
                                  (two["speedup"]["low"], two["speedup"]["high"]),
                                  TARGET_TWO_THREAD_SPEEDUP, at_least=True))
    name = (f"{TARGET_SMALL_BATCH:,}-leaf batches never slower than sequential at the default "
            f"threshold ({DEFAULT_PARALLEL_THRESHOLD})")
    small = payload["threshold_impact"]["small"]["rows"]
    default = next((r for r in small if r["threads"] > 1
                    and r["parallel_threshold"] == DEFAULT_PARALLEL_THRESHOLD), None)
    if default is None:
        results.append(target(name, "", reason="default threshold not in this run"))
    else:
        measured = (f"time ratio to sequential {fmt_interval(default['ratio'], 3, '')} "
                    f"at {settings['small_batch']:,} leaves; slower in "
                    f"{default['ratio']['above_one']:.0%} of paired repetitions")
        if settings["small_batch"] != TARGET_SMALL_BATCH:
            results.append(target(name, measured + " (another size: not judged)"))
        else:
            results.append(target(name, measured, (default["ratio"]["low"],
                                                   default["ratio"]["high"]), 1.0,
                                  at_least=False))
    return results


def share(row: Row) -> str:
    return "-" if row["helper_share"] is None else f"{row['helper_share']:.0%}"


def pool_cell(row: Row) -> str:
    per = row["pool_per_call"]
    return (f"{per['jobs']:.1f} / {per['parks']:.1f} / {share(row)} / "
            f"{per['minor_faults']:.0f}")


def time_cells(row: Row) -> str:
    s = row["stats_ms"]
    return f"{fmt_ms(s['median'])} | {fmt_ms(s['min'])} | {fmt_ms(s['iqr'])}"


def config_label(row: Row) -> str:
    if row.get("rust") is None:
        if row["threads"] == 1:
            return f"rotortree {row['label']}"
        extra = " (oversubscribed)" if "oversubscribed" in row["label"] else ""
        return f"rotortree {row['threads']} threads{extra}"
    return f"crate {row['label']}"


def scaling_table(rows: List[Row], fresh: Dict[str, Row]) -> List[str]:
    head = ("| configuration | median ms | min ms | IQR ms | leaves/s | speedup vs sequential "
            "[90%] | faults |")
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if fresh:
        head += " fresh pages: median ms | min ms | IQR ms | speedup [90%] | faults |"
        rule += "---:|---:|---:|---:|---:|"
    out = [head, rule]
    for row in rows:
        cells = (f"{time_cells(row)} | {fmt_rate(row['leaves_per_s'])} | "
                 f"{fmt_interval(row['speedup'])} | "
                 f"{row['pool_per_call']['minor_faults']:.0f}")
        other = fresh.get(row["label"])
        if other:
            cells += (f" | {time_cells(other)} | {fmt_interval(other['speedup'])} | "
                      f"{other['pool_per_call']['minor_faults']:.0f}")
        elif fresh:
            cells += " | | | | |"
        out.append(f"| {config_label(row)} | {cells} |")
    return out


def crate_table(rust_rows: List[Row]) -> List[str]:
    """This package against the crate, per paired repetition."""
    out = ["| crate configuration | compared with | memory | crate median ms | crate time / "
           "rotortree time [90%] |", "|---|---|---|---:|---:|"]
    for row in rust_rows:
        if "crate_over_python" not in row:
            continue
        rule = " (another hash rule)" if row["rust"] == 17 else ""
        out.append(f"| {row['label']}{rule} | rotortree {row['python_peer']} | "
                   f"{row['memory']} | {fmt_ms(row['median_ms'])} | "
                   f"{fmt_interval(row['crate_over_python'])} |")
    return out


def markdown(payload: Payload) -> str:
    settings, facts = payload["settings"], payload["machine"]
    cpus, loads = settings["available_cpus"], payload["machine_load"]
    out = [
        "# insert_many: thread scaling and parallel threshold",
        "",
        f"machine: {facts['cpu']}, {facts['logical_cpus']} logical CPUs, "
        f"{cpus} available to this process, {facts['memory_gib']} GiB, kernel "
        f"{facts['simd']}, Python {facts['python']}",
        f"command: `{payload['command']}`",
        "",
        "Method: every configuration measured in this one run, round-robin (each repetition "
        "visits all configurations once, order rotated per repetition), after one untimed "
        "repetition. Times: median, minimum and interquartile range (IQR) over the "
        "repetitions. Speedups and ratios: computed per repetition against the "
        "configuration's baseline measured in the same repetition, given as median "
        "[90% interval: 5th-95th percentile]. Before each timed call of this package the pool "
        "is reconfigured and started by an untimed compute_root, then the process idles "
        f"{settings['gap_ms']:g} ms so workers have parked, as between a service's batches. "
        f"par_chunk_size {DEFAULT_PAR_CHUNK_SIZE}, max_depth {settings['max_depth']}.",
        "",
    ]
    if settings.get("rust_crates"):
        out += ["The Rust crate rotortree (0.15: the same hash rule as this package; 0.17: "
                "parents hashed as plain blake3(children), another rule, so its roots differ "
                "and its times are not like for like) is measured by the project's harness "
                "(tools/rust_harness) in the same repetitions, with the same leaves: its "
                "sequential build, and its rayon build inside a pool of 1 and of 2 threads "
                "(speedups against its own sequential build).", ""]
    else:
        out += ["The Rust crate was not measured in this run (its harness is not built: "
                "tools/rust_harness/README.md).", ""]
    out += [
        f"## Thread scaling: {settings['leaves']:,} leaves into a fresh tree",
        "",
        f"Tree creation untimed; parallel_threshold {DEFAULT_PARALLEL_THRESHOLD}; "
        f"{settings['repeat']} repetitions. There is no \"1 thread\" row for this package: "
        "num_threads=1 is the sequential path (the pool is never entered).",
        "",
        ("Memory, side by side: the first columns reuse memory freed by the previous tree "
         "(glibc's trim threshold raised: no page faults, the steady state of a long-running "
         "process that builds trees of one size). The \"fresh pages\" columns return freed "
         "memory to the OS first (malloc_trim, the C core's mapping cache; untimed), so the "
         "insert faults in every page it writes, as a first build or a growing tree does. "
         "faults = minor page faults per call."
         if settings.get("heap_controlled") else
         "Memory: the allocator is not glibc, so whether fresh trees reuse mapped memory is "
         "not controlled; faults = minor page faults per call."),
        "",
    ]
    for block in payload["thread_scaling"]:
        fresh = {r["label"]: r for r in block.get("fresh_page_rows", [])}
        rust = block.get("rust_rows", [])
        rust_fresh = {r["label"]: r for r in rust if r["memory"] != "reused"}
        out += [f"### arity {block['arity']}", ""]
        out += scaling_table(block["rows"], fresh)
        reused_rust = [r for r in rust if r["memory"] == "reused"]
        if reused_rust:
            out += scaling_table(reused_rust, rust_fresh)[2:]
            out += ["", "Beside the crate (> 1: rotortree faster in that repetition):", ""]
            out += crate_table(rust)
        out.append("")
    if "thread_scaling" in loads:
        out += [f"During this table: {fmt_load(loads['thread_scaling'])}.", ""]

    small = payload["threshold_impact"]["small"]["rows"]
    large = payload["threshold_impact"]["large"]["rows"]
    out += [
        f"## Threshold impact: arity {settings['threshold_arity']}, "
        f"{max(cpus, 2)} threads",
        "",
        f"{settings['small_batch']:,}-leaf batches are appended to one tree per configuration "
        f"that starts with {settings['base_leaves']:,} leaves (pre-filled untimed) and keeps "
        f"growing (to {small[0]['final_size']:,}); only the insert_many call is timed; "
        f"{settings['small_repeat']} repetitions. {settings['leaves']:,}-leaf batches go into "
        f"a fresh tree, {settings['repeat']} repetitions. Ratio = time / sequential time in "
        "the same repetition, median [90% interval]. \"pool\" = per call: pool jobs / worker "
        "wake-ups / share of the pool's units run by workers / minor page faults.",
        "",
        f"| parallel_threshold | {settings['small_batch']:,} leaves: median ms | min | IQR | "
        f"ratio [90%] | slower in | pool | {settings['leaves']:,} leaves: median ms | min | "
        "IQR | ratio [90%] | pool |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s_row, l_row in zip(small, large):
        out.append(
            f"| {s_row['label']} | {time_cells(s_row)} | "
            f"{fmt_interval(s_row['ratio'], 3, '')} | {s_row['ratio']['above_one']:.0%} | "
            f"{pool_cell(s_row)} | {time_cells(l_row)} | "
            f"{fmt_interval(l_row['ratio'], 3, '')} | {pool_cell(l_row)} |")
    out.append("")
    for key, what in (("threshold_large", f"{settings['leaves']:,}-leaf columns"),
                      ("threshold_small", f"{settings['small_batch']:,}-leaf columns")):
        if key in loads:
            out.append(f"During the {what}: {fmt_load(loads[key])}.")
    out += ["", "## Targets (judged by code from the intervals above)", "",
            "| target | measured | status |", "|---|---|---|"]
    for t in payload["targets"]:
        out.append(f"| {t['target']} | {t['measured']} | **{t['status']}** |")
    out.append("")
    if payload["problems"]:
        out += ["## ROOT MISMATCHES", ""] + [f"- {p}" for p in payload["problems"]] + [""]
    else:
        out.append("Roots: every configuration of this package and of the crate 0.15 produced "
                   "the root of compute_root (appended batches: the same root after every "
                   "batch); the crate 0.17's configurations agreed with each other.")
    return "\n".join(out)


# ---- plots ------------------------------------------------------------------------------


def error_bars(values: List[Dict[str, float]]) -> List[List[float]]:
    return [[v["median"] - v["low"] for v in values], [v["high"] - v["median"] for v in values]]


def plot_speedup(axes: Any, payload: Payload) -> None:
    """Speedup vs threads per arity, error bars = 90% interval of the paired
    speedups; dashed = fresh pages; the crate 0.15's rayon build in grey."""
    cpus = payload["settings"]["available_cpus"]
    most = 1
    for block in payload["thread_scaling"]:
        color = None
        for key, style in (("rows", "-"), ("fresh_page_rows", "--")):
            rows = block.get(key) or []
            if not rows:
                continue
            xs = [r["threads"] for r in rows]
            most = max(most, *xs)
            speed = [r["speedup"] for r in rows]
            drawn = axes.errorbar(xs, [s["median"] for s in speed], yerr=error_bars(speed),
                                  marker="o" if style == "-" else "x", ls=style, capsize=3,
                                  alpha=1.0 if style == "-" else 0.6, color=color,
                                  label=f"arity {block['arity']}"
                                  + (", fresh pages" if style == "--" else ""))
            color = drawn.lines[0].get_color()
    crate = [r for r in rows_at(payload, 4, "rust_rows")
             if r["rust"] == 15 and r["memory"] == "reused" and r["threads"] > 0]
    if crate:
        speed = [r["speedup"] for r in crate]
        axes.errorbar([r["threads"] for r in crate], [s["median"] for s in speed],
                      yerr=error_bars(speed), marker="s", color="grey", capsize=3,
                      label="crate 0.15 rayon, arity 4 (vs its sequential build)")
    ideal = list(range(1, most + 1))
    axes.plot(ideal, [min(x, cpus) for x in ideal], "k:", label="ideal (CPUs)")
    ceiling = payload.get("two_thread_ceiling")
    if ceiling:
        axes.errorbar([2], [ceiling["median"]], yerr=error_bars([ceiling]), marker="*",
                      color="black", capsize=3, ls="none",
                      label="machine ceiling (independent hashing)")
    axes.axhline(TARGET_TWO_THREAD_SPEEDUP, color="tab:red", lw=0.8, ls="--",
                 label=f"target {TARGET_TWO_THREAD_SPEEDUP}x (arity 4, 2 threads)")
    axes.set_xlabel("threads (1 = sequential)")
    axes.set_ylabel("speedup vs sequential (median, 90% interval)")
    axes.set_title(f"Thread scaling, {payload['settings']['leaves']:,} leaves, fresh tree "
                   "(rotortree bench, one run)", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=6, ncol=2, loc="lower right")


def plot_threshold(axes: Any, payload: Payload) -> None:
    """Time relative to sequential per parallel_threshold, with 90% intervals."""
    cpus = payload["settings"]["available_cpus"]
    settings = payload["settings"]
    small = payload["threshold_impact"]["small"]["rows"]
    large = payload["threshold_impact"]["large"]["rows"]
    labels = [r["label"].replace(" (default)", "*") for r in small]
    xs = list(range(len(labels)))
    width = 0.38
    for offset, rows, what in ((-width / 2, small, f"{settings['small_batch']:,} leaves "
                                                   "(appended)"),
                               (width / 2, large, f"{settings['leaves']:,} leaves "
                                                  "(fresh tree)")):
        ratios = [r["ratio"] for r in rows]
        axes.bar([x + offset for x in xs], [r["median"] for r in ratios], width,
                 yerr=error_bars(ratios), capsize=3, label=what)
    axes.axhline(1.0, color="k", lw=0.8)
    tallest = max(r["ratio"]["high"] for r in small + large)
    axes.set_ylim(0, max(1.0, tallest) * 1.2)
    axes.set_xticks(xs)
    axes.set_xticklabels(labels)
    axes.set_xlabel("parallel_threshold (* default)")
    axes.set_ylabel("time / sequential time (median, 90% interval)")
    axes.set_title(f"Threshold impact, arity {settings['threshold_arity']}, "
                   f"{max(cpus, 2)} threads (rotortree bench, one run)", fontsize=9)
    axes.grid(alpha=0.3, axis="y")
    axes.legend(fontsize=8, loc="upper right")


def plot(path: pathlib.Path, payload: Payload) -> bool:
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


def replot(out: pathlib.Path) -> int:
    payload = json.loads((out / "scaling.json").read_text())
    png = out / "scaling.png"
    if plot(png, payload):
        print(f"wrote {png}", file=sys.stderr)
    return 0
