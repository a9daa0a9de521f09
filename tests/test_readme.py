"""The README's examples and commands, checked as a reader would use them:
every Python block runs as written, in order, in one fresh interpreter (in
a temporary directory, so the files they create go nowhere), and leaves no
durable tree open; the fast test command it shows deselects the slow
tests while the full command keeps them."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

# Runs the blocks as one session, then fails if a durable tree is still open.
_RUNNER = textwrap.dedent("""
    import gc, json, sys
    blocks = json.loads(sys.stdin.read())
    namespace = {"__name__": "__readme__"}
    for number, (line, code) in enumerate(blocks):
        try:
            exec(compile(code, f"README.md block {number} (line {line})", "exec"), namespace)
        except BaseException:
            print(f"README.md block {number}, starting at line {line}, failed:", file=sys.stderr)
            raise
    del namespace
    gc.collect()
    from rotortree import RotorTree
    left_open = [t.path for t in gc.get_objects()
                 if isinstance(t, RotorTree) and not t.closed]
    assert not left_open, f"the README leaves durable trees open: {left_open}"
""")


def python_blocks() -> list:
    return [(README.count("\n", 0, match.start()) + 2, match.group(1))
            for match in _BLOCK.finditer(README)]


def test_every_python_block_in_the_readme_runs_as_written(tmp_path):
    import json

    blocks = python_blocks()
    assert len(blocks) >= 5
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(blocks),
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_the_readme_shows_the_fast_and_the_full_test_commands():
    assert "python -m pytest -m \"not slow\"" in README
    assert re.search(r"pip install -e '\.\[test\]' && python -m pytest\s*$", README,
                     re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest\n" in ci and "not slow" not in ci


def _collected(*options: str) -> set:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *options,
                           "tests/test_c_core.py", "tests/test_durable.py",
                           "tests/test_hardening_soak.py", "tests/test_cross_aarch64.py"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("[")[0] for line in proc.stdout.splitlines() if "::" in line}


def test_slow_tests_are_marked_and_the_fast_run_deselects_them():
    slow = {"tests/test_c_core.py::test_core_driver_valgrind_memcheck",
            "tests/test_c_core.py::test_core_driver_asan_ubsan",
            "tests/test_durable.py::test_sigkill_never_loses_acknowledged_inserts",
            "tests/test_hardening_soak.py::test_soak_everything_at_once",
            "tests/test_cross_aarch64.py::test_neon_drivers_under_emulation"}
    everything = _collected("--strict-markers")
    fast = _collected("--strict-markers", "-m", "not slow")
    assert slow <= everything
    assert not slow & fast
    assert "tests/test_durable.py::test_save_load_round_trip" in fast


def test_the_profiling_walkthrough_uses_the_public_api_only():
    """docs/profiling.md is copied by readers: its code must not reach into
    private modules, and its Python must be valid as printed."""
    text = (ROOT / "docs" / "profiling.md").read_text()
    assert not re.search(r"rotortree\._\w", text)
    scripts = re.findall(r"python - <<'EOF'\n(.*?)^EOF$", text, re.MULTILINE | re.DOTALL)
    assert scripts
    for script in scripts:
        compile(script, "docs/profiling.md", "exec")
        for name in re.findall(r"\brotortree\.(\w+)", script):
            assert not name.startswith("_"), name
            assert name in __import__("rotortree").__all__, name
