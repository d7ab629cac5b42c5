"""Intake of the NATS scale-out: device messages from ``EM_DEV`` to their case's partition.

Stateless, so any number of replicas share the one durable pull consumer ``intake``.  Each
message is decoded and validated exactly as the engine does (``devices.decode``): one that
yields nothing valid is dead-lettered here (``em.deadletter``, one record per rejection) and
goes no further; any other is routed, unchanged, to ``emguard.part.{n}`` of its device's case
(``engine.core.cases``: a subject with everyone his orders protect, merged transitively, so a
victim protected from two men is in the one case of both and her fixes reach both
evaluations).  The worker owning the partition decodes it again and evaluates it.

The hand-over is exactly-once: the routed copy carries ``Nats-Msg-Id: in-{stream sequence}``,
so a replica that dies between publishing and acknowledging the source, and the replica that
gets the redelivery, store one copy between them; the source is acknowledged only after
JetStream acknowledged that publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from devices.decode import dead_letter_record, decode_message
from devices.timeutil import format_time
from engine.core.cases import Cases, cases_of
from engine.core.messages import deadletter
from engine.core.orders import OrderBook
from engine.runtime.acks import InvalidAck, parse_ack
from engine.runtime.nats_jetstream import (
    DEV_STREAM,
    INTAKE_CONSUMER,
    NatsSettings,
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

BATCH = 128
TOPIC_HEADER = "Em-Topic"
ARRIVAL_HEADER = "Em-Arrival"


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
    """One intake replica: pulls ``EM_DEV`` through the shared consumer, routes, then acks."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings, router: Router,
                 alerts: AlertLookup | None = None) -> None:
        self.js = js
        self.settings = settings
        self.router = router
        self.alerts = alerts
        self.ack_topic = f"{settings.prefix}/ack"
        self.routed = 0
        self.dead_lettered = 0
        self.deadletter_subject = topic_to_subject(deadletter(settings.prefix, {}).topic)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a publish that fails leaves its source unacked (redelivered later)."""
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
                results = await asyncio.gather(*(self._forward(m, arrival) for m in msgs), return_exceptions=True)
                for m, result in zip(msgs, results, strict=True):
                    if isinstance(result, BaseException):
                        log.warning("intake could not route %s (%r); it will be redelivered", m.subject, result)
                        continue
                    await m.ack()
        finally:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _forward(self, msg: Msg, arrival: float) -> None:
        topic = subject_to_topic(msg.subject)
        seq = msg.metadata.sequence.stream
        routed = await self._route_ack(msg.data, arrival) if topic == self.ack_topic else \
            self.router.route(topic, msg.data, arrival)
        if routed.partition is None:
            for i, record in enumerate(routed.dead_letters):
                await self.js.publish(self.deadletter_subject, record, headers={"Nats-Msg-Id": f"dl-{seq}-{i}"})
            self.dead_lettered += 1
            return
        await self.js.publish(
            partition_subject(routed.partition), msg.data,
            headers={"Nats-Msg-Id": f"in-{seq}", TOPIC_HEADER: topic, ARRIVAL_HEADER: f"{arrival:.3f}"},
        )
        self.routed += 1

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
