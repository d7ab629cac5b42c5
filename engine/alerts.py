"""The alert lifecycle: one alert per episode, graded, with deadlines and a full history.

Pure state machine (time is passed in).  ``open → acknowledged → resolved``,
``escalated`` when the deadline for its level passes unacknowledged or an
operator escalates.  A rising level keeps the alert id; every change is an
``AlertChange`` that the caller publishes and stores.

Alert ids are derived from (order, kind, target, episode start in device time)
so a restarted or duplicated worker computes the same id for the same episode
and the store can refuse the second copy.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from engine.errors import EngineError
from engine.timeutil import format_time

Level = Literal["info", "warning", "alarm", "critical"]
State = Literal["open", "acknowledged", "escalated", "resolved"]
Action = Literal["ack", "escalate", "resolve"]

LEVELS: tuple[Level, ...] = ("info", "warning", "alarm", "critical")
LEVEL_RANK: Mapping[str, int] = {name: i for i, name in enumerate(LEVELS)}
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

# Reaction times in seconds per level (the chain partners' agreed deadlines);
# overridable per kind in EngineConfig.
DEFAULT_DEADLINES: Mapping[str, float] = {
    "critical": 120.0,
    "alarm": 300.0,
    "warning": 900.0,
    "info": 3600.0,
}


class AlertActionError(EngineError):
    """An operator action that does not apply (unknown alert, already resolved, bad action)."""


@dataclass(slots=True, init=False, unsafe_hash=True)
class HistoryEntry:
    """Who did what to an alert, and when (processing time).

    Never changed once made (a written ``__init__``, not ``frozen``: engine.native, as every
    record made per alert change).
    """

    at: float
    state: State
    level: Level
    by: str
    note: str

    def __init__(self, at: float, state: State, level: Level, by: str, note: str = "") -> None:
        self.at = at
        self.state = state
        self.level = level
        self.by = by
        self.note = note

    def __reduce__(self) -> tuple[type[HistoryEntry], tuple[float, str, str, str, str]]:
        # a plain tuple (see Alert.__reduce__)
        return (HistoryEntry, (self.at, self.state, self.level, self.by, self.note))

    def __setstate__(self, state: list[Any]) -> None:
        # an entry pickled by the frozen dataclass default: copyreg's __newobj__ and the field
        # values in order (engine.state_unpickle makes the blank object)
        self.at, self.state, self.level, self.by, self.note = state


@dataclass(slots=True, init=False, unsafe_hash=True)
class Alert:
    """An alert as the monitoring centre sees it (contract §5), plus its history.

    Never changed once handed out: a change makes a new alert (``copy_alert``, then the
    changed fields set on the copy before anyone else sees it).  A written ``__init__`` and
    not ``frozen``, so that in the compiled build (engine.native) it is a native class: a
    frozen Python dataclass cost ~28,000 instructions per copy and ~15,000 per construction
    through its interpreted ``__init__``, several times per alert change.
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

    def __init__(
        self, alert_id: str, kind: str, level: Level, state: State, order: str | None,
        subject: str | None, protected_person: str | None, zone: str | None,
        device_time: float, raised_at: float, deadline: float, episode_start: float,
        distance_m: float | None = None, certainty: str | None = None,
        closing_speed_mps: float | None = None, time_to_contact_s: float | None = None,
        evidence: tuple[str, ...] = (), late: bool = False, detail: str = "",
        updated_at: float = 0.0, target: str | None = None, device: str | None = None,
        history: tuple[HistoryEntry, ...] = (),
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

    def __reduce__(self) -> tuple[type[Alert], tuple[Any, ...]]:
        # the constructor with the field values as one tuple: the same pickle from the pure
        # and the compiled build, and open alerts are stored with every commit of their case
        # (engine.case_state)
        return (Alert, (
            self.alert_id, self.kind, self.level, self.state, self.order, self.subject,
            self.protected_person, self.zone, self.device_time, self.raised_at, self.deadline,
            self.episode_start, self.distance_m, self.certainty, self.closing_speed_mps,
            self.time_to_contact_s, self.evidence, self.late, self.detail, self.updated_at,
            self.target, self.device, self.history,
        ))

    def __setstate__(self, state: list[Any]) -> None:
        # an alert pickled by the frozen dataclass default, before __reduce__: copyreg's
        # __newobj__ and the field values in order (engine.state_unpickle makes the blank
        # object in the compiled build)
        (
            self.alert_id, self.kind, self.level, self.state, self.order, self.subject,
            self.protected_person, self.zone, self.device_time, self.raised_at, self.deadline,
            self.episode_start, self.distance_m, self.certainty, self.closing_speed_mps,
            self.time_to_contact_s, self.evidence, self.late, self.detail, self.updated_at,
            self.target, self.device, self.history,
        ) = state

    @property
    def is_open(self) -> bool:
        """Open, acknowledged and escalated alerts still need the centre."""
        return self.state != "resolved"

    def to_wire(self) -> dict[str, Any]:
        """The monitoring-centre form (contract §5), with our extensions documented in docs."""
        out: dict[str, Any] = {
            "v": 1,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "level": self.level,
            "state": self.state,
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
        if self.history:
            last = self.history[-1]
            out["changed_by"] = last.by
            out["note"] = last.note
        return out


@dataclass(slots=True, init=False, unsafe_hash=True)
class AlertChange:
    """One published state change: the alert after the change and what changed (never changed
    once made; a written ``__init__``, not ``frozen``: engine.native)."""

    alert: Alert
    change: Literal["raised", "level", "ack", "escalate", "resolve", "update"]
    previous_level: Level | None
    arrival: float | None  # arrival time of the fix that caused it (fix-to-alert latency)

    def __init__(
        self, alert: Alert, change: Literal["raised", "level", "ack", "escalate", "resolve", "update"],
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
        a.target, a.device, a.history,
    )


class RaiseCap(Protocol):
    """What ``AlertBook.raise_or_update`` hands a raise to while approved crossings cap the
    levels (``engine.rules.crossings.CappedAlerts``): the same keyword arguments."""

    def raise_or_update(self, **kw: Any) -> AlertChange | None: ...


def alert_id_for(order: str | None, kind: str, target: str | None, episode_start: float) -> str:
    """Deterministic id: the same episode always gets the same id, on any worker."""
    text = f"{order}|{kind}|{target}|{episode_start:.3f}"
    return "A-" + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(slots=True)
class AlertBook:
    """All alerts this engine knows, indexed by id and by episode key."""

    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    kind_deadlines: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    open_by_key: dict[tuple[str | None, str, str | None], str] = field(default_factory=dict)
    # (alerts dict, its size, a lower bound of the deadlines of alerts in state "open"), so
    # that escalate_overdue (every tick) need not look at every alert; see there
    _deadline_floor: tuple[dict[str, Alert], int, float] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # while approved crossings hold (engine.rules.crossings.ApprovedCrossings.capped): the view
    # that caps raises, which ``raise_or_update`` hands every raise to
    capping: RaiseCap | None = field(default=None, init=False, repr=False, compare=False)

    def deadline_for(self, kind: str, level: str, now: float) -> float:
        """Deadline for acting on an alert of this kind and level raised or raised-to at ``now``."""
        per_kind = self.kind_deadlines.get(kind, {})
        return now + float(per_kind.get(level, self.deadlines[level]))

    def open_for(self, order: str | None, kind: str, target: str | None) -> Alert | None:
        """The open alert of an episode, if any."""
        return self.open_for_key((order, kind, target))

    def writes_detail(self, order: str | None, kind: str, target: str | None, level: Level) -> bool:
        """Whether ``raise_or_update`` at ``level`` (not ``allow_lower``) keeps the ``detail`` it is
        given: for a new alert, a rise, and any raise while a cap holds (``CappedAlerts`` notes
        it).  An update at the same or a lower level keeps the alert's own detail, so a rule
        need not format one (the formatting cost more than the update)."""
        if self.capping is not None:
            return True
        current = self.open_for(order, kind, target)
        return current is None or LEVEL_RANK[level] > LEVEL_RANK[current.level]

    def open_for_key(self, key: tuple[str | None, str, str | None]) -> Alert | None:
        """``open_for`` with the episode key ``(order, kind, target)`` made once by the caller."""
        aid = self.open_by_key.get(key)
        return self.alerts.get(aid) if aid else None

    def raise_or_update(
        self,
        *,
        order: str | None,
        kind: str,
        target: str | None,
        level: Level,
        now: float,
        device_time: float,
        episode_start: float,
        subject: str | None = None,
        protected_person: str | None = None,
        zone: str | None = None,
        distance_m: float | None = None,
        certainty: str | None = None,
        closing_speed_mps: float | None = None,
        time_to_contact_s: float | None = None,
        evidence: tuple[str, ...] = (),
        late: bool = False,
        detail: str = "",
        device: str | None = None,
        allow_lower: bool = False,
        past_cap: bool = False,
    ) -> AlertChange | None:
        """Open an alert for the episode or move its level; None when nothing visible changed.

        A level never drops unless ``allow_lower`` (the rule has debounced the fall).  While a
        cap holds (``capping``) the raise goes through it; ``past_cap`` is its own call on to
        the book.
        """
        if self.capping is not None and not past_cap:
            return self.capping.raise_or_update(
                order=order, kind=kind, target=target, level=level, now=now,
                device_time=device_time, episode_start=episode_start, subject=subject,
                protected_person=protected_person, zone=zone, distance_m=distance_m,
                certainty=certainty, closing_speed_mps=closing_speed_mps,
                time_to_contact_s=time_to_contact_s, evidence=evidence, late=late, detail=detail,
                device=device, allow_lower=allow_lower,
            )
        current = self.open_for(order, kind, target)
        if current is None:
            aid = alert_id_for(order, kind, target, episode_start)
            if aid in self.alerts and not self.alerts[aid].is_open:
                # the same episode was resolved and reopens: keep ids unique per episode start
                aid = alert_id_for(order, kind, target, device_time)
            alert = Alert(
                aid, kind, level, "open", order, subject, protected_person, zone, device_time,
                now, self.deadline_for(kind, level, now), episode_start, distance_m, certainty,
                closing_speed_mps, time_to_contact_s, evidence[-20:], late, detail, now, target,
                device, (HistoryEntry(now, "open", level, "engine", detail),),
            )
            size = len(self.alerts)
            self.alerts[aid] = alert
            self.open_by_key[(order, kind, target)] = aid
            self._note_open(alert, size)
            return AlertChange(alert, "raised")

        rank_new, rank_old = LEVEL_RANK[level], LEVEL_RANK[current.level]
        alert = copy_alert(current)
        # the newest measurements, kept whether or not the level moves
        if distance_m is not None:
            alert.distance_m = distance_m
        if certainty:
            alert.certainty = certainty
        alert.closing_speed_mps = closing_speed_mps
        alert.time_to_contact_s = time_to_contact_s
        alert.evidence = _merge_evidence(current.evidence, evidence)
        if rank_new > rank_old or (allow_lower and rank_new < rank_old):
            # A rise brings a fresh (shorter) deadline; a fall keeps the one already running.
            if rank_new > rank_old:
                alert.deadline = min(current.deadline, self.deadline_for(kind, level, now))
                if current.state == "acknowledged":
                    alert.state = "open"  # a rise needs a fresh acknowledgement
            alert.level = level
            alert.device_time = device_time
            if detail:
                alert.detail = detail
            alert.updated_at = now
            alert.history = (*current.history, HistoryEntry(now, alert.state, level, "engine", detail))
            self.alerts[alert.alert_id] = alert
            self._note_open(alert, len(self.alerts))
            return AlertChange(alert, "level", current.level)
        # Same level: keep the newest measurements quietly (no publish).
        self.alerts[current.alert_id] = alert
        return None

    def resolve_episode(
        self, order: str | None, kind: str, target: str | None, now: float, note: str
    ) -> AlertChange | None:
        """The engine saw the episode end (the subject left the zone, moved away, came home)."""
        current = self.open_for(order, kind, target)
        if current is None:
            return None
        return self._transition(current, "resolved", now, "engine", note, "resolve")

    def act(self, alert_id: str, action: str, by: str, note: str, now: float) -> AlertChange:
        """An operator acts on an alert (contract §1 ``em/ack`` and the HTTP API)."""
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise AlertActionError(f"unknown alert {alert_id}")
        if not by:
            raise AlertActionError("an operator action needs 'by' (who acted)")
        if not alert.is_open:
            raise AlertActionError(f"alert {alert_id} is already resolved")
        if action == "ack":
            if alert.state == "acknowledged":
                raise AlertActionError(f"alert {alert_id} is already acknowledged")
            return self._transition(alert, "acknowledged", now, by, note, "ack")
        if action == "escalate":
            return self._transition(alert, "escalated", now, by, note, "escalate")
        if action == "resolve":
            return self._transition(alert, "resolved", now, by, note, "resolve")
        raise AlertActionError(f"unknown action {action!r} (use ack, escalate or resolve)")

    def escalate_overdue(self, now: float) -> list[AlertChange]:
        """Escalate every open, unacknowledged alert whose deadline has passed.

        Runs every tick: while ``now`` is before the earliest deadline of an alert in state
        "open" (a lower bound kept by this class; only ``raise_or_update`` stores such alerts)
        nothing is due and the alerts are not scanned.  A replaced ``alerts`` dict or one with
        alerts added from outside is scanned again.
        """
        floor = self._deadline_floor
        if floor is not None and floor[0] is self.alerts and floor[1] == len(self.alerts) and now < floor[2]:
            return []
        changes = []
        earliest = math.inf
        for alert in list(self.alerts.values()):
            if alert.state == "open":
                if now >= alert.deadline:
                    changes.append(
                        self._transition(alert, "escalated", now, "engine", "deadline passed", "escalate")
                    )
                elif alert.deadline < earliest:
                    earliest = alert.deadline
        self._deadline_floor = (self.alerts, len(self.alerts), earliest)
        return changes

    def _note_open(self, alert: Alert, size_before: int) -> None:
        """Keep the deadline bound of escalate_overdue after storing ``alert``."""
        floor = self._deadline_floor
        if floor is None:
            return
        if floor[0] is not self.alerts or floor[1] != size_before:
            self._deadline_floor = None  # changed from outside: scan at the next call
            return
        earliest = min(floor[2], alert.deadline) if alert.state == "open" else floor[2]
        self._deadline_floor = (floor[0], len(self.alerts), earliest)

    def open_alerts(self) -> Iterator[Alert]:
        """Alerts still needing the centre, most urgent first."""
        live = [a for a in self.alerts.values() if a.is_open]
        live.sort(key=lambda a: (-LEVEL_RANK[a.level], a.deadline, a.alert_id))
        return iter(live)

    def _transition(
        self, alert: Alert, state: State, now: float, by: str, note: str, change: Any
    ) -> AlertChange:
        new = copy_alert(alert)
        new.state = state
        new.updated_at = now
        new.history = (*alert.history, HistoryEntry(now, state, alert.level, by, note))
        self.alerts[alert.alert_id] = new
        if state == "resolved":
            key = (alert.order, alert.kind, alert.target)
            if self.open_by_key.get(key) == alert.alert_id:
                del self.open_by_key[key]
        return AlertChange(new, change)


def _merge_evidence(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """The newest 20 distinct keys: each at its first place in ``old + new``.

    Nearly always the keys are distinct already (an alert's evidence is a merge, and a new
    fix is new): one set of them says so, and the joined tuple is the answer as it is.
    """
    merged = old + new
    if len(set(merged)) == len(merged):
        return merged[-20:]
    return tuple(dict.fromkeys(merged))[-20:]


def _round(value: float | None, digits: int) -> float | None:
    """``value`` rounded for the wire; None for a missing, NaN or infinite value."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
