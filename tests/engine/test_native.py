"""engine.tools.native: a tree whose compiled extensions are older than their sources is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.core.config import ServiceConfig
from engine.errors import ConfigError
from engine.tools import serve
from engine.tools.native import NATIVE_SOURCES, stale_extensions


def _tree(tmp_path: Path, ext_age_s: float) -> Path:
    source = tmp_path / NATIVE_SOURCES[0]
    source.parent.mkdir(parents=True)
    source.write_text("x = 1\n")
    ext = source.with_name(f"{source.stem}.cpython-311-x86_64-linux-gnu.so")
    ext.write_bytes(b"\x7fELF")
    t = source.stat().st_mtime
    os.utime(ext, (t + ext_age_s, t + ext_age_s))
    return tmp_path


def test_an_extension_older_than_its_source_is_stale(tmp_path: Path) -> None:
    root = _tree(tmp_path, ext_age_s=-10.0)  # the source was edited after the build
    assert stale_extensions(root) == [str(Path(NATIVE_SOURCES[0]).with_suffix("")) + ".cpython-311-x86_64-linux-gnu.so"]


def test_a_fresh_build_and_a_pure_tree_are_not(tmp_path: Path) -> None:
    assert stale_extensions(_tree(tmp_path, ext_age_s=10.0)) == []
    assert stale_extensions(tmp_path / "nothing-here") == []


async def test_serve_refuses_a_stale_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve, "stale_extensions", lambda: ["engine/core/pipeline.cpython-311-x86_64-linux-gnu.so"])
    with pytest.raises(ConfigError, match="older than their sources"):
        await serve.run_serve(ServiceConfig(orders="orders.json"))
