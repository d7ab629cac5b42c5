"""The compiled build (mypyc, engine.tools.native) decides exactly as the pure build it is made from.

A copy of the tree is compiled once (benchmarks/native_tree.py, about a minute); then a
representative part of the suite runs against it, a seeded stream's every effect is compared with the pure build's, and
state stored by either build is restored by the other (a deployment switching builds keeps
its alerts and debounce state).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from native_tree import build, copy_tree  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("native")
    copy_tree(dest)
    assert build(dest) == "compiled"
    return dest


def _run(cwd: Path, *args: str, timeout: float = 300) -> str:
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return proc.stdout


def _fields(line: str) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", line))


@pytest.mark.timeout(1500)
def test_the_suite_passes_on_the_compiled_build(native: Path) -> None:
    """The engine, device, geo and simulator tests against the compiled modules: what the
    compiled build changes (the core, decoding, the geo kernels' callers) and what drives it
    (replay, the scored suite, the privacy measure).  The broker, deploy and NATS tests run
    pure-Python runtime code the build does not touch and take most of the suite's time, so
    they run once, on the pure build; so do the browser tests.  The tests that subclass or
    introspect engine classes skip themselves here (``pure_python``)."""
    out = _run(
        native, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not browser",
        "tests/engine", "tests/devices", "tests/geo", "tests/simulator", timeout=1400,
    )
    summary = out.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary


@pytest.mark.parametrize("day", [False, True], ids=["night", "day"])
def test_every_effect_of_a_seeded_stream_matches_the_pure_build(native: Path, day: bool) -> None:
    """The engine_core benchmark's digest hashes every message and alert change."""
    args = ["benchmarks/engine_core.py", "--subjects", "1000", "--messages", "8000"]
    args += ["--day"] if day else []
    pure = _fields(_run(ROOT, *args).splitlines()[-3])
    compiled = _fields(_run(native, *args).splitlines()[-3])
    assert int(pure["effects"]) > 500
    assert compiled["digest"] == pure["digest"] and compiled["effects"] == pure["effects"]


def test_state_stored_by_one_build_restores_in_the_other(native: Path, tmp_path: Path) -> None:
    """Half a stream in one build, its case parts restored in the other for the second half:
    the same effects as staying in one build, both ways."""
    probe = "tests/native_probe.py"
    pure_parts, native_parts = str(tmp_path / "pure.msgpack"), str(tmp_path / "native.msgpack")
    first_pure = _fields(_run(ROOT, probe, "first", pure_parts))
    first_native = _fields(_run(native, probe, "first", native_parts))
    assert (first_pure["build"], first_native["build"]) == ("pure", "compiled")
    assert first_native["digest"] == first_pure["digest"]
    seconds = {
        (where, parts): _fields(_run(cwd, probe, "second", parts))
        for where, cwd in (("pure", ROOT), ("native", native))
        for parts in (pure_parts, native_parts)
    }
    digests = {key: f["digest"] for key, f in seconds.items()}
    assert len(set(digests.values())) == 1, digests
    assert int(seconds[("pure", pure_parts)]["effects"]) > 500
