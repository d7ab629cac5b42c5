"""Supervision, poison bookkeeping, em/ack limits and bounded outgoing payloads, without a broker."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.runtime.acks import MAX_ACK_BYTES, MAX_NOTE_CHARS, InvalidAck, parse_ack
from engine.runtime.outbound import MAX_PUBLISH_BYTES, encode_bounded
from engine.runtime.poison import POISON_AFTER, Suspects, message_key
from engine.runtime.store import MemoryStore
from engine.runtime.supervise import MAX_RESTARTS, Supervisor


async def test_a_restartable_task_that_fails_is_restarted_and_counted() -> None:
    """A connection or timer task that raises is logged, counted and runs again; nothing stops."""
    stop = asyncio.Event()
    sup = Supervisor(stop)
    runs: list[int] = []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await stop.wait()

    sup.start("ticker", flaky, restartable=True)
    for _ in range(100):
        if len(runs) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(runs) == 2 and sup.failures["ticker"] == 1
    assert sup.healthy and sup.fatal is None and not stop.is_set()
    assert sup.report()["ticker"]["last_error"] == "RuntimeError: boom"
    stop.set()
    await sup.cancel()


async def test_a_task_that_must_not_restart_stops_the_service_with_its_cause() -> None:
    """Processing or committing failing: the stop event is set and the cause recorded."""
    stop = asyncio.Event()
    sup = Supervisor(stop)

    async def commit() -> None:
        raise OverflowError("int too big to convert")

    sup.start("committer", commit, restartable=False)
    await asyncio.wait_for(stop.wait(), 2)
    assert sup.fatal == "task committer failed: OverflowError: int too big to convert"
    assert not sup.healthy


async def test_a_task_failing_again_and_again_becomes_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restarts are bounded: past MAX_RESTARTS within the window the service stops."""
    monkeypatch.setattr("engine.runtime.supervise.RESTART_BACKOFF_S", (0.0,))
    stop = asyncio.Event()
    sup = Supervisor(stop)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("always")

    sup.start("mqtt", broken, restartable=True)
    await asyncio.wait_for(stop.wait(), 5)
    assert calls == MAX_RESTARTS + 1
    assert sup.fatal is not None and "mqtt failed 6 times" in sup.fatal


async def test_a_task_that_returns_while_it_should_run_counts_as_failed() -> None:
    """A loop that ends without a stop is as silent as one that died: fatal for a non-restartable task."""
    stop = asyncio.Event()
    sup = Supervisor(stop)

    async def ends() -> None:
        return None

    sup.start("processor", ends, restartable=False)
    await asyncio.wait_for(stop.wait(), 2)
    assert sup.fatal is not None and "returned" in sup.fatal


def test_suspect_counts_make_poison_only_at_the_second_failure() -> None:
    """One failure makes a suspect; POISON_AFTER failures with it in flight make it poison."""
    key = message_key("em/dev/AM-1/fix", b"{}")
    assert key == message_key("em/dev/AM-1/fix", b"{}") != message_key("em/dev/AM-2/fix", b"{}")
    suspects = Suspects({key: 1})
    assert suspects and suspects.failures(key) == 1 and not suspects.is_poison(key)
    assert Suspects({key: POISON_AFTER}).is_poison(key)
    assert suspects.cleared([key, "other"]) == [key] and not suspects


async def test_memory_store_counts_and_clears_suspects() -> None:
    """The reference store: add counts one per call, clear forgets."""
    store = MemoryStore()
    await store.add_suspects(["a", "b"])
    await store.add_suspects(["a"])
    assert await store.suspects() == {"a": 2, "b": 1}
    await store.clear_suspects(["a"])
    assert await store.suspects() == {"b": 1}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"[" * 8_000 + b"]" * 8_000, "bad_ack"),  # not an object: refused at the first byte
        (b"[" * 100_000 + b"]" * 100_000, "too_large"),
        (b'{"alert_id": "A-1", "action": "ack", "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}", "too_deep"),
        (b"[1]", "bad_ack"),
        (b"1", "bad_ack"),
        (b"\xff\xfe", "bad_ack"),
        (b'{"alert_id": 1, "action": "ack"}', "bad_ack"),
        (b'{"action": "ack"}', "bad_ack"),
        (b'{"alert_id": "A-1", "action": "ack", "note": "' + b"x" * (MAX_NOTE_CHARS + 1) + b'"}', "bad_ack"),
        (b'{"alert_id": "A-1", "action": "ack", "note": "' + b"x" * MAX_ACK_BYTES + b'"}', "too_large"),
    ],
)
def test_bad_ack_payloads_are_invalid_acks_never_other_exceptions(payload: bytes, reason: str) -> None:
    """Deep nesting, wrong shapes, invalid UTF-8 and oversize all end as InvalidAck with a reason."""
    with pytest.raises(InvalidAck) as info:
        parse_ack(payload)
    assert info.value.reason == reason


