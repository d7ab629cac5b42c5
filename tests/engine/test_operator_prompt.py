"""An operator asks the subject to call the centre: ``prompt`` on an alert (issue 25 item 3)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from engine.core.alert_records import AlertActionError
from engine.core.config import ServiceConfig
from engine.core.messages import OPERATOR_PROMPT_LEVEL
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, orders_doc
from engine.evidence import Chain, MemoryStore, attach
from engine.evidence.recorder import is_operator_action
from engine.runtime.service import Service
from engine.web.auth import Principal
from engine.web.openapi import openapi_schema
from engine.web.views import notes_thread
from tests.engine.api_support import make_world

X0, Y0 = ORIGIN
PROX = [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000, "critical_m": 200}]


def near_alarm(speed: float = 1.4) -> tuple[Harness, str]:
    """He walks towards her until the proximity alert is critical; the alert's id."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    t, x, i = T0, X0 - 5000, 0
    while x < X0 - 100:
        h.send(am.fix(t, x, Y0), t + 0.5)
        if i % 6 == 0:
            h.send(vd.fix(t + 1, X0, Y0, acc=10.0), t + 1.5)
        t, x, i = t + 10, x + speed * 10, i + 1
    (aid,) = {c.alert.alert_id for c in h.effects.changes if c.alert.kind == "proximity"}
    assert h.engine.alerts.alerts[aid].level == "critical"
    assert h.messages("subject") == []  # offender_prompt "operator": the engine sent nothing
    return h, aid


def test_prompt_sends_contact_centre_to_his_ankle_monitor_only_and_is_in_the_history() -> None:
    """The prompt reaches em/cmd/subject/AM-1001 and nothing else of his or hers; the change is
    published to the centre, filed as an operator action, and the history says who and when."""
    h, aid = near_alarm()
    before = h.engine.alerts.alerts[aid]
    effects = h.engine.act(aid, "prompt", "op-anna", "no answer on his phone", T0 + 5000)
    (change,) = effects.changes
    assert change.change == "prompt" and is_operator_action(change)
    alert = change.alert
    assert (alert.state, alert.level, alert.claimed_by) == (before.state, before.level, None)
    entry = alert.history[-1]
    assert (entry.action, entry.by, entry.at, entry.note) == (
        "prompt", "op-anna", T0 + 5000, "no answer on his phone"
    )
    assert notes_thread(alert)[-1]["action"] == "prompt"
    topics = [(m.channel, m.topic) for m in effects.messages]
    assert topics == [("centre", "em/alerts/centre"), ("subject", "em/cmd/subject/AM-1001")]
    assert effects.messages[0].payload["changed_by"] == "op-anna"
    # without a note the history still says what was done
    again = h.engine.act(aid, "prompt", "op-anna", "", T0 + 5100)
    assert "call the centre" in again.changes[0].alert.history[-1].note


def test_prompt_payload_carries_nothing_about_her() -> None:
    """The payload is the contract §6 form with a fixed level: the same bytes (but ``t``) for a
    critical proximity alarm 100 m from her as for a tamper alert, so it follows nothing of hers."""
    h, aid = near_alarm()
    (prompt,) = [m for m in h.engine.act(aid, "prompt", "op-1", "", T0 + 5000).messages
                 if m.channel == "subject"]
    payload = prompt.payload
    assert payload == {"v": 1, "t": payload["t"], "instruction": "contact_centre",
                       "level": OPERATOR_PROMPT_LEVEL}  # fmt: skip
    text = json.dumps(payload)
    for word in ("lat", "lon", "distance", "bearing", "near", "zone", "P-1", "VD-2001",
                 "critical", "alarm", aid):  # fmt: skip
        assert word not in text
    # a far-away warning gives the very same message
    far = Harness.build(orders_doc(proximity=PROX))
    far.send(DeviceScript("AM-1001").event(T0, "strap_open"), T0 + 1)
    (tamper,) = {c.alert.alert_id for c in far.effects.changes}
    (other,) = [m for m in far.engine.act(tamper, "prompt", "op-1", "", T0 + 5000).messages
                if m.channel == "subject"]
    assert other.payload == payload and other.topic == prompt.topic


