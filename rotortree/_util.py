"""Helpers shared by the command line, the benchmarks and the tests (leaf
generator, argparse integer types, a progress bar): kept
out of both ``cli`` and ``benchmarks`` so that neither imports the other's
internals and the tests need neither."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Optional


# The sections of ``rotortree bench``, in the order they run (here so that the
# command line can list them without importing the benchmarks).
BENCH_SECTIONS = ("scaling", "kernels", "operations", "single", "proofs", "growth", "durability",
                  "churn", "rules", "sha256", "index", "distributed", "logviews")


def deterministic_leaves(count: int, seed: bytes = b"rotortree demo") -> bytes:
    """``count`` pseudo-random 32-byte leaves from BLAKE3's extendable output:
    the same bytes on every machine, generated in one fast call."""
    import blake3

    leaves: bytes = blake3.blake3(seed).digest(length=32 * count)
    return leaves


def int_at_least(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: a base-10 integer (underscores allowed) >= minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", ""), 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "an integer >= 0")


class Progress:
    """A progress bar on stderr: tqdm when it is installed and stderr is a
    terminal, otherwise plain lines, at most one every few seconds, so logs stay short. ``total`` may
    be None when the amount of work is unknown (a stream). Without tqdm and
    ``announce``, work that ends within the first interval prints nothing."""

    LINE_INTERVAL_S = 5.0

    def __init__(self, total: Optional[float], description: str, enabled: bool = True,
                 unit: str = "step", unit_scale: bool = False,
                 announce: bool = True) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled
        self.unit = unit
        self.done = 0.0
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = self._started
        self._printed = False
        if not enabled:
            return
        # tqdm redraws with carriage returns, which a log file or a pipe keeps
        # as garbage: it is for terminals only, plain lines for the rest.
        try:
            from tqdm import tqdm
            interactive = sys.stderr.isatty()
        except (ImportError, AttributeError, ValueError):
            interactive = False
        if not interactive:
            if announce:
                self._line("started")
        else:
            self._bar = tqdm(total=total, desc=description, unit=unit, file=sys.stderr,
                             leave=True, dynamic_ncols=True, unit_scale=unit_scale,
                             unit_divisor=1024 if unit == "B" else 1000)

    def _line(self, text: str) -> None:
        print(f"{self.description}: {text}", file=sys.stderr, flush=True)
        self._printed = True

    def _amount(self) -> str:
        if self.unit == "B":
            return f"{self.done / 2**20:,.0f} MiB"
        return f"{self.done:,.0f} {self.unit}"

    def update(self, amount: float = 1) -> None:
        self.done += amount
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(amount)
            return
        now = time.monotonic()
        if now - self._last_line >= self.LINE_INTERVAL_S:
            self._line(f"{self.done / self.total:.0%}" if self.total else self._amount())
            self._last_line = now

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._printed:
            self._line(f"done in {time.monotonic() - self._started:.0f} s")
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BENCH_SECTIONS", "deterministic_leaves", "int_at_least", "positive_int", "non_negative_int",
           "Progress"]
