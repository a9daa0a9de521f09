"""The public API is typed: py.typed ships, ``mypy --strict`` passes on
the package (the configuration is in pyproject.toml), and the C boundary is
typed by a stub generated from the public header."""

from __future__ import annotations

import importlib.util
import pathlib
import re
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


# -- the C boundary ------------------------------------------------------------------


def _stub_generator():
    spec = importlib.util.spec_from_file_location("gen_cffi_stub",
                                                  ROOT / "tools" / "gen_cffi_stub.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cffi_stub_is_generated_from_the_header():
    """The committed stub is what the generator makes of csrc/rotortree.h: a
    header change that is not regenerated fails here."""
    generator = _stub_generator()
    stub = (ROOT / "rotortree" / "_rotortree_cffi.pyi").read_text()
    assert generator.render((ROOT / "csrc" / "rotortree.h").read_text()) == stub


def test_a_header_change_changes_the_stub():
    generator = _stub_generator()
    header = (ROOT / "csrc" / "rotortree.h").read_text()
    changed = header.replace("/* CFFI_END */",
                             "#define RT_NEW_LIMIT 7u\n"
                             "int rt_new_call(const rt_tree *tree, uint64_t n, size_t *out);\n"
                             "/* CFFI_END */")
    text = generator.render(changed)
    assert text != generator.render(header)
    assert "    RT_NEW_LIMIT: int\n" in text
    assert "    def rt_new_call(self, tree: Any, n: int, out: Any) -> int: ...\n" in text


def test_cffi_stub_declares_exactly_what_the_c_library_has():
    from rotortree._native import lib

    stub = (ROOT / "rotortree" / "_rotortree_cffi.pyi").read_text()
    declared = set(re.findall(r"def (rt_\w+)\(", stub)) | set(re.findall(r"    (RT_\w+): int", stub))
    assert declared == {name for name in dir(lib) if name.lower().startswith("rt_")}


# -- typed public API ----------------------------------------------------------------

_API_USE = """
import rotortree
from rotortree._native import lib

def use(tree: rotortree.RotorTree, imt: rotortree.LeanIMT) -> None:
    reveal_type(tree.snapshot())
    reveal_type(tree.generate_proof(0))
    reveal_type(tree.generate_proofs([0]))
    reveal_type(tree.generate_consistency_proof(1, b""))
    reveal_type(lib.rt_tree_insert_many)
    rotortree.configure(2)
    rotortree.LeanIMT.load("x", False)
    lib.rt_tree_level_len(imt, 0)
"""


def test_public_api_and_c_calls_are_typed(tmp_path):
    pytest.importorskip("mypy", reason="mypy comes with the 'test' extra")
    program = tmp_path / "use_api.py"
    program.write_text(_API_USE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(program)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    out = result.stdout
    for name in ("rotortree.snapshot.Snapshot", "rotortree.proofs.InclusionProof",
                 "rotortree.snapshot.ProofBatch", "rotortree.proofs.ConsistencyProof"):
        assert f'Revealed type is "{name}"' in out, out
    assert "def (tree: Any, leaves: Any, count: int, root_out: Any) -> int" in out, out
    lines = {int(line.split(":")[1]): line for line in out.splitlines() if ": error:" in line}
    # Keyword-only flags and settings, and a C call with an argument missing.
    assert "Too many positional arguments" in lines.get(11, ""), out
    assert "Too many positional arguments" in lines.get(12, ""), out
    assert 'Missing positional argument "out"' in lines.get(13, ""), out


def test_packaging_lists_every_subpackage():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library "
                                                   "from Python 3.11")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {".".join(path.parent.relative_to(ROOT).parts)
             for path in (ROOT / "rotortree").rglob("__init__.py")}
    assert listed == found
