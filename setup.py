"""Build hook for the optional compiled build of the per-fix path (see engine/tools/native.py).

Everything else about the package is in pyproject.toml.  With ``EMGUARD_NATIVE=1`` the modules
in ``engine.tools.native.NATIVE_SOURCES`` are compiled with mypyc; mypyc type-checks them first, so
the build environment needs mypy and the runtime dependencies:

    pip install mypy "setuptools>=77" wheel && pip install .    # the dependencies (a pure build)
    EMGUARD_NATIVE=1 pip wheel --no-build-isolation --no-deps -w dist .   # the compiled wheel

In a source tree (benchmarks, tests/test_native_build.py): ``EMGUARD_NATIVE=1 python setup.py
build_ext --inplace`` puts the extensions beside the sources; ``engine.tools.native.stale_extensions``
guards against editing a source afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("EMGUARD_NATIVE") == "1":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from mypyc.build import mypycify

    from engine.tools.native import NATIVE_SOURCES  # standard library only

    ext_modules = mypycify(list(NATIVE_SOURCES), opt_level="3", multi_file=True)

setup(ext_modules=ext_modules)
