"""The ``rotortree`` command (also ``python -m rotortree``).

Subcommands: demo, bench, tune, config, root, prove, verify; ``--help`` on
each. Exit status: 0 success, 1 a check failed (a proof does not verify,
roots disagree), 2 an error (bad arguments, unreadable input, a
``ROTORTREE_*`` variable or config file that import had to ignore), which is
reported as one line on stderr, 130 interrupted. ``rotortree config --reset``
and ``--path`` run even with an invalid config file.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import sys
import time
from typing import Any, Callable, Dict, List, NoReturn, Optional, Sequence

from ._util import BENCH_SECTIONS, deterministic_leaves
from ._util import non_negative_int as _non_negative
from ._util import positive_int as _positive

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

PROG = "rotortree"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2. ``prog`` is
    the command it came from ("rotortree prove"), set for usage errors."""

    prog: Optional[str] = None


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and an exception, so that
    main() stays in control instead of argparse calling sys.exit)."""

    def error(self, message: str) -> NoReturn:
        error = CliError(f"{message} (see '{self.prog} --help')")
        error.prog = self.prog
        raise error


# -- shared helpers ------------------------------------------------------------


def _say(message: str, quiet: bool = False) -> None:
    """Diagnostics go to stderr so that stdout carries only results."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)


def _arity(text: str) -> int:
    value = _positive(text)
    if not 2 <= value <= 255:
        raise argparse.ArgumentTypeError(f"arity must be 2..255, got {value}")
    return value


