"""rotortree: an n-ary Lean Incremental Merkle Tree over BLAKE3 with a C core.

Roots and proofs are bit-identical to the Rust crate ``rotortree`` 0.15 (the
default hash rule), to the crate from 0.16 on (``rule="leanimt"``), or to
RFC 6962 / RFC 9162 Merkle trees (``rule="rfc6962"``); see
:mod:`rotortree.rules`.

Proof verification (:mod:`rotortree.proofs`) is pure Python on top of the
``blake3`` package, so a light client can verify proofs even where the
compiled core is unavailable: then only the proof classes and errors are
importable, and touching a tree raises an ImportError that says why.
"""

from __future__ import annotations

import atexit as _atexit
import sys as _sys
from typing import Any

from .errors import (
    ArgumentTypeError,
    ClosedTreeError,
    CorruptionError,
    DuplicateLeafError,
    DurabilityError,
    EmptyBatchError,
    EmptyTreeError,
    InvalidArgumentError,
    InvalidLeafError,
    InvalidProofError,
    LeafSourceError,
    DistributedBuildError,
    MaxDepthExceededError,
    NoLeafIndexError,
    NodeIndexError,
    NotATreeError,
    OutOfMemoryError,
    PoolBusyError,
    ReadOnlyTreeError,
    RotorTreeError,
    RotorTreeWarning,
    RuleMismatchError,
    StorageMismatchError,
    ThreadError,
    TreeLockedError,
    TreeNotFoundError,
    UnsupportedKernelError,
)
from .proofs import ConsistencyLevel, ConsistencyProof, InclusionProof, ProofLevel
# rotortree.rfc6962.leaf_hash without a separate import; light clients too
# (hashlib stands in for the C core).
from . import rfc6962  # noqa: E402,F401

__version__ = "0.1.0"
HASH_LEN = 32


def _run_as_command() -> bool:
    """True when this interpreter was started as the ``rotortree`` command
    (``python -m rotortree`` or the console script). The package is imported
    before the command's own code runs, so only the command line can tell;
    the command then reports ignored settings as its one error line instead
    of a warning printed ahead of it."""
    import os

    argv = getattr(_sys, "argv", None) or [""]
    if argv[0] == "-m":  # runpy sets the real argv[0] only after importing the package
        orig_argv = getattr(_sys, "orig_argv", None) or []  # Python 3.10+
        if len(orig_argv) < len(argv):
            return False
        module = orig_argv[len(orig_argv) - len(argv)]  # "rotortree", or "-mrotortree"
        if module.startswith("-m"):
            module = module[2:]
        return module in ("rotortree", "rotortree.__main__")
    # The console script pip writes (bin/rotortree, Scripts/rotortree-script.py)
    # imports rotortree.__main__ as its first statement.
    script = getattr(_sys.modules.get("__main__"), "__file__", None)
    return script == argv[0] and os.path.splitext(os.path.basename(script))[0] in (
        "rotortree", "rotortree-script")


_NATIVE_NAMES = (
    "LeanIMT", "Snapshot", "ProofBatch", "compute_root", "verify_proofs",
    "configure", "pool_info", "pool_stats", "memory_stats", "available_cpus",
    "RotorTree", "FlushPolicy", "CheckpointPolicy", "DurabilityToken",
)

def _native_missing(error: ImportError) -> str:
    """Why the compiled core is missing, and what to do about it."""
    import importlib.machinery
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    note = os.path.join(here, "_build_failure.txt")  # written by setup.py
    if os.path.exists(note):
        with open(note, encoding="utf-8", errors="replace") as f:
            reason = f.read().strip()
        # --no-cache-dir: pip may have cached the wheel built without it.
        return (f"it was not built when rotortree was installed ({reason}); install gcc or "
                f"clang and the Python headers, then reinstall with "
                f"'pip install --force-reinstall --no-cache-dir'")
    checkout = os.path.dirname(here)
    built = any(name.startswith("_rotortree_cffi") and name.endswith((".so", ".pyd"))
                for name in os.listdir(here))
    if os.path.exists(os.path.join(checkout, "build_ffi.py")) and not built:
        # A non-editable install puts the compiled module in site-packages;
        # a source checkout that comes first on sys.path (it is the current
        # directory) hides that copy behind this one, which has none.
        others = [p for p in _sys.path
                  if os.path.realpath(p or os.curdir) != os.path.realpath(checkout)]
        installed = importlib.machinery.PathFinder.find_spec("rotortree", others)
        if installed is not None and installed.origin:
            what = (f"the installed copy in {os.path.dirname(installed.origin)} is hidden by "
                    f"it; run from another directory")
        else:
            what = "no installed copy either; 'pip install .' and run from another directory"
        return (f"rotortree was imported from the source checkout {here}, which has no "
                f"compiled core ({what}, or build the checkout in place with "
                f"'pip install -e .')")
    return f"it failed to import ({error})"


try:
    from ._native import lib as _lib
except ImportError as _error:  # the compiled core is missing: light client mode
    _native_import_error: Any = _error
    _native_reason = _native_missing(_error)
else:
    _native_import_error = None
    _native_reason = ""
    from . import config as _config
    from .config import available_cpus, configure, memory_stats, pool_info, pool_stats
    from .durable import CheckpointPolicy, DurabilityToken, FlushPolicy, RotorTree
    from .snapshot import ProofBatch, Snapshot, verify_proofs
    from .tree import LeanIMT, compute_root

    # A bad setting is ignored with a warning, never an ImportError: that
    # would also take away pure-Python proof verification.
    _config.apply_environment(warn=not _run_as_command())
    # Workers are joined at exit so the process does not end while they run
    # C code; if another thread is still hashing, the OS reaps them instead.
    _atexit.register(_lib.rt_pool_shutdown)


def __getattr__(name: str) -> Any:
    if name in _NATIVE_NAMES and _native_import_error is not None:
        raise ImportError(
            f"rotortree.{name} needs the compiled C core: {_native_reason}. Only proof "
            f"verification (rotortree.InclusionProof, ConsistencyProof) is available"
        )
    raise AttributeError(f"module 'rotortree' has no attribute {name!r}")


# _NATIVE_NAMES spelled out: type checkers read only literal names here.
__all__ = [
    "HASH_LEN",
    "LeanIMT", "Snapshot", "ProofBatch", "compute_root", "verify_proofs",
    "configure", "pool_info", "pool_stats", "memory_stats", "available_cpus",
    "RotorTree", "FlushPolicy", "CheckpointPolicy", "DurabilityToken",
    "InclusionProof",
    "ConsistencyProof",
    "ProofLevel",
    "ConsistencyLevel",
    "RotorTreeError",
    "RotorTreeWarning",
    "ArgumentTypeError",
    "EmptyBatchError",
    "EmptyTreeError",
    "InvalidArgumentError",
    "InvalidLeafError",
    "InvalidProofError",
    "LeafSourceError",
    "DistributedBuildError",
    "MaxDepthExceededError",
    "NodeIndexError",
    "DuplicateLeafError",
    "NoLeafIndexError",
    "OutOfMemoryError",
    "PoolBusyError",
    "ThreadError",
    "UnsupportedKernelError",
    "CorruptionError",
    "TreeLockedError",
    "DurabilityError",
    "ClosedTreeError",
    "StorageMismatchError",
    "RuleMismatchError",
    "ReadOnlyTreeError",
    "TreeNotFoundError",
    "NotATreeError",
]
