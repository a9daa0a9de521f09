"""The config file and the precedence of settings:
argument (configure()) > environment (ROTORTREE_*) > config file > default."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

import rotortree
from rotortree import config as rt_config

INFO = "import json, rotortree; print(json.dumps(rotortree.pool_info()))"
SETTINGS = ("num_threads", "parallel_threshold", "par_chunk_size", "simd")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    """A fresh interpreter (settings are applied at import) with only the
    given ROTORTREE_* variables and config locations."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("ROTORTREE_") and k != "XDG_CONFIG_HOME"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=60)


@pytest.fixture
def restore_loaded_state():
    """apply_environment() in-process rewrites module state beyond the pool
    settings (which conftest's autouse fixture restores)."""
    sources = dict(rt_config._sources)
    loaded = rt_config._loaded_config_file
    errors = list(rt_config._config_errors)
    yield
    rt_config._sources.clear()
    rt_config._sources.update(sources)
    rt_config._loaded_config_file = loaded
    rt_config._config_errors[:] = errors


# -- where the file is ----------------------------------------------------------------


def test_location_precedence(tmp_path):
    explicit = tmp_path / "explicit.json"
    environ = {"ROTORTREE_CONFIG": str(explicit), "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
               "HOME": str(tmp_path / "home")}
    assert rt_config.config_file_path(environ) == explicit
    del environ["ROTORTREE_CONFIG"]
    assert rt_config.config_file_path(environ) == tmp_path / "xdg" / "rotortree" / "config.json"
    del environ["XDG_CONFIG_HOME"]
    assert rt_config.config_file_path(environ) == (
        tmp_path / "home" / ".config" / "rotortree" / "config.json")


def test_location_ignores_empty_and_relative_values(tmp_path):
    home = str(tmp_path)
    expected = tmp_path / ".config" / "rotortree" / "config.json"
    assert rt_config.config_file_path(
        {"ROTORTREE_CONFIG": "  ", "XDG_CONFIG_HOME": "relative/dir", "HOME": home}) == expected
    # A mapping without HOME never falls back to the real home directory.
    assert rt_config.config_file_path({}) is None


# -- reading and writing ------------------------------------------------------------------


def test_missing_file_is_no_config(tmp_path):
    assert rt_config.read_config_file(tmp_path / "nothing.json") is None


def test_read_keeps_settings_and_skips_nulls_and_metadata(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_threads": 3, "parallel_threshold": None, "simd": "auto",
                                "tuned": {"date": "today"}}))
    assert rt_config.read_config_file(path) == {"num_threads": 3, "simd": "auto"}


@pytest.mark.parametrize("content,fragment", [
    ("{", "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
    ('{"num_thread": 2}', "unknown key(s) 'num_thread'"),
    (b"\xff\xfe", "cannot be read"),
])
def test_malformed_files_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "config.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(rotortree.InvalidArgumentError) as caught:
        rt_config.read_config_file(path)
    assert f"bad rotortree config file {path}" in str(caught.value)
    assert fragment in str(caught.value)


def test_unreadable_path_is_an_error(tmp_path):
    with pytest.raises(rotortree.InvalidArgumentError, match="cannot be read"):
        rt_config.read_config_file(tmp_path)   # a directory


def test_write_merges_validates_and_creates_directories(tmp_path):
    path = tmp_path / "deep" / "dir" / "config.json"
    rt_config.write_config_file({"simd": "portable"}, path)
    rt_config.write_config_file({"num_threads": 2, "par_chunk_size": 32}, path,
                                metadata={"note": "tuned"})
    stored = json.loads(path.read_text())
    assert stored == {"simd": "portable", "num_threads": 2, "par_chunk_size": 32,
                      "tuned": {"note": "tuned"}}
    before = path.read_text()
    for bad in ({"num_threads": 0}, {"parallel_threshold": "big"}, {"simd": "mmx"},
                {"threads": 2}):
        with pytest.raises(rotortree.RotorTreeError):
            rt_config.write_config_file(bad, path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temporaries left


# -- precedence, in-process --------------------------------------------------------------


def test_precedence_in_process(tmp_path, restore_loaded_state):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_threads": 1, "parallel_threshold": 333,
                                "simd": "portable"}))
    rt_config.apply_environment({"ROTORTREE_CONFIG": str(path),
                                 "ROTORTREE_PARALLEL_THRESHOLD": "444"})
    info = rotortree.pool_info()
    assert (info["num_threads"], info["parallel_threshold"], info["par_chunk_size"],
            info["simd"]) == (1, 444, rt_config.DEFAULT_PAR_CHUNK_SIZE, "portable")
    assert info["sources"] == {"num_threads": "config file",
                               "parallel_threshold": "environment",
                               "par_chunk_size": "default", "simd": "config file"}
    assert info["config_file"] == str(path)

    rotortree.configure(num_threads=2)
    info = rotortree.pool_info()
    assert info["num_threads"] == 2 and info["sources"]["num_threads"] == "argument"


