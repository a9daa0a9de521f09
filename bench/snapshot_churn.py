"""Memory under snapshot churn: a writer inserts and, after every insert,
publishes ``tree.snapshot()`` for readers, dropping the previous one.

    python bench/snapshot_churn.py [--base N] [--ops N] [--quick]

Single inserts at arity 4 and 16-leaf batches at arity 2, each pattern in
a fresh interpreter (see rotortree/benchmarks/churn.py; also
``rotortree bench --only churn``). Prints a Markdown table and writes
bench/results/snapshot_churn.{md,json}.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402
from rotortree.benchmarks import churn  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=100_000, help="leaves before the churn")
    parser.add_argument("--ops", type=int, default=100_000, help="inserts, each + snapshot")
    parser.add_argument("--quick", action="store_true", help="10,000 inserts on 20,000 leaves")
    args = parser.parse_args()
    if args.quick:
        args.base, args.ops = 20_000, 10_000
    payload, markdown = churn.run(args.base, args.ops)
    print(markdown)
    write_results("snapshot_churn", payload, markdown)


if __name__ == "__main__":
    main()
