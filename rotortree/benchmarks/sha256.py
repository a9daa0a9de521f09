"""SHA-256 and RFC 6962 trees, measured in one run.

    python bench/sha256.py [--buffer-mb N] [--parents N] [--tree-leaves N]
                           [--scaling-leaves N] [--repeat R] [--quick] [--out DIR]

What is measured, each configuration once per round, rounds interleaved so
machine drift hits all alike (figures: median, min, IQR; ratios per round):

* SHA-256 of one large buffer on one thread: this package's C (the
  implementation the active kernel selects, and portable C) against
  ``hashlib.sha256`` (OpenSSL), in 64-byte blocks per second. Issue 16's
  target: at least 90% of hashlib's throughput.
* RFC 6962 parents ``SHA-256(0x01 || left || right)`` in one batch on one
  thread, with every implementation this CPU runs (portable, SHA extensions,
  8 AVX2 lanes, 16 AVX-512 lanes), and hashlib one call per parent. The
  lanes-over-SHA-extensions ratio is what the dispatcher's choice rests on.
* With the ``"rfc6962"`` rule in this build: an RFC 6962 tree of
  ``--tree-leaves`` entries built from the entries
  (``rfc6962.insert_entries``: leaf hashes, tree and root in one pass)
  against pymerkle's ``InmemoryTree.init_from_entries`` and its root
  (target: 100x), roots checked equal; and the build of
  ``--scaling-leaves`` entries given as one buffer of fixed-size entries
  (``insert_entries(tree, buffer, entry_len)``, no Python pass over a list)
  at 2 threads against 1 (target: 1.8x). Beside it, the same buffer built in
  two passes (``insert_many(leaf_hashes(buffer, entry_len))``): what the
  one-pass build gains. Each build runs at 1 and 2 threads back to back,
  the order alternating by round, with the pool's workers started before
  the clock.

Writes DIR/sha256.{md,json}; DIR defaults to bench/results.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import rotortree
from rotortree import rfc6962
from rotortree._native import ffi, lib

try:
    import resource
except ImportError:  # no getrusage (Windows): builds go without fault counts
    resource = None  # type: ignore[assignment]

from ._common import deterministic_leaves, fmt_rate, machine, positive_int, write_results_to
from .environment import LoadMeter, fmt_load
from .stats import fmt_interval, fmt_summary, paired_ratios, ratio_summary, summary, target

Payload = Dict[str, Any]

HASHLIB_TARGET = 0.90
PYMERKLE_TARGET = 100.0
THREADS_TARGET = 1.8
ENTRY_LEN = 32
IMPLS = (("portable", lib.RT_SHA256_PORTABLE), ("sha-ni", lib.RT_SHA256_SHANI),
         ("avx2-8way", lib.RT_SHA256_AVX2), ("avx512-16way", lib.RT_SHA256_AVX512))
# hashlib per-parent calls are slow; they run on this share of the batch.
HASHLIB_PARENT_SHARE = 16
WARM_ENTRIES = 16384


def minor_faults() -> Optional[int]:
    """The process's minor page faults so far (every thread), or None."""
    if resource is None:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def clock(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def impl_name(impl: int) -> str:
    return str(ffi.string(lib.rt_sha256_impl_name(impl)).decode())


def rfc6962_tree_available() -> bool:
    try:
        rotortree.LeanIMT(2, rule="rfc6962")
    except TypeError:  # a build without hash rules
        return False
    return True


def pymerkle_tree() -> Optional[Any]:
    try:
        from pymerkle import InmemoryTree  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    return InmemoryTree


def build_ours(entries: Sequence[bytes]) -> bytes:
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    rfc6962.insert_entries(tree, entries)
    return tree_root(tree)


def build_ours_from_buffer(entries: bytes) -> bytes:
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    rfc6962.insert_entries(tree, entries, ENTRY_LEN)
    return tree_root(tree)


def build_two_pass_from_buffer(entries: bytes) -> bytes:
    tree = rotortree.LeanIMT(2, rule="rfc6962")
    tree.insert_many(rfc6962.leaf_hashes(entries, ENTRY_LEN))
    return tree_root(tree)


def use_threads(threads: int, warm_entries: bytes) -> None:
    """Set the pool's size, and with more than one thread start its workers
    outside the clock: a service sizes its pool once, so a build that paid
    for starting threads would not measure the steady state."""
    if rotortree.pool_info()["num_threads"] == threads:
        return
    rotortree.configure(num_threads=threads)
    if threads > 1:
        build_ours_from_buffer(warm_entries)


def tree_root(tree: Any) -> bytes:
    root = tree.root
    assert root is not None
    return bytes(root)


def build_pymerkle(tree_class: Any, entries: Sequence[bytes]) -> bytes:
    tree = tree_class.init_from_entries(entries, algorithm="sha256")
    return bytes(tree.get_root())


def entries_of(count: int) -> List[bytes]:
    data = deterministic_leaves(count, b"rfc6962 bench entries")
    return [data[i * ENTRY_LEN:(i + 1) * ENTRY_LEN] for i in range(count)]


class Rounds:
    """Samples per configuration, in round order (for paired ratios)."""

    def __init__(self) -> None:
        self.samples: Dict[str, List[float]] = {}

    def add(self, key: str, seconds: float) -> None:
        self.samples.setdefault(key, []).append(seconds)

    def ratio(self, slower: str, faster: str) -> Optional[Dict[str, float]]:
        if slower not in self.samples or faster not in self.samples:
            return None
        return ratio_summary(paired_ratios(self.samples[slower], self.samples[faster]))


def run(buffer_mb: int, parents: int, tree_leaves: int, scaling_leaves: int, repeat: int,
        show_progress: bool = False) -> Tuple[Payload, str]:
    meter = LoadMeter()
    kernel = rotortree.pool_info()["simd"]
    before = rotortree.pool_info()
    buffer = deterministic_leaves(buffer_mb * (1 << 20) // 32, b"sha256 bench")
    view = ffi.from_buffer("uint8_t[]", buffer)
    digest = ffi.new("uint8_t[32]")
    impls = [(name, impl) for name, impl in IMPLS if lib.rt_sha256_impl_available(impl)]
    children = deterministic_leaves(2 * parents, b"sha256 bench parents")
    children_view = ffi.from_buffer("uint8_t[]", children)
    out = ffi.new("uint8_t[]", 32 * parents)
    hashlib_parents = max(1, parents // HASHLIB_PARENT_SHARE)

    tree_ok = rfc6962_tree_available()
    tree_class = pymerkle_tree()
    tree_entries = entries_of(tree_leaves) if tree_ok else []
    # Thread scaling is measured on one buffer of fixed-size entries: with a
    # list, the Python passes over it (join, lengths) run on one thread
    # whatever the pool's size and would cap the ratio by Amdahl's law.
    scaling_entries = b"".join(entries_of(scaling_leaves)) if tree_ok else b""
    # Enough entries for the pool's default threshold: warming it up runs a job.
    warm_entries = scaling_entries[:WARM_ENTRIES * ENTRY_LEN]
    problems: List[str] = []

    def ours_buffer(impl: int) -> Callable[[], object]:
        return lambda: lib.rt_sha256_with(impl, view, len(buffer), digest)

    def ours_parents(impl: int) -> Callable[[], object]:
        return lambda: lib.rt_sha256_prefixed_many(impl, 1, children_view, 64, parents, out)

    def ours_leaves(impl: int) -> Callable[[], object]:
        # As many 32-byte entries as there are parents: one-block messages.
        return lambda: lib.rt_sha256_prefixed_many(impl, 0, children_view, ENTRY_LEN, parents,
                                                   out)

    def hashlib_parent_loop() -> None:
        sha = hashlib.sha256
        for i in range(hashlib_parents):
            sha(b"\x01" + children[64 * i:64 * i + 64]).digest()

    rounds = Rounds()
    faults: Dict[str, List[int]] = {}
    try:
        for r in range(repeat + 1):  # round 0 warms up and is dropped
            if show_progress:
                print(f"sha256: round {r}/{repeat}", file=sys.stderr, flush=True)
            sample = Rounds()
            rotortree.configure(num_threads=1)
            sample.add("buffer hashlib", clock(lambda: hashlib.sha256(buffer).digest()))
            sample.add("buffer active", clock(ours_buffer(lib.RT_SHA256_ACTIVE)))
            sample.add("buffer portable", clock(ours_buffer(lib.RT_SHA256_PORTABLE)))
            for name, impl in impls:
                sample.add(f"parents {name}", clock(ours_parents(impl)))
                sample.add(f"leaves {name}", clock(ours_leaves(impl)))
            sample.add("parents hashlib", clock(hashlib_parent_loop) * HASHLIB_PARENT_SHARE)
            if tree_ok:
                if tree_class is not None:
                    sample.add("tree pymerkle", clock(lambda: build_pymerkle(tree_class,
                                                                             tree_entries)))
                # Each build runs at both thread counts back to back, in an
                # order that alternates by round: a 2-over-1 ratio pairs
                # samples taken moments apart, so load that comes and goes
                # on a shared machine hits both, and neither count always
                # runs first after pymerkle's build has flushed the caches.
                order = (1, 2) if r % 2 else (2, 1)
                for key, build in (("tree ours", lambda: build_ours(tree_entries)),
                                   ("scaling ours",
                                    lambda: build_ours_from_buffer(scaling_entries)),
                                   ("scaling two-pass",
                                    lambda: build_two_pass_from_buffer(scaling_entries))):
                    for threads in order:
                        use_threads(threads, warm_entries)
                        before_faults = minor_faults()
                        sample.add(f"{key} {threads}", clock(build))
                        if r > 0 and before_faults is not None:
                            # Fresh memory the build touched: the kernel zeroes
                            # it in the build's time, which the times alone hide.
                            faults.setdefault(f"{key} {threads}", []).append(
                                (minor_faults() or 0) - before_faults)
            if r > 0:
                for key, values in sample.samples.items():
                    rounds.add(key, values[0])
    finally:
        rotortree.configure(num_threads=before["num_threads"])
    if tree_ok and tree_class is not None:
        ours_root, their_root = build_ours(tree_entries), build_pymerkle(tree_class, tree_entries)
        if build_ours_from_buffer(b"".join(tree_entries)) != ours_root:
            problems.append("rfc6962 root from a buffer of entries differs from the list's")
        if build_two_pass_from_buffer(b"".join(tree_entries)) != ours_root:
            problems.append("rfc6962 root of the two-pass build differs from the one-pass's")
        if ours_root != their_root:
            problems.append(f"rfc6962 root {ours_root.hex()} differs from pymerkle's "
                            f"{their_root.hex()}")

    blocks = len(buffer) / 64
    rows: List[Dict[str, Any]] = []
    for key, what in (("buffer hashlib", "hashlib.sha256 (OpenSSL)"),
                      ("buffer active", f"rotortree C, {impl_name(lib.rt_sha256_impl_active(0))}"
                                        f" (kernel {kernel})"),
                      ("buffer portable", "rotortree C, portable")):
        stats = summary(rounds.samples[key])
        rows.append({"key": key, "what": what, "stats_s": stats,
                     "blocks_per_s": blocks / stats["median"]})
    parent_rows: List[Dict[str, Any]] = []
    for name, _ in impls:
        stats = summary(rounds.samples[f"parents {name}"])
        leaves = summary(rounds.samples[f"leaves {name}"])
        parent_rows.append({"impl": name, "stats_s": stats,
                            "parents_per_s": parents / stats["median"],
                            "leaves_stats_s": leaves, "leaves_per_s": parents / leaves["median"]})
    stats = summary(rounds.samples["parents hashlib"])
    parent_rows.append({"impl": "hashlib, one call per parent", "stats_s": stats,
                        "parents_per_s": parents / stats["median"]})

    targets = []
    vs_hashlib = rounds.ratio("buffer hashlib", "buffer active")
    assert vs_hashlib is not None
    targets.append(target(
        f"SHA-256 of a {buffer_mb} MiB buffer, 1 thread, >= {HASHLIB_TARGET:.0%} of "
        "hashlib.sha256's 64-byte blocks/s", f"{fmt_interval(vs_hashlib)} of hashlib",
        (vs_hashlib["low"], vs_hashlib["high"]), HASHLIB_TARGET))
    lane_ratios = {}
    if "sha-ni" in dict(impls):
        for name, _ in impls:
            for shape in ("parents", "leaves"):
                if name in ("avx2-8way", "avx512-16way"):
                    ratio = rounds.ratio(f"{shape} sha-ni", f"{shape} {name}")
                    if ratio is not None:
                        lane_ratios[f"{name} {shape}"] = ratio
    tree: Dict[str, Any] = {"available": tree_ok, "pymerkle": tree_class is not None}
    if not tree_ok:
        reason = "this build has no rfc6962 rule (LeanIMT(rule=...))"
        targets.append(target(f"rfc6962 tree build >= {PYMERKLE_TARGET:.0f}x pymerkle", "",
                              reason=reason))
        targets.append(target(f"rfc6962 tree build, 2 threads >= {THREADS_TARGET}x 1 thread",
                              "", reason=reason))
    else:
        for key in ("tree ours 1", "tree ours 2", "tree pymerkle", "scaling ours 1",
                    "scaling ours 2", "scaling two-pass 1", "scaling two-pass 2"):
            if key in rounds.samples:
                tree[key] = summary(rounds.samples[key])
        if faults:
            tree["minor_faults_median"] = {key: sorted(counts)[len(counts) // 2]
                                           for key, counts in faults.items()}
        for threads in (1, 2):
            gain = rounds.ratio(f"scaling two-pass {threads}", f"scaling ours {threads}")
            if gain is not None:
                tree[f"two_pass_over_one_pass_{threads}"] = gain
        vs_pymerkle = rounds.ratio("tree pymerkle", "tree ours 1")
        if vs_pymerkle is None:
            targets.append(target(f"rfc6962 tree build >= {PYMERKLE_TARGET:.0f}x pymerkle", "",
                                  reason="pymerkle is not installed (pip install pymerkle)"))
        else:
            tree["pymerkle_over_ours"] = vs_pymerkle
            # Judged at both thread counts: the issue names none for this
            # target, and pymerkle runs on one.
            for threads in (1, 2):
                ratio = rounds.ratio("tree pymerkle", f"tree ours {threads}")
                assert ratio is not None
                tree[f"pymerkle_over_ours_{threads}"] = ratio
                targets.append(target(
                    f"rfc6962 tree of {tree_leaves:,} entries from the entries, {threads} "
                    f"thread{'s' if threads > 1 else ''}, >= {PYMERKLE_TARGET:.0f}x pymerkle's "
                    "InmemoryTree", fmt_interval(ratio, 0), (ratio["low"], ratio["high"]),
                    PYMERKLE_TARGET))
        scaling = rounds.ratio("scaling ours 1", "scaling ours 2")
        assert scaling is not None
        tree["two_over_one"] = scaling
        targets.append(target(
            f"rfc6962 tree of {scaling_leaves:,} entries in one buffer, 2 threads >= "
            f"{THREADS_TARGET}x 1 thread", fmt_interval(scaling), (scaling["low"], scaling["high"]), THREADS_TARGET))

    load = meter.report()
    payload: Payload = {
        "benchmark": "sha256", "machine": machine(), "load": load, "kernel": kernel,
        "settings": {"buffer_mb": buffer_mb, "parents": parents, "tree_leaves": tree_leaves,
                     "scaling_leaves": scaling_leaves, "repeat": repeat,
                     "entry_len": ENTRY_LEN},
        "impl_active": {"single": impl_name(lib.rt_sha256_impl_active(0)),
                        "batch": impl_name(lib.rt_sha256_impl_active(1))},
        "buffer": rows, "parents": parent_rows, "lanes_over_shani": lane_ratios,
        "tree": tree, "targets": targets, "problems": problems,
        "samples": rounds.samples,
    }
    return payload, markdown(payload)


def markdown(p: Payload) -> str:
    s = p["settings"]
    out = ["# SHA-256 and RFC 6962 trees", "",
           f"Kernel {p['kernel']}: single messages on {p['impl_active']['single']}, batches on "
           f"{p['impl_active']['batch']}. {s['repeat']} rounds after a warm-up, "
           f"configurations interleaved; {fmt_load(p['load'])}. On a shared machine the "
           "figures are noisy; ratios are per round, with their 90% interval.", "",
           f"## One {s['buffer_mb']} MiB buffer, 1 thread", "",
           "| implementation | time | 64-byte blocks/s |", "|---|---:|---:|"]
    for row in p["buffer"]:
        out.append(f"| {row['what']} | {fmt_summary(row['stats_s'])} | "
                   f"{fmt_rate(row['blocks_per_s'])} |")
    out += ["", f"## {s['parents']:,} RFC 6962 parents (65-byte messages) and as many leaf "
            f"hashes of {s['entry_len']}-byte entries, one batch each, 1 thread", "",
            "| implementation | parents: time | parents/s | leaves: time | leaves/s |",
            "|---|---:|---:|---:|---:|"]
    for row in p["parents"]:
        leaves = (f"{fmt_summary(row['leaves_stats_s'])} | {fmt_rate(row['leaves_per_s'])}"
                  if "leaves_stats_s" in row else "- | -")
        out.append(f"| {row['impl']} | {fmt_summary(row['stats_s'])} | "
                   f"{fmt_rate(row['parents_per_s'])} | {leaves} |")
    if p["lanes_over_shani"]:
        out += ["", "SHA extensions time / lane kernel time (above 1: the lanes are faster): "
                + ", ".join(f"{name} {fmt_interval(r)}"
                            for name, r in p["lanes_over_shani"].items()) + "."]
    tree = p["tree"]
    if tree["available"]:
        out += ["", f"## RFC 6962 trees from {s['entry_len']}-byte entries", "",
                "`rfc6962.insert_entries` of a list, or of one buffer with `entry_len`, "
                "into a `LeanIMT(2, rule=\"rfc6962\")` and the root (leaf hashes and tree in "
                "one pass), against pymerkle's `InmemoryTree.init_from_entries` and "
                "`get_root`; the two-pass rows build the same buffer with "
                "`insert_many(leaf_hashes(buffer, entry_len))`.", "",
                "| build | time |", "|---|---:|"]
        labels = {"tree pymerkle": f"pymerkle, {s['tree_leaves']:,} entries",
                  "tree ours 1": f"rotortree, {s['tree_leaves']:,} entries, 1 thread",
                  "tree ours 2": f"rotortree, {s['tree_leaves']:,} entries, 2 threads",
                  "scaling ours 1": f"rotortree, {s['scaling_leaves']:,} entries in one buffer, "
                                    "1 thread",
                  "scaling ours 2": f"rotortree, {s['scaling_leaves']:,} entries in one buffer, "
                                    "2 threads",
                  "scaling two-pass 1": f"two passes, {s['scaling_leaves']:,} entries in one "
                                        "buffer, 1 thread",
                  "scaling two-pass 2": f"two passes, {s['scaling_leaves']:,} entries in one "
                                        "buffer, 2 threads"}
        for key, label in labels.items():
            if key in tree:
                out.append(f"| {label} | {fmt_summary(tree[key])} |")
        gains = [f"{threads} thread{'s' if threads > 1 else ''} "
                 f"{fmt_interval(tree[f'two_pass_over_one_pass_{threads}'])}"
                 for threads in (1, 2) if f"two_pass_over_one_pass_{threads}" in tree]
        if gains:
            out += ["", "Two-pass time / one-pass time (above 1: one pass is faster): "
                    + ", ".join(gains) + "."]
        counts = tree.get("minor_faults_median")
        if counts:
            out += ["", "Minor page faults per build, median (the whole process; fresh memory "
                    "the kernel zeroes inside the build's time): "
                    + "; ".join(f"{labels[key]}: {count:,}" for key, count in counts.items()
                                if key in labels) + "."]
    out += ["", "## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    out += [f"| {t['target']} | {t['measured']} | **{t['status']}** |" for t in p["targets"]]
    for problem in p["problems"]:
        out += ["", f"**Problem:** {problem}"]
    return "\n".join(out) + "\n"


def parse_args(argv: Optional[Sequence[str]], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffer-mb", type=positive_int, default=64)
    parser.add_argument("--parents", type=positive_int, default=1 << 20)
    parser.add_argument("--tree-leaves", type=positive_int, default=100_000)
    parser.add_argument("--scaling-leaves", type=positive_int, default=1_000_000)
    parser.add_argument("--repeat", type=positive_int, default=9)
    parser.add_argument("--quick", action="store_true",
                        help="16 MiB, 256k parents, 20k-entry pymerkle trees, 3 rounds "
                             "(options given explicitly win)")
    parser.add_argument("--out", type=pathlib.Path, default=None)
    given = set(argv or [])
    args = parser.parse_args(argv)
    if args.quick:  # quick sizes, except where given explicitly
        for option, name, value in (("--buffer-mb", "buffer_mb", 16),
                                    ("--parents", "parents", 1 << 18),
                                    ("--tree-leaves", "tree_leaves", 20_000),
                                    ("--repeat", "repeat", 3)):
            if option not in given:
                setattr(args, name, value)
    return args


def main(argv: Optional[Sequence[str]] = None, default_out: Optional[pathlib.Path] = None,
         prog: str = "python bench/sha256.py") -> int:
    args = parse_args(argv, prog)
    payload, text = run(args.buffer_mb, args.parents, args.tree_leaves, args.scaling_leaves,
                        args.repeat, show_progress=True)
    out = args.out or default_out or pathlib.Path("bench/results")
    write_results_to(out, "sha256", payload, text)
    print(text)
    return 1 if payload["problems"] else 0


__all__ = ["run", "main", "markdown"]
