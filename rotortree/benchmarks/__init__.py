"""The benchmark suite behind ``rotortree bench`` (and the scripts in bench/).

Modules: :mod:`.scaling` (thread scaling, parallel threshold), :mod:`.kernels`
(SIMD kernels against the BLAKE3 bound), :mod:`.operations` (single inserts,
snapshots, proofs), :mod:`.proofs` (snapshot cost, proof generation and
verification), :mod:`.durability` (durable trees), :mod:`.churn` (memory
under a snapshot per insert), :mod:`.tune`
(``rotortree tune``) and :mod:`.suite`
(runs them and writes the report with plots). They live in the package so
that ``rotortree bench`` works after a plain ``pip install``.
"""
