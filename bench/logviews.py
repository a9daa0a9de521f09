"""Roots and proofs at past sizes beside the same calls at the current size.

    python bench/logviews.py [--leaves N] [--arity A] [--calls N] [--batch N]
                             [--repeat R] [--out DIR]

Writes DIR/logviews.{md,json}; DIR defaults to bench/results. The code and
the method are in rotortree/benchmarks/logviews.py (``rotortree bench`` runs
it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.logviews import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/logviews.py"))