def test_a_good_ack_parses_with_the_contract_fields() -> None:
    """The contract form, with unknown extra fields ignored."""
    cmd = parse_ack(b'{"alert_id": "A-1", "action": "ack", "by": "op", "note": "called", "extra": 1}')
    assert (cmd.alert_id, cmd.action, cmd.by, cmd.note, cmd.outcome) == ("A-1", "ack", "op", "called", "")


@given(st.binary(max_size=300))
def test_any_bytes_on_em_ack_parse_or_raise_invalid_ack(payload: bytes) -> None:
    """Whatever arrives is an action or an InvalidAck: nothing else escapes."""
    try:
        parse_ack(payload)
    except InvalidAck:
        pass


def test_small_payloads_go_out_unchanged() -> None:
    """Nearly every message: the same compact JSON as before."""
    payload = {"alert_id": "A-1", "level": "alarm", "evidence": {"fixes": ["AM-1:1"]}}
    data, short = encode_bounded(payload)
    assert not short and data == json.dumps(payload, separators=(",", ":")).encode()


def test_an_oversized_alert_is_published_shortened_with_its_identity() -> None:
    """A 2 MB note cannot make the broker drop our connection: texts are cut, the alert kept."""
    payload = {"alert_id": "A-1", "kind": "panic", "level": "critical", "state": "acknowledged",
               "history": [{"note": "x" * 2_000_000, "by": "op"}], "evidence": {"fixes": list(range(10_000))}}
    data, short = encode_bounded(payload)
    assert short and len(data) <= MAX_PUBLISH_BYTES
    doc = json.loads(data)
    assert doc["truncated"] is True
    assert (doc["alert_id"], doc["kind"], doc["level"], doc["state"]) == ("A-1", "panic", "critical", "acknowledged")
    assert len(doc["history"][0]["note"]) <= 1001 and len(doc["evidence"]["fixes"]) == 50


def test_a_payload_too_large_even_shortened_keeps_its_short_scalars() -> None:
    """Thousands of keys: only the top level's short values remain, still within the limit."""
    payload = {"alert_id": "A-1", **{f"k{i}": "y" * 900 for i in range(2_000)}}
    data, short = encode_bounded(payload)
    assert short and len(data) <= MAX_PUBLISH_BYTES and json.loads(data)["alert_id"] == "A-1"


async def test_store_errors_and_task_failures_never_carry_the_redis_password() -> None:
    """/readyz needs no token and shows failures: the store's error text is redacted at the source."""
    from engine.runtime.broker import free_port
    from engine.runtime.store import StoreUnavailable
    from engine.runtime.store_redis import RedisStore

    store = RedisStore(f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreUnavailable) as info:
        await store.load_state()
    await store.close()
    assert "s3cret-pass" not in str(info.value) and "127.0.0.1" in str(info.value)
    stop = asyncio.Event()
    sup = Supervisor(stop)

    async def fails() -> None:
        raise StoreUnavailable("redis redis://:s3cret-pass@db:6379/0: refused")

    sup.start("committer", fails, restartable=False)
    await asyncio.wait_for(stop.wait(), 2)
    assert sup.fatal is not None and "s3cret-pass" not in sup.fatal


def test_emguard_serve_exits_non_zero_with_the_cause_when_the_service_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The orchestrator restarts a process that exits non-zero: a fatal failure must be one."""
    from click.testing import CliRunner

    from engine.runtime.supervise import ServiceFailed
    from engine.tools.cli import main

    async def failing(cfg: object) -> None:
        raise ServiceFailed("task committer failed: OverflowError: int too big to convert")

    monkeypatch.setattr("engine.tools.serve.run_serve", failing)
    result = CliRunner().invoke(main, ["serve", "--orders", "x.json", "--insecure-no-auth"])
    assert result.exit_code == 1
    assert "task committer failed: OverflowError" in result.output
