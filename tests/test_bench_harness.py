"""The benchmarks' Python side of the Rust harness, against a fake harness that
speaks the same protocol (tests/fake_rust_harness.py): the crate's rows join
the same repetitions, roots are checked, ratios are paired, and a missing
harness is reported instead of the crate's figures."""

from __future__ import annotations

import json
import pathlib

import pytest

import fake_rust_harness
import rotortree
from rotortree.benchmarks import growth, harness, kernels, operations, rules, scaling, suite


@pytest.fixture()
def fake_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_HARNESS_WRONG_ROOT", raising=False)
    monkeypatch.delenv("FAKE_HARNESS_WRONG_ANCHOR", raising=False)
    return fake_rust_harness.install(tmp_path / "harness")


def tiny_scaling_args() -> object:
    return scaling.parse_args(["--leaves", "3000", "--small-batch", "500", "--base-leaves",
                               "1000", "--repeat", "3", "--small-repeat", "2",
                               "--arities", "4", "--gap-ms", "0", "--threads", "2",
                               "--thresholds", "1024"])


def test_locate_needs_both_builds(tmp_path, fake_dir):
    assert harness.locate(fake_dir) is not None
    (fake_dir / "parallel" / "release" / "rotortree-harness").unlink()
    assert harness.locate(fake_dir) is None
    assert harness.locate(tmp_path / "nowhere") is None


def test_swapped_builds_are_refused(tmp_path, fake_dir):
    paths = harness.locate(fake_dir)
    with pytest.raises(harness.HarnessError, match="not the sequential build"):
        harness.Harness({"sequential": paths["parallel"], "parallel": paths["sequential"]})


def test_harness_errors_surface(fake_dir):
    with harness.open_harness(fake_dir) as h:
        with pytest.raises(harness.HarnessError, match="unknown command"):
            h.call("sequential", "warp", v=15)


def test_scaling_measures_the_crate_in_the_same_repetitions(fake_dir):
    with harness.open_harness(fake_dir) as h:
        payload, text = scaling.run(tiny_scaling_args(), "test", show_progress=False,
                                    harness=h)
    assert payload["problems"] == []
    block = payload["thread_scaling"][0]
    rust = block["rust_rows"]
    labels = {(r["label"], r["memory"]) for r in rust}
    assert labels == {(f"0.{v} {c}", "reused") for v in (15, 17)
                      for c in ("sequential", "rayon, 1 thread", "rayon, 2 threads")} | {
        ("0.15 sequential", "fresh pages"), ("0.15 rayon, 2 threads", "fresh pages")}
    ours = {r["threads"]: r for r in block["rows"]}
    for row in rust:
        assert len(row["samples_ms"]) == 3
        assert row["stats_ms"]["median"] == pytest.approx(1.0)
        pair = row["crate_over_python"]
        # Per pair: the fake's 1 ms over this package's time in that repetition.
        if row["memory"] == "reused":
            peer = ours[max(1, row["threads"])]
            expected = sorted(1.0 / s for s in peer["samples_ms"])[1]
            assert pair["median"] == pytest.approx(expected)
    assert "crate 0.15 sequential" in text and "Beside the crate" in text


def test_a_crate_root_that_differs_is_a_problem(fake_dir, monkeypatch):
    monkeypatch.setenv("FAKE_HARNESS_WRONG_ROOT", "1")
    with harness.open_harness(fake_dir) as h:
        payload, _ = scaling.run(tiny_scaling_args(), "test", show_progress=False, harness=h)
    assert any("0.15" in p and "compute_root" in p for p in payload["problems"])
    assert not any("0.17" in p for p in payload["problems"])


def test_anchor_roots_are_checked(fake_dir, monkeypatch):
    with harness.open_harness(fake_dir) as h:
        assert h.check_anchor_roots([2, 4]) == []
    monkeypatch.setenv("FAKE_HARNESS_WRONG_ANCHOR", "1")
    with harness.open_harness(fake_dir) as h:
        problems = h.check_anchor_roots([4])
    assert len(problems) == 2 and "published" in problems[0]


