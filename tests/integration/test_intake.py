"""IngestClient and the service's intake against a real mosquitto started here.

The client overrides private callbacks of aiomqtt 2.x (see engine/runtime/intake.py): these tests pin
what the service relies on, so an aiomqtt upgrade that changes them fails here.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiomqtt
import pytest

from engine.core.config import EngineConfig, ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, DeviceScript, circle, orders_doc
from engine.runtime.intake import IngestClient
from engine.runtime.service import Service
from tests.integration import procs

pytestmark = pytest.mark.integration
X0, Y0 = ORIGIN


async def _publish(port: int, messages: list[tuple[str, bytes, int]]) -> None:
    """Publish in order, 20 in flight at a time (paho's default window): a burst, not a trickle."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-device") as dev:
        for k in range(0, len(messages), 20):
            await asyncio.gather(*(dev.publish(t, p, qos=q) for t, p, q in messages[k : k + 20]))


@pytest.fixture
async def broker(tmp_path: Path):
    proc = procs.mosquitto(tmp_path)  # max_inflight_messages 100
    await proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_every_message_reaches_the_sink_in_order_and_a_wakeup_reads_many(broker):
    got: list[tuple[str, bytes, int, int]] = []
    client = IngestClient(
        "127.0.0.1", broker.port, identifier="test-intake",
        sink=lambda topic, payload, mid, qos: got.append((topic, payload, mid, qos)),
    )
    wakeups = 0
    read_ready = client._read_ready

    def counting() -> None:
        nonlocal wakeups
        wakeups += 1
        read_ready()

    client._read_ready = counting  # type: ignore[method-assign]
    async with client:
        await client.subscribe("em/dev/+/fix", qos=1)
        await _publish(broker.port, [(f"em/dev/D{i % 7}/fix", b"%d" % i, 1) for i in range(2000)])
        await procs.until(lambda: len(got) >= 2000, 20, "2,000 messages at the sink")
        await asyncio.sleep(0.2)
    assert [int(p) for _, p, _, _ in got] == list(range(2000)), "each once, in publish order"
    assert got[5][0] == "em/dev/D5/fix" and {q for *_, q in got} == {1}
    assert len({mid for _, _, mid, _ in got}) > 100, "QoS 1 packet ids, as paho decoded them"
    assert client.received == 2000
    assert wakeups < 2000, f"{wakeups} socket wake-ups for 2,000 messages"
    # the iterator the service waits on for disconnection never yields a message
    assert len(client.messages) == 0


async def test_both_service_connections_send_small_packets_at_once(broker):
    """TCP_NODELAY on the receiving and the publishing connection: paho leaves Nagle on, and
    with the broker's delayed ACKs a window of alert publishes then waited ~40 ms per round
    trip (the ingest benchmark's alert latency at 80 % of raw went from p50 5 ms to 46-90 ms)."""
    cfg = ServiceConfig(broker=f"mqtt://127.0.0.1:{broker.port}", client_id="eng-nodelay")
    service = Service(Engine(load_orders(orders_doc()), EngineConfig()), cfg, persistent_session=False)
    link = service.link
    for client in (link.receiving_client(aiomqtt.ProtocolVersion.V5, service._receive, service._receive_many),
                   link.publishing_client(aiomqtt.ProtocolVersion.V5)):
        assert isinstance(client, IngestClient)  # also its many-packets-per-wake-up reads
        async with client:
            sock = client._client._sock
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.parametrize("v5", [False, True], ids=["v311-broker-limit", "v5-receive-maximum"])
async def test_unacknowledged_messages_stop_at_the_in_flight_window(broker, v5):
    """With manual acks the broker sends at most the in-flight window: the service's back-pressure.

    MQTT 3.1.1: the broker's max_inflight_messages (100 here).  MQTT v5: the client's Receive
    Maximum, which mosquitto uses instead (without one a v5 client allows 65,535).
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    window = 100
    kwargs = {}
    if v5:
        window = 40
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = window
        kwargs = {"protocol": aiomqtt.ProtocolVersion.V5, "properties": props}
    got: list[int] = []
    client = IngestClient("127.0.0.1", broker.port, identifier="test-window",
                          sink=lambda t, p, mid, q: got.append(mid), **kwargs)
    client._client.manual_ack_set(True)
    async with client:
        await client.subscribe("em/dev/+/fix", qos=1)
        await _publish(broker.port, [("em/dev/D/fix", b"x", 1)] * 300)
        await procs.until(lambda: len(got) >= window, 10, f"the first {window}")
        await asyncio.sleep(0.5)
        assert len(got) == window, "the rest waits at the broker"
        for acked in range(window, 300, window):  # ack one window, the broker sends the next
            for mid in got[acked - window : acked]:
                client._client.ack(mid, 1)
            expect = min(300, acked + window)
            await procs.until(lambda n=expect: len(got) >= n, 10, f"{expect} after the acks")
        assert len(got) == 300


async def test_paused_reading_holds_messages_and_resume_delivers_every_one(broker):
    got: list[bytes] = []
    client: IngestClient

    def sink(topic: str, payload: bytes, mid: int, qos: int) -> None:
        got.append(payload)
        if len(got) == 50:
            client.pause_reading()

    client = IngestClient("127.0.0.1", broker.port, identifier="test-pause", sink=sink)
    async with client:
        await client.subscribe("em/dev/+/fix", qos=1)
        await _publish(broker.port, [("em/dev/D/fix", b"%d" % i, i % 2) for i in range(500)])
        await procs.until(lambda: len(got) >= 50, 10, "the first 50")
        await asyncio.sleep(0.5)
        assert len(got) == 50 and client.paused, "nothing is read while paused"
        client.resume_reading()
        await procs.until(lambda: len(got) >= 500, 10, "the rest after resuming")
        await asyncio.sleep(0.2)
    seen = [int(p) for p in got]
    assert sorted(seen) == list(range(500)), "none lost or repeated, QoS 0 and 1 alike"
    # the broker may let a QoS 0 message overtake queued QoS 1 ones, never one of its own kind
    assert [i for i in seen if i % 2] == list(range(1, 500, 2))
    assert [i for i in seen if not i % 2] == list(range(0, 500, 2))


@pytest.mark.parametrize("protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5], ids=["v311", "v5"])
async def test_publish_many_delivers_in_order_and_hears_every_puback(broker, protocol):
    """The outbox's lean publish: one write of QoS 1 packets, every PUBACK heard, in order at a
    subscriber, and paho's own publish and subscribe on the same connection unaffected."""
    got: list[tuple[str, bytes]] = []
    sub = IngestClient("127.0.0.1", broker.port, identifier="test-sub", protocol=protocol,
                       sink=lambda topic, payload, mid, qos: got.append((topic, payload)))
    pub = IngestClient("127.0.0.1", broker.port, identifier="test-pub", protocol=protocol,
                       sink=lambda *m: None)
    async with sub, pub:
        await sub.subscribe("em/alerts/#", qos=1)
        sent = [(f"em/alerts/{'centre' if i % 3 else 'victim/V-1'}", b'{"n":%d}' % i + b"x" * (i * 7)) for i in range(300)]
        for k in range(0, 300, 16):
            assert await pub.publish_many(sent[k : k + 16]) == [True] * len(sent[k : k + 16])
        await pub.publish("em/alerts/centre", b"paho", qos=1)  # paho's path still works beside it
        assert await pub.publish_many([]) == []
        await procs.until(lambda: len(got) >= 301, 10, "every publish at the subscriber")
    assert got[:300] == sent and got[300] == ("em/alerts/centre", b"paho")
    assert pub._paho.lean_acks == {}, "nothing left waiting for a PUBACK"


async def test_publish_many_reports_unacknowledged_publishes_when_the_connection_is_lost(broker):
    """A broker that dies before its PUBACKs: publish_many returns at once with those not
    acknowledged (False), not after the client's timeout, and holds no callbacks."""
    pub = IngestClient("127.0.0.1", broker.port, identifier="test-pub-lost", sink=lambda *m: None, timeout=30)
    async with pub:
        assert await pub.publish_many([("em/alerts/centre", b"1")]) == [True]
        broker.kill()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        acked = await pub.publish_many([("em/alerts/centre", b"2"), ("em/alerts/centre", b"3")])
        assert acked == [False, False] and time.monotonic() - started < 5
        assert pub._paho.lean_acks == {}


async def test_a_lost_connection_ends_the_message_iterator(broker):
    client = IngestClient("127.0.0.1", broker.port, identifier="test-lost", sink=lambda *m: None)
    async with client:
        waiting = asyncio.ensure_future(client.messages.__anext__())
        await asyncio.sleep(0.1)
        broker.kill()
        with pytest.raises(aiomqtt.MqttError):
            await asyncio.wait_for(waiting, 10)


async def test_service_with_a_tiny_inbox_processes_a_flood_without_losing_a_message(broker):
    """Inbox of 16, 3,000 messages (QoS 0 and 1): the socket is paused, never a drop.

    Without a store every QoS 1 message is acked once processed; if it were not, delivery
    would stop at the broker's in-flight limit and this would time out.
    """
    now = time.time()
    book = load_orders(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 300)}],
                                  valid_from=now - 3600, valid_until=now + 86400))
    cfg = ServiceConfig(broker=f"mqtt://127.0.0.1:{broker.port}", client_id="eng-intake", queue_size=16)
    service = Service(Engine(book, EngineConfig()), cfg, persistent_session=False)
    deepest = 0
    put = service.inbox.put_nowait

    def recording_put(item) -> None:
        nonlocal deepest
        put(item)
        deepest = max(deepest, len(service.inbox))

    service.inbox.put_nowait = recording_put  # type: ignore[method-assign]
    pauses = 0
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await procs.until(lambda: service.connected, 20, "the service subscribed")
    original_pause = service._client_ref.pause_reading

    def counting_pause() -> None:
        nonlocal pauses
        pauses += 1
        original_pause()

    service._client_ref.pause_reading = counting_pause  # type: ignore[method-assign]
    am = DeviceScript("AM-1001")
    # every 10th at QoS 0 (not bounded by the in-flight window; aiomqtt publishes those slowly)
    flood = [(*am.fix(now - 3000 + i, X0 + 5000, Y0), i % 10 == 0) for i in range(3000)]
    await _publish(broker.port, [(t, p, 0 if q0 else 1) for t, p, q0 in flood])
    await procs.until(lambda: service.engine.stats.received >= 3000, 60, "all 3,000 processed")
    stop.set()
    await runner
    assert service.engine.stats.received == 3000
    assert deepest <= 16, f"the inbox held {deepest}"
    assert pauses > 0, "the flood outran the engine at least once"
    assert not service._held_acks
    assert service.engine.stats.duplicates == 0 and sum(service.engine.stats.rejected.values()) == 0


