"""Durable trees: WAL throughput, fsync latency, checkpoints, recovery,
save/load and the resident memory of memory-mapped levels.

    python bench/durability.py [--leaves N] [--rss-leaves M] [--single-leaves S]
                               [--durable-calls C] [--repeat R] [--arity A]
                               [--scratch DIR] [--out DIR] [--quick]

Writes DIR/durability.{md,json}; DIR defaults to bench/results. The code and
the method are in rotortree/benchmarks/durability.py (``rotortree bench``
runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.durability import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/durability.py"))
