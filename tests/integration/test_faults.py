"""Faults a 24/7 centre meets, each against real mosquitto and Redis started here.

The workload: N subjects each walk into their own ban zone and out again, so
exactly 3 N alert changes (warning on the first fix inside, alarm on the second,
condition cleared) must reach the centre, each once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import aiomqtt
import pytest

from devices.timeutil import format_time
from engine.core.testing import ORIGIN, DeviceScript, circle
from tests.integration import procs

pytestmark = pytest.mark.integration
X0, Y0 = ORIGIN
N = 12
PATH = [-900, -600, -300, 0, 20, 40, 300, 600, 900]  # metres from each zone centre, 15 s apart


def orders(n: int) -> dict:
    now = time.time()
    subjects = [{"id": f"S-{i}", "devices": [f"AM-{i}"]} for i in range(n)]
    order_list = [{
        "id": f"O-{i}", "subject": f"S-{i}", "legal_basis": "vrijheidsbeperkende_maatregel",
        "valid_from": format_time(now - 86400), "valid_until": format_time(now + 60 * 86400),
        "exclusion_zones": [{"id": "Z", "circle": circle(X0 + 3000 * i, Y0, 150)}],
    } for i in range(n)]
    return {"v": 1, "subjects": subjects, "protected_persons": [], "orders": order_list}


def workload(n: int) -> list[tuple[str, bytes]]:
    """Fixes of all subjects interleaved in device-time order; device time is 'now' onwards."""
    t0 = time.time() - 150
    scripts = [DeviceScript(f"AM-{i}") for i in range(n)]
    out = []
    for k, dx in enumerate(PATH):
        for i, s in enumerate(scripts):
            out.append(s.fix(t0 + 15 * k, X0 + 3000 * i + dx, Y0, acc=5.0))
    return out


class Centre:
    """A monitoring-centre subscriber that records every alert change it receives."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.changes: list[tuple[str, int, str]] = []
        self.copies: dict[tuple[str, int], set[str]] = {}
        self.deadletters = 0
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="centre-test") as c:
                    await c.subscribe("em/alerts/centre", qos=1)
                    await c.subscribe("em/deadletter", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        doc = json.loads(m.payload)
                        if m.topic.value == "em/deadletter":
                            self.deadletters += 1
                        else:
                            key = (doc["alert_id"], doc["change_seq"])
                            self.changes.append((*key, doc["state"]))
                            self.copies.setdefault(key, set()).add(json.dumps(doc, sort_keys=True))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def close(self) -> None:
        if self.task:
            self.task.cancel()

    def report(self, fault: str, sent: int) -> None:
        """One line for the README's fault table (visible with ``pytest -s``)."""
        counts = Counter(self.changes)
        expected = 3 * N
        print(f"\nFAULT | {fault} | {sent} | {expected} | {len(counts)} | "
              f"{sum(c - 1 for c in counts.values())} | {max(0, expected - len(counts))}")

    def exactly_once(self) -> tuple[int, int]:
        """(distinct alert changes, raw repeats); every repeat must be a byte-identical copy."""
        assert all(len(v) == 1 for v in self.copies.values()), "a repeat differs from the original"
        counts = Counter(self.changes)
        return len(counts), sum(c - 1 for c in counts.values())


async def publish(port: int, messages: list[tuple[str, bytes]], pause_s: float,
                  on_half: asyncio.Event | None = None) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="devices-test") as c:
        for i, (topic, payload) in enumerate(messages):
            await c.publish(topic, payload, qos=1)
            if on_half is not None and i == len(messages) // 2:
                on_half.set()
            await asyncio.sleep(pause_s)


@pytest.fixture
def world(tmp_path: Path):
    broker, store = procs.mosquitto(tmp_path), procs.redis(tmp_path)
    orders_file = tmp_path / "orders.json"
    orders_file.write_text(json.dumps(orders(N)))
    yield tmp_path, broker, store, orders_file
    for p in (broker, store):
        p.stop()


async def start_all(world) -> tuple[procs.Proc, Centre]:
    """Broker, Redis, a listening centre, then the engine: the order every fault test needs."""
    tmp, broker, store, orders_file = world
    await broker.start()
    await store.start()
    eng = procs.engine(tmp, broker.port, store.port, orders_file)
    centre = Centre(broker.port)
    centre.start()
    await centre.ready.wait()
    await eng.start()
    await procs.ready(eng)
    return eng, centre


