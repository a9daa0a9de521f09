"""The public API is typed: py.typed ships, and ``mypy --strict`` passes on
the package (the configuration is in pyproject.toml)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

import rotortree

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_py_typed_marker_and_stub_ship():
    package = pathlib.Path(rotortree.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_rotortree_cffi.pyi").exists()


def test_every_native_name_is_exported():
    # __all__ spells the native names out for type checkers; keep them in step.
    assert set(rotortree._NATIVE_NAMES) <= set(rotortree.__all__)
    for name in rotortree.__all__:
        assert hasattr(rotortree, name), name


def test_mypy_strict_passes():
    pytest.importorskip("mypy", reason="mypy comes with the 'test' extra")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", "rotortree"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