def test_defaults_when_nothing_is_set(tmp_path, restore_loaded_state):
    rotortree.configure(num_threads=1, simd="portable")
    rt_config.apply_environment({"ROTORTREE_CONFIG": str(tmp_path / "absent.json")})
    info = rotortree.pool_info()
    assert info["sources"] == dict.fromkeys(SETTINGS, "default")
    assert info["num_threads"] == rt_config.available_cpus()
    assert info["simd"] == rt_config.available_kernels()[-1]
    assert info["config_file"] is None


@pytest.mark.parametrize("content,fragment", [
    ({"num_threads": 0}, "num_threads=0 ignored: num_threads must be 1..1024"),
    ({"num_threads": "2"}, "num_threads='2' ignored: num_threads must be an int"),
    ({"par_chunk_size": 1.5}, "par_chunk_size=1.5 ignored: par_chunk_size must be an int"),
    ({"simd": "sse9"}, "simd='sse9' ignored: unknown SIMD kernel"),
    ({"num_thread": 2}, "unknown key 'num_thread' ignored"),
])
def test_bad_values_are_ignored_naming_the_file(tmp_path, content, fragment,
                                                restore_loaded_state):
    """A bad value costs only that setting: the file's other settings apply."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**content, "parallel_threshold": 321}))
    problems = rt_config.apply_environment({"ROTORTREE_CONFIG": str(path)}, warn=False)
    assert len(problems) == 1
    assert problems[0].startswith(f"config file {path}: ")
    assert fragment in problems[0]
    info = rotortree.pool_info()
    assert info["config_errors"] == problems
    assert info["parallel_threshold"] == 321
    assert info["sources"]["parallel_threshold"] == "config file"
    for key in set(content) & set(SETTINGS):
        assert info["sources"][key] == "default"
    assert info["config_file"] == str(path)


def test_warnings_are_issued_and_logged(tmp_path, restore_loaded_state, caplog):
    path = tmp_path / "config.json"
    path.write_text("{")
    with pytest.warns(rotortree.RotorTreeWarning, match="not valid JSON") as caught:
        with caplog.at_level("WARNING", logger="rotortree"):
            problems = rt_config.apply_environment({"ROTORTREE_CONFIG": str(path)})
    assert [str(w.message) for w in caught] == problems
    assert [r.getMessage() for r in caplog.records if r.name == "rotortree"] == problems
    assert rotortree.pool_info()["config_file"] is None


# -- precedence, at import (what users get) -------------------------------------------------


def test_config_file_applies_at_import(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_threads": 3, "parallel_threshold": 77,
                                "par_chunk_size": 9, "simd": "portable"}))
    result = run_python(INFO, ROTORTREE_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["num_threads"], info["parallel_threshold"], info["par_chunk_size"],
            info["simd"]) == (3, 77, 9, "portable")
    assert info["sources"] == dict.fromkeys(SETTINGS, "config file")
    assert info["config_file"] == str(path)


def test_environment_beats_config_file_at_import(tmp_path):
    xdg = tmp_path / "xdg"
    (xdg / "rotortree").mkdir(parents=True)
    path = xdg / "rotortree" / "config.json"
    path.write_text(json.dumps({"num_threads": 3, "parallel_threshold": 77}))
    result = run_python(INFO, XDG_CONFIG_HOME=str(xdg), ROTORTREE_NUM_THREADS="2")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["num_threads"] == 2 and info["parallel_threshold"] == 77
    assert info["sources"] == {"num_threads": "environment", "parallel_threshold": "config file",
                               "par_chunk_size": "default", "simd": "default"}


def test_home_config_is_found(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "rotortree").mkdir(parents=True)
    (home / ".config" / "rotortree" / "config.json").write_text('{"par_chunk_size": 16}')
    info = json.loads(run_python(INFO, HOME=str(home)).stdout)
    assert info["par_chunk_size"] == 16 and info["sources"]["par_chunk_size"] == "config file"


def test_malformed_config_file_is_ignored_at_import_naming_it(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"num_threads": 2,}')
    result = run_python(INFO, ROTORTREE_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert f"RotorTreeWarning: config file {path} ignored: not valid JSON" in result.stderr
    info = json.loads(result.stdout)
    assert info["config_errors"] == [
        f"config file {path} ignored: not valid JSON: Expecting property name enclosed in "
        "double quotes at line 1 column 19"]
    assert info["sources"] == dict.fromkeys(SETTINGS, "default")
    assert info["config_file"] is None


def test_bad_environment_falls_back_to_the_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"num_threads": 2}')
    result = run_python(INFO, ROTORTREE_CONFIG=str(path), ROTORTREE_NUM_THREADS="lots")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["config_errors"] == ["ROTORTREE_NUM_THREADS='lots' ignored: not an integer"]
    assert info["num_threads"] == 2 and info["sources"]["num_threads"] == "config file"


def test_the_test_suite_never_sees_a_user_config():
    """conftest points the config file at an empty temporary directory."""
    path = pathlib.Path(os.environ["ROTORTREE_CONFIG"])
    assert not path.exists()
    assert os.environ["XDG_CONFIG_HOME"] in str(path)
    assert rt_config._loaded_config_file is None
