"""Shared builders for the HTTP API tests: an engine with one exclusion-zone alert, in-process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, circle, orders_doc, square
from engine.runtime.service import Service
from engine.web.auth import Principal
from engine.web.server import HttpServer

BAN = (ORIGIN[0] + 2000.0, ORIGIN[1])


@dataclass(slots=True)
class Clock:
    """A settable processing clock for the service."""

    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass(slots=True)
class World:
    """An engine, its service and HTTP server, and device scripts."""

    doc: dict[str, Any]
    service: Service
    server: HttpServer
    clock: Clock
    subject: DeviceScript = field(default_factory=lambda: DeviceScript("AM-1001"))
    victim: DeviceScript = field(default_factory=lambda: DeviceScript("VD-2001"))

    @property
    def engine(self) -> Engine:
        return self.service.engine

    def send(self, message: tuple[str, bytes], at: float | None = None) -> None:
        """Deliver a message through the service's emit path (listeners see it) and settle."""
        now = self.clock.now if at is None else at
        effects = self.engine.handle(message[0], message[1], now)
        effects.extend(self.engine.flush(now))
        self.service.apply(effects)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.server.app),
            base_url="http://test",
            headers=headers,
        )

    def raise_exclusion(self) -> str:
        """Subject walks into the ban zone; returns the exclusion alert id."""
        for i in range(3):
            self.clock.now = T0 + i
            self.send(self.subject.fix(T0 + i, BAN[0] + i, BAN[1]))
        ids = [a.alert_id for a in self.engine.alerts.alerts.values() if a.kind == "exclusion"]
        assert len(ids) == 1
        return ids[0]


def make_world(
    tokens: Mapping[str, Principal] | None = None, doc: dict[str, Any] | None = None
) -> World:
    """One subject S-1 with a square ban zone and a proximity rule to P-1."""
    doc = doc or orders_doc(
        exclusion=[{"id": "Z-ban", "polygon": square(BAN[0], BAN[1], 200.0)}],
        inclusion=[{"id": "Z-home", "circle": circle(ORIGIN[0] - 3000.0, ORIGIN[1], 300.0)}],
        proximity=[{"protected_person": "P-1", "alert_m": 500, "warn_m": 1000}],
    )
    clock = Clock()
    engine = Engine(load_orders(doc))
    service = Service(engine, ServiceConfig(), clock=clock)
    server = HttpServer(service, orders_doc=doc, tokens={} if tokens is None else tokens)
    return World(doc, service, server, clock)
