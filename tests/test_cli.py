"""The ``rotortree`` command line: every subcommand, its errors and exit codes.

Most tests call ``rotortree.cli.main`` in-process (fast); a few run the real
command in a subprocess to check what a user sees end to end.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import rotortree
from rotortree import cli
from rotortree._leaf_file import LeafFile, file_root, segment_leaves
from rotortree._util import deterministic_leaves

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMMANDS = ["demo", "bench", "tune", "config", "root", "prove", "verify"]


def run_cli(*argv: str, stdin: bytes = b"", env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real command, as a user runs it (``python -m rotortree``)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                           full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "rotortree", *argv], input=stdin,
                          capture_output=True, env=full_env, timeout=timeout, cwd=ROOT)


def one_error_line(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("rotortree"), stderr
    assert "error" in lines[0]
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def leaf_file(tmp_path):
    def make(count: int, name: str = "leaves.bin") -> pathlib.Path:
        path = tmp_path / name
        path.write_bytes(deterministic_leaves(count, b"cli test"))
        return path
    return make


# -- help, version, usage errors -------------------------------------------------


@pytest.mark.parametrize("command", [[]] + [[c] for c in COMMANDS])
def test_help_everywhere(command, capsys):
    assert cli.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rotortree")
    if command:
        assert command[0] in out.splitlines()[0]


def test_top_level_help_lists_every_command(capsys):
    cli.main(["--help"])
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


def test_bench_help_lists_every_section(capsys):
    from rotortree.benchmarks import suite
    cli.main(["bench", "--help"])
    # Listed with ", " so that help wraps between names, never inside one.
    out = " ".join(capsys.readouterr().out.split())
    assert ", ".join(suite.SECTIONS) in out


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rotortree {rotortree.__version__}"


def test_no_command_is_an_error(capsys):
    assert cli.main([]) == 2
    one_error_line(capsys.readouterr().err, "choose a command")


@pytest.mark.parametrize("argv,fragment", [
    (["frobnicate"], "invalid choice"),
    (["demo", "--leaves", "0"], "--leaves"),
    (["demo", "--leaves", "many"], "--leaves"),
    (["demo", "--arity", "1"], "arity must be 2..255"),
    (["demo", "--arity", "256"], "arity must be 2..255"),
    (["root"], "FILE"),
    (["root", "x", "--bogus"], "unrecognized arguments"),
    (["verify", "p.json", "--root", "zz"], "64 hex digits"),
    (["verify", "p.json", "--root", "00" * 32], "--root needs --size"),
    (["verify", "p.json", "--size", "5"], "--size needs --root"),
    (["verify", "p.json", "--old-root", "00" * 32, "--root", "00" * 32, "--size", "3"],
     "--old-root needs --old-size"),
    (["verify", "p.json", "--root", "00" * 32, "--size", "0"], "--size"),
    (["config", "--json", "--path"], "not allowed with"),
])
def test_usage_errors_are_one_line_exit_2(argv, fragment, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    one_error_line(captured.err, fragment)
    assert captured.out == ""


# -- demo --------------------------------------------------------------------------


def test_demo_small(capsys):
    assert cli.main(["demo", "--leaves", "5000", "--repeat", "1", "--proofs", "50"]) == 0
    out = capsys.readouterr().out
    expected = rotortree.compute_root(deterministic_leaves(5000), 4).hex()
    assert f"root          {expected}" in out
    assert "compute_root  agrees" in out
    assert "50 generated" in out and "all valid" in out and "INVALID" not in out
    assert "consistency   2,500 -> 5,000 leaves: valid" in out
    assert "leaves/s" in out and "SIMD kernel" in out


def test_demo_threads_and_arity(capsys):
    assert cli.main(["demo", "--leaves", "3000", "--arity", "3", "--threads", "1",
                     "--repeat", "1", "--proofs", "0"]) == 0
    out = capsys.readouterr().out
    assert "1 thread(s)" in out and "arity 3" in out
    assert rotortree.compute_root(deterministic_leaves(3000), 3).hex() in out


def test_demo_one_leaf(capsys):
    assert cli.main(["demo", "--leaves", "1", "--repeat", "1", "--proofs", "5"]) == 0
    assert deterministic_leaves(1).hex() in capsys.readouterr().out


def test_demo_end_to_end():
    proc = run_cli("demo", "--leaves", "20000", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert b"compute_root  agrees" in proc.stdout


# -- root ---------------------------------------------------------------------------


@pytest.mark.parametrize("arity", [2, 3, 4, 16])
def test_file_root_combines_segments(arity):
    """Every size up to a few segments, with tiny segments, against compute_root."""
    data = deterministic_leaves(300, b"segments")
    per_segment = segment_leaves(arity, 32 * 20)
    for count in list(range(1, 40)) + [per_segment, per_segment + 1, 299, 300]:
        source = _BytesSource(data[: 32 * count])
        root, leaves = file_root(source, arity, segment_bytes=32 * 20)
        assert leaves == count
        assert root == rotortree.compute_root(data[: 32 * count], arity), (arity, count)


class _BytesSource:
    """A stand-in for LeafFile over bytes already in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def pieces(self, piece_bytes, split_at=None):
        for start in range(0, len(self.data), piece_bytes):
            yield memoryview(self.data)[start:start + piece_bytes]


