# setuptools reads everything else from pyproject.toml; cffi_modules is a
# setup() keyword contributed by cffi and has no pyproject.toml spelling.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
