"""Snapshot cost and proof throughput beside the Rust crate, measured in one run.

    python bench/proofs.py [--max-leaves N] [--proof-leaves N] [--proofs N]
                           [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

Writes DIR/proofs.{md,json}; DIR defaults to bench/results. The code and the
method are in rotortree/benchmarks/proofs.py (``rotortree bench`` runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.proofs import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/proofs.py"))
