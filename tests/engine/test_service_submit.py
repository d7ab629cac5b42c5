"""Service.submit: a device message taken in over HTTP returns only once it is committed."""

from __future__ import annotations

import asyncio

import pytest

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import T0, DeviceScript, orders_doc
from engine.runtime.service import Service
from engine.runtime.store import MemoryStore
from engine.runtime.supervise import ServiceFailed


def _service() -> tuple[Service, MemoryStore]:
    store = MemoryStore()
    return Service(Engine(load_orders(orders_doc())), ServiceConfig(), store=store, clock=lambda: T0), store


async def test_submit_returns_after_the_commit_that_holds_the_message() -> None:
    """Decoded and evaluated like an MQTT message; the caller waits for the durable commit."""
    service, store = _service()
    waiting = asyncio.create_task(service.submit(*DeviceScript("VD-2001").event(T0 - 1, "panic")))
    await asyncio.sleep(0)
    item = service.inbox.get_nowait()
    service._process(item, "em/ack")
    await asyncio.sleep(0)
    assert not waiting.done(), "processed is not yet committed"
    await service._commit()
    await asyncio.wait_for(waiting, 1)
    assert store.commits == 1 and any(m.payload.get("kind") == "panic" for _, m in service.outbox)


async def test_submit_fails_when_the_service_stops_before_committing() -> None:
    """A caller is never left waiting, nor told a message was taken that was not."""
    service, _ = _service()
    waiting = asyncio.create_task(service.submit(*DeviceScript("VD-2001").event(T0 - 1, "panic")))
    await asyncio.sleep(0)
    service.submissions.fail("stopping")
    with pytest.raises(ServiceFailed, match="stopping"):
        await waiting
