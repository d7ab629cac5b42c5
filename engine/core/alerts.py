"""The alert lifecycle: one alert per episode, graded, with deadlines and a full history.

Pure state machine (time is passed in).  Two things are kept apart (contract §5):

* ``condition`` is the engine's view: ``active`` while the violation or risk lasts,
  ``cleared`` (with ``cleared_at``, device time) once the rule saw it end;
* ``state`` is the centre's handling: ``open → acknowledged → closed``, ``escalated`` when
  the deadline for its level passes unacknowledged or an operator escalates (to a target).

An alert that reached ``alarm`` or above is never closed by the engine: an alarm is a task,
not a notification (EN 50518 practice, shared/domain.md), so a cleared condition is
published and the alert stays in the centre's queue until a person closes it with an
outcome code and a note.  ``info``/``warning`` alerts of the kinds in
``AlertPolicy.auto_close`` close themselves when cleared (``closed_by: "engine"``).
Operators claim (one works it, others see who), acknowledge, escalate to a target from the
kind's procedure, add notes and close; a rising level keeps the alert id; every change is an
``AlertChange`` that the caller publishes and stores, with who and when in the history.

The records (``Alert``, ``HistoryEntry``, ``AlertChange``), levels, kinds and the handling
policy are in ``engine.core.alert_records``; this module is the book that moves them.

Late data continues an episode (issue 25): a raise marked ``late`` for a key whose condition
has cleared, with data from before that clear (in device time), belongs to the episode the
clear ended, which was judged without it.  It takes up that alert again (``resume``: condition
active, same id, the earlier start kept) instead of opening a second alert for one episode;
an alert a person closed is left closed and the late data opens a new one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.core.alert_records import (
    ACTION_ALIASES,
    ACTIONS,
    ALARM_RANK,
    DEFAULT_DEADLINES,
    LEVEL_RANK,
    LEVELS,
    Alert,
    AlertActionError,
    AlertActionInvalid,
    AlertChange,
    AlertPolicy,
    ChangeKind,
    HistoryEntry,
    Level,
    State,
    alert_id_for,
    copy_alert,
    peak_rank,
)

# late data up to this long (device time) before a cleared alert's start may still take it up
# again (``AlertBook._resume``): it runs on into that episode
RESUME_BEFORE_S = 600.0
# the history note of a ``prompt`` the operator gave no note with
PROMPT_NOTE = "asked the subject to call the centre (contact_centre on his ankle monitor)"


class RaiseCap(Protocol):
    """What ``AlertBook.raise_or_update`` hands a raise to while approved crossings cap the
    levels (``engine.core.rules.crossings.CappedAlerts``): the same keyword arguments."""

    def raise_or_update(self, **kw: Any) -> AlertChange | None: ...


@dataclass(slots=True)
class AlertBook:
    """All alerts this engine knows, indexed by id and by episode key.

    ``open_by_key`` holds the alerts whose condition is active (the engine's episodes);
    ``alerts`` holds every alert, and those not closed are the centre's queue.
    """

    deadlines: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DEADLINES))
    kind_deadlines: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    open_by_key: dict[tuple[str | None, str, str | None], str] = field(default_factory=dict)
    policy: AlertPolicy = field(default_factory=AlertPolicy)
    # (alerts dict, its size, a lower bound of the deadlines of alerts in state "open"), so
    # that escalate_overdue (every tick) need not look at every alert; see there
    _deadline_floor: tuple[dict[str, Alert], int, float] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # while approved crossings hold (engine.core.rules.crossings.ApprovedCrossings.capped): the view
    # that caps raises, which ``raise_or_update`` hands every raise to
    capping: RaiseCap | None = field(default=None, init=False, repr=False, compare=False)
    # (alerts dict, its size, episode key -> id of the key's newest alert), for ``newest_for``;
    # kept by ``raise_or_update`` (the only place alerts are added), rebuilt when stale
    _last_by_key: tuple[dict[str, Alert], int, dict[tuple[str | None, str, str | None], str]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

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
        resumed = False
        if current is None and late:
            current = self._resume(order, kind, target, device_time, episode_start, now)
            resumed = current is not None
        if current is None:
            aid = alert_id_for(order, kind, target, episode_start)
            if aid in self.alerts:
                # the same episode cleared (or was closed) and starts again: keep ids unique
                aid = alert_id_for(order, kind, target, device_time)
                n = 0
                while aid in self.alerts:
                    n += 1
                    aid = alert_id_for(order, kind, target, device_time, n)
            alert = Alert(
                alert_id=aid, kind=kind, level=level, state="open", order=order, subject=subject,
                protected_person=protected_person, zone=zone, device_time=device_time,
                raised_at=now, deadline=self.deadline_for(kind, level, now),
                episode_start=episode_start, distance_m=distance_m, certainty=certainty,
                closing_speed_mps=closing_speed_mps, time_to_contact_s=time_to_contact_s,
                evidence=evidence[-20:], late=late, detail=detail, updated_at=now, target=target,
                device=device,
                history=(HistoryEntry(
                    at=now, state="open", level=level, by="engine", note=detail, action="raised"
                ),),
            )
            size = len(self.alerts)
            self.alerts[aid] = alert
            self.open_by_key[(order, kind, target)] = aid
            self._note_open(alert, size)
            newest = self._last_by_key
            if newest is not None and newest[0] is self.alerts and newest[1] == size:
                newest[2][(order, kind, target)] = aid
                self._last_by_key = (newest[0], size + 1, newest[2])
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
            alert.history = (
                *current.history,
                HistoryEntry(at=now, state=alert.state, level=level, by="engine", note=detail, action="level"),
            )
            self.alerts[alert.alert_id] = alert
            self._note_open(alert, len(self.alerts))
            return AlertChange(alert, "level", current.level)
        # Same level: keep the newest measurements quietly (no publish), unless the alert was
        # just taken up again (that is a change the centre must see).
        self.alerts[current.alert_id] = alert
        return AlertChange(alert, "update") if resumed else None

    def newest_for(self, order: str | None, kind: str, target: str | None) -> Alert | None:
        """The newest alert of an episode key, open or not (None before any)."""
        newest = self._last_by_key
        if newest is None or newest[0] is not self.alerts or newest[1] != len(self.alerts):
            index: dict[tuple[str | None, str, str | None], str] = {}
            for a in self.alerts.values():  # insertion order: the newest of each key last
                index[(a.order, a.kind, a.target)] = a.alert_id
            newest = self._last_by_key = (self.alerts, len(self.alerts), index)
        aid = newest[2].get((order, kind, target))
        return self.alerts.get(aid) if aid is not None else None

    def _resume(
        self, order: str | None, kind: str, target: str | None, device_time: float,
        episode_start: float, now: float,
    ) -> Alert | None:
        """Take up again the key's newest alert for late data from before its clear (see the
        module docstring); None when there is none to take up.

        It must have cleared at or after the late data's start, and not before it started
        more than ``RESUME_BEFORE_S`` after the late data: the late data lies in its episode
        or runs on into it.  A closed alert is taken up only when the engine closed it.
        """
        key = (order, kind, target)
        old = self.newest_for(order, kind, target)
        if old is None or old.condition != "cleared" or old.cleared_at is None:
            return None
        if old.state == "closed" and old.closed_by != "engine":
            return None  # a person closed it: that stands
        start = min(episode_start, device_time)
        if start > old.cleared_at or device_time < old.episode_start - RESUME_BEFORE_S:
            return None
        new = copy_alert(old)
        new.condition = "active"
        new.cleared_at = None
        new.late = True
        new.episode_start = min(old.episode_start, start)
        new.updated_at = now
        if old.state == "closed":
            new.state = "open"
            new.closed_by = None
            new.outcome = None
            new.deadline = self.deadline_for(kind, old.level, now)
        note = "late data: the episode went on (data from before its end arrived late)"
        new.history = (*old.history, HistoryEntry(
            at=now, state=new.state, level=old.level, by="engine", note=note, action="update"
        ))
        new.detail = note
        self.alerts[old.alert_id] = new
        self.open_by_key[key] = old.alert_id
        self._note_open(new, len(self.alerts))
        return new

    def clear_episode(
        self, order: str | None, kind: str, target: str | None, now: float, note: str,
        device_time: float | None = None,
    ) -> AlertChange | None:
        """The engine saw the episode end (the subject left the zone, moved away, came home).

        The condition is cleared (``cleared_at``: ``device_time``, the time of the data that
        showed it, else ``now``) and the episode key is free for the next episode.  The alert
        stays in the centre's queue unless it never reached ``alarm`` and its kind closes
        itself (``AlertPolicy.auto_close``): then it is closed by the engine, in the same change.
        """
        current = self.open_for(order, kind, target)
        if current is None:
            return None
        key = (current.order, current.kind, current.target)
        if self.open_by_key.get(key) == current.alert_id:
            del self.open_by_key[key]
        new = copy_alert(current)
        new.condition = "cleared"
        new.cleared_at = now if device_time is None else device_time
        new.updated_at = now
        change: ChangeKind = "clear"
        if current.state != "closed" and current.kind in self.policy.auto_close and (
            peak_rank(current) < ALARM_RANK
        ):
            new.state = "closed"
            new.closed_by = "engine"
            change = "close"
        new.history = (
            *current.history,
            HistoryEntry(at=now, state=new.state, level=current.level, by="engine", note=note, action=change),
        )
        self.alerts[current.alert_id] = new
        return AlertChange(new, change)

    def act(
        self, alert_id: str, action: str, by: str, note: str, now: float, *,
        outcome: str = "", target: str = "", supervisor: bool = False,
    ) -> AlertChange:
        """An operator acts on an alert (contract §1 ``em/ack`` and the HTTP API).

        ``claim``: ``by`` works this alert (a second operator's claim is refused unless he is
        a ``supervisor``, who takes it over).  ``ack``: acknowledged (and claimed, if nobody
        had).  ``escalate``: to ``target``, one of the kind's procedure targets (the first when
        none is named).  ``note``: a line on the alert's notes thread.  ``close`` (``resolve``):
        with an ``outcome`` code; for an alert that reached alarm both outcome and a note are
        required.  ``prompt``: the subject's ankle monitor is asked to call the centre (the
        caller sends ``contact_centre``: ``Engine.act``); the state is unchanged and the history
        keeps who asked, when, and the note (``PROMPT_NOTE`` when none); refused for an alert
        without a subject.  While someone has claimed it, only they (or a supervisor) ack,
        escalate, prompt or close it; anyone may add a note.  Raises ``AlertActionError`` (a conflict with the
        alert's state) or ``AlertActionInvalid`` (an incomplete or unknown request).
        """
        action = ACTION_ALIASES.get(action, action)
        alert = self.alerts.get(alert_id)
        if alert is None:
            raise AlertActionError(f"unknown alert {alert_id}")
        if not by:
            raise AlertActionInvalid("an operator action needs 'by' (who acted)")
        if action not in ACTIONS:
            raise AlertActionInvalid(
                f"unknown action {action!r} (use claim, ack, escalate, note, close or prompt; "
                "resolve is close)"
            )
        if not alert.is_open:
            raise AlertActionError(f"alert {alert_id} is already closed")
        holder = alert.claimed_by
        if action == "claim":
            if holder == by:
                raise AlertActionError(f"alert {alert_id} is already claimed by {by}")
            if holder is not None and not supervisor:
                raise AlertActionError(
                    f"alert {alert_id} is claimed by {holder}; only a supervisor can take it over"
                )
            new = self._change(alert, alert.state, now, by, note, "claim")
            new.claimed_by = by
            return self._store(alert, new, "claim")
        if holder is not None and holder != by and not supervisor and action != "note":
            raise AlertActionError(
                f"alert {alert_id} is claimed by {holder}; they or a supervisor may {action} it"
            )
        if action == "note":
            if not note.strip():
                raise AlertActionInvalid("a note needs text")
            return self._store(alert, self._change(alert, alert.state, now, by, note, "note"), "note")
        if action == "prompt":
            if alert.subject is None:
                raise AlertActionError(
                    f"alert {alert_id} has no subject: there is no ankle monitor to ask to call the centre"
                )
            text = note if note.strip() else PROMPT_NOTE
            return self._store(alert, self._change(alert, alert.state, now, by, text, "prompt"), "prompt")
        if action == "ack":
            if alert.state == "acknowledged":
                raise AlertActionError(f"alert {alert_id} is already acknowledged")
            new = self._change(alert, "acknowledged", now, by, note, "ack")
            if holder is None:
                new.claimed_by = by  # who acknowledges an alert nobody claimed works it
            return self._store(alert, new, "ack")
        if action == "escalate":
            choices = self.policy.targets_for(alert.kind)
            chosen = target or (choices[0] if choices else "")
            if chosen not in choices:
                raise AlertActionInvalid(
                    f"unknown escalation target {chosen!r} for {alert.kind} alerts "
                    f"(the procedure has {', '.join(choices)})"
                )
            new = self._change(alert, "escalated", now, by, note, "escalate", target=chosen)
            new.escalated_to = chosen
            return self._store(alert, new, "escalate")
        # close
        if outcome and outcome not in self.policy.outcomes:
            raise AlertActionInvalid(
                f"unknown outcome {outcome!r} (use one of {', '.join(self.policy.outcomes)})"
            )
        if peak_rank(alert) >= ALARM_RANK and (not outcome or not note.strip()):
            raise AlertActionInvalid(
                f"closing a {LEVELS[peak_rank(alert)]} alert needs an outcome "
                f"({', '.join(self.policy.outcomes)}) and a note saying what was done"
            )
        new = self._change(alert, "closed", now, by, note, "close", outcome=outcome)
        new.outcome = outcome or None
        new.closed_by = by
        key = (alert.order, alert.kind, alert.target)
        if self.open_by_key.get(key) == alert.alert_id:
            del self.open_by_key[key]  # the episode's next data opens a new alert
        return self._store(alert, new, "close")

    def _change(
        self, alert: Alert, state: State, now: float, by: str, note: str, action: str, *,
        outcome: str = "", target: str = "",
    ) -> Alert:
        """A copy of ``alert`` in ``state`` with the history entry of one person's action."""
        new = copy_alert(alert)
        new.state = state
        new.updated_at = now
        new.history = (
            *alert.history,
            HistoryEntry(
                at=now, state=state, level=alert.level, by=by, note=note, action=action,
                outcome=outcome, target=target,
            ),
        )
        return new

    def _store(self, old: Alert, new: Alert, change: ChangeKind) -> AlertChange:
        self.alerts[old.alert_id] = new
        return AlertChange(new, change)

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

    def drop_indexes(self) -> None:
        """Forget the deadline bound: alerts were changed in place from outside (a restore)."""
        self._deadline_floor = None

    def open_alerts(self) -> Iterator[Alert]:
        """Alerts still needing the centre (cleared or not), most urgent first: not yet
        acknowledged before acknowledged, then by level, then by the nearest deadline."""
        live = [a for a in self.alerts.values() if a.is_open]
        live.sort(key=lambda a: (0 if a.needs_ack else 1, -LEVEL_RANK[a.level], a.deadline, a.alert_id))
        return iter(live)

    def engine_note(self, alert: Alert, note: str, now: float) -> AlertChange:
        """The engine adds ``note`` to an alert (open or closed), its state unchanged: a change
        ``update`` the centre sees."""
        return self._transition(alert, alert.state, now, "engine", note, "update")

    def _transition(
        self, alert: Alert, state: State, now: float, by: str, note: str, change: ChangeKind
    ) -> AlertChange:
        """The engine's own change of state (a deadline escalation)."""
        new = copy_alert(alert)
        new.state = state
        new.updated_at = now
        new.history = (*alert.history, HistoryEntry(
            at=now, state=state, level=alert.level, by=by, note=note, action=change
        ))
        self.alerts[alert.alert_id] = new
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
