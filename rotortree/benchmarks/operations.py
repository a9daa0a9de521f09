"""Single inserts, snapshots and proofs: the per-call costs a service sees.

Measured through the Python API (each figure includes the Python call), on
a tree of ``leaves`` leaves at ``arity``:

- insert: one leaf per call, appended to a growing tree; microseconds per call.
- snapshot: taking an immutable view of the tree.
- generate_proofs: inclusion proofs of ``proofs`` random leaves in one call
  into C (on the pool); generate_proof: one proof per call.
- ProofBatch.verify: the same proofs checked in C, on the pool.
- InclusionProof.verify: pure Python (the light-client path), per proof.
- consistency proof from half the tree to the whole: generation and pure
  Python verification.
- JSON round trip: to_dict + json.dumps + json.loads + from_dict per proof.

``repeat`` rounds after a warm-up round, each operation once per round; with
the Rust harness, each round also times the crate's single calls (insert,
snapshot, generate_proof, verify; 0.15 and 0.17, sequential build) on a tree
of the same size and leaves, so the ratios are per paired round.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import rotortree
from rotortree.proofs import InclusionProof

from . import harness as rust_harness
from ._common import Progress, deterministic_leaves
from .stats import fmt_interval, fmt_time, paired_ratios, ratio_summary, summary

SINGLE_SEED = b"single inserts"
# This package's single-call operations and the crate's equivalent command:
# (row name, harness command, calls-per-sample key).
CRATE_PEERS = {"insert (one leaf per call)": "insert", "snapshot": "snapshot",
               "generate_proof (one per call)": "generate_proof",
               "InclusionProof.verify_against (pure Python)": "verify"}
CRATE_VERSIONS = (15, 17)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run(leaves: int = 1_000_000, arity: int = 4, proofs: int = 10_000,
        single_inserts: int = 100_000, repeat: int = 5, show_progress: bool = True,
        harness: Optional[rust_harness.Harness] = None) -> Tuple[Dict[str, Any], str]:
    """Every operation once per round, rounds interleaved with the crate's
    (when ``harness`` is given); the first round is an untimed warm-up."""
    data = deterministic_leaves(leaves)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(data)
    rng = random.Random(20240607)
    indices = [rng.randrange(leaves) for _ in range(proofs)]
    python_proofs = max(1, min(proofs, 2_000))
    one_calls = min(proofs, 2_000)
    snapshot_calls = 1_000
    consistency_calls = 200

    single = deterministic_leaves(single_inserts, SINGLE_SEED)
    single_leaves = [single[i:i + 32] for i in range(0, len(single), 32)]
    growing = rotortree.LeanIMT(arity)
    growing.insert_many(data)
    snapshot = tree.snapshot()
    root = snapshot.root
    assert root is not None
    batch = snapshot.generate_proofs(indices)
    objects: List[InclusionProof] = [batch[i] for i in range(python_proofs)]
    old_size = max(1, leaves // 2)
    old_root = rotortree.compute_root(data[: old_size * 32], arity)
    consistency = snapshot.generate_consistency_proof(old_size, old_root)

    def insert_all() -> None:
        insert = growing.insert
        for leaf in single_leaves:
            insert(leaf)

    def snapshots() -> None:
        take = tree.snapshot
        for _ in range(snapshot_calls):
            take()

    def generate() -> None:
        nonlocal batch
        batch = snapshot.generate_proofs(indices)

    # (name, call, calls per sample, note)
    operations: List[Tuple[str, Callable[[], object], int, str]] = [
        ("insert (one leaf per call)", insert_all, single_inserts,
         f"appended to a tree of {leaves:,}+ leaves, which keeps growing"),
        ("snapshot", snapshots, snapshot_calls, "each dropped before the next"),
        (f"generate_proofs ({proofs:,} per call)", generate, proofs,
         "per proof; one call into C, on the pool"),
        ("generate_proof (one per call)",
         lambda: [snapshot.generate_proof(i) for i in indices[:one_calls]], one_calls, ""),
        (f"ProofBatch.verify_against ({proofs:,} per call)",
         lambda: batch.verify_against(root, leaves), proofs, "per proof; C, on the pool"),
        ("InclusionProof.verify_against (pure Python)",
         lambda: [p.verify_against(root, leaves) for p in objects], python_proofs,
         "the light-client path: blake3 package, no C core"),
        ("JSON round trip (to_dict/from_dict)",
         lambda: [InclusionProof.from_dict(json.loads(json.dumps(p.to_dict())))
                  for p in objects], python_proofs, ""),
        ("generate_consistency_proof",
         lambda: [snapshot.generate_consistency_proof(old_size, old_root)
                  for _ in range(consistency_calls)], consistency_calls,
         f"{old_size:,} -> {leaves:,} leaves"),
        ("ConsistencyProof.verify_against (pure Python)",
         lambda: [consistency.verify_against(old_root, old_size, root, leaves)
                  for _ in range(consistency_calls)], consistency_calls, ""),
    ]
    samples: Dict[str, List[float]] = {name: [] for name, _, _, _ in operations}
    crate: Dict[Tuple[int, str], List[float]] = {}
    crate_keys = {"leaves": leaves, "arity": arity, "warmup": 1, "reps": 1}
    crate_counts = {"insert": single_inserts, "snapshot": snapshot_calls,
                    "generate_proof": one_calls, "verify": one_calls}
    problems: List[str] = []
    with Progress(repeat + 1, "operations", enabled=show_progress, unit="round") as progress:
        for round_ in range(repeat + 1):  # round 0 is the warm-up
            for name, call, per_sample, _ in operations:
                elapsed = timed(call)
                if round_:
                    samples[name].append(elapsed / per_sample)
            if harness is not None:
                for version in CRATE_VERSIONS:
                    for command, count in crate_counts.items():
                        reply = harness.call("sequential", command, v=version, count=count,
                                             **crate_keys)
                        if round_:
                            crate.setdefault((version, command), []).append(
                                reply["samples_ns"][0] / 1e9 / count)
                        elif command == "insert" and version == 15:
                            problems += check_single_insert_root(reply, data, single, arity)
            progress.update()

    rows: List[Dict[str, Any]] = []
    for name, _, per_sample, note in operations:
        stats = summary(samples[name])
        row: Dict[str, Any] = {"operation": name, "per_call_us": stats["median"] * 1e6,
                               "calls_per_s": 1 / stats["median"], "stats_s": stats,
                               "calls_per_sample": per_sample, "samples_s": samples[name],
                               "note": note, "crate": {}}
        command = CRATE_PEERS.get(name, "")
        for version in CRATE_VERSIONS:
            theirs = crate.get((version, command))
            if theirs:
                row["crate"][f"0.{version}"] = {
                    "command": command, "stats_s": summary(theirs), "samples_s": theirs,
                    # > 1: this package faster in that round.
                    "crate_over_python": ratio_summary(paired_ratios(theirs, samples[name]))}
        rows.append(row)

    all_valid = (batch.verify_against(root, leaves)
                 and all(p.verify_against(root, leaves) for p in objects)
                 and consistency.verify_against(old_root, old_size, root, leaves))
    if not all_valid:
        problems.append("a generated proof did not verify")
    info = rotortree.pool_info()
    payload = {"benchmark": "operations", "leaves": leaves, "arity": arity,
               "proofs": proofs, "single_inserts": single_inserts, "repeat": repeat,
               "threads": info["num_threads"], "simd": info["simd"],
               "rows": rows, "all_proofs_valid": all_valid, "problems": problems,
               "crates_measured": harness is not None}
    return payload, render(payload)


def check_single_insert_root(reply: Dict[str, Any], data: bytes, single: bytes,
                             arity: int) -> List[str]:
    """The crate 0.15 inserted the single-insert leaves twice (warm-up and
    timed block) after ``data``: its root must be this package's root of
    the same leaves."""
    expected = rotortree.compute_root(data + single + single, arity).hex()
    if reply["root"] != expected or reply["size"] != (len(data) + 2 * len(single)) // 32:
        return [f"single inserts: crate 0.15 root {reply['root']} (size {reply['size']}) != "
                f"compute_root {expected}"]
    return []


def render(payload: Dict[str, Any]) -> str:
    lines = [
        f"Per-call costs through the Python API: tree of {payload['leaves']:,} leaves, arity "
        f"{payload['arity']}, {payload['threads']} thread(s), kernel {payload['simd']}; "
        f"{payload['repeat']} rounds after a warm-up round, each operation once per round"
        + (", interleaved with the Rust crate's rounds (harness, sequential build, the same "
           "tree size and leaves; one Rust call per crate call, no Python)."
           if payload["crates_measured"] else "; the Rust crate was not measured (harness "
                                              "not built)."),
        "",
        "| operation | per call: median (min, IQR) | calls/s | crate 0.15 per call | "
        "crate 0.15 time / ours [90%] | crate 0.17 per call | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in payload["rows"]:
        s = row["stats_s"]
        cells = [f"{fmt_time(s['median'])} ({fmt_time(s['min'])}, {fmt_time(s['iqr'])})",
                 f"{row['calls_per_s']:,.0f}"]
        c15, c17 = row["crate"].get("0.15"), row["crate"].get("0.17")
        cells.append(fmt_time(c15["stats_s"]["median"]) if c15 else "")
        cells.append(fmt_interval(c15["crate_over_python"]) if c15 else "")
        cells.append(fmt_time(c17["stats_s"]["median"]) if c17 else "")
        lines.append(f"| {row['operation']} | " + " | ".join(cells) + f" | {row['note']} |")
    lines += ["", "crate time / ours < 1: the crate is faster (the Python call is part of "
                  "every figure of this package). The crate 0.17 hashes parents with "
                  "another rule; its figures are not like for like."]
    if payload["problems"]:
        lines += ["", "## PROBLEMS", ""] + [f"- {p}" for p in payload["problems"]]
    return "\n".join(lines)
