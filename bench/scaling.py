"""Thread scaling and parallel-threshold impact of insert_many, with the Rust
crate measured in the same run when tools/rust_harness is built.

    python bench/scaling.py [--quick] [--repeat N] [--arities 2,4,8,16] [--out DIR]
                            [--harness DIR | --no-harness]

Writes DIR/scaling.{md,json,png}; DIR defaults to bench/results. The code and
the method are in rotortree/benchmarks/scaling.py (``rotortree bench`` runs
the same measurements); ``--help`` lists every option.
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.scaling import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/scaling.py"))
