"""Working an alarm: the engine's condition apart from the centre's handling (contract §5)."""

from __future__ import annotations

import json

import pytest

from engine.core.alert_records import Alert, AlertActionError, AlertActionInvalid, AlertPolicy
from engine.core.alerts import AlertBook
from engine.core.config import EngineConfig, ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc
from engine.evidence.recorder import change_body, is_operator_action
from engine.runtime.service import Service
from engine.web.views import alert_detail, notes_thread, queue_order

X0, Y0 = ORIGIN
BAN = {"id": "Z", "circle": circle(X0, Y0, 200)}
PROX = [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}]


def walk_through(h: Harness) -> str:
    """The subject walks through the ban zone and out again; the exclusion alert's id."""
    am = DeviceScript("AM-1001")
    for i, x in enumerate(range(-600, 601, 50)):
        h.send(am.fix(T0 + 10 * i, X0 + x, Y0), T0 + 10 * i + 1)
    (aid,) = {c.alert.alert_id for c in h.effects.changes if c.alert.kind == "exclusion"}
    return aid


def cleared_alarm() -> tuple[Harness, str]:
    h = Harness.build(orders_doc(exclusion=[BAN], proximity=PROX))
    return h, walk_through(h)


def test_an_alarm_whose_condition_clears_stays_open_until_a_person_closes_it() -> None:
    """He left the zone: the condition is cleared (device time), the alarm stays in the queue,
    and only an operator's close with an outcome and a note takes it out."""
    h, aid = cleared_alarm()
    alert = h.engine.alerts.alerts[aid]
    assert (alert.level, alert.state, alert.condition) == ("alarm", "open", "cleared")
    left_at = max(c.alert.device_time for c in h.effects.changes if c.alert.alert_id == aid)
    assert alert.cleared_at is not None and alert.cleared_at > left_at  # the fix showing him out
    assert h.effects.changes[-1].change == "clear" or any(
        c.change == "clear" for c in h.effects.changes
    )
    assert aid in [a.alert_id for a in h.engine.alerts.open_alerts()]
    wire = alert.to_wire()
    assert wire["condition"] == "cleared" and wire["state"] == "open" and wire["cleared_at"]
    h.tick(T0 + 10_000)  # nobody acted: escalated on its deadline, never closed by the engine
    assert h.engine.alerts.alerts[aid].state == "escalated"
    with pytest.raises(AlertActionInvalid, match="needs an outcome"):
        h.engine.act(aid, "close", "op-1", "he drove past", T0 + 10_001)
    with pytest.raises(AlertActionInvalid, match="needs an outcome"):
        h.engine.act(aid, "close", "op-1", "  ", T0 + 10_001, outcome="no_action_needed")
    with pytest.raises(AlertActionInvalid, match="unknown outcome 'whatever'"):
        h.engine.act(aid, "close", "op-1", "x", T0 + 10_001, outcome="whatever")
    effects = h.engine.act(
        aid, "close", "op-1", "called him, he drove past", T0 + 10_002, outcome="subject_contacted"
    )
    closed = effects.changes[0].alert
    assert (closed.state, closed.outcome, closed.closed_by) == ("closed", "subject_contacted", "op-1")
    assert aid not in [a.alert_id for a in h.engine.alerts.open_alerts()]
    assert closed.to_wire()["outcome"] == "subject_contacted"


