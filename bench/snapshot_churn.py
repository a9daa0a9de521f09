"""Memory under snapshot churn: a writer inserts and, after every insert,
publishes ``tree.snapshot()`` for readers, dropping the previous one.

    python bench/snapshot_churn.py [--base N] [--ops N] [--quick]

Two patterns, each in a fresh interpreter so that RSS starts clean:
single inserts into an arity-4 tree, and 16-leaf batches into an arity-2
tree, both grown from ``--base`` leaves by ``--ops`` inserts. Reported: RSS
growth, growth of the level storage the C core holds
(``rotortree.memory_stats()``, when the build has it), the tree's own
growth (32 * a / (a - 1) bytes per leaf) and the time per insert+snapshot.
Prints a Markdown table and writes bench/results/snapshot_churn.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Dict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import machine, write_results  # noqa: E402

PATTERNS = (
    {"name": "arity 4, single inserts", "arity": 4, "batch": 1},
    {"name": "arity 2, 16-leaf batches", "arity": 2, "batch": 16},
)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def held_bytes() -> Any:
    import rotortree

    stats = getattr(rotortree, "memory_stats", None)
    return stats()["chunk_bytes"] if stats else None


def measure(arity: int, batch: int, base: int, ops: int) -> Dict[str, Any]:
    """Run one pattern in this process (called in a fresh interpreter)."""
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
        "held_growth": None if held_before is None else held_after - held_before,
        "own_growth": 32 * arity / (arity - 1) * leaves,
        "us_per_op": elapsed / ops * 1e6,
    }


def mib(value: Any) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=100_000, help="leaves before the churn")
    parser.add_argument("--ops", type=int, default=100_000, help="inserts, each + snapshot")
    parser.add_argument("--quick", action="store_true", help="10,000 inserts on 20,000 leaves")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(measure(spec["arity"], spec["batch"], spec["base"], spec["ops"])))
        return
    if args.quick:
        args.base, args.ops = 20_000, 10_000

    rows = []
    for pattern in PATTERNS:
        spec = {"arity": pattern["arity"], "batch": pattern["batch"], "base": args.base,
                "ops": args.ops}
        run = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                             capture_output=True, text=True, check=True)
        row = json.loads(run.stdout)
        row["pattern"] = pattern["name"]
        rows.append(row)
        print(f"{pattern['name']}: RSS +{mib(row['rss_growth'])} MiB", file=sys.stderr)

    facts = machine()
    lines = [
        f"Snapshot churn: {args.ops:,} inserts into a {args.base:,}-leaf tree, each followed "
        "by `snap = tree.snapshot()` replacing the previous snapshot; 1 thread",
        f"machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, Python {facts['python']}",
        "",
        "| pattern | leaves added | tree's own growth MiB | level storage growth MiB "
        "| RSS growth MiB | RSS bytes/leaf | µs per insert+snapshot |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['pattern']} | {row['leaves']:,} | {mib(row['own_growth'])} | "
            f"{mib(row['held_growth'])} | {mib(row['rss_growth'])} | "
            f"{row['rss_growth'] / row['leaves']:.0f} | {row['us_per_op']:.2f} |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    write_results("snapshot_churn", {"machine": facts, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
