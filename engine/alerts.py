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
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any, Literal

from mypy_extensions import mypyc_attr

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


@mypyc_attr(native_class=False)  # compiled build (engine.native): a Python class like Alert
@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """Who did what to an alert, and when (processing time)."""

    at: float
    state: State
    level: Level
    by: str
    note: str = ""

    def __reduce__(self) -> tuple[type[HistoryEntry], tuple[float, str, str, str, str]]:
        # a plain tuple (see Alert.__reduce__)
        return (HistoryEntry, (self.at, self.state, self.level, self.by, self.note))


@mypyc_attr(native_class=False)  # compiled build: a Python class, _replace_alert copies via its slots
@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as the monitoring centre sees it (contract §5), plus its history."""

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
    distance_m: float | None = None
    certainty: str | None = None
    closing_speed_mps: float | None = None
    time_to_contact_s: float | None = None
    evidence: tuple[str, ...] = ()
    late: bool = False
    detail: str = ""
    updated_at: float = 0.0
    target: str | None = None
    device: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    def __reduce__(self) -> tuple[type[Alert], tuple[Any, ...]]:
        # the field values as one tuple, read in C: the default for a slots dataclass gets
        # them through ``fields()`` on every pickle and sets them one by one on every load,
        # and open alerts are stored with every commit of their case (engine.case_state).
        # Alerts pickled by that default still load: its ``__setstate__`` is kept.
        return (Alert, _ALERT_VALUES(self))

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


@mypyc_attr(native_class=False)  # compiled build (engine.native): a Python class like the Alert it carries
@dataclass(frozen=True, slots=True)
class AlertChange:
    """One published state change: the alert after the change and what changed."""

    alert: Alert
    change: Literal["raised", "level", "ack", "escalate", "resolve", "update"]
    previous_level: Level | None = None
    arrival: float | None = None  # arrival time of the fix that caused it (fix-to-alert latency)


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

    def deadline_for(self, kind: str, level: str, now: float) -> float:
        """Deadline for acting on an alert of this kind and level raised or raised-to at ``now``."""
        per_kind = self.kind_deadlines.get(kind, {})
        return now + float(per_kind.get(level, self.deadlines[level]))

    def open_for(self, order: str | None, kind: str, target: str | None) -> Alert | None:
        """The open alert of an episode, if any."""
        aid = self.open_by_key.get((order, kind, target))
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
    ) -> AlertChange | None:
        """Open an alert for the episode or move its level; None when nothing visible changed.

        A level never drops unless ``allow_lower`` (the rule has debounced the fall).
        """
        current = self.open_for(order, kind, target)
        if current is None:
            aid = alert_id_for(order, kind, target, episode_start)
            if aid in self.alerts and not self.alerts[aid].is_open:
                # the same episode was resolved and reopens: keep ids unique per episode start
                aid = alert_id_for(order, kind, target, device_time)
            alert = Alert(
                alert_id=aid,
                kind=kind,
                level=level,
                state="open",
                order=order,
                subject=subject,
                protected_person=protected_person,
                zone=zone,
                device_time=device_time,
                raised_at=now,
                deadline=self.deadline_for(kind, level, now),
                episode_start=episode_start,
                distance_m=distance_m,
                certainty=certainty,
                closing_speed_mps=closing_speed_mps,
                time_to_contact_s=time_to_contact_s,
                evidence=evidence[-20:],
                late=late,
                detail=detail,
                updated_at=now,
                target=target,
                device=device,
                history=(HistoryEntry(now, "open", level, "engine", detail),),
            )
            size = len(self.alerts)
            self.alerts[aid] = alert
            self.open_by_key[(order, kind, target)] = aid
            self._note_open(alert, size)
            return AlertChange(alert, "raised")

        rank_new, rank_old = LEVEL_RANK[level], LEVEL_RANK[current.level]
        measured = {
            "distance_m": distance_m if distance_m is not None else current.distance_m,
            "certainty": certainty or current.certainty,
            "closing_speed_mps": closing_speed_mps,
            "time_to_contact_s": time_to_contact_s,
            "evidence": _merge_evidence(current.evidence, evidence),
        }
        if rank_new > rank_old or (allow_lower and rank_new < rank_old):
            # A rise brings a fresh (shorter) deadline; a fall keeps the one already running.
            deadline = (
                min(current.deadline, self.deadline_for(kind, level, now))
                if rank_new > rank_old
                else current.deadline
            )
            state: State = current.state
            if rank_new > rank_old and current.state == "acknowledged":
                state = "open"  # a rise needs a fresh acknowledgement
            alert = _replace_alert(current, {
                "level": level,
                "state": state,
                "deadline": deadline,
                "device_time": device_time,
                "detail": detail or current.detail,
                "updated_at": now,
                "history": (*current.history, HistoryEntry(now, state, level, "engine", detail)),
                **measured,
            })
            self.alerts[alert.alert_id] = alert
            self._note_open(alert, len(self.alerts))
            return AlertChange(alert, "level", previous_level=current.level)
        # Same level: keep the newest measurements quietly (no publish).
        self.alerts[current.alert_id] = _replace_alert(current, measured)
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
        new = _replace_alert(alert, {
            "state": state,
            "updated_at": now,
            "history": (*alert.history, HistoryEntry(now, state, alert.level, by, note)),
        })
        self.alerts[alert.alert_id] = new
        if state == "resolved":
            key = (alert.order, alert.kind, alert.target)
            if self.open_by_key.get(key) == alert.alert_id:
                del self.open_by_key[key]
        return AlertChange(new, change)


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_ALERT_VALUES = attrgetter(*_ALERT_FIELDS)  # all field values as one tuple, read in C
_ALERT_FIELD_INDEX = {name: i for i, name in enumerate(_ALERT_FIELDS)}
# the slots' own setters: they bypass the frozen class's __setattr__ without the name look-up
# object.__setattr__ does for every field
_ALERT_SETTERS = tuple(getattr(Alert, name).__set__ for name in _ALERT_FIELDS)


def _replace_alert(alert: Alert, changes: Mapping[str, Any]) -> Alert:
    """``dataclasses.replace(alert, **changes)`` at a fraction of the cost (every change of
    an alert): the same fields set on a new ``Alert``, which has no ``__post_init__`` or
    non-init fields for ``replace`` to honour.

    The fields are read by one ``attrgetter`` and written by the slot descriptors; names
    that are not fields are ignored, as before.
    """
    values = list(_ALERT_VALUES(alert))
    for name, value in changes.items():
        i = _ALERT_FIELD_INDEX.get(name)
        if i is not None:
            values[i] = value
    new = object.__new__(Alert)
    for set_field, value in zip(_ALERT_SETTERS, values, strict=True):
        set_field(new, value)
    return new


def _merge_evidence(old: tuple[str, ...], new: tuple[str, ...]) -> tuple[str, ...]:
    """The newest 20 distinct keys: each at its first place in ``old + new``."""
    return tuple(dict.fromkeys(old + new))[-20:]


def _round(value: float | None, digits: int) -> float | None:
    """``value`` rounded for the wire; None for a missing, NaN or infinite value."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
