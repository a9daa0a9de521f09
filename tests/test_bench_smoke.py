"""Smoke test for bench/scaling.py: a tiny --quick run in a subprocess must
write well-formed results, and every configuration must give the same root.
The Rust crate is left out (--no-harness): tests/test_bench_harness.py covers
its rows with a fake harness."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "scaling.py"
ROW_KEYS = {"label", "threads", "parallel_threshold", "samples_ms", "median_ms",
            "ratio_vs_sequential", "speedup_vs_sequential", "pool_per_call", "root"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    env = dict(os.environ)
    # The script imports rotortree; make the checkout importable in case the
    # package is not installed (the script also falls back to it).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("ROTORTREE_NUM_THREADS", None)
    command = [sys.executable, str(SCRIPT), "--quick", "--leaves", "20000",
               "--small-batch", "3000", "--base-leaves", "5000", "--repeat", "2",
               "--small-repeat", "3", "--arities", "2,4", "--gap-ms", "0",
               "--no-harness", "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_writes_markdown_and_json(run):
    out, proc = run
    text = (out / "scaling.md").read_text()
    assert "## Thread scaling" in text and "## Threshold impact" in text
    assert ("| configuration | median ms | min ms | IQR ms | leaves/s | speedup vs sequential "
            "[90%] |") in text
    assert "The Rust crate was not measured in this run" in text and "## Targets" in text
    # The 1-thread row used to repeat the sequential measurement under another name.
    assert "| 1 \u2020 |" not in text
    assert "# insert_many" in proc.stdout


def test_json_structure(run):
    out, _ = run
    data = json.loads((out / "scaling.json").read_text())
    for key in ("machine", "settings", "thread_scaling", "threshold_impact", "targets",
                "roots_identical", "command"):
        assert key in data, key
    settings = data["settings"]
    assert settings["leaves"] == 20000 and settings["small_batch"] == 3000
    assert settings["repeat"] == 2 and settings["small_repeat"] == 3

    assert [block["arity"] for block in data["thread_scaling"]] == [2, 4]
    cpus = settings["available_cpus"]
    for block in data["thread_scaling"]:
        rows = block["rows"]
        assert rows[0]["label"] == "sequential" and rows[0]["threads"] == 1
        assert [r["threads"] for r in rows[1:]] == list(range(2, cpus + 1)) + [cpus + 2]
        for row in rows:
            assert ROW_KEYS <= row.keys()
            assert len(row["samples_ms"]) == 2
            assert all(s > 0 for s in row["samples_ms"])
            stats = row["stats_ms"]
            assert stats["min"] <= stats["median"] and stats["iqr"] >= 0
            assert row["speedup"]["low"] <= row["speedup"]["median"] <= row["speedup"]["high"]
        assert block["rust_rows"] == []

    impact = data["threshold_impact"]
    for part, count in (("small", 3), ("large", 2)):
        rows = impact[part]["rows"]
        assert [r["label"] for r in rows][0] == "sequential"
        assert [r["parallel_threshold"] for r in rows[1:]] == [256, 1024, 4096, 16384]
        for row in rows:
            assert ROW_KEYS <= row.keys()
            assert len(row["samples_ms"]) == count
    assert impact["small"]["rows"][0]["final_size"] == 5000 + 4 * 3000

    # 1-thread pool, 2 threads (reused memory and fresh pages), 10,000-leaf batches.
    assert len(data["targets"]) == 4
    assert all({"target", "measured", "status"} <= t.keys() for t in data["targets"])
    # The 1-thread pool cannot be measured through the API: never "met".
    assert data["targets"][0]["status"] == "not measured"
    # The other sizes are not the targets' sizes: reported, not judged.
    assert all(t["status"] == "not measured" for t in data["targets"])
    ceiling = data["two_thread_ceiling"]
    if cpus >= 2:
        assert ceiling["low"] <= ceiling["median"] <= ceiling["high"]
        assert f"ceiling in the same run (two threads of independent cache-resident " \
               f"hashing): {ceiling['median']:.2f}x" in data["targets"][1]["measured"]
    else:
        assert ceiling is None


def test_roots_identical_across_configurations(run):
    out, _ = run
    data = json.loads((out / "scaling.json").read_text())
    assert data["roots_identical"] is True and data["problems"] == []
    for block in data["thread_scaling"]:
        roots = {row["root"] for row in block["rows"]}
        assert len(roots) == 1 and len(next(iter(roots))) == 64
    assert len({row["root"] for row in data["threshold_impact"]["large"]["rows"]}) == 1
    assert len({row["root"] for row in data["threshold_impact"]["small"]["rows"]}) == 1
    # Arity 4 with the same leaves: both tables must agree with each other.
    arity4 = next(b for b in data["thread_scaling"] if b["arity"] == 4)
    assert arity4["rows"][0]["root"] == data["threshold_impact"]["large"]["rows"][0]["root"]


def test_plot(run):
    out, proc = run
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in proc.stderr
        pytest.skip("matplotlib not installed: no PNG expected")
    png = out / "scaling.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
