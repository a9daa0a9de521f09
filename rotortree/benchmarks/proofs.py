"""Snapshot cost and proof throughput beside the Rust crate, measured in one run.

    python bench/proofs.py [--max-leaves N] [--proof-leaves N] [--proofs N]
                           [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

Snapshot cost vs tree size (arity 4, 1k to 10M leaves, capped by
``--max-leaves``): ``tree.snapshot()`` timed call by call, each snapshot
dropped before the next; then the service pattern, a snapshot right after a
write (one ``insert`` or an ``insert_many`` of 1,000 leaves, untimed), since
the first snapshot after a write is the one a service pays for. Each round
starts from a freshly built tree of the row's size.

Proofs on a tree of ``--proof-leaves`` leaves, arity 4, at 1 and 2 threads:
``generate_proofs`` of ``--proofs`` random leaves in one call, one
``generate_proof`` per call, ``ProofBatch.verify`` (C, on the pool) and
``InclusionProof.verify`` (pure Python, the light-client path); the batch
also with its indices in a Python list. With the Rust harness built, each
round also runs the crate's batches (``generate_proof`` and ``verify`` over
``par_iter`` in a rayon pool; see tools/rust_harness). Every generated proof
is checked; the exit status is 1 if one does not verify.

``--repeat`` rounds after a warm-up round; configurations are interleaved
within a round so machine drift hits all alike; figures are given as median
(min, IQR) and ratios per paired round. Writes DIR/proofs.{md,json}.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import random
import sys
import time
import timeit
from array import array
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import rotortree
from rotortree.proofs import InclusionProof

from . import harness as rust_harness
from ._common import (Progress, deterministic_leaves, fmt_rate, machine, median, positive_int,
                      write_results_to)
from .stats import fmt_interval, paired_ratios, quantile, ratio_summary, summary, target

ARITY = 4
SNAPSHOT_SIZES = (1_000, 10_000, 100_000, 1_000_000, 10_000_000)
WRITE_BATCH = 1_000
THREADS = (1, 2)

# The crate's batch proofs measured beside ours: (version, rayon threads).
CRATE_BATCHES = ((15, 1), (15, 2), (17, 2))
LIST_THREADS = 2                    # the thread count of the list-of-indices variant
TARGET_SNAPSHOT_US = 10.0
TARGET_GENERATE_PER_S = 2e6
TARGET_VERIFY_PER_S = 1e6
TARGET_LEAVES = 1_000_000

Row = Dict[str, Any]


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: an observed value, never an interpolation."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def loop_ns() -> float:
    """Nanoseconds per iteration of an empty Python loop. Shared VMs run
    at visibly different speeds from one period to the next (this one by up
    to ~2x), which moves every figure here; this number, taken before and
    after, tells a slow period from a regression."""
    number = 200_000
    return min(timeit.repeat("pass", number=number, repeat=5)) / number * 1e9


def snapshot_samples(tree: rotortree.LeanIMT, calls: int,
                     write: Optional[Callable[[], object]] = None) -> List[float]:
    """Seconds per ``tree.snapshot()``; ``write`` runs untimed before each."""
    samples = []
    take = tree.snapshot
    clock = time.perf_counter
    for _ in range(calls):
        if write is not None:
            write()
        start = clock()
        snap = take()
        samples.append(clock() - start)
        # Freeing happens here, outside the timed region, and the next call
        # must not find this snapshot still holding the tail chunks.
        del snap
    return samples


def build(leaves: memoryview, size: int) -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(ARITY)
    tree.insert_many(leaves[: 32 * size])
    return tree


def snapshot_sizes(max_leaves: int) -> List[int]:
    sizes = [s for s in SNAPSHOT_SIZES if s <= max_leaves]
    return sizes or [max_leaves]


def batch_write_calls(size: int, snapshot_calls: int) -> int:
    # Enough calls for a median, few enough that a small tree does not end a
    # round many times larger than the size its row is labelled with.
    return max(1, min(max(1, snapshot_calls // 20), max(10, size // WRITE_BATCH)))


def measure_snapshots(leaves: memoryview, sizes: List[int], repeat: int, snapshot_calls: int,
                      show_progress: bool) -> List[Row]:
    single_leaf = deterministic_leaves(1, b"proofs bench single write")
    write_batch = deterministic_leaves(WRITE_BATCH, b"proofs bench batch write")
    patterns = ("none", "insert", "insert_many")
    samples: Dict[Tuple[int, str], List[List[float]]] = {
        (size, p): [] for size in sizes for p in patterns}
    depths: Dict[int, int] = {}
    with Progress(repeat + 1, "proofs: snapshots", enabled=show_progress,
                  unit="round") as progress:
        for _ in range(repeat + 1):  # the first round is the warm-up
            for size in sizes:
                tree = build(leaves, size)
                depths[size] = tree.depth
                samples[size, "none"].append(snapshot_samples(tree, snapshot_calls))
                insert = tree.insert
                samples[size, "insert"].append(
                    snapshot_samples(tree, snapshot_calls, lambda: insert(single_leaf)))
                del tree  # free it before building the next: 10M leaves is ~0.5 GB
                tree = build(leaves, size)
                insert_many = tree.insert_many
                samples[size, "insert_many"].append(snapshot_samples(
                    tree, batch_write_calls(size, snapshot_calls),
                    lambda: insert_many(write_batch)))
                del tree
            progress.update()

    rows: List[Row] = []
    for size in sizes:
        row: Row = {"leaves": size, "depth": depths[size]}
        for pattern in patterns:
            rounds = samples[size, pattern][1:]
            pooled = [s for r in rounds for s in r]
            calls = len(rounds[0])
            added = calls * {"none": 0, "insert": 1, "insert_many": WRITE_BATCH}[pattern]
            row[pattern] = {
                "calls_per_round": calls,
                "leaves_at_end_of_round": size + added,
                # The median of the rounds' medians is the headline; p99 is
                # pooled over every timed call since one round may hold
                # too few calls for a p99 of its own.
                "median_us": median([median(r) for r in rounds]) * 1e6,
                "p99_us": percentile(pooled, 0.99) * 1e6,
                "min_us": min(pooled) * 1e6,
                "iqr_us": summary(pooled)["iqr"] * 1e6,
                "round_medians_us": [median(r) * 1e6 for r in rounds],
            }
        rows.append(row)
    return rows


def random_indices(count: int, size: int) -> "array[int]":
    # array('Q') rather than numpy: C reads either without a copy, and this
    # gives the same indices on every machine whether numpy is there or not.
    rng = random.Random(20240607)
    return array("Q", (rng.randrange(size) for _ in range(count)))


def crate_batches(harness: Optional[rust_harness.Harness], proof_leaves: int, proofs: int,
                  samples: Dict[Tuple[int, int], Dict[str, List[float]]], keep: bool) -> None:
    """One round of the crate's batch proofs: par_iter in a rayon pool of 1
    and 2 threads, in the harness's parallel build (it builds its tree
    untimed per call)."""
    if harness is None:
        return
    for version, threads in CRATE_BATCHES:
        reply = harness.call("parallel", "proofs_batch", v=version, threads=threads,
                             leaves=proof_leaves, count=proofs, warmup=0, reps=1)
        if keep:
            into = samples.setdefault((version, threads), {})
            for key in ("generate", "collect", "verify"):
                into.setdefault(key, []).append(reply[f"{key}_ns"][0] / 1e9)


def measure_proofs(leaves: memoryview, proof_leaves: int, proofs: int, repeat: int,
                   single_calls: int, python_proofs: int, show_progress: bool,
                   harness: Optional[rust_harness.Harness] = None,
                   ) -> Tuple[Dict[str, Any], List[str]]:
    tree = build(leaves, proof_leaves)
    snap = tree.snapshot()
    root = snap.root
    assert root is not None
    indices = random_indices(proofs, proof_leaves)
    singles = [int(i) for i in indices[:single_calls]]
    python_count = min(python_proofs, proofs)
    invalid: List[str] = []

    generate: Dict[int, List[float]] = {t: [] for t in THREADS}
    generate_list: List[float] = []
    index_list = [int(i) for i in indices]
    crate: Dict[Tuple[int, int], Dict[str, List[float]]] = {}
    verify_c: Dict[int, List[float]] = {t: [] for t in THREADS}
    single_totals: Dict[int, List[float]] = {t: [] for t in THREADS}
    single_medians: Dict[int, List[float]] = {t: [] for t in THREADS}
    verify_py: List[float] = []
    decode_verify_py: List[float] = []
    proof_bytes = 0
    clock = time.perf_counter
    before = rotortree.pool_info()
    try:
        with Progress(repeat + 1, "proofs: proofs", enabled=show_progress,
                      unit="round") as progress:
            for round_ in range(repeat + 1):  # the first round is the warm-up
                batch: Any = None
                crate_batches(harness, proof_leaves, proofs, crate, round_ > 0)
                for threads in THREADS:
                    rotortree.configure(num_threads=threads)
                    # Drop the previous batch first so each call allocates
                    # its output afresh, as a service's calls do.
                    batch = None
                    if threads == LIST_THREADS:
                        # The same indices as a Python list, as most callers have them.
                        start = clock()
                        batch = snap.generate_proofs(index_list)
                        generate_list.append(clock() - start)
                        batch = None
                    start = clock()
                    batch = snap.generate_proofs(indices)
                    generate[threads].append(clock() - start)
                    proof_bytes = batch.nbytes

                    start = clock()
                    valid = batch.verify_against(root, proof_leaves)
                    verify_c[threads].append(clock() - start)
                    if not valid:
                        invalid.append(f"ProofBatch.verify_against failed at {threads} thread(s): "
                                       f"first invalid proof "
                                       f"{batch.first_invalid_against(root, proof_leaves)}")

                    made: List[InclusionProof] = []
                    times: List[float] = []
                    one = snap.generate_proof
                    total_start = clock()
                    for index in singles:
                        start = clock()
                        made.append(one(index))
                        times.append(clock() - start)
                    single_totals[threads].append(clock() - total_start)
                    single_medians[threads].append(median(times))
                    bad = [p.leaf_index for p in made if not p.verify_against(root, proof_leaves)]
                    if bad:
                        invalid.append(f"generate_proof at {threads} thread(s): proofs of "
                                       f"leaves {bad[:5]} do not verify")

                raw = [batch.proof_bytes(i) for i in range(python_count)]
                objects = [InclusionProof.from_bytes(r) for r in raw]
                start = clock()
                results = [p.verify_against(root, proof_leaves) for p in objects]
                verify_py.append(clock() - start)
                decode = InclusionProof.from_bytes
                start = clock()
                decoded = [decode(r).verify_against(root, proof_leaves) for r in raw]
                decode_verify_py.append(clock() - start)
                # verify_against fixes root and size; these check that each
                # proof is for the leaf asked for.
                wrong = [i for i, p in enumerate(objects)
                         if p.root != root or p.leaf_index != indices[i]
                         or p.leaf != bytes(leaves[32 * indices[i]: 32 * indices[i] + 32])]
                if not all(results) or not all(decoded) or wrong:
                    invalid.append("pure-Python verification failed or a proof is for the "
                                   f"wrong root or leaf (positions {wrong[:5]})")
                batch = None
                progress.update()
    finally:
        rotortree.configure(num_threads=before["num_threads"])

    rows: List[Row] = []

    def add(operation: str, threads: Optional[int], samples: List[float], per_sample: int,
            note: str, per_call_us: Optional[float] = None, key: str = "",
            peer: Optional[List[float]] = None) -> None:
        per_proof = [s / per_sample for s in samples]
        stats = summary(per_proof)
        rates = [1 / s for s in per_proof]
        row: Row = {"operation": operation, "threads": threads, "key": key,
                    "per_proof_us": stats["median"] * 1e6, "proofs_per_s": 1 / stats["median"],
                    "per_proof_s": stats,
                    "proofs_per_s_interval": [quantile(rates, 0.05), quantile(rates, 0.95)],
                    "per_call_median_us": per_call_us, "proofs_per_sample": per_sample,
                    "samples_s": samples, "note": note}
        if peer is not None:
            # This package's matching row / the crate's time, per paired round
            # (> 1: this package slower).
            row["ours_over_crate"] = ratio_summary(paired_ratios(peer, samples))
        rows.append(row)

    size = (f"{proof_bytes / 2**20:.0f} MiB" if proof_bytes >= 2**20
            else f"{proof_bytes / 2**10:.0f} KiB")
    for threads in THREADS:
        add(f"generate_proofs ({proofs:,} per call)", threads, generate[threads][1:], proofs,
            f"one call into C, on the pool; {size} of proofs per call; indices in an "
            "array('Q')", key="generate")
    add(f"generate_proofs ({proofs:,} per call, indices in a list)", LIST_THREADS,
        generate_list[1:], proofs, "the same call given a Python list of ints",
        key="generate_list")
    for threads in THREADS:
        add("generate_proof (one per call)", threads, single_totals[threads][1:],
            len(singles), f"{len(singles):,} calls per round; builds an InclusionProof",
            per_call_us=median(single_medians[threads][1:]) * 1e6)
    for threads in THREADS:
        add(f"ProofBatch.verify ({proofs:,} per call)", threads, verify_c[threads][1:],
            proofs, "C batch verifier, on the pool", key="verify")
    for (version, threads), parts in sorted(crate.items()):
        rule = "" if version == 15 else "; another hash rule"
        ours_generate = generate.get(threads, [])[1:] if version == 15 else None
        ours_verify = verify_c.get(threads, [])[1:] if version == 15 else None
        add(f"crate 0.{version}: generate_proof over par_iter, each proof dropped", threads,
            parts["generate"], proofs, f"rayon pool of {threads}{rule}",
            key=f"crate{version}_generate", peer=ours_generate)
        add(f"crate 0.{version}: generate_proof over par_iter, collected into a Vec", threads,
            parts["collect"], proofs, f"proofs of MAX_DEPTH=32 levels{rule}",
            key=f"crate{version}_collect", peer=ours_generate)
        add(f"crate 0.{version}: NaryProof::verify over par_iter", threads, parts["verify"],
            proofs, f"rayon pool of {threads}{rule}", key=f"crate{version}_verify",
            peer=ours_verify)
    add("InclusionProof.verify (pure Python)", None, verify_py[1:], python_count,
        f"{python_count:,} materialized proofs; blake3 package, no C core")
    add("InclusionProof.from_bytes + verify (pure Python)", None, decode_verify_py[1:],
        python_count, "what a light client receiving bytes pays")
    result = {"leaves": proof_leaves, "arity": ARITY, "depth": snap.depth, "proofs": proofs,
              "single_calls": len(singles), "python_proofs": python_count,
              "bytes_per_proof": proof_bytes / max(1, proofs), "rows": rows}
    return result, invalid


def find(rows: List[Row], key: str, threads: Optional[int]) -> Optional[Row]:
    return next((r for r in rows if r.get("key") == key and r["threads"] == threads), None)


def fmt_us(us: float) -> str:
    return f"{us:.2f} µs" if us < 10 else f"{us:.1f} µs" if us < 1000 else f"{us / 1e3:.2f} ms"


def targets(snapshots: List[Row], proofs: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Each target judged on the 90% interval over rounds; "not measured"
    when the run did not use the size the target speaks of."""
    out = []
    name = f"snapshot of a 1M-leaf tree under {TARGET_SNAPSHOT_US:g} µs from Python"
    at = next((r for r in snapshots if r["leaves"] == TARGET_LEAVES), None)
    if at is None:
        out.append(target(name, "", reason="no 1M-leaf tree in this run"))
    else:
        rounds = at["none"]["round_medians_us"]
        low, high = quantile(rounds, 0.05), quantile(rounds, 0.95)
        out.append(target(name, f"median {at['none']['median_us']:.2f} µs, round medians "
                                f"[{low:.2f}-{high:.2f}] µs (p99 {at['none']['p99_us']:.1f} µs); "
                                f"after a 1-leaf insert {at['insert']['median_us']:.2f} µs, after "
                                f"a {WRITE_BATCH:,}-leaf insert_many "
                                f"{at['insert_many']['median_us']:.2f} µs",
                          (low, high), TARGET_SNAPSHOT_US, at_least=False))
    same_size = proofs["leaves"] == TARGET_LEAVES
    for name, key, goal in (
            (f"batch proof generation >= {TARGET_GENERATE_PER_S / 1e6:g}M proofs/s on "
             "2 threads (1M leaves)", "generate", TARGET_GENERATE_PER_S),
            (f"C batch verification >= {TARGET_VERIFY_PER_S / 1e6:g}M proofs/s on "
             "2 threads (1M leaves)", "verify", TARGET_VERIFY_PER_S)):
        row = find(proofs["rows"], key, 2)
        if row is None:
            out.append(target(name, "", reason="not measured on 2 threads"))
            continue
        low, high = row["proofs_per_s_interval"]
        measured = (f"{fmt_rate(row['proofs_per_s'])} proofs/s [{fmt_rate(low)}-"
                    f"{fmt_rate(high)}] at {proofs['leaves']:,} leaves")
        if same_size:
            out.append(target(name, measured, (low, high), goal))
        else:
            out.append(target(name, measured + " (another size: not judged)"))
    return out