def test_the_victim_hears_that_the_danger_passed_and_later_that_it_was_handled() -> None:
    """A cleared proximity alarm tells her it ended; the operator's close that it was handled."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    t = T0
    h.send(vd.fix(t, X0, Y0, acc=10.0), t + 0.5)
    for i in range(40):  # towards her to 400 m, then away far beyond warn_m
        x = X0 - 3000 + 150 * i if i < 18 else X0 - 300 - 400 * (i - 17)
        h.send(am.fix(t, x, Y0), t + 0.5)
        if i % 3 == 0:
            h.send(vd.fix(t + 1, X0, Y0, acc=10.0), t + 1.5)
        t += 20
    (aid,) = {c.alert.alert_id for c in h.effects.changes if c.alert.kind == "proximity"}
    alert = h.engine.alerts.alerts[aid]
    assert alert.condition == "cleared" and alert.state == "open"
    statuses = [m.get("status") for m in h.messages("victim") if m.get("alert_id") == aid]
    assert statuses[-1] == "ended"
    h.effects.extend(h.engine.act(aid, "close", "op-1", "she is safe", t, outcome="victim_contacted"))
    statuses = [m.get("status") for m in h.messages("victim") if m.get("alert_id") == aid]
    assert statuses[-1] == "handled"


@pytest.mark.parametrize(
    ("auto_close", "state"), [(None, "closed"), (frozenset(), "open"), (frozenset({"panic"}), "open")]
)
def test_info_and_warning_alerts_close_themselves_when_cleared_as_configured(
    auto_close: frozenset[str] | None, state: str
) -> None:
    """A battery warning ends when the charger is connected: closed by the engine by default,
    left for the centre when its kind is not in ``auto_close``."""
    policy = AlertPolicy() if auto_close is None else AlertPolicy(auto_close=auto_close)
    h = Harness.build(orders_doc(), EngineConfig(alert_policy=policy))
    am = DeviceScript("AM-1001")
    h.send(am.event(T0, "low_battery", batt=10), T0 + 1)
    h.send(am.event(T0 + 60, "charger_connected"), T0 + 61)
    assert h.handling("battery")[-1] == ("warning", state, "cleared")
    alert = next(a for a in h.engine.alerts.alerts.values() if a.kind == "battery")
    assert alert.closed_by == ("engine" if state == "closed" else None)


def test_an_alert_that_once_reached_alarm_never_closes_itself() -> None:
    """Fallen back to warning before the condition ends, it still waits for a person."""
    book = AlertBook()
    kw = {"order": "O-1", "kind": "proximity", "target": "P-1", "device_time": 1.0,
          "episode_start": 1.0}  # fmt: skip
    book.raise_or_update(**kw, level="alarm", now=2.0)  # type: ignore[arg-type]
    book.raise_or_update(**kw, level="warning", now=3.0, allow_lower=True)  # type: ignore[arg-type]
    change = book.clear_episode("O-1", "proximity", "P-1", 4.0, "apart", 3.5)
    assert change is not None and change.change == "clear"
    assert (change.alert.level, change.alert.state, change.alert.cleared_at) == ("warning", "open", 3.5)
    assert book.open_for("O-1", "proximity", "P-1") is None  # the next episode opens a new alert
    again = book.raise_or_update(**{**kw, "device_time": 9.0}, level="alarm", now=10.0)  # type: ignore[arg-type]
    assert again is not None and again.alert.alert_id != change.alert.alert_id


def test_one_operator_claims_an_alert_and_others_see_who_unless_a_supervisor_takes_over() -> None:
    """A second claim and another operator's ack are refused; a supervisor takes it over; anyone
    may add a note."""
    h, aid = cleared_alarm()
    h.engine.act(aid, "claim", "op-anna", "", T0 + 300)
    assert h.engine.alerts.alerts[aid].to_wire()["claimed_by"] == "op-anna"
    with pytest.raises(AlertActionError, match="claimed by op-anna"):
        h.engine.act(aid, "claim", "op-bert", "", T0 + 301)
    with pytest.raises(AlertActionError, match="claimed by op-anna"):
        h.engine.act(aid, "ack", "op-bert", "", T0 + 301)
    with pytest.raises(AlertActionError, match="already claimed by op-anna"):
        h.engine.act(aid, "claim", "op-anna", "", T0 + 301)
    h.engine.act(aid, "note", "op-bert", "I know this address", T0 + 302)
    taken = h.engine.act(aid, "claim", "sup-carla", "anna is on a call", T0 + 303, supervisor=True)
    assert taken.changes[0].alert.claimed_by == "sup-carla"
    h.engine.act(aid, "ack", "sup-carla", "", T0 + 304)
    with pytest.raises(AlertActionError, match="claimed by sup-carla"):
        h.engine.act(aid, "ack", "op-anna", "", T0 + 305)


def test_ack_by_the_first_operator_claims_an_unclaimed_alert() -> None:
    """Who acknowledges an alert nobody claimed works it."""
    h, aid = cleared_alarm()
    h.engine.act(aid, "ack", "op-anna", "", T0 + 300)
    assert h.engine.alerts.alerts[aid].claimed_by == "op-anna"


def test_escalation_goes_to_a_target_of_the_kinds_procedure() -> None:
    """A named target from the procedure, the first by default; an unknown one is refused."""
    h, aid = cleared_alarm()
    with pytest.raises(AlertActionInvalid, match="unknown escalation target 'mayor'"):
        h.engine.act(aid, "escalate", "op-1", "", T0 + 300, target="mayor")
    first = h.engine.act(aid, "escalate", "op-1", "", T0 + 301).changes[0].alert
    assert (first.state, first.escalated_to) == ("escalated", "supervisor")
    police = h.engine.act(aid, "escalate", "op-1", "he is back", T0 + 302, target="police")
    alert = police.changes[0].alert
    assert alert.escalated_to == "police" and alert.to_wire()["escalated_to"] == "police"
    assert alert.history[-1].target == "police"
    panic_policy = AlertPolicy().targets_for("panic")
    assert panic_policy[0] == "police"


def test_notes_make_a_thread_with_who_and_when() -> None:
    """Notes do not move the state; the thread lists every person's note in order."""
    h, aid = cleared_alarm()
    h.engine.act(aid, "note", "op-anna", "called him: no answer", T0 + 300)
    h.engine.act(aid, "note", "op-bert", "victim reached, safe", T0 + 360)
    with pytest.raises(AlertActionInvalid, match="needs text"):
        h.engine.act(aid, "note", "op-bert", " ", T0 + 361)
    alert = h.engine.alerts.alerts[aid]
    assert alert.state == "open"
    thread = notes_thread(alert)
    assert [(n["by"], n["note"], n["action"]) for n in thread] == [
        ("op-anna", "called him: no answer", "note"), ("op-bert", "victim reached, safe", "note")]
    assert thread[0]["at"].startswith("2026-") or thread[0]["at"][:2] == "20"
    detail = alert_detail(h.engine, alert, T0 + 400)
    assert detail["notes"] == thread and "police" in detail["procedure"]["escalation_targets"]


