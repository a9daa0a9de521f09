"""setuptools reads the metadata from pyproject.toml; this file adds what has
no pyproject.toml spelling: the cffi extension (``cffi_modules``), the
abi3 wheel tag, and a build_ext that makes the extension optional.

Without a working C compiler (or on a platform the core does not support,
see build_ffi.py) the install still succeeds: the pure-Python part (proof
verification, the light client) is installed with a warning, and the
reason is stored beside the package (``_build_failure.txt``) so that
``import rotortree`` can say why trees are unavailable. Set
``ROTORTREE_REQUIRE_NATIVE=1`` to make such a failure fatal instead
(tools/build_wheels.py does).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import build_ffi  # noqa: E402 (needs the directory above on sys.path)

FAILURE_NOTE = "_build_failure.txt"
SIGNATURE_SUFFIX = ".rotortree-build"


def native_required() -> bool:
    return os.environ.get("ROTORTREE_REQUIRE_NATIVE", "").strip() not in ("", "0")


def warn(reason: str) -> None:
    banner = "=" * 72
    text = textwrap.fill(
        f"rotortree: the C core was not built ({reason}). Installing the pure-Python "
        "part only: proof verification works, trees do not. Install gcc or clang (and the "
        "Python headers) and reinstall with 'pip install --force-reinstall --no-cache-dir' "
        "(pip may cache this wheel) to get the C core; set ROTORTREE_REQUIRE_NATIVE=1 to "
        "make this an error.", 72)
    print(f"\n{banner}\nWARNING: {text}\n{banner}\n", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """build_ext that rebuilds on a flavour change and survives a failed
    build of the C core (see the module docstring)."""

    def run(self) -> None:
        self.native_failure = None
        try:
            super().run()
        except Exception as error:  # no compiler at all fails before any extension
            if native_required():
                raise
            # An editable install then fails to copy the missing module into
            # the source tree: the first reason is the one worth keeping.
            if self.native_failure is None:
                self.native_failure = describe(error)
                warn(self.native_failure)
        # Beside the package the install will import: build/lib, or the
        # source tree for an editable install.
        note = os.path.join(self.package_dir(), FAILURE_NOTE)
        if self.native_failure is None:
            if os.path.exists(note):
                os.remove(note)
            return
        os.makedirs(os.path.dirname(note), exist_ok=True)
        with open(note, "w", encoding="utf-8") as f:
            f.write(self.native_failure + "\n")

    def package_dir(self) -> str:
        return os.path.dirname(self.get_ext_fullpath("rotortree._rotortree_cffi"))

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        target = self.get_ext_fullpath(ext.name)
        # setuptools compares only file times, so a module built with other
        # flags (ROTORTREE_BUILD=debug: ASan, which every import then dies
        # of without the preload) would be kept. Compare the flags too.
        stamp = os.path.join(self.build_temp, ext.name + SIGNATURE_SUFFIX)
        signature = json.dumps({"cc": build_ffi.compiler_command(),
                                "compile": ext.extra_compile_args,
                                "link": ext.extra_link_args})
        old = None
        if os.path.exists(stamp):
            with open(stamp, encoding="utf-8") as f:
                old = f.read()
        saved_force = self.force
        if old != signature:
            self.force = True
        try:
            super().build_extension(ext)
        except Exception as error:
            if native_required():
                raise
            # A half-written module must not be mistaken for a built one.
            if os.path.exists(target):
                os.remove(target)
            self.native_failure = describe(error)
            warn(self.native_failure)
            return
        finally:
            self.force = saved_force
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w", encoding="utf-8") as f:
            f.write(signature)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


def native_options() -> dict:
    """setup() keywords for the extension, or none where it cannot be built."""
    try:
        build_ffi.flags_for(build_ffi.build_flavour(), sys.platform, "gcc")
    except build_ffi.UnsupportedPlatform as error:
        if native_required():
            raise
        warn(str(error))
        return {}
    return {
        "cffi_modules": ["build_ffi.py:ffibuilder"],
        # cffi builds the module against the stable ABI (abi3.so); the wheel
        # must say so, or it is tagged for one CPython version only.
        "options": {"bdist_wheel": {"py_limited_api": "cp39"}},
    }


setup(cmdclass={"build_ext": OptionalBuildExt}, **native_options())
