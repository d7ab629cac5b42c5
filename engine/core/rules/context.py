"""What every rule needs from the pipeline, passed in so rules stay pure."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.alert_records import AlertChange
from engine.core.alerts import AlertBook
from engine.core.config import RuleConfig
from engine.core.messages import Outgoing
from engine.core.orders import OrderBook


@dataclass(slots=True, init=False)
class RuleContext:
    """Shared, mutable per-step context: the orders, the alert book, and what to emit (a
    written ``__init__``: engine.tools.native)."""

    book: OrderBook
    # the alert book; while approved crossings hold, it hands raises to its ``capping`` view
    # (always the book itself: the compiled build calls its methods directly)
    alerts: AlertBook
    rules: RuleConfig
    prefix: str
    now: float
    arrival: float | None
    changes: list[AlertChange]
    messages: list[Outgoing]

    def __init__(
        self, book: OrderBook, alerts: AlertBook, rules: RuleConfig, prefix: str,
        now: float = 0.0, arrival: float | None = None,
    ) -> None:
        self.book = book
        self.alerts = alerts
        self.rules = rules
        self.prefix = prefix
        self.now = now
        self.arrival = arrival
        self.changes = []
        self.messages = []

    def emit(self, change: AlertChange | None) -> AlertChange | None:
        """Record a change (if any) for notification, publishing and storage."""
        if change is not None:
            if self.arrival is not None and change.arrival is None:
                # replace(change, arrival=...) without its per-call field introspection
                change = AlertChange(change.alert, change.change, change.previous_level, self.arrival)
            self.changes.append(change)
        return change
