"""What the engine hands back: the effects of a step, a state delta, its counters.

Plain records, so the runtime, the web layer and the tests can read them without the pipeline
that makes them (``engine.core.pipeline``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from engine.core.alert_records import AlertChange
from engine.core.messages import Outgoing


@dataclass(slots=True, init=False)
class Effects:
    """What one step of the engine produced (a written ``__init__``: engine.tools.native)."""

    messages: list[Outgoing]
    changes: list[AlertChange]

    def __init__(
        self, messages: list[Outgoing] | None = None, changes: list[AlertChange] | None = None
    ) -> None:
        self.messages = [] if messages is None else messages
        self.changes = [] if changes is None else changes

    def extend(self, other: Effects) -> None:
        self.messages.extend(other.messages)
        self.changes.extend(other.changes)


@dataclass(frozen=True, slots=True)
class StateDelta:
    """Stored parts (engine.core.case_state) of the cases that changed; None for a case that now
    holds nothing."""

    parts: dict[str, bytes | None]
    replace_all: bool  # drop every stored part that is not in ``parts``


@dataclass(slots=True)
class EngineStats:
    """Counters the metrics layer exports; plain ints so the core needs no Prometheus."""

    received: int = 0
    fixes: int = 0
    events: int = 0
    duplicates: int = 0
    seq_restarts: int = 0  # fixes and events that restarted their device's numbering
    jumps: int = 0
    late: int = 0
    evaluated: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    lag_s: list[float] = field(default_factory=list)
