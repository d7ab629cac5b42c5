"""The alert as data: levels, kinds, actions, the handling policy, and the records themselves.

``Alert`` is what the centre sees of one episode (contract §5), with ``condition`` (the engine's
view: ``active``/``cleared``) apart from ``state`` (the centre's handling: ``open``,
``acknowledged``, ``escalated``, ``closed``); ``HistoryEntry`` is one line of its history and
``AlertChange`` one published change.  The lifecycle that moves them is ``engine.core.alerts``.

Alert ids are derived from (order, kind, target, episode start in device time) so a restarted or
duplicated worker computes the same id for the same episode and the store can refuse the
second copy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from devices.timeutil import format_time
from engine.errors import EngineError

Level = Literal["info", "warning", "alarm", "critical"]
State = Literal["open", "acknowledged", "escalated", "closed"]
Condition = Literal["active", "cleared"]
Action = Literal["claim", "ack", "escalate", "note", "close", "prompt"]
ChangeKind = Literal[
    "raised", "level", "update", "clear", "close", "claim", "ack", "escalate", "note", "prompt"
]

LEVELS: tuple[Level, ...] = ("info", "warning", "alarm", "critical")
LEVEL_RANK: Mapping[str, int] = {name: i for i, name in enumerate(LEVELS)}
ALARM_RANK = 2  # LEVEL_RANK["alarm"]: from here on only a person closes an alert
KINDS = (
    "proximity",
    "exclusion",
    "inclusion",
    "tamper",
    "battery",
    "signal_loss",
    "panic",
    "order_expiry",
    "device_silent",
)
#: what an operator may do to an alert (contract §1 ``em/ack`` and the HTTP API); ``prompt``
#: sends the subject's ankle monitor ``contact_centre`` (docs/contract-extensions.md, issue 25)
ACTIONS: tuple[str, ...] = ("claim", "ack", "escalate", "note", "close", "prompt")
#: older consumers' names for an action: ``resolve`` is ``close``
ACTION_ALIASES: Mapping[str, str] = {"resolve": "close"}
#: changes a person makes (the evidence log files them as actions)
OPERATOR_CHANGES: tuple[str, ...] = ("claim", "ack", "escalate", "note", "close", "prompt")
# Reaction times in seconds per level (the chain partners' agreed deadlines);
# overridable per kind in EngineConfig.
DEFAULT_DEADLINES: Mapping[str, float] = {
    "critical": 120.0,
    "alarm": 300.0,
    "warning": 900.0,
    "info": 3600.0,
}
#: outcome codes an operator closes an alert with (configurable: ``[alerts] outcomes``)
DEFAULT_OUTCOMES: tuple[str, ...] = (
    "false_alarm",  # GPS or device artefact: no violation happened
    "no_action_needed",  # a real but harmless event (he drove past, came home late by minutes)
    "subject_contacted",  # the offender was called and complied
    "victim_contacted",  # the protected person was called and is safe
    "police_dispatched",  # the police control room sent a unit
    "reported_to_prosecutor",  # violation reported to the OM (possibly V-TUL)
    "device_issue",  # a fault or battery problem, service arranged
    "other",  # anything else: the note says what
)
#: escalation targets per kind (the procedure's chain); ``*`` for every other kind
DEFAULT_TARGETS: Mapping[str, tuple[str, ...]] = {
    "*": ("supervisor", "police", "prosecutor"),
    "panic": ("police", "supervisor"),
    "battery": ("supervisor", "field_service"),
    "signal_loss": ("supervisor", "field_service", "police"),
    "device_silent": ("supervisor", "field_service", "police"),
}
#: the call script of each kind's procedure (``*`` for every other kind): what an operator does,
#: in order, shown beside the alarm (configurable: ``[alerts.scripts]``)
DEFAULT_SCRIPTS: Mapping[str, tuple[str, ...]] = {
    "*": (
        "Check the map and the evidence: is it real (accuracy, source of the fixes)?",
        "Call the subject: tell him what was seen and what he must do.",
        "If a victim may be at risk or he does not comply: escalate.",
        "Write what was done in a note; close with an outcome.",
    ),
    "proximity": (
        "Call the protected person now: is she safe? Tell her to go to a safe place.",
        "Call the subject: he must turn away and leave at once.",
        "She cannot be reached, he does not comply, or they keep closing: escalate to the police "
        "(control room) with the latest positions and RD coordinates.",
        "Write what was done in a note; close with an outcome.",
    ),
    "panic": (
        "Escalate to the police (control room) at once with her latest position.",
        "Call the protected person; if she cannot talk, listen and keep the line open.",
        "Call the subject: where is he now?",
        "Write what was done in a note; close with an outcome.",
    ),
    "exclusion": (
        "Check the map: is he inside the banned area beyond the accuracy of the fix?",
        "Call the subject: he must leave the area now.",
        "If the area protects a person, call her and tell her he is near.",
        "He stays or does not answer: escalate (supervisor, police); write a note; close.",
    ),
}


class AlertActionError(EngineError):
    """An operator action that conflicts with the alert's state (unknown alert, already
    closed, claimed by someone else): HTTP 409."""


class AlertActionInvalid(AlertActionError):
    """An operator action that is incomplete or names something not configured (no outcome or
    note for closing an alarm, an unknown outcome code or escalation target): HTTP 422."""


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How the centre works alerts: which kinds close themselves, outcome codes, targets.

    ``auto_close``: kinds whose ``info``/``warning`` alerts close themselves when their
    condition clears (an alert that reached ``alarm`` never does).  ``outcomes``: the codes
    ``close`` accepts.  ``targets``: per kind (``*`` for the rest) the escalation targets of
    its procedure, the first being the default when an older client names none.  ``scripts``:
    per kind (``*`` for the rest) the steps of the procedure's call script; only shown, the
    engine never reads them.
    """

    auto_close: frozenset[str] = frozenset(KINDS)
    outcomes: tuple[str, ...] = DEFAULT_OUTCOMES
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    scripts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_SCRIPTS))

    def targets_for(self, kind: str) -> tuple[str, ...]:
        """The escalation targets of ``kind``'s procedure."""
        found = self.targets.get(kind)
        if found is None:
            found = self.targets.get("*", DEFAULT_TARGETS["*"])
        return found

    def script_for(self, kind: str) -> tuple[str, ...]:
        """The call script of ``kind``'s procedure."""
        found = self.scripts.get(kind)
        if found is None:
            found = self.scripts.get("*", DEFAULT_SCRIPTS["*"])
        return found


