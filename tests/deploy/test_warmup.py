"""The image's build-time Numba warm-up, run exactly as the Dockerfile runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _deploy_helpers import DEPLOY

WARMUP = [
    sys.executable,
    str(DEPLOY / "warmup" / "warmup.py"),
    str(DEPLOY / "warmup" / "trace.jsonl"),
]


@pytest.mark.slow
def test_warmup_fills_an_empty_numba_cache_that_a_second_start_reuses(tmp_path: Path) -> None:
    """From an empty cache the warm-up replays, raises alerts and writes cache files; a rerun loads them."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    cmd = [*WARMUP, str(DEPLOY / "orders.example.json")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert first.returncode == 0, first.stderr
    assert "alert changes" in first.stdout
    cached = list((tmp_path / "numba").rglob("*.nbi"))
    assert cached, "no Numba cache index written"
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    assert sorted((tmp_path / "numba").rglob("*.nbi")) == sorted(cached)


def test_warmup_fails_the_build_on_bad_usage(tmp_path: Path) -> None:
    """Wrong arguments exit non-zero, so a broken Dockerfile line cannot pass silently."""
    result = subprocess.run(WARMUP, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "usage" in result.stderr
