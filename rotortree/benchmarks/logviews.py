"""Log views: what a root or a proof at a past size costs beside the same
call at the current size.

A tree of ``leaves`` leaves at ``arity`` (default 1M, 4) is built once;
every round times, per call through the Python API, on random past sizes n
and random leaves i < n:

- ``LeanIMT.root_at(n)`` (takes a snapshot, recomputes the right edge at n)
  and ``Snapshot.root_at(n)`` (the edge only);
- ``Snapshot.generate_proof(i, size=n)`` beside ``generate_proof(i)`` at
  the current size (the past form builds a view of the tree at n first);
- ``generate_proofs(indices, size=n)`` beside ``generate_proofs(indices)``,
  per proof;
- ``generate_consistency_proof(m, n)`` beside ``(m)`` to the current size.

The rows are interleaved within each round (every other round in reverse
order), so the per-round ratios of past to current compare calls under the
same machine state. The issue asks for no
speed; the targets below are this benchmark's own reading of "only the right
edge is recomputed": a past-size call costs at most twice the current-size
call one by one, and at most 1.2x per proof in a batch, where the view is
shared by the whole batch. Every generated proof is verified against
``root_at(n)``.
"""

from __future__ import annotations

import argparse
import pathlib
import random
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import rotortree

from ._common import Progress, deterministic_leaves, machine, positive_int, write_results_to
from .environment import LoadMeter, fmt_load
from .stats import fmt_interval, fmt_summary, paired_ratios, ratio_summary, summary, target

SINGLE_GOAL = 2.0
BATCH_GOAL = 1.2
# (past row, current row, goal) judged on their paired per-round ratios.
PAIRS = (("generate_proof(i, size=n)", "generate_proof(i)", SINGLE_GOAL),
         ("generate_proofs(size=n), per proof", "generate_proofs(), per proof", BATCH_GOAL),
         ("generate_consistency_proof(m, n)", "generate_consistency_proof(m)", SINGLE_GOAL))


