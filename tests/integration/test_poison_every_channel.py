"""Issue 21's acceptance test: poison on every inbound channel, then an approach, on `emguard serve`.

A real ``emguard serve`` process with its own mosquitto and Redis gets a mixed batch of what an
attacker or broken firmware sends (out-of-range seq on a fix, a burst and an event, deep
nesting, invalid UTF-8, a 2 MB payload, OwnTracks junk, hostile ``em/ack`` payloads, hostile
HTTP bodies) and then a normal approach of the offender to the victim.  The approach must
raise its alarm exactly once, every poison must be dead-lettered with a reason, and the
process must still be alive and ready.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from engine.core.testing import ORIGIN, DeviceScript, orders_doc
from tests.integration import procs

pytestmark = pytest.mark.integration
X0, Y0 = ORIGIN
TOKEN = "t0k-supervisor-0123456789"


def _fix(device: str, seq: Any, **extra: Any) -> bytes:
    doc = {"v": 1, "device": device, "seq": seq, "t": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "lat": 51.9, "lon": 4.4, "acc": 8, **extra}
    return json.dumps(doc).encode()


def _poison() -> list[tuple[str, bytes]]:
    """One of each kind of hostile message, on every inbound topic."""
    deep = b"[" * 50_000 + b"]" * 50_000
    now = int(time.time())
    event = {"v": 1, "device": "VD-2001", "seq": 2**63, "t": now * 1000, "type": "panic", "detail": {}}
    return [
        ("em/dev/AM-1001/fix", _fix("AM-1001", 2**63)),  # issue 21, item 1
        ("em/dev/AM-1001/fix", b"[" + _fix("AM-1001", 2**64) + b"]"),
        ("em/dev/VD-2001/event", json.dumps(event).encode()),
        ("em/dev/AM-1001/fix", deep),
        ("em/dev/AM-1001/event", b'{"v": 1, "device": "AM-1001", "seq": 3, "type": ' + b"[" * 5000),
        ("em/dev/AM-1001/fix", _fix("AM-1001", 5)[:-1] + b', "src": "\xff\xfe"}'),
        ("em/dev/AM-1001/fix", _fix("AM-1001", 6, junk="x" * 2_000_000)),
        ("em/dev/AM-1001/fix", _fix("AM-1001", 7, lat=float("inf")).replace(b"Infinity", b"1e999")),
        ("owntracks/anna/phone", json.dumps({"_type": "location", "tst": 2**70, "lat": "x", "lon": 4}).encode()),
        ("owntracks/anna/phone", deep),
        ("em/ack", deep),  # issue 21, item 2
        ("em/ack", b"[1]"),
        ("em/ack", json.dumps({"alert_id": "A-1", "action": "ack", "by": "x", "note": "n" * 2_000_000}).encode()),
        ("em/dev/ZZ-9/fix", b"\x00\x01"),  # a device nobody registered, not even JSON
    ]


async def _http_poison(port: int) -> list[int]:
    """Hostile HTTP: a text/plain POST, a 20 MB note, deeply nested JSON, unknown routes."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        return [
            (await c.post("/api/alerts/A-1/ack", content=b'{"note": "x"}',
                          headers={**auth, "content-type": "text/plain"})).status_code,
            (await c.post("/api/alerts/A-1/ack", content=b'{"note": "' + b"x" * 20_000_000 + b'"}',
                          headers={**auth, "content-type": "application/json"})).status_code,
            (await c.post("/api/alerts/A-1/ack", content=b"[" * 100_000 + b"]" * 100_000,
                          headers={**auth, "content-type": "application/json"})).status_code,
            (await c.post("/api/alerts/A-1/ack", json={"note": "x"})).status_code,  # no token
        ]


@pytest.fixture
def world(tmp_path: Path):
    broker, redis = procs.mosquitto(tmp_path), procs.redis(tmp_path)
    yield tmp_path, broker, redis
    for p in (broker, redis):
        p.stop()


async def test_poison_on_every_channel_then_an_approach_raises_one_alarm_and_stays_ready(world):
    """The process survives everything, dead-letters each poison, and the approach alarms once."""
    tmp, broker, redis = world
    await broker.start()
    await redis.start()
    now = time.time()
    doc = orders_doc(valid_from=now - 3600, valid_until=now + 60 * 86400,
                     proximity=[{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}])
    doc["owntracks"] = {"anna/phone": "VD-2001"}
    orders = tmp / "orders.json"
    orders.write_text(json.dumps(doc))
    eng = procs.engine(tmp, broker.port, redis.port, orders, EMGUARD_API_TOKENS=f"{TOKEN}:sup:supervisor")
    centre: list[dict[str, Any]] = []
    letters: list[dict[str, Any]] = []

    async def listen(ready: asyncio.Event) -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="centre-poison") as c:
            await c.subscribe("em/alerts/centre", qos=1)
            await c.subscribe("em/deadletter", qos=1)
            ready.set()
            async for m in c.messages:
                (letters if m.topic.value == "em/deadletter" else centre).append(json.loads(m.payload))

    ready = asyncio.Event()
    listener = asyncio.create_task(listen(ready))
    await ready.wait()
    await eng.start()
    try:
        await procs.ready(eng)
        poison = _poison()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="devices-poison") as dev:
            for topic, payload in poison:
                await dev.publish(topic, payload, qos=1)
        statuses = await _http_poison(eng.port)
        assert statuses == [415, 413, 400, 401]
        await procs.until(lambda: len(letters) >= len(poison), 30, "a dead letter for every poison")

        am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
        am.seq = vd.seq = 100  # past the seqs the poison used
        t0 = time.time() - 150
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="devices-approach") as dev:
            await dev.publish(*vd.fix(t0, X0, Y0), qos=1)
            for i, dx in enumerate([3000, 2200, 1400, 600, 50]):  # ~27 m/s, 30 s apart
                await dev.publish(*am.fix(t0 + 30 * i, X0 + dx, Y0), qos=1)
                await dev.publish(*vd.fix(t0 + 30 * i + 1, X0, Y0), qos=1)
        await procs.until(lambda: any(a["level"] in ("alarm", "critical") for a in centre), 30, "the alarm")
        await asyncio.sleep(2)  # anything doubled would arrive by now
        assert eng.popen is not None and eng.popen.poll() is None, "the process is alive"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{eng.port}", timeout=5) as c:
            r = await c.get("/readyz")
            assert r.status_code == 200, r.text
    finally:
        listener.cancel()
        eng.stop()
    proximity = [a for a in centre if a["kind"] == "proximity"]
    assert len({a["alert_id"] for a in proximity}) == 1, "one approach, one alert"
    raised_alarm = [a for a in proximity if a["level"] == "alarm"]
    assert raised_alarm and len({a["change_seq"] for a in raised_alarm}) == len(raised_alarm), "no change twice"
    assert all(d.get("reason") for d in letters), letters
    assert "poison" not in {d["reason"] for d in letters}, "nothing had to be dead-lettered as poison"
