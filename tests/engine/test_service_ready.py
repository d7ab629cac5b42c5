"""Service readiness (no broker): "connected" means subscribed, so nothing sent after it is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import orders_doc
from engine.runtime.service import Service
from engine.web.server import HttpServer


class _Messages:
    """An MQTT message stream on which nothing ever arrives."""

    def __aiter__(self) -> _Messages:
        return self

    async def __anext__(self) -> Any:
        await asyncio.Event().wait()


class _SlowSubscribeClient:
    """Stands in for aiomqtt.Client; each SUBACK takes a while, as on a loaded broker."""

    def __init__(self, service: Service, server: HttpServer) -> None:
        self.service = service
        self.server = server
        self.messages = _Messages()
        self.subscribed: list[str] = []
        self.ready_while_subscribing: list[tuple[bool, int]] = []

    async def __aenter__(self) -> _SlowSubscribeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def subscribe(self, topic: str, qos: int = 0) -> None:
        transport = httpx.ASGITransport(app=self.server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as http:
            status = (await http.get("/readyz")).status_code
        self.ready_while_subscribing.append((self.service.connected, status))
        await asyncio.sleep(0.01)
        self.subscribed.append(topic)


async def test_not_connected_nor_ready_until_every_subscription_is_acknowledged() -> None:
    """A client that waits for /readyz (or ``connected``) and then publishes must not race the
    SUBSCRIBEs: the broker drops messages on topics nobody is subscribed to yet.  This race made
    the integration flood test lose its first dead letters and wait out its 180 s timeout."""
    service = Service(Engine(load_orders(orders_doc())), ServiceConfig())
    server = HttpServer(service, orders_doc=orders_doc(), tokens={})
    fake = _SlowSubscribeClient(service, server)
    service.link.receiving_client = lambda version, sink, sink_many: fake  # type: ignore[assignment,method-assign,return-value]
    stop = asyncio.Event()
    runner = asyncio.create_task(service._connection(stop))
    try:
        for _ in range(500):
            if service.connected:
                break
            await asyncio.sleep(0.01)
        assert service.connected
        assert len(fake.subscribed) == 4, fake.subscribed  # fix, event, owntracks, ack
        assert fake.ready_while_subscribing == [(False, 503)] * 4
    finally:
        stop.set()
        await asyncio.wait_for(runner, 5)
