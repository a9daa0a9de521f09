"""Settings never break ``import rotortree``, the command line reports them in
one line, and every error of the public API is a RotorTreeError that is also
the matching builtin exception."""

from __future__ import annotations

import array
import json
import os
import pathlib
import subprocess
import sys
from typing import Any, Callable, Dict, NamedTuple, Optional

import numpy as np
import pytest

import rotortree
from rotortree import cli
from rotortree import snapshot as rt_snapshot
from rotortree._native import ffi, lib
from rotortree.errors import (
    ArgumentTypeError,
    MaxDepthExceededError,
    NodeIndexError,
    OutOfMemoryError,
    RotorTreeError,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent


def child_env(tmp_path: pathlib.Path, **settings: str) -> Dict[str, str]:
    """The environment of a fresh interpreter: no ROTORTREE_* variable but
    ``settings``, and a config file that does not exist unless a case makes it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTORTREE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["ROTORTREE_CONFIG"] = str(tmp_path / "absent" / "config.json")
    env.update(settings)
    return env


def run(argv: list, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)


def config_file(content: Any) -> Callable[[pathlib.Path], Dict[str, str]]:
    """A case whose config file holds ``content`` (bytes as they are, str as
    UTF-8, anything else as JSON)."""
    def make(tmp_path: pathlib.Path) -> Dict[str, str]:
        path = tmp_path / "config.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        return {"ROTORTREE_CONFIG": str(path)}
    return make


def fifo_config(tmp_path: pathlib.Path) -> Dict[str, str]:
    path = tmp_path / "config.fifo"
    os.mkfifo(path)   # opening it for reading would wait for a writer forever
    return {"ROTORTREE_CONFIG": str(path)}


class Bad(NamedTuple):
    name: str
    make: Callable[[pathlib.Path], Dict[str, str]]
    fragment: str
    file: bool = False   # the bad setting is the config file: config --reset fixes it


BAD_SETTINGS = [
    Bad("threads not a number", lambda _: {"ROTORTREE_NUM_THREADS": "lots"},
        "ROTORTREE_NUM_THREADS='lots' ignored: not an integer"),
    Bad("chunk size 0", lambda _: {"ROTORTREE_PAR_CHUNK_SIZE": "0"},
        "ROTORTREE_PAR_CHUNK_SIZE='0' ignored: par_chunk_size must be >= 1"),
    Bad("threshold of 5000 digits", lambda _: {"ROTORTREE_PARALLEL_THRESHOLD": "7" * 5000},
        "5000-digit integer is out of range"),
    Bad("unknown kernel", lambda _: {"ROTORTREE_SIMD": "sse9"}, "unknown SIMD kernel 'sse9'"),
    Bad("memory cache -5", lambda _: {"ROTORTREE_MEMORY_CACHE_MB": "-5"},
        "ROTORTREE_MEMORY_CACHE_MB='-5' ignored: not a non-negative integer"),
    Bad("memory cache lots", lambda _: {"ROTORTREE_MEMORY_CACHE_MB": "lots"},
        "ROTORTREE_MEMORY_CACHE_MB='lots' ignored"),
    Bad("config path is a directory", lambda p: {"ROTORTREE_CONFIG": str(p)},
        "cannot be read (is a directory)"),
    Bad("config path is a FIFO", fifo_config, "cannot be read (not a regular file)"),
    Bad("config path with an unknown user", lambda _: {"ROTORTREE_CONFIG": "~no-such-user-rt/c"},
        "cannot expand '~'"),
    Bad("config not UTF-8", config_file(b'{"num_threads": "\xff"}'), "not UTF-8", file=True),
    Bad("config not JSON", config_file('{"num_threads": 2,}'), "not valid JSON", file=True),
    Bad("config nested too deeply", config_file("[" * 100_000 + "]" * 100_000),
        "nested too deeply", file=True),
    Bad("config number of 5000 digits", config_file('{"num_threads": ' + "9" * 5000 + "}"),
        "too many digits", file=True),
    Bad("config too large", config_file(" " * (2 << 20) + "{}"), "larger than", file=True),
    Bad("config not an object", config_file([1, 2]), "expected a JSON object", file=True),
    Bad("config bad value", config_file({"num_threads": 0}), "num_threads=0 ignored", file=True),
    Bad("config unknown key", config_file({"threads": 2}), "unknown key 'threads' ignored",
        file=True),
]
BAD_IDS = [case.name for case in BAD_SETTINGS]


@pytest.fixture(scope="module")
def proof_file(tmp_path_factory) -> pathlib.Path:
    tree = rotortree.LeanIMT(4, 16)
    tree.insert_many(bytes(range(32)) * 50)
    path = tmp_path_factory.mktemp("proof") / "proof.json"
    path.write_text(json.dumps(tree.generate_proof(17).to_dict()))
    return path


# -- import -------------------------------------------------------------------------------

VERIFY_IN_PYTHON = """
import json, sys, rotortree
proof = rotortree.InclusionProof.from_dict(json.load(open(sys.argv[1])))
print(json.dumps({"valid": proof.verify(), "info": rotortree.pool_info()}))
"""


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=BAD_IDS)
def test_bad_setting_never_breaks_import(case, tmp_path, proof_file):
    result = run(["-c", VERIFY_IN_PYTHON, str(proof_file)], child_env(tmp_path,
                                                                        **case.make(tmp_path)))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["valid"] is True
    errors = out["info"]["config_errors"]
    assert len(errors) == 1 and case.fragment in errors[0], errors
    assert "\n" not in errors[0] and len(errors[0]) < 400
    warnings = [line for line in result.stderr.splitlines() if "RotorTreeWarning" in line]
    assert len(warnings) == 1 and errors[0] in warnings[0], result.stderr
    # Ignored means the defaults (nothing else is set in these cases).
    assert set(out["info"]["sources"].values()) == {"default"}
    assert out["info"]["config_file"] is None or case.file


# -- command line -----------------------------------------------------------------------


def commands(tmp_path: pathlib.Path, proof_file: pathlib.Path) -> Dict[str, list]:
    """Every command with arguments that would run (briefly) with good settings."""
    leaves = tmp_path / "leaves.bin"
    leaves.write_bytes(bytes(32 * 10))
    return {
        "demo": ["demo", "--leaves", "10", "--repeat", "1"],
        "bench": ["bench", "--quick", "--only", "kernels", "--leaves", "64", "--no-plots",
                  "--out", str(tmp_path / "bench")],
        "tune": ["tune", "--quick", "--no-save"],
        "config": ["config"],
        "config --json": ["config", "--json"],
        "root": ["root", str(leaves)],
        "prove": ["prove", str(leaves), "--index", "1"],
        "verify": ["verify", str(proof_file)],
    }


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rotortree ") and ": error: invalid settings: " in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("case", [BAD_SETTINGS[0], BAD_SETTINGS[10]],
                         ids=[BAD_IDS[0], BAD_IDS[10]])
def test_every_command_refuses_bad_settings_in_one_line(case, tmp_path, proof_file):
    env = child_env(tmp_path, **case.make(tmp_path))
    for name, argv in commands(tmp_path, proof_file).items():
        result = run(["-m", "rotortree", *argv], env)
        assert_one_error_line(result, f"rotortree {argv[0]}: error", case.fragment)
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize("case", BAD_SETTINGS, ids=BAD_IDS)
def test_each_bad_setting_is_one_cli_line(case, tmp_path, proof_file):
    env = child_env(tmp_path, **case.make(tmp_path))
    assert_one_error_line(run(["-m", "rotortree", "verify", str(proof_file)], env),
                          case.fragment)


def test_console_script_prints_one_line(tmp_path):
    script = pathlib.Path(sys.executable).parent / "rotortree"
    if not script.exists():
        pytest.skip(f"no installed rotortree console script next to {sys.executable}")
    env = child_env(tmp_path, ROTORTREE_SIMD="sse9")
    result = subprocess.run([str(script), "config"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert_one_error_line(result, "rotortree config: error", "unknown SIMD kernel 'sse9'")


@pytest.mark.parametrize("case", [c for c in BAD_SETTINGS if c.file],
                         ids=[c.name for c in BAD_SETTINGS if c.file])
def test_config_reset_fixes_a_bad_file(case, tmp_path):
    env = child_env(tmp_path, **case.make(tmp_path))
    path = pathlib.Path(env["ROTORTREE_CONFIG"])
    assert run(["-m", "rotortree", "config", "--path"], env).stdout.strip() == str(path)
    reset = run(["-m", "rotortree", "config", "--reset"], env)
    assert reset.returncode == 0 and reset.stderr == "", reset.stderr
    assert f"removed {path}" in reset.stdout
    assert not path.exists()
    after = run(["-m", "rotortree", "config", "--json"], env)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["config_errors"] == []


def test_config_reset_refuses_to_delete_a_directory(tmp_path):
    env = child_env(tmp_path, ROTORTREE_CONFIG=str(tmp_path))
    result = run(["-m", "rotortree", "config", "--reset"], env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is a directory" in result.stderr
    assert tmp_path.is_dir()


def test_python_code_importing_rotortree_still_gets_the_warning(tmp_path):
    """Only the command itself swaps the warning for its error line."""
    env = child_env(tmp_path, ROTORTREE_SIMD="sse9")
    result = run(["-m", "json.tool", "--help"], env)   # an unrelated -m module
    assert "RotorTreeWarning" not in result.stderr      # it never imported rotortree
    result = run(["-c", "import rotortree.cli"], env)
    assert result.returncode == 0
    assert "RotorTreeWarning: ROTORTREE_SIMD='sse9' ignored" in result.stderr


# -- the C core reads ROTORTREE_MEMORY_CACHE_MB itself -------------------------------------

CACHE_PROBE = """
from rotortree._native import ffi, lib
buffer = lib.rt_buffer_alloc(300 << 20)
address = int(ffi.cast("uintptr_t", buffer))
lib.rt_buffer_free(buffer)
with open("/proc/self/maps") as maps:
    ranges = [[int(x, 16) for x in line.split()[0].split("-")] for line in maps]
print("kept" if any(low <= address < high for low, high in ranges) else "released")
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"),
                    reason="needs /proc/self/maps (Linux) to see the C core's mappings")