def test_segment_leaves_is_a_power_of_the_arity():
    assert segment_leaves(4, 64 << 20) == 4 ** 10
    assert segment_leaves(16, 64 << 20) == 16 ** 5
    assert segment_leaves(3, 64 << 20) == 3 ** 13
    assert segment_leaves(2, 1) == 2  # never below one group


@pytest.mark.parametrize("arity,count", [(4, 1), (4, 16384), (4, 16385), (4, 100_003),
                                         (2, 70_000), (16, 70_000), (3, 50_000)])
def test_root_of_file(arity, count, leaf_file, capsys):
    path = leaf_file(count)
    assert cli.main(["root", str(path), "--arity", str(arity), "--segment-mib", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == rotortree.compute_root(path.read_bytes(), arity).hex()
    assert f"{count:,} leaves" in captured.err


def test_root_quiet_prints_only_the_root(leaf_file, capsys):
    path = leaf_file(1000)
    assert cli.main(["root", str(path), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == rotortree.compute_root(path.read_bytes(), 4).hex() + "\n"
    assert captured.err == ""


def test_leaf_file_streams_pieces_with_a_split(leaf_file):
    path = leaf_file(100)
    with open(path, "rb") as stream:
        expected = stream.read()
    with LeafFile(str(path)) as source:
        assert source.leaves == 100
        pieces = [bytes(p) for p in source.pieces(32 * 30, split_at=32 * 45)]
    assert [len(p) // 32 for p in pieces] == [30, 15, 30, 25]
    assert b"".join(pieces) == expected


def test_root_streams_a_file_that_cannot_be_mapped(leaf_file, monkeypatch, capsys):
    """No address space for the mapping (e.g. ulimit -v): read it instead."""
    import mmap

    def refuse(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    path = leaf_file(70_001)
    monkeypatch.setattr(mmap, "mmap", refuse)
    assert cli.main(["root", str(path), "--segment-mib", "1", "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == rotortree.compute_root(path.read_bytes(), 4).hex()


@pytest.mark.parametrize("content,fragment", [
    (b"", "is empty: no leaves"),
    (b"x" * 100, "100 bytes is not a whole number of 32-byte leaves (3 leaves and 4 bytes over)"),
])
def test_root_rejects_bad_files(tmp_path, content, fragment, capsys):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    assert cli.main(["root", str(path)]) == 2
    one_error_line(capsys.readouterr().err, fragment, str(path))


def test_root_missing_file_and_directory(tmp_path, capsys):
    assert cli.main(["root", str(tmp_path / "missing.bin")]) == 2
    one_error_line(capsys.readouterr().err, "No such file or directory", "missing.bin")
    assert cli.main(["root", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, "is a directory")


def test_root_from_stdin_end_to_end():
    data = deterministic_leaves(40_000, b"stdin")
    proc = run_cli("root", "-", "--arity", "8", "--segment-mib", "1", stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().strip() == rotortree.compute_root(data, 8).hex()
    bad = run_cli("root", "-", stdin=data[:-1])
    assert bad.returncode == 2
    one_error_line(bad.stderr.decode(), "stdin", "not a whole number")
    empty = run_cli("root", "-", stdin=b"")
    assert empty.returncode == 2
    one_error_line(empty.stderr.decode(), "stdin is empty")


# -- prove and verify --------------------------------------------------------------------


def test_prove_and_verify_inclusion(leaf_file, tmp_path, capsys):
    path = leaf_file(10_000)
    root = rotortree.compute_root(path.read_bytes(), 4).hex()
    proofs = tmp_path / "proofs.json"
    assert cli.main(["prove", str(path), "--index", "0,17", "--index", "9999",
                     "--out", str(proofs), "--segment-mib", "1"]) == 0
    documents = json.loads(proofs.read_text())
    assert [d["leaf_index"] for d in documents] == [0, 17, 9999]
    assert all(d["root"] == root and d["tree_size"] == 10_000 for d in documents)
    capsys.readouterr()

    assert cli.main(["verify", str(proofs)]) == 0
    out = capsys.readouterr().out
    assert out.count(": valid: inclusion of leaf") == 3

    assert cli.main(["verify", str(proofs), "--root", root, "--size", "10000", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["verify", str(proofs), "--root", "00" * 32, "--size", "10000"]) == 1
    assert capsys.readouterr().out.count("INVALID") == 3
    # The right root at another size is not the tree the proofs are about.
    assert cli.main(["verify", str(proofs), "--root", root, "--size", "9999"]) == 1
    assert capsys.readouterr().out.count("INVALID") == 3


def test_prove_single_index_prints_one_object(leaf_file, capsys):
    path = leaf_file(100)
    assert cli.main(["prove", str(path), "--index", "42", "--arity", "3"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document, dict) and document["leaf_index"] == 42
    expected = rotortree.LeanIMT(3)
    expected.insert_many(path.read_bytes())
    assert document == expected.generate_proof(42).to_dict()


def test_tampered_proof_is_invalid_exit_1(leaf_file, tmp_path, capsys):
    path = leaf_file(1000)
    assert cli.main(["prove", str(path), "--index", "7"]) == 0
    document = json.loads(capsys.readouterr().out)
    document["leaf_index"] = 8
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    assert cli.main(["verify", str(tampered)]) == 1
    captured = capsys.readouterr()
    assert "INVALID" in captured.out and "1 of 1 proof(s) invalid" in captured.err


def test_prove_and_verify_consistency(leaf_file, tmp_path, capsys):
    path = leaf_file(5000)
    data = path.read_bytes()
    old_root = rotortree.compute_root(data[: 32 * 1234], 4).hex()
    new_root = rotortree.compute_root(data, 4).hex()
    assert cli.main(["prove", str(path), "--old-size", "1234", "--segment-mib", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["old_size"], document["new_size"]) == (1234, 5000)
    assert (document["old_root"], document["new_root"]) == (old_root, new_root)
    proof = tmp_path / "consistency.json"
    proof.write_text(json.dumps(document))
    assert cli.main(["verify", str(proof), "--old-root", old_root, "--old-size", "1234",
                     "--root", new_root, "--size", "5000"]) == 0
    assert cli.main(["verify", str(proof), "--old-root", new_root, "--old-size", "1234"]) == 1
    assert cli.main(["verify", str(proof), "--old-root", old_root, "--old-size", "1233"]) == 1
    assert cli.main(["verify", str(proof), "--root", new_root, "--size", "5001"]) == 1


def test_prove_and_verify_through_a_pipe(leaf_file):
    path = leaf_file(3000)
    prove = run_cli("prove", str(path), "--index", "5", "--index", "2999")
    assert prove.returncode == 0, prove.stderr
    verify = run_cli("verify", "-", stdin=prove.stdout)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.count(b": valid:") == 2


@pytest.mark.parametrize("argv,fragment", [
    (["--index", "100"], "--index 100 out of range"),
    (["--index", "-1"], "out of range"),
    (["--index", "x"], "not an integer"),
    ([], "nothing to prove"),
    (["--old-size", "101"], "--old-size 101 out of range"),
])
def test_prove_errors(leaf_file, argv, fragment, capsys):
    path = leaf_file(100)
    assert cli.main(["prove", str(path), *argv]) == 2
    one_error_line(capsys.readouterr().err, fragment)


@pytest.mark.parametrize("content,fragment", [
    ("{not json", "not valid JSON"),
    ("[]", "no proofs"),
    ("[1]", "is not a JSON object"),
    ('{"a": 1}', "neither an inclusion proof"),
    ('{"leaf_index": 1}', "proof"),
    # json's own limits: its recursion and Python's int() digit limit
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"leaf_index": ' + "9" * 5000 + "}", "too many digits"),
])
def test_verify_errors(tmp_path, content, fragment, capsys):
    path = tmp_path / "proof.json"
    path.write_text(content)
    assert cli.main(["verify", str(path)]) == 2
    one_error_line(capsys.readouterr().err, fragment)


def test_verify_missing_file(tmp_path, capsys):
    assert cli.main(["verify", str(tmp_path / "nope.json")]) == 2
    one_error_line(capsys.readouterr().err, "No such file or directory")


# -- config and tune ------------------------------------------------------------------------


@pytest.fixture
def config_path(tmp_path, monkeypatch):
    path = tmp_path / "cfg" / "config.json"
    monkeypatch.setenv("ROTORTREE_CONFIG", str(path))
    return path


def test_config_shows_every_setting_and_its_source(config_path, capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert f"config file  {config_path} (not present)" in out
    info = rotortree.pool_info()
    for key in ("num_threads", "parallel_threshold", "par_chunk_size", "simd"):
        line = next(line for line in out.splitlines() if line.startswith(key + " "))
        assert str(info[key]) in line and info["sources"][key] in line
    assert "precedence" in out


def test_config_json_path_and_reset(config_path, capsys):
    assert cli.main(["config", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config_file_path"] == str(config_path)
    assert set(data["sources"]) == {"num_threads", "parallel_threshold", "par_chunk_size",
                                    "simd"}
    assert cli.main(["config", "--path"]) == 0
    assert capsys.readouterr().out.strip() == str(config_path)

    assert cli.main(["config", "--reset"]) == 0
    assert "no config file" in capsys.readouterr().out
    config_path.parent.mkdir()
    config_path.write_text('{"num_threads": 1}')
    assert cli.main(["config", "--reset"]) == 0
    assert f"removed {config_path}" in capsys.readouterr().out
    assert not config_path.exists()


def test_tune_quick_saves_only_on_request(config_path, capsys):
    """A quick run's recommendation is noisy: it must not replace the user's
    settings unless asked (--save)."""
    assert cli.main(["tune", "--quick", "--quiet"]) == 0
    assert "not saved (--quick; add --save" in capsys.readouterr().out
    assert not config_path.exists()
    before = rotortree.pool_info()
    assert cli.main(["tune", "--quick", "--quiet", "--save"]) == 0
    out = capsys.readouterr().out
    saved = json.loads(config_path.read_text())
    assert {"num_threads", "parallel_threshold", "par_chunk_size"} <= saved.keys()
    assert 1 <= saved["num_threads"] <= rotortree.available_cpus()
    assert saved["tuned"]["quick"] is True
    assert f"saved to {config_path}" in out
    assert "recommended: num_threads=" in out
    assert "num_threads" in out.splitlines()[1]          # the first table
    after = rotortree.pool_info()
    for key in ("num_threads", "parallel_threshold", "par_chunk_size"):
        assert after[key] == before[key]                 # tuning restores the pool
    assert cli.main(["tune", "--quick", "--save", "--no-save"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_tune_no_save(config_path, capsys):
    assert cli.main(["tune", "--quick", "--quiet", "--no-save"]) == 0
    assert "not saved" in capsys.readouterr().out
    assert not config_path.exists()


def test_tune_then_config_end_to_end(tmp_path):
    """What a user does: tune, then see the saved values in force."""
    path = tmp_path / "config.json"
    env = {"ROTORTREE_CONFIG": str(path)}
    for name in ("ROTORTREE_NUM_THREADS", "ROTORTREE_PARALLEL_THRESHOLD",
                 "ROTORTREE_PAR_CHUNK_SIZE", "ROTORTREE_SIMD"):
        env[name] = ""
    tune = run_cli("tune", "--quick", "--save", "--quiet", env=env)
    assert tune.returncode == 0, tune.stderr
    saved = json.loads(path.read_text())
    shown = run_cli("config", "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["config_file"] == str(path)
    for key in ("num_threads", "parallel_threshold", "par_chunk_size"):
        assert info[key] == saved[key]
        assert info["sources"][key] == "config file"


def test_broken_config_file_fails_clearly(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{nope")
    proc = run_cli("config", env={"ROTORTREE_CONFIG": str(path)})
    assert proc.returncode == 2
    one_error_line(proc.stderr.decode(), f"config file {path} ignored: not valid JSON",
                   "rotortree config --reset")
    reset = run_cli("config", "--reset", env={"ROTORTREE_CONFIG": str(path)})
    assert reset.returncode == 0 and reset.stderr == b"", reset.stderr
    assert not path.exists()
    assert run_cli("config", env={"ROTORTREE_CONFIG": str(path)}).returncode == 0


# -- bench ------------------------------------------------------------------------------------


def test_bench_rejects_unknown_sections(tmp_path, capsys):
    assert cli.main(["bench", "--only", "scaling,warp", "--out", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err, "unknown section(s) warp")


def test_bench_out_must_be_a_directory(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("")
    assert cli.main(["bench", "--out", str(target)]) == 2
    one_error_line(capsys.readouterr().err, "not a directory")


def test_bench_quick_end_to_end(tmp_path):
    """A tiny run of the whole suite: the report, the JSON and the plots."""
    out = tmp_path / "report"
    proc = run_cli("bench", "--quick", "--leaves", "5000", "--out", str(out), timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    report = (out / "report.md").read_text()
    for heading in ("# rotortree benchmark report", "## Summary", "## Throughput vs arity",
                    "## Thread scaling and parallel threshold", "## SIMD kernels",
                    "## Single inserts, snapshots and proofs"):
        assert heading in report
    assert "Rust crate" in report
    results = json.loads((out / "results.json").read_text())
    assert results["problems"] == {}
    assert {"scaling", "kernels", "operations"} <= results["sections"].keys()
    assert results["sections"]["scaling"]["roots_identical"] is True
    assert results["sections"]["operations"]["all_proofs_valid"] is True
    assert "## Durable trees" in report
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in report
    else:
        for name in ("speedup_vs_threads.png", "threshold_impact.png",
                     "throughput_vs_arity.png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert f"]({name})" in report
    assert b"report:" in proc.stdout


def test_bench_without_plots_in_process(tmp_path, capsys):
    assert cli.main(["bench", "--quick", "--leaves", "5000", "--only", "operations",
                     "--out", str(tmp_path), "--no-plots", "--quiet"]) == 0
    assert not list(tmp_path.glob("*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "## Single inserts, snapshots and proofs" in report
    assert "single insert" in report


def test_progress_uses_tqdm_only_on_a_terminal(monkeypatch, capsys):
    """tqdm's carriage-return redraws are garbage in a log or a pipe: with
    tqdm installed (faked here, it is an optional extra) and stderr not a
    terminal, progress is plain lines."""
    import sys
    import types

    from rotortree._util import Progress

    made = []
    fake = types.ModuleType("tqdm")
    fake.tqdm = lambda **kwargs: made.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm", fake)
    with Progress(10, "work", announce=True) as progress:
        progress.update(10)
    assert made == []
    err = capsys.readouterr().err
    assert "\r" not in err and "work: started" in err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    Progress(10, "work")
    assert len(made) == 1


# -- rough edges a new user hits ---------------------------------------------------------


def test_index_list_with_an_empty_item_is_refused(leaf_file, capsys):
    path = leaf_file(10)
    assert cli.main(["prove", str(path), "--index", "1,,2"]) == 2
    one_error_line(capsys.readouterr().err, "rotortree prove: error:", "empty item")
    assert cli.main(["prove", str(path), "--index", "1,"]) == 2
    assert cli.main(["prove", str(path), "--index", "1, 2"]) == 0


def test_a_malformed_proof_in_a_list_stops_before_any_verdict(leaf_file, tmp_path, capsys):
    path = leaf_file(100)
    assert cli.main(["prove", str(path), "--index", "1,2,3"]) == 0
    documents = json.loads(capsys.readouterr().out)
    documents[2]["levels"][0]["siblings"][0] = "zz"
    proofs = tmp_path / "proofs.json"
    proofs.write_text(json.dumps(documents))
    assert cli.main(["verify", str(proofs)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""               # no "valid" line for proofs 0 and 1
    one_error_line(captured.err, "rotortree verify: error:", "proof 2 is malformed")


def test_invalid_lines_say_why(leaf_file, tmp_path, capsys):
    path = leaf_file(100)
    root = rotortree.compute_root(path.read_bytes(), 4).hex()
    assert cli.main(["prove", str(path), "--index", "1,2"]) == 0
    documents = json.loads(capsys.readouterr().out)
    documents[1]["levels"][0]["siblings"][0] = "00" * 32
    proofs = tmp_path / "proofs.json"
    proofs.write_text(json.dumps(documents))
    assert cli.main(["verify", str(proofs), "--root", root, "--size", "100"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("proof 0: valid")
    assert "INVALID (the path does not hash to the root the proof carries)" in lines[1]
    assert cli.main(["verify", str(proofs), "--root", "11" * 32, "--size", "100"]) == 1
    assert "INVALID (its root is not the trusted --root)" in capsys.readouterr().out
    assert cli.main(["verify", str(proofs), "--root", root, "--size", "101"]) == 1
    assert "is not the trusted --size 101" in capsys.readouterr().out


def test_consistency_invalid_lines_say_why(leaf_file, tmp_path, capsys):
    path = leaf_file(50)
    assert cli.main(["prove", str(path), "--old-size", "20"]) == 0
    document = json.loads(capsys.readouterr().out)
    proof = tmp_path / "c.json"
    proof.write_text(json.dumps(document))
    assert cli.main(["verify", str(proof), "--old-root", document["new_root"],
                     "--old-size", "20"]) == 1
    assert "does not match the trusted --old-root" in capsys.readouterr().out
    document["levels"][-1]["hashes"][-1] = "00" * 32
    proof.write_text(json.dumps(document))
    assert cli.main(["verify", str(proof)]) == 1
    assert "do not recompute both roots" in capsys.readouterr().out


def test_usage_and_runtime_errors_share_one_prefix(leaf_file, tmp_path, capsys):
    assert cli.main(["root", "--arity", "1", str(leaf_file(4))]) == 2
    usage = capsys.readouterr().err
    assert cli.main(["root", str(tmp_path / "missing.bin")]) == 2
    runtime = capsys.readouterr().err
    for line in (usage, runtime):
        one_error_line(line, "rotortree root: error:")
    assert cli.main(["nope"]) == 2
    assert capsys.readouterr().err.startswith("rotortree: error:")


def test_old_proof_json_without_type_still_verifies(leaf_file, tmp_path, capsys):
    path = leaf_file(30)
    assert cli.main(["prove", str(path), "--index", "4", "--old-size", "7"]) == 0
    documents = json.loads(capsys.readouterr().out)
    assert [d["type"] for d in documents] == ["inclusion", "consistency"]
    proofs = tmp_path / "old.json"
    proofs.write_text(json.dumps([{k: v for k, v in d.items() if k != "type"}
                                  for d in documents]))
    assert cli.main(["verify", str(proofs)]) == 0
    capsys.readouterr()
    proofs.write_text(json.dumps({**documents[0], "type": "membership"}))
    assert cli.main(["verify", str(proofs)]) == 2
    one_error_line(capsys.readouterr().err, "type 'membership'")


# Imports the package as an install without the compiled core does.
_NO_CORE = ("import sys; sys.modules['rotortree._rotortree_cffi'] = None; "
            "from rotortree.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.parametrize("argv", [["root", "-"], ["demo", "--leaves", "10"],
                                  ["prove", "-", "--index", "0"], ["config"]])
def test_commands_without_the_core_say_so(argv):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _NO_CORE, *argv], capture_output=True,
                          env=env, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc.stderr.decode(), f"rotortree {argv[0]}: error:", "compiled C core",
                   "'rotortree verify' works without it")


def test_verify_works_without_the_core(leaf_file, tmp_path, capsys):
    assert cli.main(["prove", str(leaf_file(9)), "--index", "3"]) == 0
    proof = tmp_path / "p.json"
    proof.write_text(capsys.readouterr().out)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", _NO_CORE, "verify", str(proof)],
                          capture_output=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert b"proof: valid" in proc.stdout


def test_bench_records_the_command_typed_and_no_deleted_paths(tmp_path, capsys):
    """The durability section ran through its standalone main(), which
    printed the path of a temporary folder deleted right after and recorded
    its own command line; the scaling section recorded a bare command."""
    import tempfile

    argv = ["bench", "--quick", "--leaves", "3000", "--only", "durability,scaling",
            "--out", str(tmp_path), "--no-plots", "--no-harness"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert tempfile.gettempdir() + os.sep + "rotortree-bench-" not in err
    assert "\r" not in err          # no tqdm redraws: stderr is not a terminal here
    typed = "rotortree " + " ".join(argv)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["command"] == typed
    for name in ("durability", "scaling"):
        assert results["sections"][name]["command"] == typed, name
    report = (tmp_path / "report.md").read_text()
    assert "python -m rotortree.benchmarks.durability" not in report
    assert "command: `rotortree bench`" not in report


def test_recovery_verify_figures_are_judged_by_code():
    from rotortree.benchmarks.durability import verify_note

    noisy = {"checkpoint_verify_on_ms": 10.0, "checkpoint_verify_off_ms": 11.0,
             "checkpoint_verify_on_samples_ms": [9.0, 10.0, 12.0],
             "checkpoint_verify_off_samples_ms": [10.0, 11.0, 12.5]}
    assert "noise" in verify_note(noisy)
    clear = {"checkpoint_verify_on_ms": 30.0, "checkpoint_verify_off_ms": 10.0,
             "checkpoint_verify_on_samples_ms": [29.0, 30.0, 31.0],
             "checkpoint_verify_off_samples_ms": [9.5, 10.0, 10.5]}
    assert verify_note(clear) == "verification costs 20.0 ms of the open"