def test_prompt_refused_for_closed_alerts_and_alerts_without_a_subject_device() -> None:
    """Refused (no change, no message) on a closed alert, on a panic without an order (no
    subject), and when the subject has no ankle monitor; claimed by another: refused too."""
    h, aid = near_alarm()
    h.engine.act(aid, "claim", "op-anna", "", T0 + 4000)
    with pytest.raises(AlertActionError, match="claimed by op-anna"):
        h.engine.act(aid, "prompt", "op-bert", "", T0 + 4001)
    h.engine.act(aid, "close", "op-anna", "he turned back", T0 + 4002, outcome="subject_contacted")
    with pytest.raises(AlertActionError, match="already closed"):
        h.engine.act(aid, "prompt", "op-anna", "", T0 + 4003)

    lone = Harness.build({"v": 1, "subjects": [], "orders": [],
                          "protected_persons": [{"id": "P-1", "devices": ["VD-2001"]}]})  # fmt: skip
    lone.send(DeviceScript("VD-2001").event(T0, "panic"), T0 + 1)
    (panic,) = [c.alert for c in lone.effects.changes if c.alert.kind == "panic"]
    assert panic.subject is None
    with pytest.raises(AlertActionError, match="no subject"):
        lone.engine.act(panic.alert_id, "prompt", "op-1", "", T0 + 2)

    doc = orders_doc(proximity=PROX)
    bare = Harness.build(doc)
    bare.send(DeviceScript("VD-2001").event(T0, "panic"), T0 + 1)
    (panic,) = [c.alert for c in bare.effects.changes if c.alert.kind == "panic"]
    assert panic.subject == "S-1"  # a panic under an order: he can be asked to call
    subjects = bare.engine.book.subjects
    subjects["S-1"] = replace(subjects["S-1"], devices=())  # type: ignore[index]
    with pytest.raises(AlertActionError, match="no ankle monitor"):
        bare.engine.act(panic.alert_id, "prompt", "op-1", "", T0 + 2)
    assert bare.engine.alerts.alerts[panic.alert_id].history[-1].action == "raised"


def test_panic_alert_under_an_order_may_prompt_him() -> None:
    """A panic under an order names the subject: the prompt goes to his ankle monitor."""
    h = Harness.build(orders_doc(proximity=PROX))
    h.send(DeviceScript("VD-2001").event(T0, "panic"), T0 + 1)
    (panic,) = [c.alert for c in h.effects.changes if c.alert.kind == "panic"]
    effects = h.engine.act(panic.alert_id, "prompt", "op-1", "", T0 + 2)
    assert [m.topic for m in effects.messages if m.channel != "centre"] == ["em/cmd/subject/AM-1001"]


def test_em_ack_prompt_reaches_his_device_and_a_refusal_is_a_dead_letter() -> None:
    """``{"action": "prompt"}`` on em/ack prompts him; on a closed alert it is dead-lettered."""
    h, aid = near_alarm()
    service = Service(h.engine, ServiceConfig(), clock=lambda: T0 + 5000)
    ask = {"alert_id": aid, "action": "prompt", "by": "op-1", "note": "please call"}
    service._ack_message(json.dumps(ask).encode(), T0 + 5000)
    sent = [(m.channel, m.topic, m.payload) for _, m in service.outbox]
    assert [(c, t) for c, t, _ in sent] == [
        ("centre", "em/alerts/centre"), ("subject", "em/cmd/subject/AM-1001")
    ]
    assert sent[0][2]["note"] == "please call" and sent[1][2]["instruction"] == "contact_centre"
    close = {"alert_id": aid, "action": "close", "by": "op-1", "note": "called back",
             "outcome": "subject_contacted"}  # fmt: skip
    service._ack_message(json.dumps(close).encode(), T0 + 5001)
    service._ack_message(json.dumps(ask).encode(), T0 + 5002)
    dead = [m.payload for _, m in service.outbox if m.channel == "deadletter"]
    assert dead and "already closed" in dead[-1]["detail"]
    assert sum(1 for _, m in service.outbox if m.channel == "subject") == 1


