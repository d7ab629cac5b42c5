"""What the service and replay append to the evidence chain, and the hooks that do it.

* ``fix``: every fix the engine evaluated (released from the reorder buffer),
  with its accuracy and whether the jump filter accepted it for decisions;
  appended by ``Engine.evidence_sink`` as the fix is evaluated, so it precedes
  any alert change it caused.
* ``alert_change``: every change the engine made to an alert (raised, level,
  update, condition cleared, engine close or escalate), with the full contract
  §5 form, the history entry and ``order_sha256`` of the order in force.
* ``action``: what people did and what the engine told devices:
  ``{"type": "operator", ...}`` for an operator's claim / ack / escalate /
  note / close / prompt (the history entry names the outcome and escalation
  target; a prompt's ``contact_centre`` to his ankle monitor follows as a message),
  ``{"type": "message", ...}`` for every victim warning, offender prompt and
  device command (with ``step_alerts``: the alerts changed in the same step).

Centre messages are the alert changes themselves; dead letters stay in the
dead-letter store.  Times are float epoch seconds (exact); ``at`` is
processing time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devices.model import Fix
from engine.core.alert_records import OPERATOR_CHANGES, AlertChange
from engine.core.effects import Effects
from engine.core.orders import Order, OrderBook
from engine.evidence.chain import Chain
from engine.evidence.orderdoc import order_digest

FixSink = Callable[[Fix, bool], None]
Listener = Callable[[Effects, float], None]
MESSAGE_CHANNELS = ("victim", "subject", "device")


def fix_body(fix: Fix, accepted: bool) -> dict[str, Any]:
    """A fix as evidence: position, accuracy, source and what the engine made of it."""
    body: dict[str, Any] = {
        "device": fix.device,
        "seq": fix.seq,
        "key": fix.key,
        "t": fix.t,
        "lat": fix.lat,
        "lon": fix.lon,
        "acc": fix.acc,
        "src": fix.src,
        "arrival": fix.arrival,
        "accepted": accepted,
    }
    for name in ("spd", "hdg", "sats", "batt", "strap"):
        value = getattr(fix, name)
        if value is not None:
            body[name] = value
    return body


def change_body(change: AlertChange, now: float, order_sha256: str | None) -> dict[str, Any]:
    """An alert change with the history entry that records who did it and why."""
    alert = change.alert
    last = alert.history[-1] if alert.history else None
    return {
        "at": now,
        "alert_id": alert.alert_id,
        "change": change.change,
        "previous_level": change.previous_level,
        "arrival": change.arrival,
        "episode_start": alert.episode_start,
        "device_time": alert.device_time,
        "history_entry": last.to_dict(last.at) if last else None,
        "alert": alert.to_wire(),
        "order_sha256": order_sha256,
    }


def is_operator_action(change: AlertChange) -> bool:
    """A person (not the engine) made this change."""
    last = change.alert.history[-1] if change.alert.history else None
    return (
        change.change in OPERATOR_CHANGES and last is not None and last.by != "engine"
    )


class _Digests:
    """Order digests cached per parsed ``Order`` object (orders change rarely, alerts often)."""

    def __init__(self, book: Callable[[], OrderBook] | None) -> None:
        self.book = book
        self._cache: dict[str, tuple[Order, str]] = {}

    def of(self, order_id: str | None) -> str | None:
        if self.book is None or order_id is None:
            return None
        order = self.book().orders.get(order_id)
        if order is None:
            return None
        hit = self._cache.get(order_id)
        if hit is None or hit[0] is not order:
            hit = self._cache[order_id] = (order, order_digest(order))
        return hit[1]


def make_fix_sink(chain: Chain) -> FixSink:
    """``Engine.evidence_sink``: append each evaluated fix (flushed by the listener per step)."""

    def sink(fix: Fix, accepted: bool) -> None:
        chain.append("fix", fix_body(fix, accepted))

    return sink


def make_evidence_listener(chain: Chain, book: Callable[[], OrderBook] | None = None) -> Listener:
    """A service / replay listener: append every alert change and action of a step, then flush.

    ``book`` (e.g. ``lambda: engine.book``) lets each alert change carry the
    digest of its order, which binds the zones in an evidence bundle to the chain.
    """
    digests = _Digests(book)

    def listener(effects: Effects, now: float) -> None:
        step_alerts = sorted({c.alert.alert_id for c in effects.changes})
        for change in effects.changes:
            body = change_body(change, now, digests.of(change.alert.order))
            if is_operator_action(change):
                chain.append("action", {"type": "operator", **body})
            else:
                chain.append("alert_change", body)
        for msg in effects.messages:
            if msg.channel in MESSAGE_CHANNELS:
                chain.append(
                    "action",
                    {
                        "type": "message",
                        "at": now,
                        "channel": msg.channel,
                        "topic": msg.topic,
                        "payload": msg.payload,
                        "step_alerts": step_alerts,
                    },
                )
        chain.flush()

    return listener


def attach(engine: Any, chain: Chain) -> Listener:
    """Install the fix sink on ``engine`` and return the listener for its effects."""
    engine.evidence_sink = make_fix_sink(chain)
    return make_evidence_listener(chain, lambda: engine.book)
