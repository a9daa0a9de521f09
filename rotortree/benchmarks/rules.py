"""The leanimt rule against the Rust crate 0.17, measured in one run.

    python bench/rules.py [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

insert_many of 1M leaves (``rotortree demo``'s leaves) into a fresh tree on
one thread with ``rule="leanimt"``, at arity 2, 4, 8 and 16, beside the
crate 0.17's sequential ``insert_many`` of the same leaves (the Rust harness,
sequential build), which hashes the same untagged parents: the roots must be
equal, and the run reports a problem if they are not. Configurations are
interleaved round by round (ours, then the crate's, per arity) so machine
drift hits both alike; ratios (crate time / ours) are paired per round.
Issue 16's target is 2x at every arity on an AVX-512 machine and 1.5x with
AVX2 only; it is judged on the 90% interval of the paired ratios. Each
report records the load average and the kernel. Writes DIR/rules.{md,json}.

In the same rounds the `blake3` package hashes one buffer on one thread
(the bound of ``rotortree bench kernels``, counted in exact compressions):
its rate times the tree's compressions (an untagged parent of k children is
ceil(32k / 64) of them) is the time a build would take if it only hashed,
at the package's speed. The crate's time over that, per round, is the most
any build hashing at that speed could gain over the crate: where it is
below the target, the target asks for a build faster than the hash itself,
and the report says so per arity.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import rotortree

from . import harness as rust_harness
from ._common import Progress, deterministic_leaves, machine, write_results_to
from .environment import LoadMeter, fmt_load
from .kernels import bound_sample, tree_compressions
from .stats import fmt_interval, fmt_summary, paired_ratios, ratio_summary, summary, target

ARITIES = (2, 4, 8, 16)
LEAVES = 1_000_000
RULE = "leanimt"
# Issue 16: at least 2x the crate 0.17 with AVX-512, 1.5x with AVX2 only.
TARGET_SPEEDUP = {"avx512": 2.0, "avx2": 1.5}
# The leanimt parent is blake3(children), with no tag bytes.
PARENT_PREFIX = 0
# The bound's buffer: 64 MiB as in the kernels section, smaller for small
# runs so that a test's rounds stay short.
BOUND_BYTES = 64 << 20
BOUND_BYTES_PER_LEAF = 64


def _ours(data: bytes, arity: int) -> Tuple[float, bytes]:
    tree = rotortree.LeanIMT(arity, rule=RULE)
    start = time.perf_counter()
    root = tree.insert_many(data)
    return time.perf_counter() - start, root


def run(repeat: int, leaves: int = LEAVES, show_progress: bool = True,
        harness: Optional[rust_harness.Harness] = None) -> Tuple[Dict[str, Any], str]:
    """Measure and judge; returns (JSON payload, Markdown report)."""
    previous = rotortree.pool_info()["num_threads"]
    rotortree.configure(num_threads=1)
    kernel = rotortree.pool_info()["simd"]
    data = deterministic_leaves(leaves)
    bound_buffer = deterministic_leaves(
        max(1 << 15, min(BOUND_BYTES, leaves * BOUND_BYTES_PER_LEAF)) // 32, b"rules bound")
    ours: Dict[int, List[float]] = {a: [] for a in ARITIES}
    crate: Dict[int, List[float]] = {a: [] for a in ARITIES}
    bound_rates: List[float] = []   # compressions/s of the blake3 package, per round
    problems: List[str] = []
    meter = LoadMeter()
    try:
        with Progress(repeat + 1, "rules", enabled=show_progress, unit="round") as progress:
            for round_ in range(repeat + 1):  # round 0 warms both up
                rate = bound_sample(bound_buffer, 1)
                if round_:
                    bound_rates.append(rate)
                for arity in ARITIES:
                    seconds, root = _ours(data, arity)
                    if round_:
                        ours[arity].append(seconds)
                    if harness is None:
                        continue
                    reply = harness.call("sequential", "insert_many", v=17, arity=arity,
                                         leaves=leaves, warmup=0, reps=1)
                    if round_:
                        crate[arity].append(reply["samples_ns"][0] / 1e9)
                    elif reply["root"] != root.hex():
                        problems.append(f"arity {arity}: crate 0.17 root {reply['root']} != "
                                        f"ours {root.hex()}")
                progress.update()
    finally:
        rotortree.configure(num_threads=previous)
    load = meter.report()

    rows = []
    for arity in ARITIES:
        compressions = tree_compressions(leaves, arity, PARENT_PREFIX)
        bound = [compressions / rate for rate in bound_rates]
        row: Dict[str, Any] = {"arity": arity, "ours_s": summary(ours[arity]),
                               "compressions": compressions, "bound_s": summary(bound),
                               "ours_over_bound": ratio_summary(paired_ratios(ours[arity],
                                                                              bound))}
        if crate[arity]:
            row["crate_s"] = summary(crate[arity])
            row["speedup"] = ratio_summary(paired_ratios(crate[arity], ours[arity]))
            row["speedup_at_bound"] = ratio_summary(paired_ratios(crate[arity], bound))
        rows.append(row)
    goal = TARGET_SPEEDUP.get(kernel)

    def judged(name: str, key: str, row: Dict[str, Any], what: str = "") -> Dict[str, Any]:
        """The target row for the paired ratio row[key] against the goal."""
        if key not in row:
            return target(name, "", reason="no Rust harness: the crate was not run")
        ratio = row[key]
        measured = what.format(fmt_interval(ratio)) if what else fmt_interval(ratio)
        if goal is None:
            return target(name, measured,
                          reason=f"the target names AVX-512 or AVX2; kernel {kernel}")
        return target(name, measured, (ratio["low"], ratio["high"]), goal)

    targets = [judged(f"leanimt insert_many 1M, arity {row['arity']}, 1 thread >= "
                      f"{goal or 2.0}x crate 0.17", "speedup", row) for row in rows]
    # The speedup over the crate of a build that did nothing but hash at the
    # blake3 package's speed: below the goal, the goal is out of reach.
    reachable = [judged(f"arity {row['arity']}: a build hashing at the blake3 package's "
                        f"one-thread speed reaches {goal or 2.0}x the crate 0.17",
                        "speedup_at_bound", row,
                        "hashing alone at the bound: {} the crate's speed") for row in rows]
    payload = {"machine": machine(), "kernel": kernel, "leaves": leaves, "repeat": repeat,
               "rows": rows, "targets": targets, "reachable": reachable,
               "problems": problems, "load": load, "harness": harness is not None,
               "bound_bytes": len(bound_buffer),
               "bound_compressions_per_s": summary(bound_rates)}
    return payload, render(payload)


def render(payload: Dict[str, Any]) -> str:
    lines = [
        f"## leanimt rule: insert_many of {payload['leaves']:,} leaves, 1 thread, "
        f"against the crate 0.17",
        "",
        f"Kernel {payload['kernel']}; {payload['repeat']} interleaved rounds after a warm-up; "
        f"{fmt_load(payload['load'])}. Times are medians (min, IQR); the speedup is the "
        "crate's time over ours per round, median [90% interval]. This machine is shared "
        "and noisy: read the intervals, not the medians alone.",
        "",
        f"Bound: the `blake3` package over {payload['bound_bytes'] / (1 << 20):.1f} MiB on one "
        f"thread, {payload['bound_compressions_per_s']['median'] / 1e6:.1f}M compressions/s "
        "(median); a tree's bound time is its compressions at that rate, per round. "
        "\"Crate at the bound\" is the crate's time over the bound time: the most a build "
        "that only hashed, at the package's speed, could gain over the crate.",
        "",
        "| arity | ours | crate 0.17 (sequential) | speedup | compressions | bound time | "
        "ours / bound | crate at the bound |",
        "|---:|---|---|---|---:|---|---|---|",
    ]
    for row in payload["rows"]:
        crate = fmt_summary(row["crate_s"]) if "crate_s" in row else "not run"
        speedup = fmt_interval(row["speedup"]) if "speedup" in row else "-"
        at_bound = fmt_interval(row["speedup_at_bound"]) if "speedup_at_bound" in row else "-"
        lines.append(f"| {row['arity']} | {fmt_summary(row['ours_s'])} | {crate} | "
                     f"{speedup} | {row['compressions']:,} | {fmt_summary(row['bound_s'])} | "
                     f"{fmt_interval(row['ours_over_bound'])} | {at_bound} |")
    lines += ["", "| target | measured | status |", "|---|---|---|"]
    for item in payload["targets"]:
        lines.append(f"| {item['target']} | {item['measured']} | {item['status']} |")
    lines += ["", "Is the target reachable? Met: a build hashing at the blake3 package's speed "
              "and doing nothing else would reach it; not met: half the crate's time (or the "
              "crate's time over the AVX2 goal) is below the time the package takes to hash "
              "the tree, so the target asks for a build faster than the hash itself.", "",
              "| question | measured | status |", "|---|---|---|"]
    for item in payload["reachable"]:
        lines.append(f"| {item['target']} | {item['measured']} | {item['status']} |")
    for row, item in zip(payload["rows"], payload["reachable"]):
        if item["status"] == "not met" and "crate_s" in row:
            goal = item["goal"]
            lines.append(
                f"\nArity {row['arity']}: 1/{goal:g} of the crate's time is "
                f"{row['crate_s']['median'] / goal * 1e3:.2f} ms, below the "
                f"{row['bound_s']['median'] * 1e3:.2f} ms the blake3 package takes for the "
                f"tree's {row['compressions']:,} compressions: {goal:g}x asks for faster "
                "than the hash itself.")
    for problem in payload["problems"]:
        lines.append(f"\nPROBLEM: {problem}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    rust_harness.add_options(parser)
    args = parser.parse_args(argv)
    with rust_harness.from_options(args) as harness:
        payload, markdown = run(3 if args.quick else args.repeat, harness=harness)
    print(markdown)
    path = write_results_to(args.out, "rules", payload, markdown)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if payload["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
