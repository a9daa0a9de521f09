"""Command line: ``rotortree demo`` (also ``python -m rotortree demo``)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import blake3


def deterministic_leaves(count: int, seed: bytes = b"rotortree demo") -> bytes:
    """``count`` pseudo-random 32-byte leaves from BLAKE3's extendable output:
    the same bytes on every machine, generated in one fast call."""
    return blake3.blake3(seed).digest(length=32 * count)


def demo(args: argparse.Namespace) -> int:
    import rotortree

    if args.threads is not None:
        rotortree.configure(num_threads=args.threads)
    leaves = deterministic_leaves(args.leaves)
    info = rotortree.pool_info()
    print(f"rotortree {rotortree.__version__}: {args.leaves:,} leaves, arity {args.arity}, "
          f"{info['num_threads']} thread(s), SIMD kernel {info['simd']}")

    timings = []
    for _ in range(args.repeat):
        tree = rotortree.LeanIMT(arity=args.arity, max_depth=32)
        start = time.perf_counter()
        root = tree.insert_many(leaves)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    print(f"root        {root.hex()}")
    print(f"depth       {tree.depth}")
    print(f"insert_many {best * 1e3:.1f} ms (best of {args.repeat}), "
          f"{args.leaves / best / 1e6:.1f}M leaves/s")

    # An independent recomputation, so the demo also proves itself.
    check = rotortree.compute_root(leaves, args.arity)
    print(f"compute_root agrees: {check == root}")
    return 0 if check == root else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rotortree", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="build a 1M-leaf tree and print its root")
    demo_parser.add_argument("--leaves", type=int, default=1_000_000)
    demo_parser.add_argument("--arity", type=int, default=4)
    demo_parser.add_argument("--threads", type=int, default=None)
    demo_parser.add_argument("--repeat", type=int, default=3)
    demo_parser.set_defaults(run=demo)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:  # one clear line, not a traceback
        from rotortree.errors import RotorTreeError

        if isinstance(error, RotorTreeError):
            print(f"rotortree: error: {error}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
