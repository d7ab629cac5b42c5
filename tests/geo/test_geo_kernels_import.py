"""The kernels are pure numerics: importing them pulls in neither shapely nor pyproj."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import geo.kernels

KERNEL_DIR = Path(geo.kernels.__file__).parent


def test_importing_kernels_does_not_import_shapely_or_pyproj() -> None:
    """A fresh interpreter that imports geo.kernels has no shapely/pyproj in sys.modules."""
    code = (
        "import sys, geo.kernels\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('shapely', 'pyproj'))\n"
        "print(','.join(bad))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


def test_kernel_modules_import_only_numpy_numba_math() -> None:
    """Every module under geo/kernels imports numpy, numba (and its llvmlite backend), math
    or its siblings, nothing else."""
    allowed = {"numpy", "numba", "llvmlite", "math", "__future__"}
    for path in KERNEL_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    continue
                names = [(node.module or "").split(".")[0]]
            else:
                continue
            assert set(names) <= allowed, f"{path.name} imports {names}"
