"""Fuzz through the service's own path, no sockets: process -> engine -> commit -> restore -> publish.

The decoder alone being total was not enough (issue 21): a fix with seq 2^63 decoded fine and
broke the *commit*.  Here every inbound topic gets hostile payloads and the whole path runs:
``Service._process`` (decode, engine, em/ack), a commit to the in-memory store (state
serialized), a fresh engine restoring what was stored, and every outgoing message encoded
for the broker.  Nothing may raise, and every message must be acknowledged.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import T0, orders_doc
from engine.runtime.outbound import MAX_PUBLISH_BYTES
from engine.runtime.service import Service
from engine.runtime.store import MemoryStore

ARRIVAL = T0
TOPICS = ["em/dev/AM-1001/fix", "em/dev/AM-1001/event", "em/dev/VD-2001/fix", "owntracks/anna/phone",
          "em/ack", "em/dev/AM-1001/other"]
HUGE = [2**63, 2**63 - 1, 2**64, -(2**63) - 1, 10**400, 1e308, -1e308, 2**53 + 1]
EDGE = st.sampled_from([None, True, [], {}, "", "x" * 5000, *HUGE, 0, -1, 1.5, "2026-11-18T11:06:40Z"])


def _base(topic: str) -> dict[str, Any]:
    device = topic.split("/")[2] if topic.startswith("em/dev/") else "AM-1001"
    if topic.endswith("/event"):
        return {"v": 1, "device": device, "seq": 7, "t": "2026-11-18T11:06:40Z", "type": "panic", "detail": {}}
    if topic.startswith("owntracks/"):
        return {"_type": "location", "tst": int(T0), "lat": 51.92, "lon": 4.47, "acc": 12, "tid": "an"}
    if topic == "em/ack":
        return {"alert_id": "A-1", "action": "ack", "by": "op", "note": "n"}
    return {"v": 1, "device": device, "seq": 7, "t": "2026-11-18T11:06:40Z", "lat": 51.92, "lon": 4.47, "acc": 8}


@st.composite
def hostile(draw: st.DrawFn) -> tuple[str, bytes]:
    """A contract-shaped payload with a field set to an edge value, or raw junk."""
    topic = draw(st.sampled_from(TOPICS))
    kind = draw(st.sampled_from(["field", "burst", "deep", "bytes", "utf8"]))
    if kind == "bytes":
        return topic, draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.sampled_from([50, 5_000, 50_000]))
        return topic, b"[" * depth + b"]" * depth
    if kind == "utf8":
        return topic, json.dumps(_base(topic)).encode()[:-2] + b'\xff\xfe"}'
    doc = _base(topic)
    key = draw(st.sampled_from([*doc, "detail", "extra"]))
    doc[key] = draw(EDGE)
    body: Any = [doc, _base(topic)] if kind == "burst" else doc
    return topic, json.dumps(body).encode()


async def _through(messages: list[tuple[str, bytes]]) -> None:
    book = load_orders(orders_doc(proximity=[{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}]))
    store = MemoryStore()
    service = Service(Engine(book), ServiceConfig(), store=store, clock=lambda: ARRIVAL + 1)
    for i, (topic, payload) in enumerate(messages):
        service._process((ARRIVAL, topic, payload, (0, i + 1, 1)), "em/ack")
    await service._commit()
    assert not service._held_acks, "every message was acknowledged with the commit"
    for _, message in service.outbox:
        assert len(service.out.encode(message)) <= MAX_PUBLISH_BYTES
    restored = Engine(book)
    restored.restore_parts(await store.load_state())
    assert set(restored.tracks) == set(service.engine.tracks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile(), min_size=1, max_size=6))
@example([("em/dev/AM-1001/fix", json.dumps({**_base("em/dev/AM-1001/fix"), "seq": 2**63}).encode())])
@example([("em/dev/AM-1001/event", json.dumps({**_base("em/dev/AM-1001/event"), "seq": 2**63}).encode())])
@example([("em/dev/AM-1001/fix", json.dumps([{**_base("em/dev/AM-1001/fix"), "seq": 2**64}]).encode())])
@example([("em/ack", b"[" * 100_000 + b"]" * 100_000), ("em/ack", b"[1]")])
def test_hostile_messages_on_every_topic_never_break_the_service_path(messages: list[tuple[str, bytes]]) -> None:
    """Whatever arrives: processed, committed, restorable, publishable, acknowledged."""
    asyncio.run(_through(messages))