async def test_engine_sigkilled_mid_stream_and_restarted_raises_every_alert_exactly_once(world):
    """SIGKILL the engine after its first alerts, mid-stream, restart it: none lost, none doubled."""
    tmp, broker = world[0], world[1]
    eng, centre = await start_all(world)
    try:
        pub = asyncio.create_task(publish(broker.port, workload(N), 0.03))
        await procs.until(lambda: len(centre.changes) >= 3, 180, "the first alerts")
        eng.kill()
        seen_at_kill = len(centre.changes)
        assert not pub.done(), "the kill must land while devices are still sending"
        await asyncio.sleep(0.5)
        await eng.start()
        await pub
        await procs.until(lambda: len(set(centre.changes)) >= 3 * N, 180, f"{3 * N} alert changes")
        await asyncio.sleep(2.0)  # time for any duplicate to show up
    finally:
        eng.stop()
        await centre.close()
    centre.report("engine SIGKILLed mid-stream, restarted", len(workload(N)))
    once, dups = centre.exactly_once()
    log = (tmp / "engine-emguard-engine-a.log").read_text()
    assert 3 <= seen_at_kill < 3 * N
    assert "restored engine state" in log and "restored engine state (0 alerts)" not in log
    # Nothing lost; a repeat can only come from a kill between the broker's PUBACK and the
    # outbox confirmation, and is then an identical copy with the same (alert_id, change_seq).
    assert once == 3 * N, log[-3000:]
    assert dups <= 1, log[-3000:]


async def test_redis_restarted_mid_stream_loses_and_doubles_nothing(world):
    """Redis goes away for a while and comes back: acks are held, every alert arrives once."""
    tmp, broker, store = world[0], world[1], world[2]
    eng, centre = await start_all(world)
    try:
        half = asyncio.Event()
        pub = asyncio.create_task(publish(broker.port, workload(N), 0.01, half))
        await half.wait()
        store.stop()
        await asyncio.sleep(3.0)
        await store.start()
        await pub
        await procs.until(lambda: len(set(centre.changes)) >= 3 * N, 180, f"{3 * N} alert changes")
        await asyncio.sleep(2.0)
    finally:
        eng.stop()
        await centre.close()
    centre.report("Redis stopped 3 s mid-stream, restarted", len(workload(N)))
    assert centre.exactly_once() == (3 * N, 0), (tmp / "engine-emguard-engine-a.log").read_text()[-3000:]


async def test_flood_of_malformed_messages_is_dead_lettered_while_good_traffic_flows(world):
    """2,000 malformed messages interleaved with the workload: all dead-lettered, alerts intact."""
    broker = world[1]
    eng, centre = await start_all(world)
    good = workload(N)
    bad = [("em/dev/AM-0/fix", b'{"v":1,"device":"AM-0","seq":' + str(i).encode()) for i in range(2000)]
    mixed = []
    for i, m in enumerate(good):
        mixed.append(m)
        mixed.extend(bad[i * 2000 // len(good):(i + 1) * 2000 // len(good)])
    try:
        await publish(broker.port, mixed, 0.0)
        await procs.until(lambda: centre.deadletters >= 2000 and len(set(centre.changes)) >= 3 * N, 180,
                          "dead letters and alerts")
    finally:
        eng.stop()
        await centre.close()
    centre.report("2,000 malformed messages interleaved", len(mixed))
    assert centre.deadletters == 2000
    assert centre.exactly_once() == (3 * N, 0)


async def test_a_centre_that_is_away_during_the_stream_gets_every_alert_when_back(world):
    """The centre's client drops off (persistent session) while alerts are raised: the broker
    queues them (max_queued_messages sized in deploy/) and delivers all on reconnect."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    tmp, broker, store, orders_file = world
    await broker.start()
    await store.start()
    eng = procs.engine(tmp, broker.port, store.port, orders_file)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 600

    def client() -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", broker.port, identifier="centre-away", clean_start=False,
                              properties=props, protocol=aiomqtt.ProtocolVersion.V5)

    async with client() as c:
        await c.subscribe("em/alerts/centre", qos=1)
    await eng.start()
    await procs.ready(eng)
    got: list[tuple[str, int]] = []
    try:
        await publish(broker.port, workload(N), 0.0)
        await asyncio.sleep(3.0)  # the engine raises everything while the centre is away
        async with client() as c:
            async def drain() -> None:
                async for m in c.messages:
                    doc = json.loads(m.payload)
                    got.append((doc["alert_id"], doc["change_seq"]))
                    if len(set(got)) >= 3 * N:
                        return
            await asyncio.wait_for(drain(), 120)
    finally:
        eng.stop()
    print(f"\nFAULT | centre offline during the stream, back after | {len(workload(N))} | {3 * N} | "
          f"{len(set(got))} | {len(got) - len(set(got))} | {3 * N - len(set(got))}")
    assert len(set(got)) == 3 * N and len(got) == len(set(got))