@pytest.mark.parametrize("value,expected", [
    ("-5", "released"),          # strtoull read it as 2**64 - 5 MiB: an unbounded cache
    ("+400", "released"),
    ("lots", "released"),
    ("99999999999999999999", "released"),
    ("400", "kept"),             # a valid budget above 300 MiB does keep the mapping
    (" 400 ", "kept"),
    ("0", "released"),
])
def test_c_core_ignores_what_python_reports(value, expected, tmp_path):
    """A 300 MiB result buffer is over the default 256 MiB budget, so it is
    returned to the system when freed unless a larger budget was accepted."""
    result = run(["-W", "ignore", "-c", CACHE_PROBE],
                 child_env(tmp_path, ROTORTREE_MEMORY_CACHE_MB=value))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
    info = run(["-W", "ignore", "-c", "import rotortree; print(rotortree.pool_info()"
                "['config_errors'])"], child_env(tmp_path, ROTORTREE_MEMORY_CACHE_MB=value))
    assert (info.stdout.strip() != "[]") == (value.strip() not in ("400", "0"))


# -- every error is a RotorTreeError ----------------------------------------------------------


def released() -> memoryview:
    view = memoryview(bytearray(64))
    view.release()
    return view


@pytest.fixture(scope="module")
def tree() -> rotortree.LeanIMT:
    tree = rotortree.LeanIMT(4, 8)
    tree.insert_many(bytes(range(32)) * 20)
    return tree


