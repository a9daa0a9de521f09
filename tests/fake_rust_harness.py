"""A stand-in for tools/rust_harness's binary: the same line protocol and JSON
answers, with roots computed by this package (the crate 0.15's rule) so the
benchmarks' Python side can be tested without Rust. Environment switches
make it misbehave: FAKE_HARNESS_WRONG_ROOT=1 answers a wrong 0.15 root for
insert_many, FAKE_HARNESS_WRONG_ANCHOR=1 a wrong published-anchor root."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import sys
from typing import Any, Dict

import rotortree
from rotortree.benchmarks._common import deterministic_leaves
from rotortree.benchmarks.harness import ANCHOR_ROOTS

SAMPLE_NS = 1_000_000


def leaves(keys: Dict[str, str]) -> bytes:
    seed = bytes.fromhex(keys["seed"]) if "seed" in keys else b"rotortree demo"
    return deterministic_leaves(int(keys["leaves"]), seed)


def root_of(data: bytes, keys: Dict[str, str]) -> str:
    # 0.17 hashes parents untagged: this package's leanimt rule.
    rule = "leanimt" if keys["v"] == "17" else "rotortree-0.15"
    return rotortree.compute_root(data, int(keys.get("arity", "4")), rule=rule).hex()


def answer(line: str, parallel: bool) -> Dict[str, Any]:
    op, *words = line.split()
    keys = dict(word.split("=", 1) for word in words)
    if op == "info":
        return {"ok": True, "op": op, "parallel": parallel}
    if op == "blake3":
        return {"ok": True, "op": op, "bytes": int(keys["bytes"]),
                "samples_ns": [SAMPLE_NS] * int(keys.get("reps", "5"))}
    reps = int(keys.get("reps", "5"))
    reply: Dict[str, Any] = {"ok": True, "op": op, "v": int(keys["v"])}
    if op == "root":
        if keys.get("leafrule") == "index":
            root = ANCHOR_ROOTS[int(keys["v"])][int(keys["arity"])]
            if os.environ.get("FAKE_HARNESS_WRONG_ANCHOR"):
                root = "00" * 32
            reply["root"] = root
        else:
            reply["root"] = root_of(leaves(keys), keys)
    elif op == "insert_many":
        root = root_of(leaves(keys), keys)
        if os.environ.get("FAKE_HARNESS_WRONG_ROOT") == keys["v"] or (
                os.environ.get("FAKE_HARNESS_WRONG_ROOT") == "1" and keys["v"] == "15"):
            root = "ff" * 32
        reply.update(samples_ns=[SAMPLE_NS] * reps, minor_faults=[0] * reps, root=root)
    elif op == "insert":
        count = int(keys["count"])
        singles = deterministic_leaves(count, b"single inserts")
        blocks = int(keys.get("warmup", "1")) + reps
        data = leaves(keys) + singles * blocks
        reply.update(samples_ns=[SAMPLE_NS] * reps, root=root_of(data, keys),
                     size=len(data) // 32)
    elif op in ("snapshot", "generate_proof", "verify"):
        reply.update(samples_ns=[SAMPLE_NS] * reps)
    elif op == "proofs_batch":
        reply.update(generate_ns=[SAMPLE_NS] * reps, collect_ns=[2 * SAMPLE_NS] * reps,
                     verify_ns=[SAMPLE_NS] * reps)
    elif op == "growth":
        data = leaves(keys)
        batches = -(-len(data) // 32 // int(keys["batch"]))
        reply.update(samples_ns=[SAMPLE_NS] * batches, user_us=[500] * batches,
                     system_us=[100] * batches, minor_faults=[10] * batches,
                     root=root_of(data, keys), size=len(data) // 32)
    else:
        return {"ok": False, "error": f"unknown command {op!r}"}
    return reply


def main() -> None:
    parallel = "parallel" in pathlib.Path(sys.argv[0]).parts
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(line, parallel)), flush=True)


def install(directory: pathlib.Path, avx2: bool = False) -> pathlib.Path:
    """Lay out DIR/{sequential,parallel[,avx2]}/release/rotortree-harness
    running this file with the current interpreter; returns DIR."""
    here = pathlib.Path(__file__).resolve()
    package_root = pathlib.Path(rotortree.__file__).resolve().parent.parent
    for build in ("sequential", "parallel") + (("avx2",) if avx2 else ()):
        path = directory / build / "release" / "rotortree-harness"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!{sys.executable}\n"
                        f"import sys; sys.path.insert(0, {str(package_root)!r}); "
                        f"sys.argv[0] = __file__\n"
                        f"exec(compile(open({str(here)!r}).read(), {str(here)!r}, 'exec'))\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return directory


if __name__ == "__main__":
    main()
