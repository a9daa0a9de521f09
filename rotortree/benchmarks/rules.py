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
from .stats import fmt_interval, fmt_summary, paired_ratios, ratio_summary, summary, target

ARITIES = (2, 4, 8, 16)
LEAVES = 1_000_000
RULE = "leanimt"
# Issue 16: at least 2x the crate 0.17 with AVX-512, 1.5x with AVX2 only.
TARGET_SPEEDUP = {"avx512": 2.0, "avx2": 1.5}


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
    ours: Dict[int, List[float]] = {a: [] for a in ARITIES}
    crate: Dict[int, List[float]] = {a: [] for a in ARITIES}
    problems: List[str] = []
    meter = LoadMeter()
    try:
        with Progress(repeat + 1, "rules", enabled=show_progress, unit="round") as progress:
            for round_ in range(repeat + 1):  # round 0 warms both up
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
        row: Dict[str, Any] = {"arity": arity, "ours_s": summary(ours[arity])}
        if crate[arity]:
            row["crate_s"] = summary(crate[arity])
            row["speedup"] = ratio_summary(paired_ratios(crate[arity], ours[arity]))
        rows.append(row)
    goal = TARGET_SPEEDUP.get(kernel)
    targets = []
    for row in rows:
        name = f"leanimt insert_many 1M, arity {row['arity']}, 1 thread >= " \
               f"{goal or 2.0}x crate 0.17"
        if "speedup" not in row:
            targets.append(target(name, "", reason="no Rust harness: the crate was not run"))
        elif goal is None:
            targets.append(target(name, fmt_interval(row["speedup"]),
                                  reason=f"the target names AVX-512 or AVX2; kernel {kernel}"))
        else:
            speedup = row["speedup"]
            targets.append(target(name, fmt_interval(speedup), (speedup["low"],
                                  speedup["high"]), goal))
    payload = {"machine": machine(), "kernel": kernel, "leaves": leaves, "repeat": repeat,
               "rows": rows, "targets": targets, "problems": problems, "load": load,
               "harness": harness is not None}
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
        "| arity | ours | crate 0.17 (sequential) | speedup |",
        "|---:|---|---|---|",
    ]
    for row in payload["rows"]:
        crate = fmt_summary(row["crate_s"]) if "crate_s" in row else "not run"
        speedup = fmt_interval(row["speedup"]) if "speedup" in row else "-"
        lines.append(f"| {row['arity']} | {fmt_summary(row['ours_s'])} | {crate} | "
                     f"{speedup} |")
    lines += ["", "| target | measured | status |", "|---|---|---|"]
    for item in payload["targets"]:
        lines.append(f"| {item['target']} | {item['measured']} | {item['status']} |")
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
