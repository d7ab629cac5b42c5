"""Intake of the NATS scale-out: device messages to their case's partition, by two paths.

Stateless, so any number of replicas run side by side.  Each message is decoded and validated
exactly as the engine does (``devices.decode``): one that yields nothing valid is dead-lettered
here (``em.deadletter``, one record per rejection) and goes no further; any other is gathered,
unchanged, into a bundle for ``emguard.part.{n}`` of its device's case
(``engine.runtime.nats_bundle``; ``engine.core.cases``: a subject with everyone his orders
protect, merged transitively, so a victim protected from two men is in the one case of both
and her fixes reach both evaluations).  The worker owning the partition decodes it again and
evaluates it.  An operator action (``em/ack``) goes on its own to its alert's partition.

Two paths carry each message, because NATS's MQTT listener acknowledges a device's QoS 1
PUBLISH once core NATS took it, not once a stream stored it: while ``EM_DEV`` elects a leader
(its leader's node died) what devices publish is acknowledged and never stored.

* The stream path: the replicas share ``EM_DEV``'s durable pull consumer ``intake``; the source
  is acknowledged only after JetStream acknowledged the bundle that carries its copy.
* The fast path: every replica also holds a core NATS queue-group subscription
  (``emguard-intake``) on the same subjects, on one connection per node, so the group keeps
  live members on the surviving nodes while the dead node's connections move.  Core NATS
  delivers while a stream has no leader.  The copy is kept in memory and its bundle retried
  until ``EM_PART`` acknowledges it (that stream may be electing a leader too).

Both paths of a replica feed one ``Bundler``, which sends a message (by the hash of subject
and payload) once, whichever path brought it first.  A copy that another replica bundled is
dropped unread by the worker (its recent keys), or later by the engine's (device, seq) memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from devices.decode import dead_letter_record, decode_message
from devices.timeutil import format_time
from engine.core.cases import Cases, cases_of
from engine.core.messages import deadletter
from engine.core.orders import OrderBook
from engine.runtime.acks import InvalidAck, parse_ack
from engine.runtime.nats_bundle import BUNDLE_HEADER, BUNDLE_VERSION, Bundler, Entry, message_key
from engine.runtime.nats_jetstream import (
    DEV_STREAM,
    INTAKE_CONSUMER,
    NatsSettings,
    device_subjects,
    partition_of,
    partition_subject,
    subject_to_topic,
    topic_to_subject,
)
from engine.runtime.outbound import encode

log = logging.getLogger(__name__)

#: the archived record of an alert (``{ns}:alert:{id}`` in Redis), or None if unknown
AlertLookup = Callable[[str], Awaitable[dict[str, Any] | None]]


def refusal(reason: str, detail: str, topic: str, payload: bytes, arrival: float) -> dict[str, Any]:
    """The dead-letter record of a message refused outside the decoder (as engine/runtime/service.py's)."""
    return {"reason": reason, "detail": detail[:500], "topic": topic,
            "payload": payload[:4096].decode("utf-8", "replace"), "arrival": format_time(arrival)}

BATCH = 256
QUEUE_GROUP = "emguard-intake"
CORE_PENDING = 65_536  # fast-path copies nats-py may hold before it drops (slow consumer)
RETRY_MAX_S = 1.0
TOPIC_HEADER = "Em-Topic"
ARRIVAL_HEADER = "Em-Arrival"


def dedup_id(subject: str, payload: bytes) -> str:
    """The ``Nats-Msg-Id`` of a device message in ``EM_PART``: the same from either path."""
    return "dv-" + hashlib.sha256(subject.encode() + b"\0" + payload).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Routed:
    """Where one device message goes: a partition, or dead letters (JSON) and nowhere else."""

    partition: int | None
    dead_letters: tuple[bytes, ...] = ()


class Router:
    """The pure part: message in, partition or dead letters out."""

    def __init__(self, book: OrderBook, partitions: int, prefix: str = "em", max_future_s: float = 300.0) -> None:
        self.book = book
        self.cases: Cases = cases_of(book)
        self.partitions = partitions
        self.prefix = prefix
        self.max_future_s = max_future_s

    def route(self, topic: str, payload: bytes, arrival: float) -> Routed:
        decoded = decode_message(
            topic, payload, arrival, prefix=self.prefix, owntracks_map=self.book.owntracks,
            max_future_s=self.max_future_s,
        )
        device = (decoded.fixes[0].device if decoded.fixes
                  else decoded.events[0].device if decoded.events else None)
        if device is None:
            return Routed(None, tuple(encode(dead_letter_record(r)) for r in decoded.rejections))
        # a burst with some bad elements goes on whole: the owner dead-letters those elements
        return Routed(partition_of(self.cases.device_case(device), self.partitions))

    def alert_partition(self, record: dict[str, Any]) -> int:
        """The partition of an archived alert: its order's case, else its person's or device's."""
        cases = self.cases
        order, subject, person = record.get("order"), record.get("subject"), record.get("protected_person")
        case = cases.of_order.get(order) if isinstance(order, str) else None
        case = case or cases.of_person.get(f"S:{subject}") or cases.of_person.get(f"P:{person}")
        if case is None:
            device = record.get("device")
            case = cases.device_case(device) if isinstance(device, str) else f"O:{order}"
        return partition_of(case, self.partitions)

    def dead_letter(self, reason: str, detail: str, topic: str, payload: bytes, arrival: float) -> bytes:
        return encode(refusal(reason, detail, topic, payload, arrival))


class Intake:
    """One intake replica: the stream path (``run``, with the bundler) and the fast path (``run_core``)."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings, router: Router,
                 alerts: AlertLookup | None = None) -> None:
        self.js = js
        self.settings = settings
        self.router = router
        self.alerts = alerts
        self.ack_topic = f"{settings.prefix}/ack"
        self.bundler = Bundler(self._publish_bundle)
        self.actions_routed = 0  # operator actions, each published on its own
        self.dead_lettered = 0
        self.core_received = 0
        self.core_dropped = 0  # fast-path copies left to the stream path (too much waiting)
        self.deadletter_subject = topic_to_subject(deadletter(settings.prefix, {}).topic)

    @property
    def routed(self) -> int:
        """Device messages stored in ``EM_PART`` by this replica, and operator actions routed."""
        return self.bundler.entries + self.actions_routed

    async def run(self, stop: asyncio.Event) -> None:
        """The stream path and the bundler until ``stop``.  A source is acknowledged once its
        routed copy is stored; one not stored by ``stop`` stays unacked (redelivered later)."""
        bundling = asyncio.create_task(self.bundler.run(stop), name="intake-bundler")
        psub = await self.js.pull_subscribe_bind(durable=INTAKE_CONSUMER, stream=DEV_STREAM)
        try:
            while not stop.is_set():
                try:
                    msgs = await psub.fetch(BATCH, timeout=1.0)
                except (nats.errors.TimeoutError, TimeoutError):
                    continue
                except (nats.errors.Error, OSError) as exc:
                    log.warning("intake fetch failed (%s); retrying", exc)
                    await asyncio.sleep(0.25)
                    continue
                arrival = time.time()
                results = await asyncio.gather(*(self._take(m.subject, m.data, arrival) for m in msgs),
                                               return_exceptions=True)
                for m, result in zip(msgs, results, strict=True):
                    if isinstance(result, BaseException):
                        log.warning("intake could not route %s (%r); it will be redelivered", m.subject, result)
                        continue
                    await m.ack()
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            bundling.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await bundling

    async def run_core(self, conns: list[NATS], stop: asyncio.Event) -> None:
        """The fast path until ``stop``: queue-group copies routed into the same bundler."""
        retrying: set[asyncio.Task[None]] = set()

        async def got(msg: Msg) -> None:
            self.core_received += 1
            subject, data, arrival = msg.subject, msg.data, time.time()
            topic = subject_to_topic(subject)
            try:
                routed = None if topic == self.ack_topic else self.router.route(topic, data, arrival)
                if routed is not None and routed.partition is not None:
                    entry = Entry(message_key(subject, data), topic, data, arrival)
                    if self.bundler.add(routed.partition, entry, optional=True) is None:
                        self.core_dropped += 1
                    return
            except Exception:  # a bug on one message: the stream path still has it
                log.exception("fast path could not route %s", subject)
                return
            # an operator action or dead letters: published on their own, retried until stored
            send = (lambda: self._forward_action(subject, data, arrival)) if routed is None else \
                (lambda: self._dead_letter(subject, data, routed))
            task = asyncio.create_task(self._until_stored(subject, send, stop))
            retrying.add(task)
            task.add_done_callback(retrying.discard)

        subs = [await nc.subscribe(subject, queue=QUEUE_GROUP, cb=got, pending_msgs_limit=CORE_PENDING)
                for nc in conns for subject in device_subjects(self.settings.prefix)]
        try:
            await stop.wait()
        finally:
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            for task in list(retrying):
                task.cancel()

    async def _take(self, subject: str, data: bytes, arrival: float) -> None:
        """Route one message of the stream path; returns once its copy is stored."""
        topic = subject_to_topic(subject)
        if topic == self.ack_topic:
            await self._forward_action(subject, data, arrival)
            return
        routed = self.router.route(topic, data, arrival)
        if routed.partition is None:
            await self._dead_letter(subject, data, routed)
            return
        future = self.bundler.add(routed.partition, Entry(message_key(subject, data), topic, data, arrival))
        assert future is not None  # only an optional entry is ever refused
        await future

    async def _publish_bundle(self, partition: int, data: bytes, ident: str) -> None:
        await self.js.publish(partition_subject(partition), data,
                              headers={"Nats-Msg-Id": ident, BUNDLE_HEADER: BUNDLE_VERSION})

    async def _until_stored(self, subject: str, send: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        """The fast path's publish of something not bundled, retried until stored or ``stop``."""
        backoff = 0.1
        while not stop.is_set():
            try:
                await send()
                return
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.info("fast path: %s not stored yet (%r); retrying", subject, exc)
            except Exception:  # a bug on one message: the stream path still has it
                log.exception("fast path could not route %s", subject)
                return
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, RETRY_MAX_S)

    async def _forward_action(self, subject: str, data: bytes, arrival: float) -> None:
        """An operator action (``em/ack``), published on its own with its own ``Nats-Msg-Id``
        to its alert's partition, or dead-lettered."""
        routed = await self._route_ack(data, arrival)
        if routed.partition is None:
            await self._dead_letter(subject, data, routed)
            return
        await self.js.publish(
            partition_subject(routed.partition), data,
            headers={"Nats-Msg-Id": dedup_id(subject, data), TOPIC_HEADER: self.ack_topic,
                     ARRIVAL_HEADER: f"{arrival:.3f}"},
        )
        self.actions_routed += 1

    async def _dead_letter(self, subject: str, data: bytes, routed: Routed) -> None:
        key = dedup_id(subject, data)
        for i, record in enumerate(routed.dead_letters):
            await self.js.publish(self.deadletter_subject, record, headers={"Nats-Msg-Id": f"dl-{key}-{i}"})
        self.dead_lettered += 1

    async def _route_ack(self, payload: bytes, arrival: float) -> Routed:
        """An operator action goes to the partition of its alert (found in the alert archive)."""
        try:
            command = parse_ack(payload)
        except InvalidAck as exc:
            return Routed(None, (self.router.dead_letter(exc.reason, str(exc), self.ack_topic, payload, arrival),))
        record = await self.alerts(command.alert_id) if self.alerts is not None else None
        if record is None:
            return Routed(None, (self.router.dead_letter(
                "bad_ack", f"unknown alert {command.alert_id}", self.ack_topic, payload, arrival),))
        return Routed(self.router.alert_partition(record))