class Call(NamedTuple):
    name: str
    call: Callable[[rotortree.LeanIMT], Any]
    error: type
    builtin: type
    match: Optional[str] = None


HUGE = 10 ** 5000   # str() of it raises ValueError: messages must not try

API_CALLS = [
    Call("ProofBatch()", lambda t: rotortree.ProofBatch(), ArgumentTypeError, TypeError,
         "generate_proofs"),
    Call("generate_proofs(released)", lambda t: t.generate_proofs(released()),
         ArgumentTypeError, TypeError, "cannot read indices"),
    Call("snapshot generate_proofs(released)", lambda t: t.snapshot().generate_proofs(released()),
         ArgumentTypeError, TypeError),
    Call("ProofBatch.from_bytes(released)", lambda t: rotortree.ProofBatch.from_bytes(released()),
         ArgumentTypeError, TypeError),
    Call("InclusionProof.from_bytes(released)",
         lambda t: rotortree.InclusionProof.from_bytes(released()), ArgumentTypeError, TypeError),
    Call("ConsistencyProof.from_bytes(released)",
         lambda t: rotortree.ConsistencyProof.from_bytes(released()), ArgumentTypeError,
         TypeError),
    Call("consistency old_root released",
         lambda t: t.generate_consistency_proof(1, released()), ArgumentTypeError, TypeError),
    Call("generate_proof(huge)", lambda t: t.generate_proof(HUGE), NodeIndexError, IndexError,
         "an integer of 16610 bits"),
    Call("generate_proofs([huge])", lambda t: t.generate_proofs([HUGE]), NodeIndexError,
         IndexError),
    Call("get_node(huge, 0)", lambda t: t.snapshot().get_node(HUGE, 0), NodeIndexError,
         IndexError),
    Call("level_len(huge)", lambda t: t.snapshot().level_len(HUGE), NodeIndexError, IndexError),
    Call("consistency old_size huge", lambda t: t.generate_consistency_proof(HUGE, bytes(32)),
         NodeIndexError, IndexError),
    Call("batch[huge]", lambda t: t.generate_proofs([1])[HUGE], NodeIndexError, IndexError),
    Call("LeanIMT(huge)", lambda t: rotortree.LeanIMT(HUGE), rotortree.InvalidArgumentError,
         ValueError),
    Call("LeanIMT(4, huge)", lambda t: rotortree.LeanIMT(4, HUGE),
         rotortree.InvalidArgumentError, ValueError),
    Call("compute_root arity huge", lambda t: rotortree.compute_root(bytes(32), HUGE),
         rotortree.InvalidArgumentError, ValueError),
    Call("configure(num_threads=huge)", lambda t: rotortree.configure(num_threads=HUGE),
         rotortree.InvalidArgumentError, ValueError),
    Call("configure(simd=long)", lambda t: rotortree.configure(simd="x" * 1_000_000),
         rotortree.InvalidArgumentError, ValueError, r"\.\.\. \(1000002 chars\)"),
    Call("generate_proof(True)", lambda t: t.generate_proof(True), ArgumentTypeError, TypeError,
         "not bool"),
    Call("generate_proof(np.bool_)", lambda t: t.generate_proof(np.bool_(True)),
         ArgumentTypeError, TypeError),
    Call("generate_proof(5.0)", lambda t: t.generate_proof(5.0), ArgumentTypeError, TypeError),
    Call("generate_proofs(float array)", lambda t: t.generate_proofs(array.array("d", [1.0])),
         ArgumentTypeError, TypeError),
    Call("InclusionProof.from_dict(huge tree_size)",
         lambda t: rotortree.InclusionProof.from_dict(
             {**t.generate_proof(1).to_dict(), "tree_size": HUGE}),
         rotortree.InvalidProofError, ValueError, "an integer of 16610 bits"),
    Call("ConsistencyProof.from_dict(huge old_size)",
         lambda t: rotortree.ConsistencyProof.from_dict(
             {**t.generate_consistency_proof(1, t.get_node(0, 0)).to_dict(), "old_size": HUGE}),
         rotortree.InvalidProofError, ValueError),
    Call("RotorTree.open(path with NUL)", lambda t: rotortree.RotorTree.open("tree\0x"),
         rotortree.InvalidArgumentError, ValueError, "NUL"),
    Call("LeanIMT.load(path with NUL)", lambda t: rotortree.LeanIMT.load(b"tree\0x"),
         rotortree.InvalidArgumentError, ValueError, "NUL"),
    Call("RotorTree.open(under a file)", lambda t: rotortree.RotorTree.open(__file__ + "/t"),
         rotortree.TreeNotFoundError, FileNotFoundError),
    Call("RotorTree.open(under a file, create)",
         lambda t: rotortree.RotorTree.open(__file__ + "/t", create=True),
         rotortree.DurabilityError, OSError, "Not a directory"),
    Call("InclusionProof(huge leaf_index).to_bytes()",
         lambda t: rotortree.InclusionProof(bytes(32), bytes(32), HUGE, 1, 4, ()).to_bytes(),
         rotortree.InvalidArgumentError, ValueError),
]