def test_operations_pair_single_calls_with_the_crate(fake_dir):
    with harness.open_harness(fake_dir) as h:
        payload, text = operations.run(2_000, 4, 100, 200, 2, show_progress=False, harness=h)
    assert payload["problems"] == []   # includes the 0.15 single-insert root check
    row = next(r for r in payload["rows"] if r["operation"] == "snapshot")
    assert set(row["crate"]) == {"0.15", "0.17"}
    assert len(row["crate"]["0.15"]["samples_s"]) == 2
    assert "crate 0.15 per call" in text


def test_growth_pairs_batches_and_checks_roots(fake_dir):
    with harness.open_harness(fake_dir) as h:
        payload, text = growth.run(workloads=[(1_000, 3_000)], repeat=2, show_progress=False,
                                   harness=h)
    assert payload["problems"] == []
    rows = {r["label"]: r for r in payload["workloads"][0]["rows"]}
    crate = rows["crate 0.15, sequential"]
    assert crate["batches_per_run"] == 3 and crate["runs"] == 2
    assert crate["peer"] == "rotortree, 1 thread"
    assert crate["crate_over_python"]["n"] == 6
    assert rows["rotortree, 2 threads"]["system_s"]["n"] == 6
    assert "system share of CPU" in text


def test_suite_report_with_the_crate(fake_dir, tmp_path):
    out = tmp_path / "out"
    status = suite.run_suite(out, quick=True, only=["operations", "growth"], leaves=2_000,
                             plots=False, progress=False, harness_dir=fake_dir)
    assert status == 0
    report = (out / "report.md").read_text()
    assert "Both versions reproduce their published roots" in report
    assert "| operation (arity 4) | rotortree | crate 0.15 |" in report
    readme = (out / "readme_performance.md").read_text()
    assert readme.startswith("## Performance") and "avx512f" in readme and "load" in readme
    results = json.loads((out / "results.json").read_text())
    assert results["crates"]["measured"] is True
    verdicts = {row["verdict"] for row in results["summary"] if row["ratio"]}
    assert verdicts <= {"rotortree faster", "**rotortree slower**", "no clear difference"}


