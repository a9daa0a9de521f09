"""Baseline: insert_many of 1,000,000 leaves, single-threaded, against the
pure-Python reference, measured side by side in one run.

    python bench/insert_many.py [--leaves N] [--repeat R] [--arities 2,4,8,16]

Prints a Markdown table and writes bench/results/insert_many.{md,json}.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

import rotortree  # noqa: E402
from _common import machine, median, time_runs, write_results  # noqa: E402
from reference import root_of  # noqa: E402
from rotortree._util import deterministic_leaves  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reference-repeat", type=int, default=5)
    parser.add_argument("--arities", default="2,4,8,16")
    parser.add_argument("--simd", default=None, help="force a SIMD kernel")
    args = parser.parse_args()

    rotortree.configure(num_threads=1, simd=args.simd)
    data = deterministic_leaves(args.leaves)
    leaves = [data[i: i + 32] for i in range(0, len(data), 32)]
    rows = []
    for arity in (int(a) for a in args.arities.split(",")):
        tree_box = {}

        def fresh():
            tree_box["tree"] = rotortree.LeanIMT(arity)

        c_samples = time_runs(lambda: tree_box["tree"].insert_many(data), args.repeat,
                              setup=fresh)
        py_samples = time_runs(lambda: root_of(leaves, arity), args.reference_repeat)
        assert tree_box["tree"].root == root_of(leaves, arity)
        c_median, py_median = median(c_samples), median(py_samples)
        rows.append({
            "arity": arity,
            "c_ms": c_median * 1e3,
            "c_leaves_per_s": args.leaves / c_median,
            "python_ms": py_median * 1e3,
            "python_leaves_per_s": args.leaves / py_median,
            "speedup": py_median / c_median,
            "c_samples_ms": [s * 1e3 for s in c_samples],
            "python_samples_ms": [s * 1e3 for s in py_samples],
        })
        print(f"arity {arity}: C {c_median * 1e3:.1f} ms, Python {py_median * 1e3:.0f} ms",
              file=sys.stderr)

    facts = machine()
    lines = [
        f"insert_many of {args.leaves:,} leaves, 1 thread, kernel {rotortree.pool_info()['simd']}, "
        f"median of {args.repeat} (reference: {args.reference_repeat}) after a warm-up",
        f"machine: {facts['cpu']}, {facts['logical_cpus']} CPUs, Python {facts['python']}",
        "",
        "| arity | rotortree ms | rotortree leaves/s | pure Python ms | pure Python leaves/s | speedup |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['arity']} | {row['c_ms']:.1f} | {row['c_leaves_per_s'] / 1e6:.1f}M | "
            f"{row['python_ms']:.0f} | {row['python_leaves_per_s'] / 1e6:.2f}M | "
            f"{row['speedup']:.0f}x |"
        )
    markdown = "\n".join(lines)
    print(markdown)
    write_results("insert_many", {"machine": facts, "leaves": args.leaves, "rows": rows}, markdown)


if __name__ == "__main__":
    main()
