"""The state-store port and its in-memory implementation.

The service persists, after each micro-batch and *before* acknowledging the
MQTT messages of that batch, one atomic commit: the state of the cases the
batch changed (``Engine.state_delta``, one part per case, see
``engine.core.case_state``) plus every outgoing message the batch produced (a
transactional outbox).
Outbox entries are deleted once the broker has acknowledged their publish.
So a crash at any point either loses nothing that was acknowledged (the broker
redelivers the rest, the restored state's dedup skips what was already
applied) or republishes at most the one message whose PUBACK was in flight.

Redis is the production store (``engine.runtime.store_redis``); ``MemoryStore`` backs
the demo and unit tests and is the reference for the contract below.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.alert_records import Alert
from engine.core.effects import StateDelta
from engine.core.messages import Outgoing


class StoreUnavailable(Exception):
    """The state store cannot be reached; the service holds acks and retries."""


class StateStore(Protocol):
    """What the service needs from durable state."""

    async def load_state(self) -> list[bytes]:
        """Every committed state part (for ``Engine.restore_parts``); empty on a fresh start."""

    async def commit(
        self, delta: StateDelta, messages: Sequence[Outgoing], alerts: Sequence[Alert]
    ) -> list[int]:
        """Atomically apply the state delta, queue the messages, archive the alerts; outbox ids back."""

    async def pending(self) -> list[tuple[int, Outgoing]]:
        """Outbox entries not yet confirmed published, oldest first."""

    async def published(self, outbox_ids: Sequence[int]) -> None:
        """The broker acknowledged these outbox entries."""

    async def alert(self, alert_id: str) -> dict[str, Any] | None:
        """The archived wire form of an alert with its history."""

    async def suspects(self) -> dict[str, int]:
        """Messages that were uncommitted when the service failed, with how often (engine.runtime.poison)."""

    async def add_suspects(self, keys: Sequence[str]) -> None:
        """Count one more failure for each of these message keys."""

    async def clear_suspects(self, keys: Sequence[str]) -> None:
        """These suspects were handled and committed (or dead-lettered): forget them."""

    async def ping(self) -> bool:
        """True when the store answers."""

    async def close(self) -> None:
        """Release connections."""


def encode_message(m: Outgoing) -> str:
    """Outbox entries are stored as JSON text: channel, topic, payload."""
    return json.dumps({"c": m.channel, "t": m.topic, "p": m.payload}, separators=(",", ":"))


def decode_message(text: str | bytes) -> Outgoing:
    """Inverse of ``encode_message``."""
    doc = json.loads(text)
    return Outgoing(doc["c"], doc["t"], doc["p"])


def alert_record(alert: Alert) -> dict[str, Any]:
    """The archived form: the wire form plus the full history (who did what when)."""
    rec = alert.to_wire()
    rec["history"] = [h.to_dict(h.at) for h in alert.history]
    return rec


def apply_delta(state: dict[str, bytes], delta: StateDelta) -> None:
    """What a commit does to the stored parts (the reference for every store)."""
    if delta.replace_all:
        state.clear()
    for case, part in delta.parts.items():
        if part is None:
            state.pop(case, None)
        else:
            state[case] = part


@dataclass(slots=True)
class MemoryStore:
    """In-process store with the same semantics as Redis (demo, unit tests)."""

    state: dict[str, bytes] = field(default_factory=dict)
    outbox: dict[int, str] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)
    next_id: int = 1
    available: bool = True
    commits: int = 0
    suspect_counts: dict[str, int] = field(default_factory=dict)

    async def load_state(self) -> list[bytes]:
        self._check()
        return [self.state[case] for case in sorted(self.state)]

    async def commit(
        self, delta: StateDelta, messages: Sequence[Outgoing], alerts: Sequence[Alert]
    ) -> list[int]:
        self._check()
        ids = list(range(self.next_id, self.next_id + len(messages)))
        self.next_id += len(messages)
        apply_delta(self.state, delta)
        for i, m in zip(ids, messages, strict=True):
            self.outbox[i] = encode_message(m)
        for a in alerts:
            self.alerts[a.alert_id] = json.dumps(alert_record(a))
        self.commits += 1
        return ids

    async def pending(self) -> list[tuple[int, Outgoing]]:
        self._check()
        return [(i, decode_message(self.outbox[i])) for i in sorted(self.outbox)]

    async def published(self, outbox_ids: Sequence[int]) -> None:
        self._check()
        for outbox_id in outbox_ids:
            self.outbox.pop(outbox_id, None)

    async def alert(self, alert_id: str) -> dict[str, Any] | None:
        self._check()
        text = self.alerts.get(alert_id)
        return json.loads(text) if text else None

    async def suspects(self) -> dict[str, int]:
        self._check()
        return dict(self.suspect_counts)

    async def add_suspects(self, keys: Sequence[str]) -> None:
        self._check()
        for key in keys:
            self.suspect_counts[key] = self.suspect_counts.get(key, 0) + 1

    async def clear_suspects(self, keys: Sequence[str]) -> None:
        self._check()
        for key in keys:
            self.suspect_counts.pop(key, None)

    async def ping(self) -> bool:
        return self.available

    async def close(self) -> None:
        return None

    def _check(self) -> None:
        if not self.available:
            raise StoreUnavailable("memory store switched off (fault injection)")