@pytest.mark.parametrize("case", API_CALLS, ids=[c.name for c in API_CALLS])
def test_public_api_raises_rotortree_errors(case, tree):
    before = (tree.size, tree.root)
    with pytest.raises(Exception) as caught:
        case.call(tree)
    assert isinstance(caught.value, RotorTreeError), repr(caught.value)
    assert isinstance(caught.value, case.error) and isinstance(caught.value, case.builtin)
    if case.match is not None:
        assert caught.match(case.match)
    assert len(str(caught.value)) < 400
    assert (tree.size, tree.root) == before


class _NoBuffers:
    """lib, except that result buffers cannot be allocated."""

    def __getattr__(self, name: str) -> Any:
        if name == "rt_buffer_alloc":
            return lambda size: ffi.NULL
        return getattr(lib, name)


def test_proof_buffer_allocation_failure_is_out_of_memory(tree, monkeypatch):
    monkeypatch.setattr(rt_snapshot, "lib", _NoBuffers())
    with pytest.raises(OutOfMemoryError, match="cannot allocate") as caught:
        tree.generate_proofs([1, 2, 3])
    assert isinstance(caught.value, MemoryError)


# -- integers with __index__ ---------------------------------------------------------------------


def test_index_arguments_accept_numpy_integers(tree):
    snap = tree.snapshot()
    assert tree.generate_proof(np.int64(5)) == tree.generate_proof(5)
    assert snap.generate_proof(np.uint8(5)) == tree.generate_proof(5)
    batch = tree.generate_proofs([np.int64(1), np.uint32(2), 3])
    assert [p.leaf_index for p in batch] == [1, 2, 3]
    assert batch[np.int64(-1)].leaf_index == 3
    assert batch.proof_bytes(np.int16(0)) == batch.proof_bytes(0)
    assert tree.get_node(np.int32(1), np.int64(2)) == tree.get_node(1, 2)
    assert snap.get_node(np.int32(1), np.int64(2)) == tree.get_node(1, 2)
    assert tree.level_len(np.int8(1)) == snap.level_len(np.int64(1)) == tree.level_len(1)
    old_root = rotortree.compute_root(bytes(range(32)) * 7, np.int64(4))
    assert tree.generate_consistency_proof(np.int64(7), old_root).old_size == 7
    assert rotortree.LeanIMT(np.int64(3), np.uint8(5)).capacity == 3 ** 5


