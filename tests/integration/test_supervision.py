"""Supervision against real mosquitto and Redis started here: no task dies unnoticed.

Each long-lived task of the service is made to fail in turn: a restartable one is restarted
and alerts still reach the centre; a processing or commit failure stops the service with
``ServiceFailed`` (``emguard serve`` then exits non-zero), readiness fails, and a message that
makes it fail twice is dead-lettered as poison instead of being redelivered forever.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import DeviceScript, orders_doc
from engine.runtime.poison import message_key
from engine.runtime.service import Service
from engine.runtime.store_redis import RedisStore
from engine.runtime.supervise import ServiceFailed
from tests.integration import procs

pytestmark = pytest.mark.integration


@pytest.fixture
async def world(tmp_path: Path):
    broker, redis = procs.mosquitto(tmp_path), procs.redis(tmp_path)
    await broker.start()
    await redis.start()
    yield broker, redis
    for p in (broker, redis):
        p.stop()


def _book() -> Any:
    now = time.time()
    return load_orders(orders_doc(valid_from=now - 3600, valid_until=now + 60 * 86400,
                                  proximity=[{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}]))


def _service(broker: procs.Proc, redis: procs.Proc, client_id: str = "eng-sup") -> Service:
    cfg = ServiceConfig(broker=f"mqtt://127.0.0.1:{broker.port}", client_id=client_id)
    return Service(Engine(_book()), cfg, store=RedisStore(f"redis://127.0.0.1:{redis.port}/0"))


class Centre:
    """Records what reaches em/alerts/centre and em/deadletter."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.alerts: list[dict[str, Any]] = []
        self.deadletters: list[dict[str, Any]] = []
        self.ready = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="centre-sup") as c:
                    await c.subscribe("em/alerts/centre", qos=1)
                    await c.subscribe("em/deadletter", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        doc = json.loads(m.payload)
                        (self.deadletters if m.topic.value == "em/deadletter" else self.alerts).append(doc)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


async def _publish(port: int, *messages: tuple[str, bytes]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="devices-sup") as c:
        for topic, payload in messages:
            await c.publish(topic, payload, qos=1)


def _fail_once(service: Service, name: str) -> list[int]:
    """Make ``service.<name>`` (a task's body) raise once the service is up, then run normally.

    ``out.run`` names the outbox's publishing task (engine.runtime.outbox), a part of the service.
    """
    owner: Any = service
    if name.startswith("out."):
        owner, name = service.out, name.removeprefix("out.")
    original = getattr(owner, name)
    calls: list[int] = []

    async def body(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            await procs.until(lambda: service.connected and service.publishing, 20, "the service up")
            raise RuntimeError(f"injected failure in {name}")
        await original(*args)

    setattr(owner, name, body)
    return calls


RESTARTABLE = [("mqtt", "_connection"), ("mqtt-publish", "out.run"), ("ticker", "_ticker"),
               ("store-watch", "_store_watch")]
FATAL = [("processor", "_processor"), ("committer", "_committer_loop")]


@pytest.mark.parametrize(("task", "method"), RESTARTABLE)
async def test_a_restartable_task_that_dies_is_restarted_and_alerts_still_flow(world, task: str, method: str):
    """Connections, timers, the store watch: logged, restarted, and a panic still reaches the centre."""
    broker, redis = world
    centre = Centre(broker.port)
    await centre.ready.wait()
    service = _service(broker, redis)
    calls = _fail_once(service, method)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        await procs.until(lambda: service.supervisor.failures[task] == 1, 30, f"{task} to fail")
        await procs.until(lambda: len(calls) >= 2 and service.readiness()["ready"], 30, f"{task} restarted")
        await _publish(broker.port, DeviceScript("VD-2001").event(time.time(), "panic"))
        await procs.until(lambda: any(a["kind"] == "panic" for a in centre.alerts), 20, "the panic alert")
        assert service.supervisor.fatal is None
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        centre.task.cancel()


@pytest.mark.parametrize(("task", "method"), FATAL)
async def test_a_processing_or_commit_failure_stops_the_service_unready(world, task: str, method: str):
    """Processing and committing are not restarted in place: readiness fails and run raises."""
    broker, redis = world
    service = _service(broker, redis)
    _fail_once(service, method)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    with pytest.raises(ServiceFailed, match=f"task {task} failed: RuntimeError: injected"):
        await asyncio.wait_for(runner, 30)
    report = service.readiness()
    assert report["ready"] is False and any("failed" in p for p in report["problems"])


async def test_a_message_that_breaks_the_commit_twice_is_dead_lettered_as_poison(world, monkeypatch):
    """The shape of issue 21's first finding: a message the engine takes but cannot commit.

    1st process: the commit fails, the service stops, every uncommitted message is a suspect.
    2nd: the broker redelivers; suspects go one per commit; the innocent one is cleared, the
    culprit fails alone.  3rd: the culprit is dead-lettered as poison and acknowledged, and an
    approach raises its alarm.
    """
    broker, redis = world
    centre = Centre(broker.port)
    await centre.ready.wait()
    broken: set[int] = set()
    original_handle, original_delta = Engine.handle, Engine.state_delta

    def handle(self: Engine, topic: str, payload: bytes, now: float) -> Any:
        if b"x-poison" in payload:
            broken.add(id(self))  # this engine's state can no longer be stored
        return original_handle(self, topic, payload, now)

    def state_delta(self: Engine) -> Any:
        if id(self) in broken:
            raise OverflowError("Python int too large to convert to C long")
        return original_delta(self)

    monkeypatch.setattr(Engine, "handle", handle)
    monkeypatch.setattr(Engine, "state_delta", state_delta)
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    now = time.time()
    innocent = vd.fix(now - 5, 92_000.0, 437_000.0)
    poison = am.fix(now - 4, 95_000.0, 437_000.0, **{"x-poison": True})
    store = RedisStore(f"redis://127.0.0.1:{redis.port}/0")

    async def run_until_failed(service: Service, *messages: tuple[str, bytes]) -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        if messages:
            await procs.until(lambda: service.connected, 20, "subscribed")
            await _publish(broker.port, *messages)
        with pytest.raises(ServiceFailed):
            await asyncio.wait_for(runner, 30)

    await run_until_failed(_service(broker, redis), innocent, poison)
    suspects = await store.suspects()
    assert suspects.get(message_key(*poison)) == 1

    await run_until_failed(_service(broker, redis))  # the broker redelivers both
    suspects = await store.suspects()
    assert suspects == {message_key(*poison): 2}, "only the culprit is left, at two failures"

    service = _service(broker, redis)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        await procs.until(lambda: any(d["reason"] == "poison" for d in centre.deadletters), 30, "poison letter")
        await procs.until(lambda: service.readiness()["ready"], 20, "ready")
        assert await store.suspects() == {}
        # a car at ~30 m/s: 2.5 km out to 200 m from her
        await _publish(broker.port, *[am.fix(time.time() - 90 + 30 * i, 92_000.0 + x, 437_000.0)
                                      for i, x in enumerate((2500, 1600, 700, 200))])
        await procs.until(lambda: any(a["level"] in ("alarm", "critical") for a in centre.alerts), 30, "alarm")
        assert len({a["alert_id"] for a in centre.alerts if a["kind"] == "proximity"}) == 1
        assert "AM-1001:1" not in json.dumps(centre.alerts), "the poison fix never reached a decision"
        assert service.engine.tracks["VD-2001"].last_seq == 1, "the innocent fix was applied"
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)
        centre.task.cancel()
        await store.close()
    assert [d["reason"] for d in centre.deadletters] == ["poison"]


async def test_readiness_and_metrics_follow_a_redis_and_a_broker_outage(world):
    """Redis down: not ready, with no commit due.  Broker down: both connection flags drop."""
    from engine.web.metrics import EngineMetrics

    broker, redis = world
    service = _service(broker, redis)
    metrics = EngineMetrics(service)
    stop = asyncio.Event()
    runner = asyncio.create_task(service.run(stop))
    try:
        await procs.until(lambda: service.readiness()["ready"], 20, "ready")
        redis.stop()
        await procs.until(lambda: not service.readiness()["ready"], 10, "unready without Redis")
        assert "state store unreachable" in service.readiness()["problems"]
        await redis.start()
        await procs.until(lambda: service.readiness()["ready"], 20, "ready again")
        broker.stop()
        await procs.until(lambda: not service.publishing and not service.connected, 10, "both flags down")
        body, _ = metrics.render()
        text = body.decode()
        assert "emguard_broker_publishing 0.0" in text and "emguard_broker_connected 0.0" in text
        assert "emguard_ready 0.0" in text
        await broker.start()
        await procs.until(lambda: service.readiness()["ready"], 30, "ready after the broker is back")
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)

