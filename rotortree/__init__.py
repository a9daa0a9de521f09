"""rotortree: an n-ary Lean Incremental Merkle Tree over BLAKE3 with a C core.

Roots are bit-identical to the Rust crate ``rotortree`` 0.15.
"""

from __future__ import annotations

import atexit as _atexit

from . import config as _config
from ._native import HASH_LEN, lib as _lib
from .config import available_cpus, configure, pool_info, pool_stats
from .errors import (
    ArgumentTypeError,
    EmptyBatchError,
    EmptyTreeError,
    InvalidArgumentError,
    InvalidLeafError,
    MaxDepthExceededError,
    NodeIndexError,
    OutOfMemoryError,
    PoolBusyError,
    RotorTreeError,
    ThreadError,
    UnsupportedKernelError,
)
from .tree import LeanIMT, compute_root

__version__ = "0.1.0"

_config.apply_environment()
# Workers are joined at exit so the process does not end while they run C
# code; if another thread is still hashing, the OS reaps them instead.
_atexit.register(_lib.rt_pool_shutdown)

__all__ = [
    "HASH_LEN",
    "LeanIMT",
    "compute_root",
    "configure",
    "pool_info",
    "pool_stats",
    "available_cpus",
    "RotorTreeError",
    "ArgumentTypeError",
    "EmptyBatchError",
    "EmptyTreeError",
    "InvalidArgumentError",
    "InvalidLeafError",
    "MaxDepthExceededError",
    "NodeIndexError",
    "OutOfMemoryError",
    "PoolBusyError",
    "ThreadError",
    "UnsupportedKernelError",
]
