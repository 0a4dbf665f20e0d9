"""Only here for the cffi extension; all metadata lives in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["metaclip_gpu/engine/_native/build_ext.py:ffibuilder"])
