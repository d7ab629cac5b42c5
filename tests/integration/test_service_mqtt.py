"""The service against a real mosquitto started by the test: alert and resolution out, bad input dead-lettered."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from engine.core.config import EngineConfig, ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, DeviceScript, circle, orders_doc
from engine.runtime.broker import EmbeddedBroker, mosquitto_binary
from engine.runtime.service import Service

pytestmark = pytest.mark.integration
X0, Y0 = ORIGIN


def _require_mosquitto() -> None:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: integration tests need the Debian mosquitto package")


async def _collect(url_port: int, topics: list[str], sink: list[tuple[str, dict]], ready: asyncio.Event) -> None:
    async with aiomqtt.Client("127.0.0.1", url_port, identifier="test-centre") as c:
        for t in topics:
            await c.subscribe(t, qos=1)
        ready.set()
        try:
            async for m in c.messages:
                sink.append((m.topic.value, json.loads(m.payload)))
        except aiomqtt.MqttError:
            return  # the test's broker went away: collection is over


async def _wait_for(pred, within_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not pred():
        if loop.time() > end:
            raise AssertionError("timed out waiting for the engine")
        await asyncio.sleep(0.05)


async def test_fix_in_over_mqtt_gives_exclusion_alert_and_resolution_out():
    """Enter a ban zone, leave it: em/alerts/centre carries the alarm then its resolution;
    a malformed message in between is dead-lettered and the next good fix still counts."""
    _require_mosquitto()
    import time

    async with EmbeddedBroker(prefer="mosquitto") as info:
        port = int(info.url.rsplit(":", 1)[1])
        book = load_orders(orders_doc(exclusion=[{"id": "Z-ban", "circle": circle(X0, Y0, 300)}],
                                      valid_from=time.time() - 3600, valid_until=time.time() + 60 * 86400))
        service = Service(Engine(book, EngineConfig()), ServiceConfig(broker=info.url, client_id="eng-test"),
                          persistent_session=False)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        got: list[tuple[str, dict]] = []
        ready = asyncio.Event()
        collector = asyncio.create_task(_collect(port, ["em/alerts/centre", "em/deadletter", "em/cmd/#"], got, ready))
        await ready.wait()
        await _wait_for(lambda: service.connected)
        am = DeviceScript("AM-1001")
        async with aiomqtt.Client("127.0.0.1", port, identifier="test-device") as dev:
            now = time.time()  # a car at ~33 m/s, one fix every 30 s of device time
            for i, dx in enumerate([-2000, -1000, 0, 50]):
                await dev.publish(*am.fix(now - 90 + i * 30, X0 + dx, Y0), qos=1)
            await _wait_for(lambda: any(t == "em/alerts/centre" for t, _ in got))
            await dev.publish("em/dev/AM-1001/fix", b'{"v": 1, "device": "AM-1001"', qos=1)
            await dev.publish("em/dev/AM-1002/fix", am.fix(time.time(), X0, Y0)[1], qos=1)
            for i, dx in enumerate([1000, 2000, 3000]):
                await dev.publish(*am.fix(now + 30 + i * 30, X0 + dx, Y0), qos=1)
            await _wait_for(lambda: any(p.get("condition") == "cleared" for t, p in got if t == "em/alerts/centre"))
        stop.set()
        await runner
        collector.cancel()

    centre = [p for t, p in got if t == "em/alerts/centre"]
    assert [(p["kind"], p["level"], p["state"], p["condition"]) for p in centre] == [
        ("exclusion", "warning", "open", "active"), ("exclusion", "alarm", "open", "active"),
        ("exclusion", "alarm", "open", "cleared")]  # he left: cleared, still the centre's to close
    assert len({p["alert_id"] for p in centre}) == 1 and centre[0]["zone"] == "Z-ban"
    reasons = sorted(p["reason"] for t, p in got if t == "em/deadletter")
    assert reasons == ["bad_json", "topic_mismatch"]
    assert ("em/cmd/subject/AM-1001", "leave_area") in [(t, p.get("instruction")) for t, p in got]
    assert service.engine.stats.rejected["bad_json"] == 1


async def test_alerts_raised_while_the_broker_is_down_are_published_after_reconnect():
    """The outbox survives a broker restart: nothing raised meanwhile is lost."""
    _require_mosquitto()
    import time

    broker = EmbeddedBroker(prefer="mosquitto")
    info = await broker.__aenter__()
    port = broker.port
    try:
        book = load_orders(orders_doc(valid_from=time.time() - 3600, valid_until=time.time() + 60 * 86400,
                                      proximity=[{"protected_person": "P-1", "alert_m": 1000}]))
        service = Service(Engine(book, EngineConfig()), ServiceConfig(broker=info.url, client_id="eng-out"),
                          persistent_session=False)
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        await _wait_for(lambda: service.connected)
        await broker.stop()
        await _wait_for(lambda: not service.connected)
        # an operator-facing alert raised while disconnected (a panic arriving via another path)
        service.apply(service.engine.handle(*DeviceScript("VD-2001").event(time.time(), "panic"), time.time()))
        assert service.outbox, "the alert waits in the outbox"
        broker2 = EmbeddedBroker(prefer="mosquitto", port=port)
        await broker2.__aenter__()
        try:
            got: list[tuple[str, dict]] = []
            ready = asyncio.Event()
            collector = asyncio.create_task(_collect(port, ["em/alerts/#"], got, ready))
            await ready.wait()
            # the engine reconnects with backoff and flushes the outbox
            await _wait_for(lambda: any(p.get("kind") == "panic" for _, p in got), within_s=20)
            stop.set()
            await runner
            collector.cancel()
        finally:
            await broker2.stop()
    finally:
        await broker.stop()
    assert service.reconnects >= 1
    assert [p["kind"] for t, p in got if t == "em/alerts/centre"] == ["panic"]
