"""The README's first command: ``emguard demo`` on embedded defaults shows the whole story."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_zone_proximity_and_panic_alerts_then_stops():
    """A fresh user sees the ban-zone alarm, the forecast proximity alarm and the panic, in order."""
    proc = subprocess.run(
        [sys.executable, "-m", "engine.tools.cli", "demo", "--once", "--speed", "20", "--http-port", "0"],
        capture_output=True, text=True, timeout=180, check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in out.splitlines() if " ALERT " in line]
    story = [(line.split()[2], line.split()[3], line.split()[4]) for line in lines]
    assert ("ALARM", "exclusion", "open") in story
    assert ("CRITICAL", "proximity", "open") in story
    assert ("CRITICAL", "panic", "open") in story
    assert story.index(("ALARM", "exclusion", "open")) < story.index(("CRITICAL", "proximity", "open"))
    assert "em/cmd/subject/AM-1001: leave_area (alarm)" in out
    assert "em/alerts/victim/VD-2001: alarm" in out  # warned at alarm, before critical
    assert "scenario played" in out
