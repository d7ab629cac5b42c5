"""A torn last line of the evidence log is set aside *loudly* (issue 21: nothing fails silently).

Before this, opening a log whose last write was cut short moved the fragment to
``<log>.torn-<offset>`` without a word; an operator found an unexplained file,
or never learnt that an evidence write had been lost at all.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from engine.evidence.chain import Chain
from engine.evidence.store import JsonlStore

FRAGMENT = b'{"seq":3,"prev_hash":"ab'


def _log_with_records(path: Path, n: int) -> None:
    store = JsonlStore(path)
    chain = Chain(store)
    for i in range(n):
        chain.append("action", {"type": "operator", "alert_id": f"A-{i}", "by": "op-7"})
    store.close()


def _torn_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING
        and r.name == "engine.evidence.store"
        and "torn" in r.getMessage()
    ]


def test_torn_fragment_is_logged_with_file_offset_and_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the log, the fragment file, the offset and how many bytes were moved."""
    path = tmp_path / "audit.jsonl"
    _log_with_records(path, 3)
    offset = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(FRAGMENT)
    with (
        caplog.at_level(logging.WARNING, logger="engine.evidence.store"),
        JsonlStore(path) as store,
    ):
        assert Chain(store).length == 3
    (warning,) = _torn_warnings(caplog)
    message = warning.getMessage()
    aside = tmp_path / f"audit.jsonl.torn-{offset}"
    assert aside.read_bytes() == FRAGMENT
    assert str(path) in message and str(aside) in message
    assert f"{len(FRAGMENT)} bytes" in message and f"offset {offset}" in message
    assert "partial record" in message


def test_a_whole_record_missing_only_its_newline_is_called_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A complete record cut off just before its newline is a lost record, and the warning says so."""
    path = tmp_path / "audit.jsonl"
    _log_with_records(path, 4)
    data = path.read_bytes()
    assert data.endswith(b"\n")
    path.write_bytes(data[:-1])  # the last record, minus its newline
    with (
        caplog.at_level(logging.WARNING, logger="engine.evidence.store"),
        JsonlStore(path) as store,
    ):
        assert Chain(store).length == 3
    (warning,) = _torn_warnings(caplog)
    assert "complete record without its newline" in warning.getMessage()


def test_a_second_torn_write_at_the_same_offset_keeps_the_first_fragment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two crashes at the same offset leave two fragment files; neither overwrites the other."""
    path = tmp_path / "audit.jsonl"
    _log_with_records(path, 2)
    offset = path.stat().st_size
    for fragment in (b'{"seq":2,"a', b'{"seq":2,"b'):
        with open(path, "ab") as fh:
            fh.write(fragment)
        with caplog.at_level(logging.WARNING, logger="engine.evidence.store"), JsonlStore(path):
            pass
    assert (tmp_path / f"audit.jsonl.torn-{offset}").read_bytes() == b'{"seq":2,"a'
    assert (tmp_path / f"audit.jsonl.torn-{offset}-1").read_bytes() == b'{"seq":2,"b'
    assert len(_torn_warnings(caplog)) == 2


def test_an_intact_log_opens_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No torn line, no warning: the warning means something when it appears."""
    path = tmp_path / "audit.jsonl"
    _log_with_records(path, 2)
    with caplog.at_level(logging.WARNING, logger="engine.evidence.store"), JsonlStore(path):
        pass
    assert _torn_warnings(caplog) == []
