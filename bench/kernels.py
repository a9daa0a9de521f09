"""SIMD kernels side by side with the physical bound, measured in one run.

    python bench/kernels.py [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

Writes DIR/kernels.{md,json}; DIR defaults to bench/results. The code and the
method are in rotortree/benchmarks/kernels.py (``rotortree bench`` runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.kernels import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/kernels.py"))
