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

Medians of ``repeat`` runs after one warm-up.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Callable, Dict, List, Tuple

import rotortree
from rotortree.proofs import InclusionProof

from ._common import Progress, deterministic_leaves, median

# The Rust crate's single insert, measured earlier on this machine kind
# (a Rust call, no Python in the loop).
RUST_SINGLE_INSERT_US = 1.6


def _timed(call: Callable[[], object], repeat: int) -> List[float]:
    call()  # warm-up
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def run(leaves: int = 1_000_000, arity: int = 4, proofs: int = 10_000,
        single_inserts: int = 100_000, repeat: int = 5,
        show_progress: bool = True) -> Tuple[Dict[str, Any], str]:
    data = deterministic_leaves(leaves)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(data)
    rng = random.Random(20240607)
    indices = [rng.randrange(leaves) for _ in range(proofs)]
    python_proofs = max(1, min(proofs, 2_000))
    rows: List[Dict[str, Any]] = []

    def add(name: str, samples: List[float], per_call: int, unit: str = "us",
            note: str = "") -> None:
        seconds = median(samples) / per_call
        rows.append({"operation": name, "per_call_us": seconds * 1e6,
                     "calls_per_s": 1 / seconds, "calls_per_sample": per_call,
                     "samples_s": samples, "note": note})

    steps = 7
    with Progress(steps, "operations", enabled=show_progress) as progress:
        single = deterministic_leaves(single_inserts, b"single inserts")
        single_leaves = [single[i:i + 32] for i in range(0, len(single), 32)]
        growing = rotortree.LeanIMT(arity)
        growing.insert_many(data)

        def insert_all() -> None:
            insert = growing.insert
            for leaf in single_leaves:
                insert(leaf)

        # Each run appends; the tree keeps growing, as a service's does.
        add("insert (one leaf per call)", _timed(insert_all, repeat), single_inserts,
            note=f"appended to a tree of {leaves:,}+ leaves")
        progress.update()

        snapshot_calls = 1_000
        add("snapshot", _timed(lambda: [tree.snapshot() for _ in range(snapshot_calls)],
                               repeat), snapshot_calls)
        progress.update()

        snapshot = tree.snapshot()
        root = snapshot.root
        assert root is not None
        batch_holder: List[Any] = []

        def generate() -> None:
            batch_holder[:] = [snapshot.generate_proofs(indices)]

        add(f"generate_proofs ({proofs:,} per call)", _timed(generate, repeat), proofs,
            note="per proof; one call into C, on the pool")
        progress.update()
        batch = batch_holder[0]
        one_calls = min(proofs, 2_000)
        add("generate_proof (one per call)",
            _timed(lambda: [snapshot.generate_proof(i) for i in indices[:one_calls]], repeat),
            one_calls)
        progress.update()

        add(f"ProofBatch.verify_against ({proofs:,} per call)",
            _timed(lambda: batch.verify_against(root, leaves), repeat), proofs,
            note="per proof; C, on the pool")
        progress.update()

        objects: List[InclusionProof] = [batch[i] for i in range(python_proofs)]
        add("InclusionProof.verify_against (pure Python)",
            _timed(lambda: [p.verify_against(root, leaves) for p in objects], repeat),
            python_proofs,
            note="the light-client path: blake3 package, no C core")
        add("JSON round trip (to_dict/from_dict)",
            _timed(lambda: [InclusionProof.from_dict(json.loads(json.dumps(p.to_dict())))
                            for p in objects], repeat), python_proofs)
        progress.update()

        old_size = max(1, leaves // 2)
        old_root = rotortree.compute_root(data[: old_size * 32], arity)
        consistency_calls = 200
        add("generate_consistency_proof",
            _timed(lambda: [snapshot.generate_consistency_proof(old_size, old_root)
                            for _ in range(consistency_calls)], repeat), consistency_calls,
            note=f"{old_size:,} -> {leaves:,} leaves")
        consistency = snapshot.generate_consistency_proof(old_size, old_root)
        add("ConsistencyProof.verify_against (pure Python)",
            _timed(lambda: [consistency.verify_against(old_root, old_size, root, leaves)
                            for _ in range(consistency_calls)], repeat),
            consistency_calls)
        progress.update()

    all_valid = (batch.verify_against(root, leaves)
                 and all(p.verify_against(root, leaves) for p in objects)
                 and consistency.verify_against(old_root, old_size, root, leaves))
    problems = [] if all_valid else ["a generated proof did not verify"]
    info = rotortree.pool_info()
    lines = [
        f"Per-call costs through the Python API: tree of {leaves:,} leaves, arity {arity}, "
        f"{info['num_threads']} thread(s), kernel {info['simd']}; median of {repeat} runs "
        "after a warm-up.",
        "",
        "| operation | per call | calls/s | note |",
        "|---|---:|---:|---|",
    ]
    for row in rows:
        per = row["per_call_us"]
        per_text = f"{per:.2f} µs" if per < 1000 else f"{per / 1000:.2f} ms"
        lines.append(f"| {row['operation']} | {per_text} | {row['calls_per_s']:,.0f} | "
                     f"{row['note']} |")
    lines += ["", f"Rust crate, single insert (a Rust call, no Python), measured earlier on "
                  f"this machine kind: {RUST_SINGLE_INSERT_US} µs."]
    if problems:
        lines += ["", "## PROBLEMS", ""] + [f"- {p}" for p in problems]
    payload = {"benchmark": "operations", "leaves": leaves, "arity": arity,
               "proofs": proofs, "single_inserts": single_inserts, "repeat": repeat,
               "rows": rows, "all_proofs_valid": all_valid, "problems": problems,
               "reference_rust_single_insert_us": RUST_SINGLE_INSERT_US}
    return payload, "\n".join(lines)
