"""The tree shows the architecture: layers that import only downwards, no cycles, small modules.

The layers are declared once, as import-linter contracts in pyproject.toml; this test runs
``lint-imports`` on them, and adds what import-linter does not check: that no two modules
import each other through any chain, and that no module grows past 600 lines.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "devices", "geo", "simulator")
MAX_LINES = 600
MAX_ENGINE_TOP_MODULES = 10


def test_import_contracts_are_kept():
    """``lint-imports`` (pyproject.toml ``[tool.importlinter]``) keeps every contract."""
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in graph.modules:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    """No chain of imports leads from a module back to itself (package ``__init__`` aside)."""
    graph = grimp.build_graph(*PACKAGES)
    packages = {m for m in graph.modules if graph.find_children(m)}
    plain = grimp.ImportGraph()  # a package's __init__ re-exporting its children is no cycle
    for module in graph.modules - packages:
        plain.add_module(module)
        for imported in graph.find_modules_directly_imported_by(module) - packages:
            plain.add_import(importer=module, imported=imported)
    assert _cycles(plain) == []


def test_cycle_finder_sees_a_cycle():
    """The finder itself works: a two-module loop and a three-module loop are both reported."""
    graph = grimp.ImportGraph()
    for a, b in [("p.a", "p.b"), ("p.b", "p.a"), ("p.c", "p.d"), ("p.d", "p.e"), ("p.e", "p.c"),
                 ("p.f", "p.a")]:
        graph.add_import(importer=a, imported=b)
    assert sorted(_cycles(graph)) == [["p.a", "p.b"], ["p.c", "p.d", "p.e"]]


def test_no_module_over_600_lines():
    """Every module stays readable in one sitting: at most 600 lines."""
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_engine_is_a_few_layered_subpackages():
    """engine/ holds its layers as subpackages, with few loose modules beside them."""
    loose = sorted(p.name for p in (ROOT / "engine").glob("*.py") if p.name != "__init__.py")
    packages = sorted(p.name for p in (ROOT / "engine").iterdir() if (p / "__init__.py").exists())
    assert len(loose) <= MAX_ENGINE_TOP_MODULES, loose
    assert {"core", "runtime", "web", "tools"} <= set(packages)