def test_prompt_survives_a_state_round_trip() -> None:
    """The history entry of a prompt is stored and restored like any other action."""
    h, aid = near_alarm()
    h.engine.act(aid, "prompt", "op-1", "", T0 + 5000)
    parts = [p for p in h.engine.state_delta().parts.values() if p is not None]
    again = Harness.build(orders_doc(proximity=PROX))
    assert again.engine.restore_parts(parts) == []
    assert again.engine.alerts.alerts[aid].history[-1].action == "prompt"


TOKENS = {
    "tok-ro-0123456789": Principal("rita", "read-only"),
    "tok-op-0123456789": Principal("oscar", "operator"),
    "tok-sup-0123456789": Principal("sue", "supervisor"),
}
RO, OP, SUP = TOKENS


async def test_http_prompt_roles_audit_and_refusals() -> None:
    """Read-only is 403; an operator's prompt is 200, sends contact_centre to AM-1001 only and
    is audited with the note; another operator's claim makes it 409 for him but not for a
    supervisor; on a closed alert it is 409; every attempt is in the audit trail."""
    w = make_world(tokens=TOKENS)
    aid = w.raise_exclusion()
    url = f"/api/alerts/{aid}/prompt"

    def sent() -> list[tuple[str, str]]:
        return [(m.channel, m.topic) for _, m in w.service.outbox if m.channel == "subject"
                and m.payload["instruction"] == "contact_centre"]  # fmt: skip

    before = len(sent())  # the exclusion alarm itself told him to leave the area
    async with w.client(RO) as ro:
        assert (await ro.post(url, json={})).status_code == 403
    assert len(sent()) == before
    async with w.client(OP) as op:
        r = await op.post(url, json={"note": "please call", "by": "somebody-else"})
        assert r.status_code == 200, r.text
        assert r.json()["changed_by"] == "oscar" and r.json()["state"] == "open"
        assert sent()[before:] == [("subject", "em/cmd/subject/AM-1001")]
        detail = (await op.get(f"/api/alerts/{aid}")).json()
        assert detail["notes"][-1] == {
            "at": detail["notes"][-1]["at"], "by": "oscar", "note": "please call", "action": "prompt"
        }
    async with w.client(SUP) as sup:
        assert (await sup.post(f"/api/alerts/{aid}/claim", json={})).status_code == 200
    async with w.client(OP) as op:
        r = await op.post(url, json={})
        assert r.status_code == 409 and "claimed by sue" in r.json()["error"]
    async with w.client(SUP) as sup:
        assert (await sup.post(url, json={})).status_code == 200
        close = {"outcome": "subject_contacted", "note": "he called back"}
        assert (await sup.post(f"/api/alerts/{aid}/close", json=close)).status_code == 200
        r = await sup.post(url, json={})
        assert r.status_code == 409 and "closed" in r.json()["error"]
        audit = (await sup.get("/api/audit")).json()["audit"]
    prompts = [(e["user"], e["status"], e["action"]) for e in audit if e["path"] == url]
    assert sorted(prompts) == sorted([
        ("rita", 403, "prompt"), ("oscar", 200, "prompt"), ("oscar", 409, "prompt"),
        ("sue", 200, "prompt"), ("sue", 409, "prompt"),
    ])
    assert len(sent()) == before + 2
    assert "/api/alerts/{id}/prompt" in openapi_schema()["paths"]


def test_evidence_log_files_the_prompt_as_an_operator_action_and_its_message() -> None:
    """The chained evidence log gets the prompt as ``type: operator`` (who, when, note) and the
    contact_centre sent to his ankle monitor as ``type: message``."""
    h, aid = near_alarm()
    store = MemoryStore()
    listen = attach(h.engine, Chain(store))
    listen(h.engine.act(aid, "prompt", "op-anna", "please call", T0 + 5000), T0 + 5000)
    bodies = [(r.kind, r.body) for r in store.records()]
    (operator,) = [b for k, b in bodies if k == "action" and b["type"] == "operator"]
    assert operator["change"] == "prompt" and operator["alert_id"] == aid
    assert operator["history_entry"]["by"] == "op-anna"
    assert operator["history_entry"]["note"] == "please call"
    (message,) = [b for k, b in bodies if k == "action" and b["type"] == "message"]
    assert message["topic"] == "em/cmd/subject/AM-1001"
    assert message["payload"]["instruction"] == "contact_centre"
