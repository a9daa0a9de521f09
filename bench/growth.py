"""Batches appended to one growing tree, beside the Rust crate when its
harness is built.

    python bench/growth.py [--quick] [--repeat R] [--out DIR] [--harness DIR | --no-harness]

Writes DIR/growth.{md,json}; DIR defaults to bench/results. The code and the
method are in rotortree/benchmarks/growth.py (``rotortree bench`` runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.growth import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/growth.py"))
