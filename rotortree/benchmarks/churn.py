"""Memory under snapshot churn: a writer inserts and, after every insert,
publishes ``tree.snapshot()`` for readers, dropping the previous one.

Two patterns, each in a fresh interpreter so that RSS starts clean: single
inserts into an arity-4 tree, and 16-leaf batches into an arity-2 tree,
both grown from ``base`` leaves by ``ops`` inserts, on one thread.
Reported: RSS growth, growth of the level storage the C core holds
(``rotortree.memory_stats()``, when the build has it), the tree's own
growth (32 * a / (a - 1) bytes per leaf) and the time per insert+snapshot.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from ._common import machine, stderr

PATTERNS = (
    {"name": "arity 4, single inserts", "arity": 4, "batch": 1},
    {"name": "arity 2, 16-leaf batches", "arity": 2, "batch": 16},
)

Payload = Dict[str, Any]


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def held_bytes() -> Optional[int]:
    import rotortree

    stats = getattr(rotortree, "memory_stats", None)
    return stats()["chunk_bytes"] if stats else None


def measure(arity: int, batch: int, base: int, ops: int) -> Payload:
    """Run one pattern in this process."""
    import rotortree

    rotortree.configure(num_threads=1)
    tree = rotortree.LeanIMT(arity)
    tree.insert_many(os.urandom(32 * base))
    snap = tree.snapshot()
    data = os.urandom(32 * batch * ops)
    rss_before, held_before = rss_bytes(), held_bytes()
    start = time.perf_counter()
    for i in range(ops):
        if batch == 1:
            tree.insert(data[32 * i: 32 * i + 32])
        else:
            tree.insert_many(data[32 * batch * i: 32 * batch * (i + 1)])
        snap = tree.snapshot()
    elapsed = time.perf_counter() - start
    rss_after, held_after = rss_bytes(), held_bytes()
    del snap
    leaves = batch * ops
    return {
        "arity": arity, "batch": batch, "base": base, "ops": ops, "leaves": leaves,
        "rss_growth": rss_after - rss_before,
        "held_growth": None if held_before is None or held_after is None
        else held_after - held_before,
        "own_growth": 32 * arity / (arity - 1) * leaves,
        "us_per_op": elapsed / ops * 1e6,
    }


def _mib(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def run(base: int, ops: int, show_progress: bool = True) -> Tuple[Payload, str]:
    """Both patterns, each in a child interpreter; (payload, Markdown)."""
    package_parent = str(pathlib.Path(__file__).resolve().parent.parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    rows: List[Payload] = []
    for pattern in PATTERNS:
        spec = {"arity": pattern["arity"], "batch": pattern["batch"], "base": base, "ops": ops}
        child = subprocess.run([sys.executable, "-m", "rotortree.benchmarks.churn",
                                json.dumps(spec)],
                               capture_output=True, text=True, check=True, env=env)
        row = json.loads(child.stdout)
        row["pattern"] = pattern["name"]
        rows.append(row)
        stderr(f"churn: {pattern['name']}: RSS +{_mib(row['rss_growth'])} MiB", show_progress)

    facts = machine()
    lines = [
        f"Snapshot churn: {ops:,} inserts into a {base:,}-leaf tree, each followed by "
        "`snap = tree.snapshot()` replacing the previous snapshot; 1 thread.",
        f"machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, Python {facts['python']}",
        "",
        "| pattern | leaves added | tree's own growth MiB | level storage growth MiB "
        "| RSS growth MiB | RSS bytes/leaf | µs per insert+snapshot |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['pattern']} | {row['leaves']:,} | {_mib(row['own_growth'])} | "
            f"{_mib(row['held_growth'])} | {_mib(row['rss_growth'])} | "
            f"{row['rss_growth'] / row['leaves']:.0f} | {row['us_per_op']:.2f} |"
        )
    payload = {"benchmark": "churn", "machine": facts, "base": base, "ops": ops, "rows": rows}
    return payload, "\n".join(lines)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure(spec["arity"], spec["batch"], spec["base"], spec["ops"])))
