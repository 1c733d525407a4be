from setuptools import setup

setup(cffi_modules=["src/gradkern/_build_c.py:ffibuilder"])
