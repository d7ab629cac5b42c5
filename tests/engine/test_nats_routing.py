"""The pure parts of the NATS scale-out: subject mapping, routing by case, partition books."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats.errors
import pytest

from devices.timeutil import format_time
from engine.core.cases import cases_of
from engine.core.messages import Outgoing
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.runtime.nats_bundle import (
    BUNDLE_HEADER,
    BUNDLE_VERSION,
    Entry,
    decode_bundle,
    message_key,
)
from engine.runtime.nats_intake import Intake, Router, dedup_id
from engine.runtime.nats_jetstream import partition_of, subject_to_topic, topic_to_subject
from engine.runtime.nats_rounds import msg_id
from engine.runtime.nats_worker import partition_books
from tests.integration import nats_helpers as h

P = 16


@pytest.mark.parametrize(("topic", "subject"), [
    ("em/dev/AM-1/fix", "em.dev.AM-1.fix"),
    ("em/alerts/victim/VD-1", "em.alerts.victim.VD-1"),
    ("owntracks/anna/phone.2", "owntracks.anna.phone//2"),
])
def test_topics_map_like_nats_mqtt(topic, subject):
    """`/` is `.` and a `.` inside a level is `//`, both ways."""
    assert topic_to_subject(topic) == subject
    assert subject_to_topic(subject) == topic


def test_partition_is_a_stable_crc32():
    """The same case key lands in the same partition in every process and release."""
    assert partition_of("S:S-1", P) == 15  # crc32("S:S-1") % 16, pinned
    assert {partition_of(f"S:S-{i}", P) for i in range(200)} == set(range(P))


def test_offender_and_victim_route_to_one_partition():
    """Both sides of an order go to its case's partition; a victim of two men joins both."""
    doc = h.orders(8)
    doc["orders"][1]["proximity"].append({"protected_person": "P-0", "alert_m": 1000, "warn_m": 3000})
    book = load_orders(doc)
    router = Router(book, P)
    now = time.time()
    for topic, payload in h.workload(8)[:16]:
        device = topic.split("/")[2]
        case = cases_of(book).device_case(device)
        assert router.route(topic, payload, now).partition == partition_of(case, P)
    fix = b'{"v":1,"device":"%s","seq":1,"t":"%s","lat":52,"lon":4.4,"acc":5}'
    where = {d: router.route(f"em/dev/{d}/fix", fix % (d.encode(), format_time(now).encode()), now).partition
             for d in ("AM-0", "AM-1", "VD-0", "VD-1")}
    assert len(set(where.values())) == 1, where  # one merged case: S-0, S-1, P-0, P-1


def test_bad_input_is_dead_lettered_at_intake():
    """Nothing valid in a message: dead letters, no partition."""
    routed = Router(load_orders(h.orders(1)), P).route("em/dev/AM-0/fix", b"{not json", time.time())
    assert routed.partition is None and len(routed.dead_letters) == 1


def test_partition_engines_raise_what_one_engine_raises():
    """Routing each message to its partition's engine gives the alerts of one engine on all."""
    book = load_orders(h.orders(8))
    whole = Engine(book)
    books = partition_books(book, P)
    assert sorted(o for b in books.values() for o in b.orders) == sorted(book.orders)
    parts = {n: Engine(b) for n, b in books.items()}
    router = Router(book, P)
    one, split = set(), set()
    now = time.time()
    for topic, payload in h.workload(8):
        n = router.route(topic, payload, now).partition
        assert n is not None
        for c in whole.handle(topic, payload, now).changes:
            one.add((c.alert.alert_id, c.alert.level))
        for c in parts[n].handle(topic, payload, now).changes:
            split.add((c.alert.alert_id, c.alert.level))
    later = now + 600
    for c in whole.flush(later).changes:
        one.add((c.alert.alert_id, c.alert.level))
    for e in parts.values():
        for c in e.flush(later).changes:
            split.add((c.alert.alert_id, c.alert.level))
    assert one and split == one


def test_a_change_keeps_its_dedup_id():
    """A centre message is named by alert id and change_seq, whatever else it carries."""
    a = Outgoing("centre", "em/alerts/centre", {"alert_id": "A-1", "change_seq": 2, "raised_at": "x"})
    b = Outgoing("centre", "em/alerts/centre", {"alert_id": "A-1", "change_seq": 2, "raised_at": "y"})
    assert msg_id(a, b"{}") == msg_id(b, b"{ }") == "centre:A-1:2"
    one, two = Outgoing("deadletter", "em/deadletter", {"r": 1}), Outgoing("deadletter", "em/deadletter", {"r": 2})
    assert msg_id(one, b'{"r":1}') == msg_id(one, b'{"r":1}') != msg_id(two, b'{"r":2}')


@pytest.mark.parametrize("var", ["EMGUARD_WORKERS", "EMGUARD_WORKER_INDEX"])
def test_the_retired_worker_hash_fails_at_start_up(var):
    """A deploy still setting the removed static hash is told what to run instead."""
    from engine.core.config import ServiceConfig
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match="--transport nats"):
        ServiceConfig.from_env({var: "2"})


def test_an_operator_action_goes_to_its_alerts_partition():
    """An archived alert's order (else its people) names the partition its ack is routed to."""
    router = Router(load_orders(h.orders(8)), P)
    fix = router.route(*h.workload(8)[7], time.time()).partition  # AM-3's fix
    assert router.alert_partition({"order": "O-3", "subject": "S-3"}) == fix
    assert router.alert_partition({"order": "gone", "subject": "S-3"}) == fix
    assert router.alert_partition({"order": None, "protected_person": "P-3"}) == fix


class _FlakyStream:
    """A JetStream stand-in whose first publishes fail as while ``EM_PART`` elects a leader."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.stored: dict[str, tuple[str, bytes, dict[str, str]]] = {}

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> None:
        if self.failures:
            self.failures -= 1
            raise nats.errors.NoRespondersError
        self.stored.setdefault(headers["Nats-Msg-Id"], (subject, data, headers))  # the duplicate window


async def test_both_intake_paths_store_one_copy_after_retries():
    """The fast path's copy is gathered and its bundle retried until the partition stream takes
    it; the stream path's copy of the same message, arriving meanwhile and after, waits for that
    one copy: one bundle holding the message once, and both paths see it stored."""
    doc = h.orders(1)
    js = _FlakyStream(failures=3)
    settings = h.settings("nats://127.0.0.1:1", 0, Path("orders.json"))
    intake = Intake(js, settings, Router(load_orders(doc), P))  # type: ignore[arg-type]
    intake.bundler.flush_s = 0.001
    (topic, payload), *_ = h.workload(1)
    subject = topic_to_subject(topic)
    stop = asyncio.Event()
    bundling = asyncio.create_task(intake.bundler.run(stop))
    fast = intake.bundler.add(0, Entry(message_key(subject, payload), topic, payload, time.time()), optional=True)
    await asyncio.wait_for(intake._take(subject, payload, time.time()), 5)  # the stream path
    assert fast is not None and fast.done()
    await asyncio.wait_for(intake._take(subject, payload, time.time()), 5)  # a redelivery, later
    stop.set()
    await bundling
    assert len(js.stored) == 1
    (_, data, headers), = js.stored.values()
    assert headers[BUNDLE_HEADER] == BUNDLE_VERSION
    assert [e.payload for e in decode_bundle(data)] == [payload]
    assert intake.routed == 1 and intake.bundler.repeats == 2
    assert dedup_id(subject, payload) != dedup_id(subject, payload + b" ")
    assert message_key(subject, payload) != message_key("em.dev.VD-9.fix", payload)
