"""The centre-wide read model of a NATS worker: the latest version of every alert, whoever owns it.

A worker's engines hold only the alerts of the partitions it owns; the monitoring centre must see
them all on any worker.  Every alert change is published once to ``EM_OUT`` (``em.alerts.centre``,
contract §5, with ``change_seq`` = the number of history entries), so a worker reading that
stream from its start (``engine.runtime.nats_centre``) knows the latest version of every alert:
newest ``change_seq`` wins, a repeat or an older version arriving late is ignored.

This module has no I/O: changes and refusals in, views and waiters out.  The HTTP API
(``engine.web.centre_api``) reads it; an operator action goes out through ``send`` (an
``em/ack`` payload, applied by the alert's owner) and the API waits here for its result: the
alert's next change, or the owner's refusal (a dead letter carrying the exact payload).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from devices.timeutil import parse_time
from engine.core.alert_records import ALARM_RANK, LEVEL_RANK, LEVELS
from engine.runtime.device_view import DeviceView

#: publish one ``em/ack`` payload (bytes) to the cluster; set by the NATS side once connected
Sender = Callable[[bytes], Awaitable[None]]
#: the archived record of an alert (wire form plus history), or None
Archive = Callable[[str], Awaitable[dict[str, Any] | None]]
REFUSALS_KEPT = 256


@dataclass(slots=True)
class Seen:
    """One alert as last published: its wire form, parsed deadline and highest level reached."""

    doc: dict[str, Any]
    seq: int
    deadline: float
    peak: int

    @property
    def is_open(self) -> bool:
        return bool(self.doc.get("state") != "closed")

    @property
    def needs_ack(self) -> bool:
        return self.doc.get("state") in ("open", "escalated")

    def queue_key(self) -> tuple[int, int, int, float, str]:
        """The centre's queue order (as ``engine.web.views.queue_order``)."""
        return (0 if self.is_open else 1, 0 if self.needs_ack else 1,
                -LEVEL_RANK.get(str(self.doc.get("level")), 0), self.deadline, str(self.doc["alert_id"]))

    def summary(self, now: float) -> dict[str, Any]:
        """The API's summary form (as ``engine.web.views.alert_summary``) from the wire form."""
        doc = dict(self.doc)
        doc["overdue"] = self.needs_ack and now >= self.deadline
        doc["seconds_to_deadline"] = round(self.deadline - now, 1) if self.is_open else None
        doc["peak_level"] = LEVELS[self.peak]
        doc["close_needs"] = ["outcome", "note"] if self.peak >= ALARM_RANK else []
        return doc


def change_kind(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """What a change did, read off two wire forms (the wire form does not name it)."""
    if old is None:
        return "raised"
    if new.get("state") != old.get("state"):
        return {"acknowledged": "ack", "closed": "close", "escalated": "escalate"}.get(str(new.get("state")), "update")
    if new.get("level") != old.get("level"):
        return "level"
    if new.get("condition") != old.get("condition"):
        return "clear" if new.get("condition") == "cleared" else "update"
    if new.get("claimed_by") != old.get("claimed_by"):
        return "claim"
    return "note" if new.get("note") and new.get("changed_by") != "engine" else "update"


def payload_key(payload: bytes) -> str:
    """How a dead letter quotes a refused payload (``nats_intake.refusal``): the first 4,096 bytes."""
    return payload[:4096].decode("utf-8", "replace")


@dataclass(slots=True)
class CentreView:
    """Latest alert versions by id, change listeners, and waiters for actions' results."""

    alerts: dict[str, Seen] = field(default_factory=dict)
    listeners: list[Callable[[str, Seen], None]] = field(default_factory=list)
    send: Sender | None = None
    archive: Archive | None = None
    caught_up: bool = False  # the stream was read up to its end once (the view is complete)
    changes: int = 0
    refusals: dict[str, dict[str, Any]] = field(default_factory=dict)  # ack payload text -> record
    devices: DeviceView = field(default_factory=DeviceView)  # the owners' device health (em_view)
    _event: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, doc: dict[str, Any]) -> bool:
        """Take one published alert change; False for a repeat or an older version."""
        aid, seq = doc.get("alert_id"), doc.get("change_seq")
        if not isinstance(aid, str) or not isinstance(seq, int):
            return False
        old = self.alerts.get(aid)
        if old is not None and seq <= old.seq:
            return False
        try:
            deadline = parse_time(str(doc.get("deadline")))
        except ValueError:
            deadline = float("inf")
        rank = LEVEL_RANK.get(str(doc.get("level")), 0)
        seen = Seen(doc, seq, deadline, max(rank, old.peak if old else 0))
        self.alerts[aid] = seen
        self.changes += 1
        change = change_kind(old.doc if old else None, doc)
        for listener in list(self.listeners):
            listener(change, seen)
        self._wake()
        return True

    def seed(self, records: list[dict[str, Any]]) -> int:
        """Start from archived records (wire form plus history): alerts whose last change has
        left the stream's retention.  The stream's newer versions replace them as they come."""
        taken = 0
        for record in records:
            raw = record.get("history")
            history: list[Any] = raw if isinstance(raw, list) else []
            doc = {k: v for k, v in record.items() if k != "history"}
            if self.apply(doc):
                taken += 1
                seen = self.alerts[str(doc["alert_id"])]
                levels = [LEVEL_RANK.get(str(h.get("level")), 0) for h in history if isinstance(h, dict)]
                seen.peak = max([seen.peak, *levels])
        return taken

    def refused(self, record: dict[str, Any], ack_topic: str) -> None:
        """A dead letter: kept if it is a refused operator action (matched by its payload)."""
        if record.get("topic") != ack_topic or not isinstance(record.get("payload"), str):
            return
        self.refusals[record["payload"]] = record
        while len(self.refusals) > REFUSALS_KEPT:
            self.refusals.pop(next(iter(self.refusals)))
        self._wake()

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def outcome(self, alert_id: str, after_seq: int, by: str, payload: str,
                      within_s: float) -> tuple[Seen | None, dict[str, Any] | None]:
        """Wait for a version of the alert newer than ``after_seq`` changed by ``by``, or the
        refusal of ``payload``; (None, None) when neither came within ``within_s``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within_s
        while True:
            seen = self.alerts.get(alert_id)
            if seen is not None and seen.seq > after_seq and seen.doc.get("changed_by") == by:
                return seen, None
            if payload in self.refusals:
                return None, self.refusals.pop(payload)
            left = end - loop.time()
            if left <= 0:
                return None, None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._event.wait(), left)
