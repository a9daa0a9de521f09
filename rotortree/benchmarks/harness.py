"""The Rust crate rotortree (0.15 and 0.17), measured by the project's harness
in ``tools/rust_harness`` when it is built.

The harness comes in two builds, sequential and with the crates' ``parallel``
feature (rayon). Each runs as one long-lived process that reads a command per
line and answers one JSON object per line, so ``rotortree bench`` can
interleave the crates' measurements with its own in the same run.

Where the builds are looked for, first found wins: the ``directory`` given
(``rotortree bench --harness DIR``), ``$ROTORTREE_HARNESS_DIR``, then
``tools/rust_harness/target`` of the checkout this package is imported from.
A directory holds ``sequential/release/rotortree-harness`` and
``parallel/release/rotortree-harness`` (``tools/rust_harness/build.py``
writes them so).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
from typing import Any, Dict, Iterator, List, Optional, Tuple

BUILDS = ("sequential", "parallel")
# Optional third build: BLAKE3 with its AVX-512 code compiled out, for an AVX2 bound.
AVX2_BUILD = "avx2"
BINARY = "rotortree-harness"
DEMO_SEED = b"rotortree demo"

# Roots of 1,000,000 leaves (leaf i = BLAKE3(u64 i little-endian)) published
# with the two reference crates: a rebuilt harness must reproduce them.
ANCHOR_ROOTS = {
    15: {2: "68620c213c12708b0d3b2f3dbae6ba040513c2d338e39cef3adc05b2cbaeb3c9",
         4: "db974f1f1f11be0bec0f4efa695ada477569694e1ab63c4d4849d93a8c6ddeb6",
         8: "8db685ff1fec17a5ff7e9bfab0032a994b180114ae8be5ac78005eac3ce4377a",
         16: "c16e47efd5ac7480ce2897a1cb20d0f845584a6965cb2b73df118675a1cc1101"},
    17: {2: "43f26a52bd8195c4848298a604dd1d9966e2af69105bcc3e49f38602c3001af2",
         4: "b9ff35fcbc7d0c6b23eb8bd17847b9bed62a2faca813c18682db29fcc2da8a85",
         8: "d47d95543bf8be562686a163f9d337e53410e03e2c43b00842a705709dcf2acc",
         16: "632d143b06c965be5ee8387e545b49f70403acc1c6c9241e26f0b5f5ec0ffb91"},
}
ANCHOR_LEAVES = 1_000_000


def add_options(parser: argparse.ArgumentParser) -> None:
    """--harness DIR and --no-harness, for the benchmarks' own command lines."""
    parser.add_argument("--harness", type=pathlib.Path, default=None,
                        help="folder of the Rust harness builds (default: "
                             "$ROTORTREE_HARNESS_DIR, then tools/rust_harness/target)")
    parser.add_argument("--no-harness", action="store_true",
                        help="do not measure the Rust crate even if its harness is built")


@contextlib.contextmanager
def from_options(args: argparse.Namespace) -> Iterator["Optional[Harness]"]:
    """The harness the options ask for, or None (not wanted or not built),
    closed on the way out."""
    harness = None if args.no_harness else open_harness(args.harness)
    try:
        yield harness
    finally:
        if harness is not None:
            harness.close()


class HarnessError(RuntimeError):
    """The harness answered with an error or not at all."""


def default_directories() -> List[pathlib.Path]:
    found = []
    env = os.environ.get("ROTORTREE_HARNESS_DIR")
    if env:
        found.append(pathlib.Path(env))
    checkout = pathlib.Path(__file__).resolve().parents[2]
    found.append(checkout / "tools" / "rust_harness" / "target")
    return found


def locate(directory: Optional[pathlib.Path] = None) -> Optional[Dict[str, pathlib.Path]]:
    """Paths of both builds (and of the optional avx2 build when it is
    there), or None when no directory holds both."""
    candidates = [directory] if directory is not None else default_directories()

    def binary(folder: pathlib.Path, build: str) -> Optional[pathlib.Path]:
        path = pathlib.Path(folder) / build / "release" / BINARY
        return path if path.is_file() and os.access(path, os.X_OK) else None

    for folder in candidates:
        found = {build: binary(folder, build) for build in BUILDS + (AVX2_BUILD,)}
        if all(found[build] is not None for build in BUILDS):
            return {build: path for build, path in found.items() if path is not None}
    return None


class Process:
    """One harness build as a child process: a command in, a JSON object out."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._proc = subprocess.Popen([str(path)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self.call("info")

    def call(self, command: str, **keys: Any) -> Dict[str, Any]:
        line = " ".join([command] + [f"{k}={v}" for k, v in keys.items()])
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
            answer = self._proc.stdout.readline()
        except OSError as exc:
            raise HarnessError(f"{self.path}: {exc}") from exc
        if not answer:
            raise HarnessError(f"{self.path} exited (status {self._proc.poll()}) on {line!r}")
        try:
            reply: Dict[str, Any] = json.loads(answer)
        except ValueError:
            raise HarnessError(f"{self.path}: not JSON: {answer[:200]!r}") from None
        if not reply.get("ok"):
            raise HarnessError(f"{self.path}: {line!r}: {reply.get('error', reply)}")
        return reply

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class Harness:
    """Both builds. ``call(build, command, ...)`` with build "sequential" or
    "parallel"; threads=0 calls the crate directly, threads=k runs it inside
    a rayon pool of k threads (parallel build). Calls with memory="fresh"
    go to their own process per build, which returns freed memory to the OS
    before each timed call; the other process keeps freed memory mapped, so
    neither undoes the other's memory state."""

    def __init__(self, paths: Dict[str, pathlib.Path]) -> None:
        self.paths = paths
        self.processes: Dict[Tuple[str, str], Process] = {}
        for build, parallel in (("sequential", False), ("parallel", True)):
            if self._process(build, "reused").info.get("parallel") is not parallel:
                self.close()
                raise HarnessError(f"{paths[build]} is not the {build} build")

    def _process(self, build: str, memory: str) -> Process:
        key = (build, memory)
        if key not in self.processes:
            self.processes[key] = Process(self.paths[build])
        return self.processes[key]

    @property
    def has_avx2_bound(self) -> bool:
        return AVX2_BUILD in self.paths

    def call(self, build: str, command: str, **keys: Any) -> Dict[str, Any]:
        memory = str(keys.get("memory", "reused"))
        return self._process(build, memory).call(command, **keys)

    def check_anchor_roots(self, arities: List[int]) -> List[str]:
        """Problems found comparing the crates' roots of the published anchor
        leaves with the published values (empty when all agree)."""
        problems = []
        for version, roots in ANCHOR_ROOTS.items():
            for arity in arities:
                got = self.call("sequential", "root", v=version, arity=arity,
                                leaves=ANCHOR_LEAVES, leafrule="index")["root"]
                if got != roots[arity]:
                    problems.append(f"rotortree 0.{version}, arity {arity}: root of the "
                                    f"anchor leaves {got} != published {roots[arity]}")
        return problems

    def close(self) -> None:
        for process in self.processes.values():
            process.close()

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_harness(directory: Optional[pathlib.Path] = None) -> Optional[Harness]:
    paths = locate(directory)
    return Harness(paths) if paths is not None else None


__all__ = ["Harness", "HarnessError", "locate", "open_harness", "ANCHOR_ROOTS", "BUILDS",
           "AVX2_BUILD"]
