"""Helpers for the scripts in bench/: the package's own (rotortree.benchmarks)
plus the default output directory, bench/results."""

from __future__ import annotations

import pathlib
import sys
from typing import Dict

HERE = pathlib.Path(__file__).resolve().parent
try:
    import rotortree  # noqa: F401
except ImportError:  # run from a checkout whose package is built in place
    sys.path.insert(0, str(HERE.parent))

from rotortree.benchmarks._common import (  # noqa: E402,F401
    machine,
    median,
    time_runs,
    write_results_to,
)

RESULTS = HERE / "results"


def write_results(name: str, payload: Dict[str, object], markdown: str) -> pathlib.Path:
    return write_results_to(RESULTS, name, payload, markdown)