@pytest.mark.parametrize("protocol", [aiomqtt.ProtocolVersion.V5, aiomqtt.ProtocolVersion.V311], ids=["v5", "v311"])
async def test_qos_0_1_2_and_v5_properties_all_arrive_intact(broker, protocol):
    """QoS 2 takes paho's own path (its handshake), QoS 0/1 the lean one; properties are skipped."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    got: list[tuple[str, bytes, int]] = []
    client = IngestClient("127.0.0.1", broker.port, identifier="test-qos", protocol=protocol,
                          sink=lambda t, p, mid, q: got.append((t, p, q)))
    async with client:
        await client.subscribe("em/dev/+/fix", qos=2)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("trace", "x" * 200)]
        props.MessageExpiryInterval = 600
        props.ContentType = "application/json"
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="test-pub-qos") as dev:
            for qos in (0, 1, 2, 1, 0, 2):
                await dev.publish("em/dev/D/fix", b'{"qos": %d}' % qos, qos=qos, properties=props)
        await procs.until(lambda: len(got) >= 6, 10, "six messages")
        await asyncio.sleep(0.2)
    assert sorted(got) == sorted(("em/dev/D/fix", b'{"qos": %d}' % q, q) for q in (0, 1, 2, 1, 0, 2))


async def test_while_commits_hang_the_broker_stops_at_the_services_receive_maximum(broker):
    """MQTT v5: the service asks for at most RECEIVE_MAXIMUM unacknowledged messages, so a store
    that does not answer stops the flow at the broker (the rest stays queued there), and the
    PUBACKs of its own publishes never queue behind a flood."""
    from engine.runtime.broker_link import RECEIVE_MAXIMUM
    from engine.runtime.store import MemoryStore

    class HangingStore(MemoryStore):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def commit(self, delta, messages, alerts):  # type: ignore[override]
            await self.release.wait()
            return await super().commit(delta, messages, alerts)

    now = time.time()
    book = load_orders(orders_doc(valid_from=now - 3600, valid_until=now + 86400))
    store = HangingStore()
    cfg = ServiceConfig(broker=f"mqtt://127.0.0.1:{broker.port}", client_id="eng-window")
    service = Service(Engine(book, EngineConfig()), cfg, store=store, persistent_session=False)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await procs.until(lambda: service.connected, 20, "the service subscribed")
    assert service.link.connected_protocol == "5"
    am = DeviceScript("AM-1001")
    total = RECEIVE_MAXIMUM + 500
    await _publish(broker.port, [(*am.fix(now - total + i, X0, Y0), 1) for i in range(total)])
    await procs.until(lambda: service.engine.stats.received >= RECEIVE_MAXIMUM, 30, "a full window")
    await asyncio.sleep(0.5)
    assert service.engine.stats.received == RECEIVE_MAXIMUM, "nothing beyond the window while acks are held"
    store.release.set()
    await procs.until(lambda: service.engine.stats.received >= total, 30, "the rest once commits land")
    stop.set()
    await runner
    assert service.engine.stats.received == total


def _flood(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish at QoS 0 as fast as paho writes (aiomqtt's QoS 0 path is slower than the engine)."""
    import paho.mqtt.client as mqtt

    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-flood")
    dev.connect("127.0.0.1", port)
    for k, (topic, payload) in enumerate(messages):
        dev.publish(topic, payload, qos=0)
        if k % 50 == 0:
            dev.loop(0)
    while dev.want_write():
        dev.loop(0.01)
    dev.disconnect()