def _hash_hex(text: str) -> bytes:
    text = text.strip()
    if text[:2] in ("0x", "0X"):  # as Ethereum and zk-kit tooling print hashes
        text = text[2:]
    try:
        value = bytes.fromhex(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 64 hex digits, got {text!r}") from None
    if len(value) != 32:
        raise argparse.ArgumentTypeError(f"expected 64 hex digits (32 bytes), got {len(value)} "
                                         "bytes")
    return value


def _rule(text: str) -> str:
    from .rules import RULES

    if text not in RULES:
        raise argparse.ArgumentTypeError(
            f"unknown rule {text!r}; choose from {', '.join(RULES)}")
    return text


def _check_rule_arity(args: argparse.Namespace) -> None:
    if args.rule == "rfc6962" and args.arity != 2:
        raise CliError(f"--rule rfc6962 needs --arity 2 (got --arity {args.arity})")


def _rate(count: float, seconds: float) -> str:
    per_s = count / seconds if seconds > 0 else float("inf")
    return f"{per_s / 1e6:.1f}M" if per_s >= 1e6 else f"{per_s / 1e3:.1f}k"


# -- demo ------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    import rotortree

    _check_rule_arity(args)
    if args.threads is not None:
        rotortree.configure(num_threads=args.threads)
    started = time.perf_counter()
    leaves = deterministic_leaves(args.leaves)
    info = rotortree.pool_info()
    print(f"rotortree {rotortree.__version__}: {args.leaves:,} deterministic leaves, arity "
          f"{args.arity}, rule {args.rule}, {info['num_threads']} thread(s), SIMD kernel "
          f"{info['simd']}")

    timings = []
    tree, root = rotortree.LeanIMT(arity=args.arity, max_depth=32, rule=args.rule), b""
    for _ in range(args.repeat):
        tree = rotortree.LeanIMT(arity=args.arity, max_depth=32, rule=args.rule)
        start = time.perf_counter()
        root = tree.insert_many(leaves)
        timings.append(time.perf_counter() - start)
    best = min(timings)
    print(f"root          {root.hex()}")
    print(f"depth         {tree.depth}")
    print(f"insert_many   {best * 1e3:.1f} ms (best of {args.repeat}), "
          f"{_rate(args.leaves, best)} leaves/s")

    # An independent recomputation (the stateless path), so the demo checks itself.
    agrees = rotortree.compute_root(leaves, args.arity, rule=args.rule) == root
    print(f"compute_root  {'agrees' if agrees else 'DISAGREES'}")

    ok = agrees
    count = min(args.proofs, args.leaves)
    if count:
        rng = random.Random(7)
        # The first and last leaf are the edge cases of every proof path.
        ends = sorted({0, args.leaves - 1})
        indices = ends[:count] if count <= len(ends) else sorted(
            ends + rng.sample(range(1, args.leaves - 1), count - len(ends)))
        snapshot = tree.snapshot()
        start = time.perf_counter()
        batch = snapshot.generate_proofs(indices)
        generated = time.perf_counter() - start
        start = time.perf_counter()
        batch_ok = batch.verify_against(root, args.leaves)
        verified = time.perf_counter() - start
        # The light-client path: pure Python, no C core involved.
        sample = [batch[i] for i in range(min(len(batch), 20))]
        python_ok = all(p.verify_against(root, args.leaves) and p.leaf == leaves[32 * p.leaf_index:
                                                                    32 * p.leaf_index + 32]
                        for p in sample)
        print(f"proofs        {len(batch):,} generated in {generated * 1e3:.1f} ms, verified in "
              f"C in {verified * 1e3:.1f} ms: {'all valid' if batch_ok else 'INVALID'}; "
              f"{len(sample)} re-verified in pure Python: "
              f"{'all valid' if python_ok else 'INVALID'}")
        ok = ok and batch_ok and python_ok
        if args.leaves > 1:
            old_size = args.leaves // 2
            old_root = rotortree.compute_root(leaves[: 32 * old_size], args.arity,
                                              rule=args.rule)
            consistency = snapshot.generate_consistency_proof(old_size, old_root)
            consistent = consistency.verify_against(old_root, old_size, root, args.leaves)
            print(f"consistency   {old_size:,} -> {args.leaves:,} leaves: "
                  f"{'valid' if consistent else 'INVALID'}")
            ok = ok and consistent
    print(f"done in {time.perf_counter() - started:.2f} s")
    return EXIT_OK if ok else EXIT_FAILED


# -- bench and tune ----------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks import suite

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else \
        list(suite.SECTIONS)
    unknown = sorted(set(only) - set(suite.SECTIONS))
    if unknown:
        raise CliError(f"unknown section(s) {', '.join(unknown)}; choose from "
                       f"{', '.join(suite.SECTIONS)}")
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a directory")
    command = "rotortree bench" + ("".join(f" {a}" for a in args.argv) if args.argv else "")
    started = time.perf_counter()
    harness = pathlib.Path(args.harness) if args.harness else None
    if harness is not None and not harness.is_dir():
        raise CliError(f"--harness {harness} is not a directory")
    status = suite.run_suite(out, quick=args.quick, only=only, leaves=args.leaves,
                             plots=not args.no_plots, progress=not args.quiet,
                             command=command, harness_dir=harness,
                             use_harness=not args.no_harness)
    report = (out / "report.md").read_text()
    summary = report.split("## Summary", 1)
    if len(summary) == 2 and not args.quiet:
        print("Summary" + summary[1].split("\n## ", 1)[0].rstrip())
    print(f"report: {out / 'report.md'} ({time.perf_counter() - started:.0f} s)")
    return status


def cmd_tune(args: argparse.Namespace) -> int:
    from . import config as rt_config
    from .benchmarks import tune

    if args.save and args.no_save:
        raise CliError("--save and --no-save contradict each other")
    # A quick run's recommendation is noisy: it replaces the user's settings
    # only when asked to; a full run saves unless told not to.
    save = args.save or not (args.quick or args.no_save)
    path = rt_config.config_file_path()
    if save and path is None:
        raise CliError(f"no home directory for the config file: set {rt_config.CONFIG_ENV} "
                       "or use --no-save")
    result = tune.tune(arity=args.arity, quick=args.quick, show_progress=not args.quiet)
    for line in tune.format_tables(result):
        print(line)
    recommended = result["recommended"]
    settings = " ".join(f"{key}={value}" for key, value in recommended.items())
    print()
    print(f"recommended: {settings} (measured in {result['runtime_s']:.0f} s)")
    share = result.get("other_processes_cpu_share")
    if share is not None and share > 0.10:
        print(f"note: other processes used {share:.0%} of the CPUs while measuring; "
              "run again on an idle machine for a steadier recommendation")
    if not save:
        reason = "--no-save" if args.no_save else "--quick; add --save to keep it"
        print(f"not saved ({reason})")
        return EXIT_OK
    assert path is not None
    saved = rt_config.write_config_file(recommended, path, metadata=result["metadata"])
    print(f"saved to {saved}; loaded at every import of rotortree "
          "('rotortree config' shows the effective values)")
    overridden = [rt_config.ENVIRONMENT_VARIABLES[key] for key in recommended
                  if os.environ.get(rt_config.ENVIRONMENT_VARIABLES[key], "").strip()]
    if overridden:
        print(f"note: {', '.join(overridden)} set in the environment override the config file")
    return EXIT_OK


# -- config ----------------------------------------------------------------------


def cmd_config(args: argparse.Namespace) -> int:
    import rotortree

    from . import config as rt_config

    path = rt_config.config_file_path()
    if args.path:
        if path is None:
            raise CliError(f"no home directory for the config file: set {rt_config.CONFIG_ENV}")
        print(path)
        return EXIT_OK
    if args.reset:
        if path is None or not (path.exists() or path.is_symlink()):
            print(f"no config file at {path}")
            return EXIT_OK
        if path.is_dir() and not path.is_symlink():
            raise CliError(f"{path} is a directory, not a config file: not removed (point "
                           f"{rt_config.CONFIG_ENV} at a file)")
        path.unlink()
        print(f"removed {path}; the defaults apply from the next import")
        return EXIT_OK
    info = rotortree.pool_info()
    environment = {name: os.environ[name] for name in
                   [*rt_config.ENVIRONMENT_VARIABLES.values(), rt_config.CONFIG_ENV]
                   if os.environ.get(name, "").strip()}
    if args.json:
        print(json.dumps({**info, "config_file_path": str(path) if path else None,
                          "environment": environment}, indent=2))
        return EXIT_OK
    state = ("not present" if path is None or not path.exists() else
             "loaded" if info["config_file"] == str(path) else "present")
    print(f"config file  {path if path else '(no home directory)'} ({state})")
    print()
    rows = [("setting", "value", "source")]
    for key in rt_config.SETTINGS:
        value = info[key]  # type: ignore[literal-required]
        rows.append((key, str(value), info["sources"][key]))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    print(f"available    {info['available_cpus']} CPU(s) for this process; SIMD kernels "
          f"{', '.join(info['available_simd'])}")
    for name, value in environment.items():
        print(f"environment  {name}={value}")
    print("precedence   argument (configure()) > environment > config file > default")
    return EXIT_OK


# -- root, prove, verify -------------------------------------------------------------


def _open_leaves(path: str) -> Any:
    from ._leaf_file import LeafFile

    if path == "-" and sys.stdin.isatty():
        raise CliError("reading leaves from stdin, which is a terminal; pipe a file in or "
                       "name one")
    return LeafFile(path)


def _progress(source: Any, description: str, quiet: bool) -> Any:
    from ._util import Progress

    # A bar for a file hashed in a blink is noise.
    small = source.nbytes is not None and source.nbytes < (256 << 20)
    return Progress(source.nbytes, description, enabled=not (quiet or small), unit="B",
                    unit_scale=True, announce=False)


def cmd_root(args: argparse.Namespace) -> int:
    from ._leaf_file import file_root

    _check_rule_arity(args)
    started = time.perf_counter()
    with _open_leaves(args.file) as source, \
            _progress(source, f"hashing {source.name}", args.quiet) as progress:
        root, leaves = file_root(source, args.arity, args.segment_mib << 20, progress.update,
                                 rule=args.rule)
    seconds = time.perf_counter() - started
    print(root.hex())
    _say(f"{leaves:,} leaves, arity {args.arity}, rule {args.rule}, {seconds:.2f} s "
         f"({_rate(leaves, seconds)} leaves/s)", args.quiet)
    return EXIT_OK


def _indices(texts: Sequence[str]) -> List[int]:
    indices = []
    for text in texts:
        for part in text.split(","):
            part = part.strip()
            if not part:
                # "1,,2" is a slip (a number lost in editing), not a list of two.
                raise CliError(f"--index {text!r} has an empty item; give indices as I or "
                               "I,J,...")
            try:
                indices.append(int(part.replace("_", ""), 10))
            except ValueError:
                raise CliError(f"--index {part!r} is not an integer") from None
    return indices


def cmd_prove(args: argparse.Namespace) -> int:
    import rotortree

    from ._leaf_file import segment_leaves

    _check_rule_arity(args)
    indices = _indices(args.index or [])
    if not indices and args.old_size is None:
        raise CliError("nothing to prove: give --index I (inclusion) or --old-size M "
                       "(consistency) (see 'rotortree prove --help')")
    with _open_leaves(args.file) as source, \
            _progress(source, f"reading {source.name}", args.quiet) as progress:
        tree = rotortree.LeanIMT(args.arity, 64, rule=args.rule)
        old_root: Optional[bytes] = None
        split = None if args.old_size is None else args.old_size * 32
        piece_bytes = segment_leaves(args.arity, args.segment_mib << 20) * 32
        for piece in source.pieces(piece_bytes, split_at=split):
            tree.insert_many(piece)
            progress.update(len(piece))
            if args.old_size is not None and tree.size == args.old_size:
                old_root = tree.root
    size = tree.size
    for index in indices:
        if not 0 <= index < size:
            raise CliError(f"--index {index} out of range: {source.name} holds {size:,} leaves")
    documents: List[Dict[str, Any]] = []
    if indices:
        documents += [proof.to_dict() for proof in tree.generate_proofs(indices)]
    if args.old_size is not None:
        if not 1 <= args.old_size <= size or old_root is None:
            raise CliError(f"--old-size {args.old_size} out of range: {source.name} holds "
                           f"{size:,} leaves")
        documents.append(tree.generate_consistency_proof(args.old_size, old_root).to_dict())
    text = json.dumps(documents[0] if len(documents) == 1 else documents, indent=2) + "\n"
    if args.out:
        pathlib.Path(args.out).write_text(text)
        _say(f"wrote {len(documents)} proof(s) to {args.out}", args.quiet)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _load_proofs(path: str) -> List[Dict[str, Any]]:
    try:
        text = sys.stdin.read() if path == "-" else pathlib.Path(path).read_text()
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a JSON text file") from None
    name = "stdin" if path == "-" else path
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise CliError(f"{name}: not valid JSON: {error.msg} at line {error.lineno} "
                       f"column {error.colno}") from None
    except ValueError:  # json's int() refuses numbers of more than 4300 digits
        raise CliError(f"{name}: not a proof: a number has too many digits") from None
    except RecursionError:
        raise CliError(f"{name}: not a proof: JSON nested too deeply") from None
    if isinstance(data, dict) and isinstance(data.get("proofs"), list):
        data = data["proofs"]
    items = data if isinstance(data, list) else [data]
    if not items:
        raise CliError(f"{name}: no proofs")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise CliError(f"{name}: proof {position} is not a JSON object")
    return items


def _check_proof_rule(args: argparse.Namespace, label: str, rule: str) -> None:
    if args.rule is not None and rule != args.rule:
        raise CliError(f"{label} is a {rule!r} proof; --rule {args.rule} expects "
                       f"{args.rule!r} proofs")


def _label(position: int, count: int) -> str:
    return f"proof {position}" if count > 1 else "proof"


def _decode_proof(item: Dict[str, Any], label: str, args: argparse.Namespace) -> Any:
    """The proof object of one JSON item; a CliError naming ``label`` if it
    is not a well-formed proof or does not fit the trusted heads given."""
    from .errors import InvalidProofError
    from .proofs import ConsistencyProof, InclusionProof

    kind = item.get("type")
    if kind is None:  # written before proofs said what they are
        kind = ("inclusion" if "leaf_index" in item else
                "consistency" if "old_size" in item else None)
    if kind == "inclusion" and args.root is None and args.old_root is not None:
        # The old head is for consistency proofs; checking this one
        # against only the root and size it carries would accept a
        # forgery while the caller believes a trusted head was used.
        raise CliError(f"{label} is an inclusion proof: it is checked against --root "
                       "and --size, not --old-root and --old-size")
    proof: Any = None
    try:
        if kind == "inclusion":
            proof = InclusionProof.from_dict(item)
        elif kind == "consistency":
            proof = ConsistencyProof.from_dict(item)
    except InvalidProofError as error:
        raise CliError(f"{label} is malformed: {error}; nothing was verified") from None
    if proof is not None:
        _check_proof_rule(args, label, proof.rule)
        return proof
    if "type" in item:
        raise CliError(f"{label} has type {kind!r}: expected 'inclusion' or 'consistency'")
    raise CliError(f"{label} is neither an inclusion proof (no 'leaf_index') nor a "
                   "consistency proof (no 'old_size')")


def _inclusion_problem(proof: Any, root: Optional[bytes], size: Optional[int]) -> Optional[str]:
    """Why an inclusion proof is rejected, or None if it is valid."""
    if not proof.verify():
        return "the path does not hash to the root the proof carries"
    if root is None or size is None or proof.verify_against(root, size):
        return None
    if proof.root != root:
        return "its root is not the trusted --root"
    if proof.tree_size != size:
        return f"its tree size {proof.tree_size:,} is not the trusted --size {size:,}"
    return f"its path does not fit leaf {proof.leaf_index:,} of a tree of {size:,} leaves"


def _consistency_problem(proof: Any, args: argparse.Namespace) -> Optional[str]:
    """Why a consistency proof is rejected, or None if it is valid."""
    if not proof.verify():
        return "its hashes do not recompute both roots the proof carries"
    for flag, trusted, carried in (("--old-root", args.old_root, proof.old_root),
                                   ("--old-size", args.old_size, proof.old_size),
                                   ("--root", args.root, proof.new_root),
                                   ("--size", args.size, proof.new_size)):
        if trusted is not None and trusted != carried:
            return f"it does not match the trusted {flag}"
    return None


def cmd_verify(args: argparse.Namespace) -> int:
    from .proofs import InclusionProof

    # A root does not fix its tree's size, and a proof checked against a
    # root at a size the verifier did not choose can be a forgery: a
    # trusted root only counts together with its trusted size.
    for root_flag, root, size_flag, size in (("--root", args.root, "--size", args.size),
                                             ("--old-root", args.old_root, "--old-size",
                                              args.old_size)):
        if (root is None) != (size is None):
            given, missing = (root_flag, size_flag) if size is None else (size_flag, root_flag)
            raise CliError(f"{given} needs {missing}: a root is trusted together with the "
                           "size of its tree")
    items = _load_proofs(args.proof)
    # Every proof is decoded before any is checked: a malformed one late in
    # a list must not come after lines that already called others valid.
    proofs = [_decode_proof(item, _label(position, len(items)), args)
              for position, item in enumerate(items)]
    invalid = 0
    for position, proof in enumerate(proofs):
        label = _label(position, len(items))
        if isinstance(proof, InclusionProof):
            reason = _inclusion_problem(proof, args.root, args.size)
            what = (f"inclusion of leaf {proof.leaf_index:,} in a tree of "
                    f"{proof.tree_size:,} leaves, root {proof.root.hex()}")
        else:
            reason = _consistency_problem(proof, args)
            what = (f"consistency of {proof.old_size:,} -> {proof.new_size:,} "
                    f"leaves, root {proof.old_root.hex()} -> {proof.new_root.hex()}")
        invalid += reason is not None
        if reason is not None:
            print(f"{label}: INVALID ({reason}): {what}")
        elif not args.quiet:
            print(f"{label}: valid: {what}")
    if args.root is None and args.old_root is None and not args.quiet:
        _say("note: each proof was checked only against the root and size it carries, "
             "which proves nothing by itself; pass --root and --size (and --old-root and "
             "--old-size) to check a tree head you trust")
    if invalid:
        _say(f"{invalid} of {len(items)} proof(s) invalid")
        return EXIT_FAILED
    return EXIT_OK


# -- parser and entry point -----------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    rule_help = ("parent hash: rotortree-0.15 (default, the crate 0.15), leanimt (untagged, "
                 "the crate 0.16+), rfc6962 (SHA-256, arity 2; leaves are RFC 6962 leaf "
                 "hashes)")
    parser = _Parser(
        prog=PROG,
        description="An n-ary Lean Incremental Merkle Tree over BLAKE3 (bit-compatible with "
                    "the Rust crate rotortree 0.15).",
        epilog="Exit status: 0 success, 1 a check failed (invalid proof, roots disagree), "
               "2 an error. 'rotortree COMMAND --help' describes each command.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"rotortree {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo", help="build a 1,000,000-leaf tree, print its root and speed, check proofs",
        description="Build a tree from deterministic leaves on the thread pool, print the "
                    "root, time and leaves/s, then generate and verify a sample of proofs.")
    demo.add_argument("--leaves", type=_positive, default=1_000_000,
                      help="leaves to insert (default 1,000,000)")
    demo.add_argument("--arity", type=_arity, default=4, help="children per node (default 4)")
    demo.add_argument("--rule", type=_rule, default="rotortree-0.15", help=rule_help)
    demo.add_argument("--threads", type=_positive, default=None,
                      help="hashing threads (default: the configured num_threads)")
    demo.add_argument("--repeat", type=_positive, default=3,
                      help="timed builds; the best is reported (default 3)")
    demo.add_argument("--proofs", type=_non_negative, default=1000,
                      help="inclusion proofs to generate and verify (default 1000)")
    demo.set_defaults(run=cmd_demo)

    bench = commands.add_parser(
        "bench", help="run the benchmark suite; write report.md, results.json and plots",
        description="Run the benchmark suite (thread scaling, parallel threshold, SIMD "
                    "kernels, single inserts, snapshots and proofs, a growing tree, durable "
                    "trees), with the Rust crate rotortree 0.15 and 0.17 measured in the same "
                    "run when tools/rust_harness is built, and write OUT/report.md, "
                    "OUT/readme_performance.md, OUT/results.json and, with matplotlib, "
                    "OUT/speedup_vs_threads.png, OUT/threshold_impact.png, "
                    "OUT/throughput_vs_arity.png and OUT/growth.png.")
    bench.add_argument("--quick", action="store_true",
                       help="fewer repetitions and smaller trees (under a minute here)")
    bench.add_argument("--out", default="rotortree-bench",
                       help="output directory (default ./rotortree-bench)")
    bench.add_argument("--only", default=None, metavar="SECTIONS",
                       help="comma-separated subset of: " + ", ".join(BENCH_SECTIONS))
    bench.add_argument("--leaves", type=_positive, default=None,
                       help="leaves per large batch instead of 1,000,000 (for smoke tests)")
    bench.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    bench.add_argument("--harness", default=None, metavar="DIR",
                       help="folder of the Rust harness builds (default: "
                            "$ROTORTREE_HARNESS_DIR, then tools/rust_harness/target)")
    bench.add_argument("--no-harness", action="store_true",
                       help="do not measure the Rust crate even when its harness is built")
    bench.add_argument("--quiet", action="store_true", help="no progress output")
    bench.set_defaults(run=cmd_bench)

    tune = commands.add_parser(
        "tune", help="measure this machine; recommend and save pool settings",
        description="Measure insert_many for each thread count, work-unit size and parallel "
                    "threshold (one large batch into a fresh tree, and batches appended to "
                    "a tree), print the tables and the recommended num_threads, "
                    "parallel_threshold and par_chunk_size, and save them to the config file "
                    "(see 'rotortree config'), which every import of rotortree loads; a "
                    "--quick run saves only with --save. Environment variables still "
                    "override the file.")
    tune.add_argument("--quick", action="store_true",
                      help="smaller workloads, 3 repetitions (about a second; noisier)")
    tune.add_argument("--arity", type=_arity, default=4,
                      help="arity of the trees measured (default 4)")
    tune.add_argument("--no-save", action="store_true",
                      help="print the recommendation without saving it")
    tune.add_argument("--save", action="store_true",
                      help="save the recommendation of a --quick run too")
    tune.add_argument("--quiet", action="store_true", help="no progress output")
    tune.set_defaults(run=cmd_tune)

    config = commands.add_parser(
        "config", help="show the effective settings and where each came from",
        description="Show num_threads, parallel_threshold, par_chunk_size and simd in force "
                    "and the source of each: argument (configure()), environment "
                    "(ROTORTREE_*), config file, or default. The config file is "
                    "$ROTORTREE_CONFIG, else $XDG_CONFIG_HOME/rotortree/config.json, else "
                    "~/.config/rotortree/config.json.")
    action = config.add_mutually_exclusive_group()
    action.add_argument("--json", action="store_true", help="print as JSON")
    action.add_argument("--path", action="store_true", help="print the config file's path")
    action.add_argument("--reset", action="store_true", help="delete the config file")
    config.set_defaults(run=cmd_config)

    segment_help = ("MiB of leaves read per step, rounded down to a power of the arity "
                    "(default 64)")
    root = commands.add_parser(
        "root", help="the root of a file of raw 32-byte leaves",
        description="Print the root (hex) of the LeanIMT over a file of raw 32-byte leaves. "
                    "The file is memory-mapped and hashed in aligned segments, so files "
                    "larger than RAM work; '-' reads stdin.")
    root.add_argument("file", metavar="FILE", help="file of 32-byte leaves, or - for stdin")
    root.add_argument("--arity", type=_arity, default=4, help="children per node (default 4)")
    root.add_argument("--rule", type=_rule, default="rotortree-0.15", help=rule_help)
    root.add_argument("--segment-mib", type=_positive, default=64, help=segment_help)
    root.add_argument("--quiet", action="store_true", help="print only the root")
    root.set_defaults(run=cmd_root)

    prove = commands.add_parser(
        "prove", help="inclusion or consistency proofs for a file of leaves, as JSON",
        description="Build the tree of a file of raw 32-byte leaves (in memory: about 1.33x "
                    "the file at arity 4) and print proofs as JSON: one object for one "
                    "proof, a list for several.")
    prove.add_argument("file", metavar="FILE", help="file of 32-byte leaves, or - for stdin")
    prove.add_argument("--index", action="append", metavar="I[,J...]",
                       help="leaf index to prove inclusion of (repeatable, comma-separated)")
    prove.add_argument("--old-size", type=_positive, default=None, metavar="M",
                       help="prove that the first M leaves are a prefix of the whole file")
    prove.add_argument("--arity", type=_arity, default=4, help="children per node (default 4)")
    prove.add_argument("--rule", type=_rule, default="rotortree-0.15", help=rule_help)
    prove.add_argument("--out", default=None, metavar="FILE",
                       help="write the JSON to FILE instead of stdout")
    prove.add_argument("--segment-mib", type=_positive, default=64, help=segment_help)
    prove.add_argument("--quiet", action="store_true", help="no progress output")
    prove.set_defaults(run=cmd_prove)

    verify = commands.add_parser(
        "verify", help="verify proofs from a JSON file (exit 1 if any is invalid)",
        description="Verify inclusion and consistency proofs in the JSON form 'rotortree "
                    "prove' and InclusionProof.to_dict() write (one object or a list), in "
                    "pure Python. Exit status 0 if all are valid, 1 otherwise.")
    verify.add_argument("proof", metavar="PROOF", help="JSON file, or - for stdin")
    verify.add_argument("--root", type=_hash_hex, default=None, metavar="HEX",
                        help="trusted root (requires --size): inclusion proofs must prove "
                             "against it, consistency proofs must end at it")
    verify.add_argument("--size", type=_positive, default=None, metavar="N",
                        help="trusted number of leaves of the tree whose root is --root")
    verify.add_argument("--old-root", type=_hash_hex, default=None, metavar="HEX",
                        help="trusted old root that consistency proofs must start from "
                             "(requires --old-size)")
    verify.add_argument("--old-size", type=_positive, default=None, metavar="M",
                        help="trusted number of leaves of the tree whose root is --old-root")
    verify.add_argument("--quiet", action="store_true", help="print only invalid proofs")
    verify.add_argument("--rule", type=_rule, default=None,
                        help="refuse proofs of any other hash rule (each proof names its own)")
    verify.set_defaults(run=cmd_verify)
    return parser


def _ignored_settings() -> List[str]:
    """The settings import ignored (rotortree.pool_info()["config_errors"]).
    Measurements and saved settings made with them would silently not be
    what the user asked for, so commands refuse to run instead."""
    try:
        from . import config
    except ImportError:  # no C core (light client): nothing was configured
        return []
    return config.config_errors()


def _error_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else ""
        return f"{where}: {error.strerror}" if where else error.strerror
    return str(error) or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except CliError as error:
        # Usage errors carry the same "rotortree COMMAND: error:" prefix as
        # runtime errors, so one pattern finds both in a log.
        print(f"{error.prog or PROG}: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as done:  # --help and --version
        return done.code if isinstance(done.code, int) else EXIT_OK
    if args.command is None:
        print(f"{PROG}: error: choose a command: demo, bench, tune, config, root, prove, "
              f"verify (see '{PROG} --help')", file=sys.stderr)
        return EXIT_ERROR
    args.argv = arguments[1:]
    run: Callable[[argparse.Namespace], int] = args.run
    from .errors import RotorTreeError

    # --reset and --path are how a bad config file gets found and fixed.
    if not (args.command == "config" and (args.reset or args.path)):
        problems = _ignored_settings()
        if problems:
            print(f"{PROG} {args.command}: error: invalid settings: {'; '.join(problems)} "
                  f"(fix or unset them; 'rotortree config --reset' deletes the config file)",
                  file=sys.stderr)
            return EXIT_ERROR
    try:
        return run(args)
    except (CliError, RotorTreeError, OSError, MemoryError) as error:
        if isinstance(error, BrokenPipeError):
            return _broken_pipe()
        print(f"{PROG} {args.command}: error: {_error_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as error:
        missing = _missing_core()
        if missing is None:
            raise
        # The reason says what happened and what to do: not built at install
        # (and why), or a source checkout shadowing the installed package.
        print(f"{PROG} {args.command}: error: this command needs rotortree's compiled C "
              f"core, which is not available: {missing}; 'rotortree verify' works "
              f"without it", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROG} {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _missing_core() -> Optional[str]:
    """Why the compiled core did not import and what to do, or None if it did."""
    import rotortree

    if rotortree._native_import_error is None:
        return None
    reason: str = rotortree._native_reason
    return reason


def _broken_pipe() -> int:
    """The reader of stdout went away (``rotortree prove ... | head``): stop
    quietly, and keep Python from complaining again when it flushes stdout."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return EXIT_FAILED


__all__ = ["main", "build_parser", "CliError"]
