"""The benchmark suite behind ``rotortree bench`` (and the scripts in bench/).

Modules: :mod:`.scaling` (thread scaling, parallel threshold; its report and
plots in :mod:`.scaling_report`), :mod:`.kernels` (SIMD kernels against the
BLAKE3 bound), :mod:`.operations` (single inserts, snapshots, proofs),
:mod:`.proofs` (snapshot cost, proof generation and verification),
:mod:`.growth` (batches appended to a growing tree), :mod:`.durability`
(durable trees), :mod:`.churn` (memory under a snapshot per insert), :mod:`.tune` (``rotortree tune``) and :mod:`.suite` (runs
them and writes the report with plots). Shared: :mod:`.stats` (summaries,
paired ratios, verdicts), :mod:`.environment` (load, memory state, CPU
flags, the two-thread ceiling) and :mod:`.harness` (the Rust crate, timed by
tools/rust_harness). They live in the package so that ``rotortree bench``
works after a plain ``pip install``.
"""