def test_configure_accepts_numpy_integers():
    rotortree.configure(num_threads=np.int64(2), parallel_threshold=np.uint32(500))
    info = rotortree.pool_info()
    assert (info["num_threads"], info["parallel_threshold"]) == (2, 500)
    assert type(info["num_threads"]) is int


# -- capacity errors say what happened ----------------------------------------------------------


def test_batch_that_does_not_fit_is_not_called_full():
    tree = rotortree.LeanIMT(2, 3)
    tree.insert_many(bytes(32 * 5))
    with pytest.raises(MaxDepthExceededError) as caught:
        tree.insert_many(bytes(32 * 4))
    message = str(caught.value)
    assert "full" not in message
    assert ("inserting 4 leaves would exceed the capacity arity**max_depth = 2**3 = 8 leaves "
            "of a tree holding 5 (room for 3 more)") in message
    assert tree.size == 5


def test_full_tree_is_called_full():
    tree = rotortree.LeanIMT(2, 2)
    for _ in range(4):
        tree.insert(bytes(32))
    for insert in (lambda: tree.insert(bytes(32)), lambda: tree.insert_many(bytes(64))):
        with pytest.raises(MaxDepthExceededError,
                           match=r"the tree is full: it holds 4 leaves, its capacity "
                                 r"arity\*\*max_depth = 2\*\*2 = 4 leaves"):
            insert()
    assert tree.size == 4


def test_capacity_beyond_64_bits_names_the_real_limit():
    """arity**max_depth can exceed 2**64 - 1, the most leaves a size can count."""
    tree = rotortree.LeanIMT(255, 64)
    message = str(tree._capacity_error(2 ** 64 - 1))
    assert "2**64 - 1 leaves (arity**max_depth = 255**64 is more)" in message
    assert "room for 18,446,744,073,709,551,615 more" in message


# -- verify, in-process ------------------------------------------------------------------------


@pytest.mark.parametrize("content,fragment", [
    ('{"a": ' * 50_000 + "1" + "}" * 50_000, "nested too deeply"),
    ("[" + "1" * 5000 + "]", "too many digits"),
])
def test_verify_bad_json_via_stdin(content, fragment, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(content))
    assert cli.main(["verify", "-"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stdin" in err and fragment in err


def test_open_wraps_other_os_errors(tmp_path):
    with pytest.raises(rotortree.DurabilityError, match="File name too long"):
        rotortree.RotorTree.open(tmp_path / ("x" * 300), create=True)


def test_load_of_a_directory_is_a_durability_error(tmp_path):
    with pytest.raises(rotortree.DurabilityError, match="Is a directory"):
        rotortree.LeanIMT.load(tmp_path)