def peak_rank(alert: Alert) -> int:
    """The highest level an alert ever had (its history keeps every level it passed)."""
    top = LEVEL_RANK[alert.level]
    for entry in alert.history:
        rank = LEVEL_RANK[entry.level]
        if rank > top:
            top = rank
    return top


@dataclass(slots=True, init=False, unsafe_hash=True)
class HistoryEntry:
    """Who did what to an alert, and when (processing time).

    ``action`` names the change (``raised``, ``level``, ``clear``, ``claim``, ``ack``,
    ``escalate``, ``note``, ``close``, ``prompt``; empty in entries stored before it was kept);
    ``outcome`` and ``target`` are a close's outcome code and an escalation's target.
    Never changed once made (a written ``__init__``, not ``frozen``: engine.tools.native, as every
    record made per alert change).
    """

    at: float
    state: State
    level: Level
    by: str
    note: str
    action: str
    outcome: str
    target: str

    def __init__(
        self, at: float, state: State, level: Level, by: str, note: str = "", action: str = "",
        outcome: str = "", target: str = "",
    ) -> None:
        self.at = at
        self.state = state
        self.level = level
        self.by = by
        self.note = note
        self.action = action
        self.outcome = outcome
        self.target = target

    def to_dict(self, at: Any) -> dict[str, Any]:
        """The entry as JSON (``at`` as the caller wants time written); empty fields left out."""
        out: dict[str, Any] = {
            "at": at, "state": self.state, "level": self.level, "by": self.by, "note": self.note,
        }
        if self.action:
            out["action"] = self.action
        if self.outcome:
            out["outcome"] = self.outcome
        if self.target:
            out["target"] = self.target
        return out