def test_the_alert_detail_carries_the_call_script_of_its_kind() -> None:
    """The procedure beside the alarm: the kind's call script, in order (issue 24's case panel)."""
    from engine.core.alert_records import DEFAULT_SCRIPTS

    h, aid = cleared_alarm()
    alert = h.engine.alerts.alerts[aid]
    detail = alert_detail(h.engine, alert, T0 + 400)
    expected = DEFAULT_SCRIPTS.get(alert.kind, DEFAULT_SCRIPTS["*"])
    assert detail["procedure"]["script"] == list(expected) and len(expected) >= 3


def test_resolve_is_accepted_as_close() -> None:
    """Older clients' ``resolve`` closes, with the same requirements."""
    h, aid = cleared_alarm()
    with pytest.raises(AlertActionInvalid):
        h.engine.act(aid, "resolve", "op-1", "", T0 + 300)
    effects = h.engine.act(aid, "resolve", "op-1", "seen", T0 + 301, outcome="false_alarm")
    assert effects.changes[0].change == "close" and effects.changes[0].alert.state == "closed"


def test_operator_actions_go_to_the_evidence_log_as_actions_with_outcome_and_target() -> None:
    """Claim, note, escalate and close are operator actions; the history entry names the
    outcome and target."""
    h, aid = cleared_alarm()
    changes = [
        h.engine.act(aid, "claim", "op-1", "", T0 + 300).changes[0],
        h.engine.act(aid, "escalate", "op-1", "", T0 + 301, target="police").changes[0],
        h.engine.act(aid, "close", "op-1", "arrested", T0 + 302, outcome="police_dispatched").changes[0],
    ]
    assert all(is_operator_action(c) for c in changes)
    bodies = [change_body(c, T0 + 302, None)["history_entry"] for c in changes]
    assert [b["action"] for b in bodies] == ["claim", "escalate", "close"]
    assert bodies[1]["target"] == "police" and bodies[2]["outcome"] == "police_dispatched"


def test_queue_puts_unacknowledged_first_then_level_then_deadline() -> None:
    """A new warning sorts above an acknowledged critical; a cleared alarm keeps its place."""
    def alert(aid: str, level: str, state: str, deadline: float, condition: str = "active") -> Alert:
        return Alert(aid, "panic", level, state, "O-1", None, None, None, 0.0, 0.0, deadline, 0.0,  # type: ignore[arg-type]
                     condition=condition)  # type: ignore[arg-type]  # fmt: skip
    alerts = [
        alert("A-ack-crit", "critical", "acknowledged", 10.0),
        alert("A-new-warn", "warning", "open", 50.0),
        alert("A-cleared-alarm", "alarm", "open", 90.0, "cleared"),
        alert("A-esc-alarm", "alarm", "escalated", 20.0),
        alert("A-closed", "critical", "closed", 1.0),
    ]
    order = [a.alert_id for a in sorted(alerts, key=queue_order)]
    assert order == ["A-esc-alarm", "A-cleared-alarm", "A-new-warn", "A-ack-crit", "A-closed"]


def test_em_ack_passes_outcome_and_target_and_dead_letters_a_refusal() -> None:
    """An ``em/ack`` close with outcome and note closes the alarm; one without is a dead letter."""
    engine = Engine(load_orders(orders_doc(exclusion=[BAN])))
    h = Harness(engine)
    aid = walk_through(h)
    service = Service(engine, ServiceConfig(), clock=lambda: T0 + 900)
    bad = json.dumps({"alert_id": aid, "action": "close", "by": "op-1"}).encode()
    service._ack_message(bad, T0 + 900)
    dead = [m.payload for _, m in service.outbox if m.channel == "deadletter"]
    assert dead and "needs an outcome" in dead[-1]["detail"]
    escalate = {"alert_id": aid, "action": "escalate", "by": "op-1", "target": "police"}
    service._ack_message(json.dumps(escalate).encode(), T0 + 901)
    assert engine.alerts.alerts[aid].escalated_to == "police"
    close = {"alert_id": aid, "action": "resolve", "by": "op-1", "note": "he left",
             "outcome": "subject_contacted"}  # fmt: skip
    service._ack_message(json.dumps(close).encode(), T0 + 902)
    centre = [m.payload for _, m in service.outbox if m.channel == "centre"]
    assert centre[-1]["state"] == "closed" and centre[-1]["outcome"] == "subject_contacted"
