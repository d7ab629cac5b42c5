"""The NATS worker's centre-wide view: newest change wins, actions wait for their result, open API refused."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.runtime.centre_view import CentreView, change_kind, payload_key
from engine.tools.cli import main


def _doc(seq: int, state: str = "open", level: str = "alarm", by: str = "engine") -> dict[str, Any]:
    return {"alert_id": "A-1", "change_seq": seq, "state": state, "level": level,
            "deadline": "2026-12-07T10:05:00Z", "changed_by": by, "kind": "proximity"}


def test_the_newest_change_seq_wins_and_the_peak_level_is_kept() -> None:
    """A repeat or a late older version is ignored; the highest level seen stays the peak."""
    view = CentreView()
    seen: list[str] = []
    view.listeners.append(lambda change, s: seen.append(change))
    assert view.apply(_doc(1, level="critical"))
    assert view.apply(_doc(3, level="warning", state="acknowledged", by="op-1"))
    assert not view.apply(_doc(2, level="alarm"))  # older, late
    assert not view.apply(_doc(3))  # a repeat
    summary = view.alerts["A-1"].summary(now=0.0)
    assert summary["state"] == "acknowledged" and summary["peak_level"] == "critical"
    assert summary["close_needs"] == ["outcome", "note"]
    assert seen == ["raised", "ack"]


def test_change_kinds_read_off_two_wire_forms() -> None:
    assert change_kind(_doc(1), {**_doc(2), "state": "closed"}) == "close"
    assert change_kind(_doc(1), {**_doc(2), "level": "critical"}) == "level"
    assert change_kind(_doc(1), {**_doc(2), "claimed_by": "op-1"}) == "claim"


async def test_an_action_waits_for_its_change_or_its_refusal() -> None:
    """The operator's own next version answers; a dead letter quoting the payload refuses; else nothing."""
    view = CentreView()
    view.apply(_doc(1))
    payload = b'{"alert_id":"A-1","action":"ack","by":"op-1"}'

    async def later() -> None:
        await asyncio.sleep(0.05)
        view.apply(_doc(2, by="engine"))  # someone else's change does not answer op-1
        await asyncio.sleep(0.05)
        view.apply(_doc(3, state="acknowledged", by="op-1"))

    task = asyncio.create_task(later())
    changed, refused = await view.outcome("A-1", 1, "op-1", payload_key(payload), 2.0)
    await task
    assert changed is not None and changed.seq == 3 and refused is None
    view.refused({"topic": "em/ack", "payload": payload_key(payload), "reason": "bad_ack", "detail": "no"}, "em/ack")
    changed, refused = await view.outcome("A-1", 3, "op-1", payload_key(payload), 1.0)
    assert changed is None and refused is not None and refused["detail"] == "no"
    assert await view.outcome("A-1", 3, "op-1", payload_key(payload), 0.1) == (None, None)


@pytest.fixture
def _no_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("EMGUARD_API_TOKENS", "EMGUARD_API_TOKENS_FILE", "EMGUARD_INSECURE_NO_AUTH", "EMGUARD_HTTP_PORT"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.usefixtures("_no_tokens")
def test_serve_nats_refuses_an_open_api(tmp_path: Path) -> None:
    """Like the single-node serve: no tokens, no --insecure-no-auth, no start (before any connection)."""
    env = {"EMGUARD_NATS_URL": "nats://127.0.0.1:1", "EMGUARD_REDIS": "redis://127.0.0.1:1/0",
           "EMGUARD_ORDERS": str(tmp_path / "missing.json")}
    refused = CliRunner().invoke(main, ["serve", "--transport", "nats"], env=env)
    assert refused.exit_code != 0 and "EMGUARD_API_TOKENS" in refused.output
    allowed = CliRunner().invoke(main, ["serve", "--transport", "nats", "--insecure-no-auth"], env=env)
    assert allowed.exit_code != 0 and "cannot read orders file" in allowed.output
    no_api = CliRunner().invoke(main, ["serve", "--transport", "nats", "--http-port", "0"], env=env)
    assert "cannot read orders file" in no_api.output


def test_seeded_records_give_way_to_newer_stream_versions_and_keep_their_peak() -> None:
    """An archived record (with history) starts the view; its peak is the history's highest level."""
    view = CentreView()
    record = {**_doc(2, level="warning", state="acknowledged", by="op-1"),
              "history": [{"level": "critical", "by": "engine"}, {"level": "warning", "by": "op-1"}]}
    assert view.seed([record]) == 1
    seen = view.alerts["A-1"]
    assert "history" not in seen.doc and seen.summary(0.0)["peak_level"] == "critical"
    assert not view.apply(_doc(2))  # the stream's copy of the same version
    assert view.apply(_doc(3, state="closed", by="op-1")) and view.alerts["A-1"].doc["state"] == "closed"
