"""The compiled build: which modules mypyc compiles, and which build is running.

The engine's per-fix path is plain typed Python (``mypy --strict``), so mypyc, the compiler
mypy and black ship with, turns the same source into C extension modules: no second
implementation of any rule to keep in step, and 1.9-2.3x the messages per CPU second
(benchmarks/README.md).  The build is optional: ``EMGUARD_NATIVE=1`` at install (setup.py,
deploy/Dockerfile).  The default install, the demo and the default test run use the pure
Python modules; tests/test_native_build.py compiles a copy of the tree, runs the engine's
tests there and compares every effect of a seeded stream, and state stored by either build,
with the pure build.

Records made per fix (track points, readings, contexts, decoded messages) are dataclasses with a
written ``__init__`` (``@dataclass(init=False)``) and not ``frozen``: mypyc compiles the methods
written in a class, but a dataclass's generated ``__init__`` stays interpreted Python, and a
frozen one sets every field through ``object.__setattr__``.  Measured here with three fields:
frozen 1,110 ns, plain dataclass 460 ns, written ``__init__`` compiled 68 ns per object; in the
engine that was a fifth of every compiled fix's instructions (callgrind).  Such records are
still never changed once made; hashable ones say so (``unsafe_hash``).

This module imports nothing outside the standard library: setup.py reads ``NATIVE_SOURCES``
before the dependencies are installed.
"""

from __future__ import annotations

import importlib
import importlib.machinery
from pathlib import Path

#: sources compiled by ``EMGUARD_NATIVE=1``: decoding, the rules and the state they keep (the
#: service around them, I/O, HTTP and the simulator stay Python: they are not per-fix work).
#: devices/wire.py stays Python too: mypyc turns its msgspec ``Struct`` into a class msgspec
#: no longer decodes into (every fix fell back to the slow path); devices/fastpath.py, which
#: turns that Struct into fixes, is compiled.
NATIVE_SOURCES: tuple[str, ...] = (
    "devices/decode.py",
    "devices/fastpath.py",
    "devices/model.py",
    "devices/owntracks.py",
    "devices/timeutil.py",
    "devices/topics.py",
    "devices/validate.py",
    "engine/core/alert_records.py",
    "engine/core/alerts.py",
    "engine/core/case_state.py",
    "engine/core/cases.py",
    "engine/core/config.py",
    "engine/core/effects.py",
    "engine/core/indexes.py",
    "engine/core/messages.py",
    "engine/core/notify.py",
    "engine/core/orders.py",
    "engine/core/pipeline.py",
    "engine/core/prepared.py",
    "engine/core/rules/context.py",
    "engine/core/rules/crossings.py",
    "engine/core/rules/device_events.py",
    "engine/core/rules/expiry.py",
    "engine/core/rules/proximity.py",
    "engine/core/rules/zones.py",
    "engine/core/state_codec.py",
    "engine/core/tracks.py",
    "engine/runtime/intake_frames.py",
    "geo/certainty.py",
    "geo/index.py",
    "geo/proximity.py",
)

ROOT = Path(__file__).resolve().parents[2]


def module_name(source: str) -> str:
    """``engine/core/rules/zones.py`` -> ``engine.core.rules.zones``."""
    return source.removesuffix(".py").replace("/", ".")


def compiled_modules() -> list[str]:
    """The ``NATIVE_SOURCES`` modules that were loaded from a compiled extension (imports them)."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [
        name for name in map(module_name, NATIVE_SOURCES)
        if str(getattr(importlib.import_module(name), "__file__", "")).endswith(suffixes)
    ]


def build_name() -> str:
    """``"compiled"``, ``"pure"`` or ``"mixed (n of m compiled)"``: for logs and benchmark output."""
    n = len(compiled_modules())
    if n == 0:
        return "pure"
    if n == len(NATIVE_SOURCES):
        return "compiled"
    return f"mixed ({n} of {len(NATIVE_SOURCES)} compiled)"


def stale_extensions(root: Path = ROOT) -> list[str]:
    """Compiled extensions in a source tree that are older than their source.

    Python imports an extension module in preference to the ``.py`` beside it, so after an
    in-place build (``setup.py build_ext --inplace``) an edited source would silently not
    run: the tests and ``emguard serve`` refuse such a tree.
    """
    stale = []
    for source in NATIVE_SOURCES:
        py = root / source
        for ext in py.parent.glob(f"{py.stem}.*"):
            if ext.suffix in (".so", ".pyd") and py.exists() and py.stat().st_mtime > ext.stat().st_mtime:
                stale.append(str(ext.relative_to(root)))
    return sorted(stale)
