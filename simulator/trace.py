"""Trace files (contract §7): one MQTT message per line, in arrival order.

``{"arrival": "...Z", "topic": "em/dev/AM-1001/fix", "payload": {...}}`` where
the payload is exactly what was (or would be) published: a fix, an event, or
a JSON array of fixes for a buffered burst.  Reading goes through the
engine's own reader (``engine.runtime.replay.read_trace``) so replay, publish and the
report agree on what a trace line is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices.timeutil import format_time


@dataclass(frozen=True, slots=True)
class TraceMessage:
    """One message on the wire: when it reached the broker, its topic and payload."""

    arrival: float
    topic: str
    payload: Any

    def line(self) -> str:
        """The JSON Lines text for this message (no newline)."""
        return json.dumps(
            {"arrival": format_time(self.arrival), "topic": self.topic, "payload": self.payload}
        )


def sort_by_arrival(messages: Iterable[TraceMessage]) -> list[TraceMessage]:
    """Arrival order; ties keep their given order (a burst's arrays stay in sequence)."""
    return sorted(messages, key=lambda m: round(m.arrival, 3))


def write_trace(messages: Iterable[TraceMessage], path: str | Path) -> int:
    """Write messages (already in arrival order) as JSON Lines; returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for m in messages:
            fh.write(m.line() + "\n")
            n += 1
    return n


def iter_trace(path: str | Path) -> Iterator[tuple[float, str, Any]]:
    """(arrival, topic, decoded payload) per line, via the engine's trace reader."""
    from engine.runtime.replay import read_trace  # late: importing the engine costs ~0.8 s

    for arrival, topic, raw in read_trace(path):
        yield arrival, topic, json.loads(raw)