async def test_an_alerts_puback_does_not_wait_behind_a_device_flood(broker, caplog):
    """A flood the engine cannot keep up with backs up at the broker and in the socket; an alert
    published meanwhile is acknowledged at once, not after the whole backlog was read.

    On one connection the PUBACK queued behind every device message the broker had already
    written for us (QoS 0 is bounded by no window; mosquitto 2.0 also overshoots a v5 Receive
    Maximum while acks and new messages interleave): in the ingest benchmark's Redis pass the
    backlog was 20,000+ messages, aiomqtt gave up after 10 s and the service reconnected.
    """
    from engine.core.effects import Effects
    from engine.core.messages import Outgoing

    now = time.time()
    book = load_orders(orders_doc(valid_from=now - 3600, valid_until=now + 86400))
    cfg = ServiceConfig(broker=f"mqtt://127.0.0.1:{broker.port}", client_id="eng-flood", queue_size=64)
    service = Service(Engine(book, EngineConfig()), cfg, persistent_session=False)
    handle = service._handle

    def busy_handle(topic: str, payload: bytes, arrival: float) -> None:
        time.sleep(0.001)  # a busy engine: ~1,000 messages a second, slower than the flood
        handle(topic, payload, arrival)

    service._handle = busy_handle  # type: ignore[method-assign]
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    await procs.until(lambda: service.connected, 20, "the service subscribed")
    am = DeviceScript("AM-1001")
    total = 5000
    await asyncio.to_thread(_flood, broker.port, [am.fix(now - total + i, X0, Y0) for i in range(total)])
    await procs.until(lambda: service.engine.stats.received >= 200, 20, "the flood arriving")
    probe = Outgoing("centre", "em/alerts/centre", {"probe": 1})
    service.apply(Effects(messages=[probe]))
    sent = time.monotonic()
    # the publisher takes an entry off the outbox once its PUBACK is in
    await procs.until(lambda: all(m is not probe for _, m in service.outbox), 30, "the alert's PUBACK")
    waited = time.monotonic() - sent
    behind = total - service.engine.stats.received
    await procs.until(lambda: service.engine.stats.received >= total, 60, "the whole flood processed")
    stop.set()
    await runner
    # one connection: the PUBACK came after the whole flood (6 s here, 0 left); now within a few
    # loop turns of this deliberately slow engine (~0.9 s), with most of the flood still waiting
    assert behind > total // 2, f"the PUBACK took {waited:.1f} s, {behind} flood messages were left"
    assert "connection lost" not in caplog.text
