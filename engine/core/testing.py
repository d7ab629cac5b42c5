"""Test fakes shipped with the engine (as structlog ships ``testing``): scenario builders in metres.

Tests, the benchmarks and engineers at a prompt use these to write scenarios
in RD New metres and device time without hand-computing lat/lon or payloads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from devices.timeutil import format_time
from engine.core.config import EngineConfig
from engine.core.effects import Effects
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from geo.projection import Projector

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z (12:06 in Amsterdam), a fixed device-time origin for scenarios
ORIGIN = (92_000.0, 437_000.0)  # Rotterdam centre, RD New metres

_PROJECTOR = Projector("EPSG:28992")


def lonlat(x: float, y: float) -> tuple[float, float]:
    """RD New metres to (lon, lat)."""
    lon, lat = _PROJECTOR.inverse(x, y)
    return float(lon), float(lat)


def square(cx: float, cy: float, half: float) -> list[list[float]]:
    """A closed square ring in [lon, lat] around a point given in metres."""
    pts = [(cx - half, cy - half), (cx + half, cy - half), (cx + half, cy + half), (cx - half, cy + half)]
    ring = [list(lonlat(x, y)) for x, y in pts]
    return [*ring, ring[0]]


def circle(cx: float, cy: float, radius_m: float) -> dict[str, float]:
    """A contract §4 circle around a point given in metres."""
    lon, lat = lonlat(cx, cy)
    return {"lat": lat, "lon": lon, "radius_m": radius_m}


def orders_doc(
    *,
    exclusion: list[dict[str, Any]] | None = None,
    inclusion: list[dict[str, Any]] | None = None,
    proximity: list[dict[str, Any]] | None = None,
    valid_from: float = T0 - 86400,
    valid_until: float = T0 + 60 * 86400,
    legal_basis: str = "vrijheidsbeperkende_maatregel",
) -> dict[str, Any]:
    """One subject S-1 (AM-1001), one protected person P-1 (VD-2001), one order O-1."""
    return {
        "v": 1,
        "subjects": [{"id": "S-1", "devices": ["AM-1001"], "residence": {"lat": 52.05, "lon": 4.2}}],
        "protected_persons": [{"id": "P-1", "devices": ["VD-2001"]}],
        "orders": [{
            "id": "O-1", "subject": "S-1", "legal_basis": legal_basis,
            "valid_from": format_time(valid_from), "valid_until": format_time(valid_until),
            "exclusion_zones": exclusion or [], "inclusion_zones": inclusion or [],
            "proximity": proximity or [],
        }],
    }


@dataclass(slots=True)
class DeviceScript:
    """Builds payloads for one device with increasing sequence numbers."""

    device: str
    seq: int = 0

    def fix(self, t: float, x: float, y: float, acc: float = 8.0, **extra: Any) -> tuple[str, bytes]:
        """A native fix (contract §2) at metres (x, y) and device time t."""
        self.seq += 1
        lon, lat = lonlat(x, y)
        doc = {"v": 1, "device": self.device, "seq": self.seq, "t": format_time(t),
               "lat": round(lat, 8), "lon": round(lon, 8), "acc": acc, **extra}
        return f"em/dev/{self.device}/fix", json.dumps(doc).encode()

    def event(self, t: float, type_: str, **detail: Any) -> tuple[str, bytes]:
        """A device event (contract §3)."""
        self.seq += 1
        doc = {"v": 1, "device": self.device, "seq": self.seq, "t": format_time(t), "type": type_,
               "detail": detail}
        return f"em/dev/{self.device}/event", json.dumps(doc).encode()


@dataclass(slots=True)
class Harness:
    """Drives an Engine in processing time, collecting every effect."""

    engine: Engine
    effects: Effects = field(default_factory=Effects)

    @classmethod
    def build(cls, doc: dict[str, Any], config: EngineConfig | None = None) -> Harness:
        book: OrderBook = load_orders(doc)
        return cls(Engine(book, config))

    def send(self, message: tuple[str, bytes], now: float) -> Effects:
        """Deliver one message at processing time ``now`` and settle the reorder buffer."""
        step = self.engine.handle(message[0], message[1], now)
        step.extend(self.engine.flush(now))
        self.effects.extend(step)
        return step

    def tick(self, now: float) -> Effects:
        step = self.engine.tick(now)
        self.effects.extend(step)
        return step

    def changes(self, kind: str | None = None) -> list[tuple[str, str, str, str]]:
        """(alert_id, kind, level, state) of every change, optionally of one kind."""
        return [
            (c.alert.alert_id, c.alert.kind, c.alert.level, c.alert.state)
            for c in self.effects.changes
            if kind is None or c.alert.kind == kind
        ]

    def handling(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        """(level, state, condition) of every change, optionally of one kind: what the centre
        does with an alert beside what the engine sees of it."""
        return [
            (c.alert.level, c.alert.state, c.alert.condition)
            for c in self.effects.changes
            if kind is None or c.alert.kind == kind
        ]

    def messages(self, channel: str) -> list[dict[str, Any]]:
        return [m.payload | {"_topic": m.topic} for m in self.effects.messages if m.channel == channel]
