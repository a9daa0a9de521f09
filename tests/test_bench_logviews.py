"""Smoke test for bench/logviews.py: a tiny run in a subprocess writes its
results, every row is timed, every target judged, every proof verified."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "logviews.py"


def test_tiny_run_writes_judged_results(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(SCRIPT), "--leaves", "3000", "--calls", "20",
               "--batch", "300", "--repeat", "2", "--out", str(tmp_path)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    payload = json.loads((tmp_path / "logviews.json").read_text())
    assert payload["problems"] == []
    assert payload["leaves"] == 3000 and payload["arity"] == 4
    assert {row["operation"] for row in payload["rows"]} >= {
        "LeanIMT.root_at(n)", "generate_proof(i, size=n)", "generate_consistency_proof(m, n)"}
    assert all(len(row["samples_s"]) == 2 and min(row["samples_s"]) > 0
               for row in payload["rows"])
    assert len(payload["targets"]) == 3
    assert {t["status"] for t in payload["targets"]} <= {"met", "not met", "inconclusive"}
    assert "load average" in (tmp_path / "logviews.md").read_text()
