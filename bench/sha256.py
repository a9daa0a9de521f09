"""SHA-256 throughput against hashlib, RFC 6962 parents per implementation, and
RFC 6962 tree builds against pymerkle and across thread counts, in one run.

    python bench/sha256.py [--buffer-mb N] [--parents N] [--tree-leaves N]
                           [--scaling-leaves N] [--repeat R] [--quick] [--out DIR]

Writes DIR/sha256.{md,json}; DIR defaults to bench/results. The code and the
method are in rotortree/benchmarks/sha256.py (``rotortree bench`` runs it too).
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.sha256 import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/sha256.py"))
