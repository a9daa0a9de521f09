"""Distributed builds on a Dask LocalCluster against the local pool, and
proofs served from a ShardedTree, measured in one run.
(Not named distributed.py: a script's directory comes first on sys.path, and
the file would shadow the dask.distributed package it measures.)

    python bench/dask_cluster.py [--leaves N] [--arity A] [--repeat R] [--workers W]
                                [--proofs N] [--proof-leaves N] [--simulate N [--simulate-only]]

Writes DIR/distributed.{md,json}; DIR (--out) defaults to bench/results. The
code and the method are in rotortree/benchmarks/distributed.py.
"""

from __future__ import annotations

import sys

from _common import RESULTS

from rotortree.benchmarks.distributed import main

if __name__ == "__main__":
    sys.exit(main(default_out=RESULTS, prog="python bench/dask_cluster.py"))
