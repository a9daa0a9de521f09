"""Smoke test for bench/proofs.py: a tiny run in a subprocess must write
well-formed results in which every generated proof verified."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "proofs.py"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("proofs")
    env = dict(os.environ)
    # The script imports rotortree; make the checkout importable in case the
    # package is not installed (the script also falls back to it).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # The figures are labelled with thread counts the script sets itself; a
    # configuration from the environment must not be what is restored.
    env.pop("ROTORTREE_NUM_THREADS", None)
    command = [sys.executable, str(SCRIPT), "--max-leaves", "20000", "--proof-leaves", "20000",
               "--proofs", "500", "--repeat", "2", "--snapshot-calls", "200",
               "--no-harness", "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_writes_markdown(run):
    out, proc = run
    text = (out / "proofs.md").read_text()
    for heading in ("# Snapshots and proofs", "## Snapshot cost vs tree size",
                    "## Proofs at 20,000 leaves", "## Targets"):
        assert heading in text, heading
    assert "| leaves | depth | snapshot | after insert (1 leaf) |" in text
    assert "| 1,000 | " in text and "| 10,000 | " in text and "| 100,000 | " not in text
    assert "| operation | threads | per proof | proofs/s [90%] | ours / crate [90%] | note |" \
        in text
    # The crate's figures come from this run or not at all: no remembered ranges.
    assert "1.3-2.3 µs" not in text and "2.8-3.4 µs" not in text
    assert "crate 0." not in text
    assert "INVALID PROOFS" not in text
    assert text.rstrip("\n") in proc.stdout


def test_json_structure(run):
    out, _ = run
    data = json.loads((out / "proofs.json").read_text())
    for key in ("benchmark", "machine", "settings", "snapshots", "proofs", "targets",
                "crates_measured", "all_proofs_valid", "problems", "speed_check_loop_ns"):
        assert key in data, key
    assert "reference_rust_us" not in data and data["crates_measured"] is False
    assert data["all_proofs_valid"] is True and data["problems"] == []
    assert data["repeat"] == 2
    assert data["settings"]["snapshot_sizes"] == [1000, 10000]

    for row in data["snapshots"]:
        for pattern in ("none", "insert", "insert_many"):
            figures = row[pattern]
            assert len(figures["round_medians_us"]) == 2
            assert 0 < figures["median_us"] <= figures["p99_us"]

    proofs = data["proofs"]
    assert proofs["leaves"] == 20000 and proofs["proofs"] == 500
    rows = proofs["rows"]
    assert [r["threads"] for r in rows] == [1, 2, 2, 1, 2, 1, 2, None, None]
    assert "indices in a list" in rows[2]["operation"]
    for row in rows:
        assert len(row["samples_s"]) == 2 and row["proofs_per_s"] > 0
        stats = row["per_proof_s"]
        assert stats["min"] <= stats["median"] and stats["iqr"] >= 0

    # No 1M-leaf tree: nothing may claim a target was met or missed.
    assert len(data["targets"]) == 3
    assert all(t["status"].startswith("not measured") for t in data["targets"])


def test_pool_configuration_restored(tmp_path):
    # The benchmark switches between 1 and 2 threads; a caller's setting
    # must survive it.
    import rotortree
    from rotortree.benchmarks import proofs

    before = rotortree.pool_info()["num_threads"]
    wanted = 3 if before != 3 else 2
    rotortree.configure(num_threads=wanted)
    try:
        payload, _ = proofs.run(max_leaves=1000, proof_leaves=1000, proofs=50, repeat=1,
                                snapshot_calls=20, single_calls=20, python_proofs=20,
                                show_progress=False)
        assert rotortree.pool_info()["num_threads"] == wanted
        assert payload["all_proofs_valid"] is True
    finally:
        rotortree.configure(num_threads=before)
