"""``emguard publish --shift-to-now``: a recorded trace plays live as it was recorded, not all late."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from click.testing import CliRunner

from devices.timeutil import format_time, parse_time
from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, DeviceScript, circle, orders_doc
from engine.runtime.broker import EmbeddedBroker, mosquitto_binary
from engine.runtime.replay import read_trace, replay_messages
from engine.runtime.service import Service
from engine.tools.cli import main
from simulator.publish import parse_broker_url, publish_trace
from simulator.timeshift import shift_payload
from tests.integration.procs import until

X0, Y0 = ORIGIN
DAY = 86_400.0


def test_native_times_move_by_the_offset_in_their_own_form() -> None:
    """RFC 3339 text stays text, epoch milliseconds stay milliseconds, a burst moves together."""
    fix = {"v": 1, "device": "AM-1", "seq": 1, "t": "2026-11-23T10:15:02.120Z", "lat": 1, "lon": 2, "acc": 5}
    out = json.loads(shift_payload("em/dev/AM-1/fix", json.dumps(fix).encode(), 90.5))
    assert out == {**fix, "t": "2026-11-23T10:16:32.620Z"}
    event = {"v": 1, "device": "AM-1", "seq": 2, "t": 1_795_000_000_000, "type": "panic"}
    assert json.loads(shift_payload("em/dev/AM-1/event", json.dumps(event).encode(), -1.25))["t"] == 1_794_999_998_750
    burst = json.loads(shift_payload("em/dev/AM-1/fix", json.dumps([fix, {**fix, "seq": 3}]).encode(), 60))
    assert [b["t"] for b in burst] == ["2026-11-23T10:16:02.120Z"] * 2


def test_owntracks_tst_moves_and_anything_else_is_left_alone() -> None:
    """OwnTracks' epoch seconds move; junk, and objects without a device time, are published as they are."""
    loc = {"_type": "location", "tst": 1_795_000_000, "lat": 52.0, "lon": 4.3}
    assert json.loads(shift_payload("owntracks/a/p", json.dumps(loc).encode(), 10.4))["tst"] == 1_795_000_010
    for payload in (b"\xff not json", b'{"v": 1}', b"[1, 2]", b'{"t": "yesterday"}'):
        assert shift_payload("em/dev/AM-1/fix", payload, 3600) == payload


def test_shift_to_now_needs_real_time() -> None:
    """At another speed the device clock would drift from the wall clock: refused, saying why."""
    result = CliRunner().invoke(main, ["publish", "x.jsonl", "--speed", "60", "--shift-to-now"])
    assert result.exit_code != 0


def _recorded_trace(path: Path, recorded_at: float) -> None:
    """A fortnight-old trace: he stands in his ban zone, then her panic button, each fix 2 s apart."""
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    lines = []
    for i in range(4):
        t = recorded_at + 2 * i
        lines.append((t + 0.4, *am.fix(t, X0 + 10 * i, Y0, acc=5.0)))
    lines.append((recorded_at + 8.3, *vd.event(recorded_at + 8, "panic")))
    path.write_text("".join(
        json.dumps({"arrival": format_time(a), "topic": topic, "payload": json.loads(p)}) + "\n"
        for a, topic, p in lines
    ))


async def _live(trace: Path, book: Any, shift: bool) -> list[dict[str, Any]]:
    """The centre messages of a live service fed by ``emguard publish`` through a real mosquitto."""
    async with EmbeddedBroker(prefer="mosquitto") as info:
        service = Service(Engine(book), ServiceConfig(broker=info.url, client_id=f"shift-{shift}"),
                          persistent_session=False)
        got: list[dict[str, Any]] = []
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        port = parse_broker_url(info.url).port
        async with aiomqtt.Client("127.0.0.1", port, identifier=f"centre-{shift}") as centre:
            await centre.subscribe("em/alerts/centre", qos=1)
            await until(lambda: service.connected, 20, "the engine subscribed")
            await publish_trace(trace, info.url, 1.0, progress=False, shift_to_now=shift)

            async def collect() -> None:
                async for m in centre.messages:
                    got.append(json.loads(m.payload))

            with pytest.raises(TimeoutError):
                await asyncio.wait_for(collect(), 3.0)  # the reorder hold and a margin
        stop.set()
        await runner
    return got


async def test_a_shifted_trace_tells_a_live_engine_the_story_replay_tells(tmp_path: Path) -> None:
    """Unshifted, a two-week-old trace is all late; shifted, the live alerts match replay's."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (apt-get install mosquitto)")
    recorded_at = time.time() - 14 * DAY
    doc = orders_doc(exclusion=[{"id": "Z-ban", "circle": circle(X0, Y0, 300)}],
                     valid_from=recorded_at - DAY, valid_until=time.time() + 30 * DAY)
    book = load_orders(doc)
    trace = tmp_path / "trace.jsonl"
    _recorded_trace(trace, recorded_at)
    replayed = replay_messages(list(read_trace(trace)), book)

    def story(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(a["kind"], a["level"], a["state"], a.get("late", False)) for a in alerts]

    shifted = await _live(trace, book, shift=True)
    assert story(shifted) == story(replayed)
    assert not any(a.get("late") for a in shifted)
    first_fix = json.loads(next(iter(read_trace(trace)))[2])["t"]
    assert parse_time(shifted[0]["device_time"]) - parse_time(first_fix) > 13 * DAY
    unshifted = await _live(trace, book, shift=False)
    assert story(unshifted) != story(replayed)