def run(leaves: int = 1_000_000, arity: int = 4, calls: int = 2_000, batch: int = 10_000,
        repeat: int = 9, show_progress: bool = True) -> Tuple[Dict[str, Any], str]:
    meter = LoadMeter()
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(deterministic_leaves(leaves))
    snap = tree.snapshot()
    rng = random.Random(16)
    sizes = [rng.randint(1, leaves) for _ in range(calls)]
    pairs = [(n, rng.randrange(n)) for n in sizes]
    olds = [(rng.randint(1, n), n) for n in sizes[: max(1, calls // 10)]]
    batch_size = rng.randint(leaves // 2, leaves)
    batch_indices = [rng.randrange(batch_size) for _ in range(batch)]
    current = [i for _, i in pairs]

    # (name, call, calls per sample)
    rows: List[Tuple[str, Callable[[], object], int]] = [
        ("LeanIMT.root_at(n)", lambda: [tree.root_at(n) for n in sizes], calls),
        ("Snapshot.root_at(n)", lambda: [snap.root_at(n) for n in sizes], calls),
        ("generate_proof(i, size=n)",
         lambda: [snap.generate_proof(i, size=n) for n, i in pairs], calls),
        ("generate_proof(i)", lambda: [snap.generate_proof(i) for i in current], calls),
        ("generate_proofs(size=n), per proof",
         lambda: snap.generate_proofs(batch_indices, size=batch_size), batch),
        ("generate_proofs(), per proof", lambda: snap.generate_proofs(batch_indices), batch),
        ("generate_consistency_proof(m, n)",
         lambda: [snap.generate_consistency_proof(m, n) for m, n in olds], len(olds)),
        ("generate_consistency_proof(m)",
         lambda: [snap.generate_consistency_proof(m) for m, _ in olds], len(olds)),
    ]
    samples: Dict[str, List[float]] = {name: [] for name, _, _ in rows}
    with Progress(repeat + 1, "logviews", enabled=show_progress, unit="round") as progress:
        for round_ in range(repeat + 1):  # round 0 is the warm-up
            # Every other round backwards, so that neither row of a pair
            # always runs first (pool workers wake, caches warm).
            for name, call, per_sample in rows[::-1] if round_ % 2 else rows:
                start = time.perf_counter()
                call()
                elapsed = time.perf_counter() - start
                if round_:
                    samples[name].append(elapsed / per_sample)
            progress.update()

    problems: List[str] = []
    checked = rng.sample(pairs, min(len(pairs), 200))
    if not all(snap.generate_proof(i, size=n).verify_against(snap.root_at(n), n)
               for n, i in checked):
        problems.append("a proof at a past size did not verify against root_at(n)")
    if not snap.generate_proofs(batch_indices, size=batch_size).verify_against(
            snap.root_at(batch_size), batch_size):
        problems.append("a batch at a past size did not verify against root_at(n)")

    table = [{"operation": name, "per_call_us": summary(samples[name])["median"] * 1e6,
              "stats_s": summary(samples[name]), "samples_s": samples[name],
              "calls_per_sample": per_sample} for name, _, per_sample in rows]
    targets = []
    for past, now, goal in PAIRS:
        ratio = ratio_summary(paired_ratios(samples[past], samples[now]))
        targets.append({**target(f"{past} / {now} <= {goal}x (this benchmark's own bound)",
                                 fmt_interval(ratio),
                                 (ratio["low"], ratio["high"]), goal, at_least=False),
                        "ratio": ratio})
    info = rotortree.pool_info()
    payload = {"benchmark": "logviews", "machine": machine(), "load": meter.report(),
               "leaves": leaves, "arity": arity, "calls": calls, "batch": batch,
               "batch_size": batch_size, "repeat": repeat, "threads": info["num_threads"],
               "simd": info["simd"], "rows": table, "targets": targets,
               "problems": problems}
    return payload, render(payload)


def render(payload: Dict[str, Any]) -> str:
    lines = [
        f"Log views through the Python API: tree of {payload['leaves']:,} leaves, arity "
        f"{payload['arity']}, {payload['threads']} thread(s), kernel {payload['simd']}, "
        f"{payload['machine']['platform']}; {payload['repeat']} rounds after a warm-up, rows "
        f"interleaved in each round; random past sizes n and leaves i < n; the batch is "
        f"{payload['batch']:,} random leaves at size {payload['batch_size']:,}. "
        f"{fmt_load(payload['load'])}. Figures on a shared machine are noisy: compare the "
        "ratios (same round) rather than absolute times.",
        "",
        "| operation | per call: median (min, IQR) |",
        "|---|---:|",
    ]
    for row in payload["rows"]:
        lines.append(f"| {row['operation']} | {fmt_summary(row['stats_s'])} |")
    lines += ["", "| target (past / current, per-round ratio) | median [90%] | status |",
              "|---|---:|---|"]
    for t in payload["targets"]:
        lines.append(f"| {t['target']} | {t['measured']} | {t['status']} |")
    if payload["problems"]:
        lines += ["", "PROBLEMS: " + "; ".join(payload["problems"])]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--leaves", type=positive_int, default=1_000_000)
    parser.add_argument("--arity", type=positive_int, default=4)
    parser.add_argument("--calls", type=positive_int, default=2_000,
                        help="single calls per row per round (default 2,000)")
    parser.add_argument("--batch", type=positive_int, default=10_000,
                        help="proofs per generate_proofs call (default 10,000)")
    parser.add_argument("--repeat", type=positive_int, default=9,
                        help="rounds after the warm-up (default 9)")
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    args = parser.parse_args(argv)
    payload, markdown = run(args.leaves, args.arity, args.calls, args.batch, args.repeat)
    print(markdown)
    path = write_results_to(args.out, "logviews", payload, markdown)
    print(f"wrote {path}", file=sys.stderr)
    if payload["problems"]:
        print("logviews benchmark: FAILED: " + "; ".join(payload["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
