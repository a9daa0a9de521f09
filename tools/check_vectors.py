"""Check an installed rotortree against the Rust crate's vectors.

    python tools/check_vectors.py tests/data/rotortree-0.15.json

Needs only the installed package (no pytest, no source tree), so it runs
where a wheel was just installed, including an aarch64 interpreter under
user-mode emulation (tools/build_wheels.py). For every SIMD kernel the
machine has, at 1 and 2 threads: every vector's root from one batch and
from the vector's own batches; then every inclusion proof in the vectors is
reproduced by the tree and verified in C and in pure Python. Prints one
summary line and exits non-zero on the first mismatch.
"""

from __future__ import annotations

import json
import platform
import sys

import blake3

import rotortree


def leaf(i: int) -> bytes:
    return blake3.blake3(i.to_bytes(8, "little")).digest()


def main(argv: list) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        vectors = json.load(f)["vectors"]
    size_max = max(v["size"] for v in vectors)
    leaves = b"".join(leaf(i) for i in range(size_max))
    kernels = rotortree.pool_info()["available_simd"]
    roots = proofs = 0
    for kernel in kernels:
        for threads in (1, 2):
            # threshold 1: the pool takes even the smallest levels.
            rotortree.configure(simd=kernel, num_threads=threads, parallel_threshold=1)
            for v in vectors:
                expected = bytes.fromhex(v["root"])
                whole = rotortree.LeanIMT(v["n"], max_depth=32)
                batched = rotortree.LeanIMT(v["n"], max_depth=32)
                offset = 0
                for batch in v["batches"]:
                    batched.insert_many(leaves[32 * offset: 32 * (offset + batch)])
                    offset += batch
                got = whole.insert_many(leaves[: 32 * v["size"]])
                if got != expected or batched.root != expected:
                    print(f"MISMATCH kernel {kernel} threads {threads} arity {v['n']} "
                          f"size {v['size']}", file=sys.stderr)
                    return 1
                roots += 1
                if kernel != kernels[0] or threads != 1:
                    continue
                raw_proofs = v.get("inclusion_proofs", [])
                batch_proofs = whole.generate_proofs([p["leaf_index"] for p in raw_proofs])
                if raw_proofs and not batch_proofs.verify_against(expected, v["size"]):
                    print(f"C verification failed: arity {v['n']} size {v['size']}",
                          file=sys.stderr)
                    return 1
                for raw in raw_proofs:
                    mine = whole.generate_proof(raw["leaf_index"])
                    if (mine != rotortree.InclusionProof.from_dict(raw, arity=v["n"])
                            or not mine.verify_against(expected, v["size"])):
                        print(f"proof mismatch: arity {v['n']} size {v['size']} "
                              f"leaf {raw['leaf_index']}", file=sys.stderr)
                        return 1
                    proofs += 1
    print(f"{platform.machine()}: {roots} vector roots ({len(vectors)} vectors x kernels "
          f"{' '.join(kernels)} x 1, 2 threads) and {proofs} inclusion proofs match")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
