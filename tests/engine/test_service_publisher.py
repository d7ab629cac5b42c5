"""The outbox publisher (engine.runtime.outbox, no broker): in order, none lost, none doubled.

Alerts, victim warnings and dead letters all go out through the outbox.  Without a store a
window of QoS 1 publishes is in flight at once (there is nothing to replay, so a repeat cannot
come from a crash).  What must hold: the wire order is the outbox order, only acknowledged
entries leave the durable outbox, a connection that drops mid-window leaves the
unacknowledged rest for the next connection, and durable alert traffic goes one at a time, so
a crash between a PUBACK and its confirmation repeats at most one alert change.
"""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import pytest

from engine.core.config import ServiceConfig
from engine.core.messages import Outgoing
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import orders_doc
from engine.runtime.broker_link import PUBLISH_WINDOW
from engine.runtime.service import Service
from engine.runtime.store import MemoryStore, encode_message


class _Never:
    """The client's message stream: nothing arrives and the connection is never lost."""

    def __aiter__(self) -> _Never:
        return self

    async def __anext__(self) -> None:
        await asyncio.Event().wait()


class _Client:
    """Stands in for IngestClient.publish_many: records the wire order, PUBACKs after a delay;
    with ``fail_at`` the connection is lost before that message's PUBACK."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.messages = _Never()
        self.wire: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_at = fail_at
        self.watch: list[int] = []  # in flight when each message with n >= 100 was written

    async def publish_many(self, items: list[tuple[str, bytes]]) -> list[bool]:
        ns = [json.loads(payload)["n"] for _, payload in items]
        for n in ns:  # written synchronously, in order, before any await
            if n >= 100:
                self.watch.append(self.in_flight)
            self.wire.append(n)
            self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002 * (1 + len(ns) % 3))
            # PUBACKs come back out of step: a lost connection leaves later ones acknowledged
            return [self.fail_at is None or n < self.fail_at or n % 2 == 1 for n in ns]
        finally:
            self.in_flight -= len(ns)


def _service(n: int, *, durable: bool) -> tuple[Service, MemoryStore | None]:
    """A service with ``n`` victim warnings waiting: with their store ids when ``durable``."""
    store = MemoryStore() if durable else None
    service = Service(Engine(load_orders(orders_doc())), ServiceConfig(), store=store)
    for i in range(n):
        message = Outgoing("victim", f"em/alerts/victim/VD-{i}", {"n": i})
        if store is not None:
            store.outbox[i + 1] = encode_message(message)
        service.outbox.append((i + 1 if store is not None else None, message))
    return service, store


async def _drain(service: Service, client: _Client) -> None:
    task = asyncio.create_task(service.out.publish_on(client))  # type: ignore[arg-type]
    try:
        for _ in range(500):
            if not service.outbox and not service.out.unconfirmed:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_without_a_store_a_window_is_in_flight_in_outbox_order() -> None:
    service, _ = _service(50, durable=False)
    client = _Client()
    await _drain(service, client)
    assert client.wire == list(range(50))
    assert client.most_in_flight == PUBLISH_WINDOW > 1
    assert service.published == 50


async def test_durable_alert_traffic_goes_one_at_a_time_and_is_confirmed() -> None:
    service, store = _service(20, durable=True)
    assert store is not None
    alerts = [(100 + i, Outgoing("centre", "em/alerts/centre", {"n": 100 + i})) for i in range(3)]
    for outbox_id, message in alerts:
        store.outbox[outbox_id] = encode_message(message)
    service.outbox.rotate(-10)  # warnings 10..19, then the alerts, then warnings 0..9
    service.outbox.extendleft(reversed(alerts))
    service.outbox.rotate(10)
    client = _Client()
    await _drain(service, client)
    assert client.wire == [*range(10), 100, 101, 102, *range(10, 20)]
    assert client.watch == [0, 0, 0]  # nothing else in flight when an alert goes out
    assert client.most_in_flight == 1
    assert store.outbox == {} and service.published == 23


async def test_a_connection_lost_mid_window_keeps_the_unacknowledged_rest() -> None:
    service, _ = _service(40, durable=False)
    client = _Client(fail_at=20)
    task = asyncio.create_task(service.out.publish_on(client))  # type: ignore[arg-type]
    with pytest.raises(aiomqtt.MqttError):
        await asyncio.wait_for(task, 5)
    left = [m.payload["n"] for _, m in service.outbox]
    # the first unacknowledged one and everything after it (acknowledged or not), in order
    assert left == list(range(20, 40))
    retry = _Client()
    await _drain(service, retry)
    assert retry.wire == left and not service.outbox
