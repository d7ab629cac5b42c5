"""What the victim's phone may hear: her own warnings and device commands, filtered at the boundary.

The engine already builds victim payloads that carry nothing about the
offender's position (``engine.core.messages``).  This module is the second lock on
that door for the victim app: of every outgoing message it passes on only

* ``{prefix}/alerts/victim/{device}`` (channel ``victim``) to that device, as
  a ``warning`` event, and
* ``{prefix}/cmd/device/{device}`` (channel ``device``) to that device, as a
  ``command`` event,

and of those payloads only the fields the contract (§6) names.  A field added
to a payload later does not reach a phone until it is added here on purpose.

``VictimFeed.on_effects`` is a ``Service`` listener; streams subscribe per
device.  ``current_state`` rebuilds what she should see now from the engine's
own alerts (which survive restarts with the state store), not from a history
kept here: the feed remembers only the last interval command per device.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from devices.timeutil import format_time
from engine.core.alert_records import LEVEL_RANK
from engine.core.effects import Effects
from engine.core.messages import Outgoing, victim_status, victim_warning
from engine.core.pipeline import Engine

WARNING_FIELDS = frozenset({"v", "alert_id", "level", "message", "advice", "near", "status", "t"})
# the alert's kind is added for the app (not on MQTT): a panic's confirmation must not beep,
# which could give away where she is hiding
KINDS = frozenset({"proximity", "exclusion", "panic", "device_silent"})
COMMAND_FIELDS = frozenset({"v", "t", "instruction", "interval_s", "until"})
COMMANDS = frozenset({"set_interval"})
STREAM_QUEUE = 100  # events held for one slow phone before it is told to resync instead

Event = tuple[str, dict[str, Any]]  # (SSE event name, payload)


class VictimFeed:
    """Fans the engine's victim warnings and device commands out to each device's open streams."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._warning_topic = f"{prefix}/alerts/victim/"
        self._command_topic = f"{prefix}/cmd/device/"
        self.streams: dict[str, set[asyncio.Queue[Event | None]]] = {}
        self.commands: dict[str, dict[str, Any]] = {}  # device -> its last set_interval, for reconnects

    def route(self, message: Outgoing) -> tuple[str, Event] | None:
        """(device, event) for a message a victim's phone may see, None for every other message."""
        if message.channel == "victim" and message.topic.startswith(self._warning_topic):
            device = message.topic[len(self._warning_topic) :]
            if device and "/" not in device:
                return device, ("warning", _only(message.payload, WARNING_FIELDS))
        elif message.channel == "device" and message.topic.startswith(self._command_topic):
            device = message.topic[len(self._command_topic) :]
            if device and "/" not in device and message.payload.get("instruction") in COMMANDS:
                return device, ("command", _only(message.payload, COMMAND_FIELDS))
        return None

    def on_effects(self, effects: Effects, now: float) -> None:
        """Service listener: each routed message to the open streams of its own device only."""
        kinds = {c.alert.alert_id: c.alert.kind for c in effects.changes}
        for message in effects.messages:
            routed = self.route(message)
            if routed is None:
                continue
            device, event = routed
            if event[0] == "command":
                self.commands[device] = event[1]
            else:
                _add_kind(event[1], kinds.get(str(event[1].get("alert_id"))))
            for queue in list(self.streams.get(device, ())):
                if queue.full():  # a phone that stopped reading: drop its backlog, send state anew
                    _drain(queue)
                    queue.put_nowait(("resync", {}))
                queue.put_nowait(event)

    @contextlib.contextmanager
    def subscribe(self, device: str) -> Iterator[asyncio.Queue[Event | None]]:
        """A queue of this device's events for as long as the ``with`` block (one SSE response)."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue(STREAM_QUEUE)
        self.streams.setdefault(device, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self.streams.get(device)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self.streams[device]

    def current_state(self, engine: Engine, device: str, now: float) -> dict[str, Any]:
        """What her screen should show now: open warnings she was given, and the last command.

        ``warnings`` lists payloads in the order the app would have received them live (a
        warning, then its status when the centre is handling it), so the app applies them with
        the same code.  Only alerts the engine's notifier actually told her about count, at
        their current level, with the status she heard (the centre handling it, or the danger
        passed: a cleared condition); closed ones are gone (the phone keeps no history).
        """
        owner = engine.book.owner_of(device)
        warnings: list[dict[str, Any]] = []
        if owner is not None and owner[0] == "protected":
            told = engine.notifier.victim_rank
            mine = [
                a
                for a in engine.alerts.alerts.values()
                if a.protected_person == owner[1] and a.alert_id in told and a.state != "closed"
            ]
            mine.sort(key=lambda a: (a.raised_at, -LEVEL_RANK[a.level], a.alert_id))
            for alert in mine:
                warning = victim_warning(self.prefix, device, alert, now)
                warnings.append(_add_kind(_only(warning.payload, WARNING_FIELDS), alert.kind))
                if alert.state in ("acknowledged", "escalated") or alert.condition == "cleared":
                    status = victim_status(self.prefix, device, alert, now)
                    warnings.append(_add_kind(_only(status.payload, WARNING_FIELDS), alert.kind))
        return {
            "v": 1,
            "device": device,
            "t": format_time(now),
            "warnings": warnings,
            "command": self.commands.get(device),
        }


def _add_kind(payload: dict[str, Any], kind: str | None) -> dict[str, Any]:
    if kind in KINDS:
        payload["kind"] = kind
    return payload


def _only(payload: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k in fields}


def _drain(queue: asyncio.Queue[Event | None]) -> None:
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            queue.get_nowait()
