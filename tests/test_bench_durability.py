"""Smoke tests for the durable-tree benchmark: bench/durability.py (the thin
script) in a subprocess and rotortree.benchmarks.durability.main in process
(the way ``rotortree bench`` runs it) must write well-formed results."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from rotortree.benchmarks import durability

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "durability.py"
TINY = ["--leaves", "3000", "--rss-leaves", "5000", "--single-leaves", "300",
        "--durable-calls", "5", "--repeat", "1"]
KEYS = {"benchmark", "machine", "filesystem", "arity", "leaves", "rss_leaves",
        "single_leaves", "durable_calls", "repeat", "command", "insert", "insert_durable",
        "checkpoint", "recovery", "save_load", "rss", "problems"}


def check_markdown(text: str, leaves: int, rss_leaves: int) -> None:
    assert text.startswith("# Durable trees\n")
    assert "| measurement | result |" in text
    assert "insert_many, batch 1, WAL" in text and "insert_durable latency" in text
    assert f"checkpoint of {leaves:,} leaves" in text
    assert "recovery of" in text and "from the WAL only" in text
    assert "LeanIMT.load, verify off, mmap=True" in text
    for levels in (0, 1, 2):
        assert f"RSS growth opening {rss_leaves:,} leaves, mmap_levels={levels}" in text
    assert "## Problems" not in text


def check_json(data: dict, leaves: int, rss_leaves: int) -> None:
    assert KEYS <= data.keys()
    assert data["benchmark"] == "durability" and data["problems"] == []
    assert data["leaves"] == leaves and data["rss_leaves"] == rss_leaves
    assert data["insert"][0]["batch"] == 1
    assert all(row["wal_leaves_per_s"] > 0 for row in data["insert"])
    assert data["insert_durable"]["median_ms"] > 0
    assert {"checkpoint_verify_on_ms", "checkpoint_verify_off_ms", "wal_replay_ms",
            "wal_entries"} <= data["recovery"].keys()
    assert [(r["mmap_levels"], r["verify"]) for r in data["rss"]] == [
        (levels, verify) for levels in (0, 1, 2) for verify in (False, True)]
    if "ingest" in data:   # both acknowledge settings, alternated in one run
        for key in ("insert_durable_single", "insert_durable_threads"):
            assert sorted({row["ack"] for row in data["ingest"][key]}) == ["record", "wal"]


def test_script_quick(tmp_path):
    """The script as a developer runs it, from another directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (tmp_path / "durability.md").read_text()
    check_markdown(text, 20_000, 50_000)
    assert "# Durable trees" in proc.stdout
    data = json.loads((tmp_path / "durability.json").read_text())
    check_json(data, 20_000, 50_000)
    assert data["repeat"] == 2
    assert data["command"].startswith("python bench/durability.py --quick")


def test_main_in_process(tmp_path, capsys):
    out = tmp_path / "out"
    assert durability.main([*TINY, "--arity", "3", "--scratch", str(tmp_path),
                            "--out", str(out)]) == 0
    check_markdown((out / "durability.md").read_text(), 3000, 5000)
    data = json.loads((out / "durability.json").read_text())
    check_json(data, 3000, 5000)
    assert data["arity"] == 3 and data["repeat"] == 1
    assert [row["batch"] for row in data["insert"]] == [1, 100]  # 10,000 > --leaves
    assert data["insert"][0]["leaves"] == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # scratch cleaned up
    assert "# Durable trees" in capsys.readouterr().out


def test_bad_option(capsys):
    with pytest.raises(SystemExit) as exc:
        durability.main(["--repeat", "0"], prog="durability")
    assert exc.value.code == 2
    assert "--repeat must be at least 1" in capsys.readouterr().err