def render(payload: Dict[str, Any]) -> str:
    facts, snapshots, proofs = payload["machine"], payload["snapshots"], payload["proofs"]
    repeat, speed = payload["repeat"], payload["speed_check_loop_ns"]
    lines = [
        "# Snapshots and proofs",
        "",
        f"Arity {ARITY}; {repeat} rounds after a warm-up round. Machine: "
        f"{facts['cpu']}, {facts['logical_cpus']} CPUs, kernel {facts['simd']}. "
        f"Speed check: an empty Python loop took {speed['before']:.1f} ns per iteration "
        f"before the run and {speed['after']:.1f} ns after (compare between runs: a "
        "shared machine's speed drifts).",
        "",
        "## Snapshot cost vs tree size",
        "",
        "`tree.snapshot()` timed call by call; each snapshot is dropped before the next. "
        "Median of the rounds' medians, µs per call [5th-95th percentile of the round "
        "medians] (minimum, IQR and p99 over every timed call). The write before each snapshot is untimed.",
        "",
        f"| leaves | depth | snapshot | after insert (1 leaf) | after insert_many "
        f"({WRITE_BATCH:,} leaves) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in snapshots:
        cells = []
        for p in ("none", "insert", "insert_many"):
            rounds = row[p]["round_medians_us"]
            cells.append(f"{row[p]['median_us']:.2f} µs [{quantile(rounds, 0.05):.2f}-"
                         f"{quantile(rounds, 0.95):.2f}] (min {row[p]['min_us']:.2f}, IQR "
                         f"{row[p]['iqr_us']:.2f}, p99 {row[p]['p99_us']:.1f})")
        lines.append(f"| {row['leaves']:,} | {row['depth']} | " + " | ".join(cells) + " |")
    growth = ", ".join(
        f"{r['leaves']:,} -> {r['insert']['leaves_at_end_of_round']:,} / "
        f"{r['insert_many']['leaves_at_end_of_round']:,} "
        f"({r['insert_many']['calls_per_round']} batches)" for r in snapshots)
    lines += [
        "",
        f"Per round: {snapshots[0]['none']['calls_per_round']:,} snapshots per column; each "
        "write column starts from a freshly built tree and grows it (1-leaf / batch "
        f"columns): {growth}.",
        "",
        f"## Proofs at {proofs['leaves']:,} leaves",
        "",
        f"Depth {proofs['depth']}; {proofs['proofs']:,} random leaves; "
        f"{proofs['bytes_per_proof']:,.0f} bytes per serialized proof. Per proof: median "
        "(min, IQR) over rounds."
        + (" The crate's batches (tools/rust_harness, rayon build, the same tree and number "
           "of random leaves) run in the same rounds; \"ours / crate\" is this package's "
           "matching batch (generate_proofs or ProofBatch.verify_against, array of indices, "
           "same thread count) over the crate's time, per paired round: > 1 = this package "
           "slower." if payload.get("crates_measured") else ""),
        "",
        "| operation | threads | per proof | proofs/s [90%] | ours / crate [90%] | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in proofs["rows"]:
        threads = "-" if row["threads"] is None else str(row["threads"])
        st = row["per_proof_s"]
        per = (f"{fmt_us(st['median'] * 1e6)} ({fmt_us(st['min'] * 1e6)}, "
               f"{fmt_us(st['iqr'] * 1e6)})")
        if row["per_call_median_us"] is not None:
            per += f"; median call {fmt_us(row['per_call_median_us'])}"
        low, high = row["proofs_per_s_interval"]
        ratio = fmt_interval(row["ours_over_crate"]) if "ours_over_crate" in row else ""
        lines.append(f"| {row['operation']} | {threads} | {per} | "
                     f"{fmt_rate(row['proofs_per_s'])} [{fmt_rate(low)}-{fmt_rate(high)}] | "
                     f"{ratio} | {row['note']} |")
    lines += [
        "",
        "## Targets (judged by code)",
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['measured']} | **{t['status']}** |"
              for t in payload["targets"]]
    lines.append("")
    if payload["all_proofs_valid"]:
        lines.append("Validity: every generated proof verified (each batch in C, every "
                     "single proof and the pure-Python sample in Python, against this "
                     "tree's root; the crate's batches in the harness).")
    else:
        lines += ["## INVALID PROOFS", ""] + [f"- {p}" for p in payload["problems"]]
    return "\n".join(lines)


def run(max_leaves: int = SNAPSHOT_SIZES[-1], proof_leaves: int = TARGET_LEAVES,
        proofs: int = 100_000, repeat: int = 7, snapshot_calls: int = 2_000,
        single_calls: int = 2_000, python_proofs: int = 2_000,
        show_progress: bool = True,
        harness: Optional[rust_harness.Harness] = None) -> Tuple[Dict[str, Any], str]:
    """Measure everything; returns (payload, markdown)."""
    sizes = snapshot_sizes(max_leaves)
    # One leaf stream for every tree: a prefix of the XOF output is the
    # output for fewer leaves, so every size holds the same first leaves.
    data = deterministic_leaves(max(max(sizes), proof_leaves))
    leaves = memoryview(data)
    speed_before = loop_ns()
    snapshots = measure_snapshots(leaves, sizes, repeat, snapshot_calls, show_progress)
    proof_result, invalid = measure_proofs(leaves, proof_leaves, proofs, repeat,
                                           min(single_calls, proofs), python_proofs,
                                           show_progress, harness)
    speed_after = loop_ns()
    payload: Dict[str, Any] = {
        "benchmark": "proofs", "machine": machine(), "arity": ARITY, "repeat": repeat,
        "settings": {"max_leaves": max_leaves, "snapshot_sizes": sizes,
                     "snapshot_calls": snapshot_calls, "write_batch": WRITE_BATCH,
                     "proof_leaves": proof_leaves, "proofs": proofs,
                     "single_calls": min(single_calls, proofs),
                     "python_proofs": python_proofs},
        "snapshots": snapshots, "proofs": proof_result,
        "crates_measured": harness is not None,
        "all_proofs_valid": not invalid, "problems": invalid,
        "speed_check_loop_ns": {"before": speed_before, "after": speed_after},
    }
    payload["targets"] = targets(snapshots, proof_result)
    return payload, render(payload)


def main(argv: Optional[List[str]] = None, default_out: pathlib.Path = pathlib.Path("."),
         prog: Optional[str] = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--max-leaves", type=positive_int, default=SNAPSHOT_SIZES[-1],
                        help="largest snapshot tree (default 10,000,000)")
    parser.add_argument("--proof-leaves", type=positive_int, default=TARGET_LEAVES,
                        help="tree size for the proof figures (default 1,000,000)")
    parser.add_argument("--proofs", type=positive_int, default=100_000,
                        help="random leaves per generate_proofs batch (default 100,000)")
    parser.add_argument("--snapshot-calls", type=positive_int, default=2_000,
                        help="snapshots timed per column per round (default 2,000)")
    parser.add_argument("--repeat", type=positive_int, default=7,
                        help="rounds after the warm-up (default 7)")
    parser.add_argument("--quick", action="store_true",
                        help="5 rounds, snapshot trees up to 1,000,000 leaves")
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    rust_harness.add_options(parser)
    args = parser.parse_args(argv)
    max_leaves, repeat = args.max_leaves, args.repeat
    if args.quick:
        max_leaves, repeat = min(max_leaves, TARGET_LEAVES), min(repeat, 5)
    with rust_harness.from_options(args) as harness:
        payload, markdown = run(max_leaves, args.proof_leaves, args.proofs, repeat,
                                args.snapshot_calls, harness=harness)
    print(markdown)
    path = write_results_to(args.out, "proofs", payload, markdown)
    print(f"wrote {path}", file=sys.stderr)
    if not payload["all_proofs_valid"]:
        print("proofs benchmark: FAILED, a generated proof did not verify: "
              + "; ".join(payload["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
