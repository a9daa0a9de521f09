from __future__ import annotations

import json
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import rotortree  # noqa: E402
from rotortree import config as rt_config  # noqa: E402

DATA = pathlib.Path(__file__).resolve().parent / "data"
VECTORS = json.loads((DATA / "rotortree-0.15.json").read_text())


def vectors():
    return VECTORS["vectors"]


def kernels():
    return rt_config.available_kernels()


@pytest.fixture(autouse=True)
def restore_configuration():
    """Each test starts from, and leaves behind, the configuration in force
    at session start, so a test that changes threads or kernels cannot leak
    its setting into the next."""
    before = rotortree.pool_info()
    yield
    rotortree.configure(
        num_threads=before["num_threads"],
        parallel_threshold=before["parallel_threshold"],
        par_chunk_size=before["par_chunk_size"],
        simd=before["simd"],
    )