@dataclass(slots=True, init=False, unsafe_hash=True)
class Alert:
    """An alert as the monitoring centre sees it (contract §5), plus its history.

    Never changed once handed out: a change makes a new alert (``copy_alert``, then the
    changed fields set on the copy before anyone else sees it).  A written ``__init__`` and
    not ``frozen``, so that in the compiled build (engine.tools.native) it is a native class: a
    frozen Python dataclass cost ~28,000 instructions per copy and ~15,000 per construction
    through its interpreted ``__init__``, several times per alert change.

    ``target`` is the episode's target (a zone, a protected person, a device), part of the
    episode key; an escalation's target is ``escalated_to``.
    """

    alert_id: str
    kind: str
    level: Level
    state: State
    order: str | None
    subject: str | None
    protected_person: str | None
    zone: str | None
    device_time: float
    raised_at: float
    deadline: float
    episode_start: float
    distance_m: float | None
    certainty: str | None
    closing_speed_mps: float | None
    time_to_contact_s: float | None
    evidence: tuple[str, ...]
    late: bool
    detail: str
    updated_at: float
    target: str | None
    device: str | None
    history: tuple[HistoryEntry, ...]
    condition: Condition
    cleared_at: float | None
    claimed_by: str | None
    escalated_to: str | None
    outcome: str | None
    closed_by: str | None

    def __init__(
        self, alert_id: str, kind: str, level: Level, state: State, order: str | None,
        subject: str | None, protected_person: str | None, zone: str | None,
        device_time: float, raised_at: float, deadline: float, episode_start: float,
        distance_m: float | None = None, certainty: str | None = None,
        closing_speed_mps: float | None = None, time_to_contact_s: float | None = None,
        evidence: tuple[str, ...] = (), late: bool = False, detail: str = "",
        updated_at: float = 0.0, target: str | None = None, device: str | None = None,
        history: tuple[HistoryEntry, ...] = (), condition: Condition = "active",
        cleared_at: float | None = None, claimed_by: str | None = None,
        escalated_to: str | None = None, outcome: str | None = None,
        closed_by: str | None = None,
    ) -> None:
        self.alert_id = alert_id
        self.kind = kind
        self.level = level
        self.state = state
        self.order = order
        self.subject = subject
        self.protected_person = protected_person
        self.zone = zone
        self.device_time = device_time
        self.raised_at = raised_at
        self.deadline = deadline
        self.episode_start = episode_start
        self.distance_m = distance_m
        self.certainty = certainty
        self.closing_speed_mps = closing_speed_mps
        self.time_to_contact_s = time_to_contact_s
        self.evidence = evidence
        self.late = late
        self.detail = detail
        self.updated_at = updated_at
        self.target = target
        self.device = device
        self.history = history
        self.condition = condition
        self.cleared_at = cleared_at
        self.claimed_by = claimed_by
        self.escalated_to = escalated_to
        self.outcome = outcome
        self.closed_by = closed_by

    @property
    def is_open(self) -> bool:
        """Open, acknowledged and escalated alerts still need the centre, cleared or not."""
        return self.state != "closed"

    @property
    def needs_ack(self) -> bool:
        """Nobody has acknowledged it since it was raised or last rose (open or escalated)."""
        return self.state == "open" or self.state == "escalated"

    def to_wire(self) -> dict[str, Any]:
        """The monitoring-centre form (contract §5), with our extensions documented in docs."""
        out: dict[str, Any] = {
            "v": 1,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "level": self.level,
            "state": self.state,
            "condition": self.condition,
            "cleared_at": None if self.cleared_at is None else format_time(self.cleared_at),
            "claimed_by": self.claimed_by,
            "order": self.order,
            "subject": self.subject,
            "protected_person": self.protected_person,
            "zone": self.zone,
            "device_time": format_time(self.device_time),
            "raised_at": format_time(self.raised_at),
            "deadline": format_time(self.deadline),
            "distance_m": _round(self.distance_m, 1),
            "certainty": self.certainty,
            "closing_speed_mps": _round(self.closing_speed_mps, 2),
            "time_to_contact_s": _round(self.time_to_contact_s, 0),
            "evidence": {"fixes": list(self.evidence)},
            "late": self.late,
            "detail": self.detail,
            "updated_at": format_time(self.updated_at or self.raised_at),
            "change_seq": len(self.history),
        }
        if self.device is not None:
            out["device"] = self.device
        if self.escalated_to is not None:
            out["escalated_to"] = self.escalated_to
        if self.state == "closed":
            out["outcome"] = self.outcome
            out["closed_by"] = self.closed_by
        if self.history:
            last = self.history[-1]
            out["changed_by"] = last.by
            out["note"] = last.note
        return out


@dataclass(slots=True, init=False, unsafe_hash=True)
class AlertChange:
    """One published state change: the alert after the change and what changed (never changed
    once made; a written ``__init__``, not ``frozen``: engine.tools.native)."""

    alert: Alert
    change: ChangeKind
    previous_level: Level | None
    arrival: float | None  # arrival time of the fix that caused it (fix-to-alert latency)

    def __init__(
        self, alert: Alert, change: ChangeKind,
        previous_level: Level | None = None, arrival: float | None = None,
    ) -> None:
        self.alert = alert
        self.change = change
        self.previous_level = previous_level
        self.arrival = arrival


def copy_alert(a: Alert) -> Alert:
    """A new alert with every field of ``a``: the caller sets what changed before handing it out
    (``dataclasses.replace`` read the fields by introspection on every call)."""
    return Alert(
        a.alert_id, a.kind, a.level, a.state, a.order, a.subject, a.protected_person, a.zone,
        a.device_time, a.raised_at, a.deadline, a.episode_start, a.distance_m, a.certainty,
        a.closing_speed_mps, a.time_to_contact_s, a.evidence, a.late, a.detail, a.updated_at,
        a.target, a.device, a.history, a.condition, a.cleared_at, a.claimed_by, a.escalated_to,
        a.outcome, a.closed_by,
    )


def alert_id_for(
    order: str | None, kind: str, target: str | None, episode_start: float, n: int = 0
) -> str:
    """Deterministic id: the same episode always gets the same id, on any worker (``n`` > 0
    for the n-th further episode of one key that starts at the same instant)."""
    text = f"{order}|{kind}|{target}|{episode_start:.3f}"
    if n:
        text += f"|{n}"
    return "A-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _round(value: float | None, digits: int) -> float | None:
    """``value`` rounded for the wire; None for a missing, NaN or infinite value."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
