"""The leanimt rule against the Rust crate 0.17, measured in one run.

    python bench/rules.py [--repeat R] [--quick] [--out DIR] [--harness DIR | --no-harness]

Writes DIR/rules.{md,json}; DIR defaults to bench/results. The code and the
method are in rotortree/benchmarks/rules.py (``rotortree bench`` runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.rules import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/rules.py"))