def test_suite_says_when_the_crate_was_not_measured(tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "no-harness"
    empty.mkdir()
    assert suite.run_suite(out, quick=True, only=["operations"], leaves=2_000, plots=False,
                           progress=False, harness_dir=empty) == 0
    report = (out / "report.md").read_text()
    assert "not measured: the harness is not built" in report
    results = json.loads((out / "results.json").read_text())
    assert results["crates"]["measured"] is False
    assert all(not row["crate"] for row in results["sections"]["operations"]["rows"])


def test_build_script_writes_path_overrides_outside_the_repository(tmp_path):
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "tools" / "rust_harness" / \
        "build.py"
    spec = importlib.util.spec_from_file_location("harness_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.cargo_config({"0.15": tmp_path / "a", "0.17": tmp_path / "b"},
                                 tmp_path / "registry")
    assert "[patch.crates-io]" in config
    assert f'rotortree-0-15 = {{ package = "rotortree", path = "{tmp_path / "a"}" }}' in config
    assert f'directory = "{tmp_path / "registry"}"' in config and "offline = true" in config
    online = module.cargo_config({}, None)
    assert "patch" not in online and "offline" not in online


def test_publish_replaces_only_the_performance_section():
    import importlib.util

    path = pathlib.Path(__file__).resolve().parent.parent / "tools" / "publish_bench.py"
    spec = importlib.util.spec_from_file_location("publish_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = "# t\n\n## Errors\n\nE\n\n## Performance\n\nold\n\n### Benchmarks\n\nold\n\n## Next\n\nN\n"
    out = module.splice(readme, "## Performance\n\nnew\n")
    assert out == "# t\n\n## Errors\n\nE\n\n## Performance\n\nnew\n\n## Next\n\nN\n"
    with pytest.raises(ValueError):
        module.splice("# t\n", "## Performance\n")


def test_kernels_add_rust_blake3_bounds_with_the_avx2_build(tmp_path):
    from rotortree.benchmarks import kernels

    directory = fake_rust_harness.install(tmp_path / "harness", avx2=True)
    assert set(harness.locate(directory)) == {"sequential", "parallel", "avx2"}
    with harness.open_harness(directory) as h:
        assert h.has_avx2_bound
        payload, text = kernels.run(1, 64, show_progress=False, kernels=["portable"], harness=h)
    bounds = payload["rust_bounds_compressions_per_s"]
    # The fake hashes the 1 MiB buffer in 1 ms: its exact compressions per ms.
    assert bounds["rust_blake3_avx2"]["median"] == pytest.approx(
        kernels.blake3_compressions(1 << 20) / 1e-3)
    assert all("ratio_to_avx2_bound" in row for row in payload["hash"])
    assert "the AVX2 bound" in text and "vs AVX2 bound [90%]" in text


def test_rules_section_pairs_rounds_with_the_crate_017(fake_dir):
    with harness.open_harness(fake_dir) as h:
        payload, text = rules.run(repeat=2, leaves=3_000, show_progress=False, harness=h)
    assert payload["problems"] == []   # the crate 0.17's roots are our leanimt roots
    assert [row["arity"] for row in payload["rows"]] == [2, 4, 8, 16]
    for row in payload["rows"]:
        assert row["crate_s"]["n"] == row["ours_s"]["n"] == 2
        assert row["speedup"]["n"] == 2
    assert len(payload["targets"]) == 4 and "load average" in text
    assert all(t["status"] != "not measured" or "kernel" in t["measured"]
               for t in payload["targets"])


def test_rules_section_reports_a_wrong_crate_root(fake_dir, monkeypatch):
    monkeypatch.setenv("FAKE_HARNESS_WRONG_ROOT", "17")
    with harness.open_harness(fake_dir) as h:
        payload, text = rules.run(repeat=1, leaves=1_000, show_progress=False, harness=h)
    assert len(payload["problems"]) == 4 and "PROBLEM: arity 2" in text


def test_rules_section_without_the_crate():
    payload, text = rules.run(repeat=1, leaves=1_000, show_progress=False, harness=None)
    assert {t["status"] for t in payload["targets"]} == {"not measured"}
    assert "not run" in text


def test_rules_section_says_where_the_target_asks_for_more_than_the_hash(fake_dir, monkeypatch):
    # A constant bound rate makes every ratio exact: the fake crate takes
    # SAMPLE_NS per build, and the bound is set so that hashing the arity-2
    # tree takes 3/4 of that (2x unreachable) while the arity-16 tree, with
    # about half the compressions, takes well under half (2x reachable).
    crate_s = fake_rust_harness.SAMPLE_NS / 1e9
    leaves = 3_000
    rate = kernels.tree_compressions(leaves, 2, rules.PARENT_PREFIX) / (0.75 * crate_s)
    monkeypatch.setattr(rules, "bound_sample", lambda buffer, threads: rate)
    monkeypatch.setattr(rules, "TARGET_SPEEDUP", {rotortree.pool_info()["simd"]: 2.0})
    with harness.open_harness(fake_dir) as h:
        payload, text = rules.run(repeat=2, leaves=leaves, show_progress=False, harness=h)
    rows = {row["arity"]: row for row in payload["rows"]}
    assert rows[2]["compressions"] == leaves - 1     # one block per untagged binary parent
    assert rows[16]["compressions"] == kernels.tree_compressions(leaves, 16, 0)
    assert rows[2]["speedup_at_bound"]["median"] == pytest.approx(1 / 0.75)
    status = {item["target"].split(":")[0]: item["status"] for item in payload["reachable"]}
    assert status["arity 2"] == "not met" and status["arity 16"] == "met"
    assert "Arity 2: 1/2 of the crate's time" in text
    assert "faster than the hash itself" in text and "Arity 16: 1/2" not in text
