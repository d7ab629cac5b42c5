"""The code base stays lint-clean (ruff, with the async rules against blocking calls in coroutines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    """`ruff check .` passes on the whole repository, as configured in pyproject.toml."""
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def _hook():
    """The commit-msg hook, loaded as a module (it is a script without a .py suffix)."""
    import importlib.machinery
    import importlib.util

    path = ROOT / ".githooks" / "commit-msg"
    loader = importlib.machinery.SourceFileLoader("commit_msg_hook", str(path))
    spec = importlib.util.spec_from_loader("commit_msg_hook", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_commit_message_rule():
    """The hook's rule: short subject, blank line, a body; comments ignored."""
    problems = _hook().problems
    assert problems("Fix the thing\n\nBecause it broke; measured 3 ms.\n") == []
    assert problems("Fix the thing\n# a git comment\n") == [
        "there is no body: say why the change was made (and what was measured)"]
    assert problems("x" * 73 + "\n\nwhy\n") == ["the subject is 73 characters; at most 72"]
    assert problems("Subject\nbody glued on\n") == ["the subject must be followed by a blank line"]
    assert problems("\n") == ["the subject line is empty"]


def test_commits_since_the_rule_have_short_subjects_and_a_body():
    """Every commit after ``.githooks/since`` (merges aside) passes the commit-msg hook."""
    import shutil

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    since = (ROOT / ".githooks" / "since").read_text(encoding="utf-8").strip()
    log = subprocess.run(
        ["git", "log", "--no-merges", "--format=%H%x00%B%x01", f"{since}..HEAD"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if log.returncode != 0:
        pytest.skip(f"history not available here: {log.stderr.strip()}")
    problems = _hook().problems
    exempt = {
        line.split()[0]
        for line in (ROOT / ".githooks" / "exempt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    bad = {}
    for entry in log.stdout.split("\x01"):
        sha, _, message = entry.strip("\n").partition("\x00")
        if sha and sha not in exempt and (found := problems(message)):
            bad[sha[:10]] = found
    assert bad == {}
