"""The leaf index (issue 17): memory per leaf, has() from Python,
contains_many on 2 threads, insert_many(unique=True) against plain
insert_many, and durable recovery with and without the index, at arity 4.

    python bench/leaf_index.py [--sizes 1000000,10000000] [--repeat 7] [--quick]

Also ``rotortree bench --only index``. Prints a Markdown table with every
target judged, and writes bench/results/leaf_index.{md,json}.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from _common import write_results  # noqa: E402
from rotortree.benchmarks import leaf_index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000",
                        help="tree sizes for memory, has and contains_many")
    parser.add_argument("--repeat", type=int, default=7, help="interleaved repetitions")
    parser.add_argument("--unique-leaves", type=int, default=1_000_000)
    parser.add_argument("--recovery-leaves", type=int, default=10_000_000)
    parser.add_argument("--recovery-repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1M leaves only, 3 repetitions")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    if args.quick:
        sizes, args.repeat, args.recovery_leaves, args.recovery_repeat = [1_000_000], 3, \
            1_000_000, 3
    payload, markdown = leaf_index.run(sizes, args.repeat, args.unique_leaves,
                                       args.recovery_leaves, args.recovery_repeat)
    print(markdown)
    write_results("leaf_index", payload, markdown)


if __name__ == "__main__":
    main()
