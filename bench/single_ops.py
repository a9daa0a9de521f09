"""Issue 15's single-operation targets beside the Rust crate when its
harness is built.

    python bench/single_ops.py [--quick] [--repeat R] [--out DIR] [--harness DIR | --no-harness]

Writes DIR/single_ops.{md,json}; DIR defaults to bench/results. The code and
the method are in rotortree/benchmarks/single_ops.py.
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.single_ops import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/single_ops.py"))
