"""HTTP API: alerts, actions, devices, zones, health, against an in-process engine (no broker)."""

from __future__ import annotations

import pytest

from devices.timeutil import format_time
from engine.core.testing import T0
from engine.web.auth import Principal
from tests.engine.api_support import BAN, make_world


async def test_healthz_alive_and_readyz_503_until_connected() -> None:
    """/healthz is 200 always; /readyz is 503 until both broker connections are up (receiving
    device messages, publishing the outbox) and 200 after."""
    w = make_world()
    async with w.client() as c:
        assert (await c.get("/healthz")).json() == {"status": "alive"}
        r = await c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["broker_connected"] is False and r.json()["inbox_depth"] == 0
        w.service.connected = True
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json()["publishing_connected"] is False
        w.service.out.connected = True  # the outbox's own connection (engine.runtime.outbox)
        assert (await c.get("/readyz")).status_code == 200
        w.service.connected = False
        assert (await c.get("/readyz")).status_code == 503


async def test_alert_list_has_deadline_fields_and_filters() -> None:
    """An exclusion alert is listed with overdue flag and seconds to deadline, and filters apply."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        body = (await c.get("/api/alerts")).json()
        assert [a["alert_id"] for a in body["alerts"]] == [aid]
        alert = body["alerts"][0]
        assert alert["kind"] == "exclusion" and alert["state"] == "open"
        assert alert["overdue"] is False and 0 < alert["seconds_to_deadline"] <= 300
        assert (await c.get("/api/alerts", params={"kind": "proximity"})).json()["alerts"] == []
        assert (await c.get("/api/alerts", params={"subject": "S-2"})).json()["alerts"] == []
        assert (
            len((await c.get("/api/alerts", params={"state": "open,escalated"})).json()["alerts"])
            == 1
        )
        later = format_time(T0 + 3600)
        assert (await c.get("/api/alerts", params={"since": later})).json()["alerts"] == []
        assert (await c.get("/api/alerts", params={"level": "bogus"})).status_code == 400
        w.clock.now = T0 + 10_000
        overdue = (await c.get("/api/alerts")).json()["alerts"][0]
        assert overdue["overdue"] is True and overdue["seconds_to_deadline"] < 0


async def test_alert_queue_order_open_first_then_level_then_deadline() -> None:
    """Closed alerts sort after open ones; among open ones the higher level comes first."""
    w = make_world()
    aid = w.raise_exclusion()
    w.send(w.subject.event(T0 + 5, "strap_cut"))
    tamper = next(a.alert_id for a in w.engine.alerts.alerts.values() if a.kind == "tamper")
    async with w.client() as c:
        ids = [a["alert_id"] for a in (await c.get("/api/alerts")).json()["alerts"]]
        assert ids == [tamper, aid]  # critical before alarm
        closing = {"by": "x", "outcome": "device_issue", "note": "strap replaced"}
        assert (await c.post(f"/api/alerts/{tamper}/resolve", json=closing)).status_code == 200
        ids = [a["alert_id"] for a in (await c.get("/api/alerts")).json()["alerts"]]
        assert ids == [aid, tamper]


async def test_alert_detail_has_history_and_evidence_positions() -> None:
    """The detail view resolves evidence keys to positions near where the fixes were sent."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        d = (await c.get(f"/api/alerts/{aid}")).json()
        assert d["history"][0]["state"] == "open" and d["history"][0]["by"] == "engine"
        found = [f for f in d["evidence_fixes"] if f["found"]]
        assert found, d["evidence_fixes"]
        for f in found:
            assert f["device"] == "AM-1001"
            assert abs(f["x"] - BAN[0]) < 5 and abs(f["y"] - BAN[1]) < 5
            assert 51.0 < f["lat"] < 53.0 and 3.0 < f["lon"] < 6.0
        assert "AM-1001" in d["map"]["tracks"]
        assert "Z-ban" in d["map"]["order_zones"]
        assert (await c.get("/api/alerts/A-nope")).status_code == 404


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("ack", "acknowledged"), ("escalate", "escalated"), ("close", "closed"),
        ("resolve", "closed"),
    ],
)
async def test_actions_change_state_and_are_audited(action: str, state: str) -> None:
    """Each action moves the alert, publishes a change, names the actor and lands in the audit."""
    w = make_world()
    aid = w.raise_exclusion()
    published = len(w.service.outbox)
    async with w.client() as c:
        body = {"by": "alice", "note": "seen", "outcome": "subject_contacted"}
        r = await c.post(f"/api/alerts/{aid}/{action}", json=body)
        assert r.status_code == 200 and r.json()["state"] == state
        assert w.engine.alerts.alerts[aid].history[-1].by == "alice"
        assert len(w.service.outbox) > published
        audit = (await c.get("/api/audit")).json()["audit"]
        assert (
            audit[0]["action"] == action and audit[0]["target"] == aid and audit[0]["status"] == 200
        )
        assert audit[0]["note"] == "seen"


async def test_action_conflicts_and_unknowns() -> None:
    """A second ack is 409 with the engine's message; unknown alert is 404; bad body is 400."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        assert (await c.post(f"/api/alerts/{aid}/ack", json={})).status_code == 200
        r = await c.post(f"/api/alerts/{aid}/ack", json={})
        assert r.status_code == 409 and "already acknowledged" in r.json()["error"]
        assert (await c.post("/api/alerts/A-x/ack", json={})).status_code == 404
        bad = await c.post(
            f"/api/alerts/{aid}/resolve",
            content=b"{nope",
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400
        assert (await c.post(f"/api/alerts/{aid}/frobnicate", json={})).status_code in (404, 405)


async def test_devices_report_last_seen_accuracy_battery_and_silence() -> None:
    """Device health shows last arrival, latest accuracy and source, battery and the silent flag."""
    w = make_world()
    w.send(w.subject.fix(T0, BAN[0] - 5000, BAN[1], acc=12.0, batt=55, src="wifi"))
    w.engine.tick(T0 + 10_000)
    async with w.client() as c:
        devs = {d["device"]: d for d in (await c.get("/api/devices")).json()["devices"]}
    am = devs["AM-1001"]
    assert am["role"] == "subject" and am["person"] == "S-1"
    assert am["accuracy_m"] == 12.0 and am["src"] == "wifi" and am["battery_pct"] == 55
    assert am["last_seen"] == format_time(T0) and am["silent"] is True
    assert devs["VD-2001"]["last_seen"] is None and devs["VD-2001"]["silent"] is False


async def test_zones_have_lonlat_and_projected_rings() -> None:
    """Every zone comes back as closed lon/lat and projected rings, with kind and activity."""
    w = make_world()
    async with w.client() as c:
        zones = {z["zone"]: z for z in (await c.get("/api/zones")).json()["zones"]}
    ban = zones["Z-ban"]
    assert ban["kind"] == "exclusion" and ban["active"] is True
    xs = [p[0] for p in ban["xy"][0][0]]
    assert min(xs) == pytest.approx(BAN[0] - 200, abs=0.5) and max(xs) == pytest.approx(
        BAN[0] + 200, abs=0.5
    )
    assert ban["rings"][0][0][0] == ban["rings"][0][0][-1]
    assert zones["Z-home"]["shape"] == "circle" and zones["Z-home"]["kind"] == "inclusion"


async def test_console_and_static_assets_are_served() -> None:
    """GET / serves the console page and its script and stylesheet are reachable."""
    w = make_world()
    async with w.client() as c:
        page = await c.get("/")
        assert page.status_code == 200 and 'id="map"' in page.text
        assert (await c.get("/console/app.js")).status_code == 200
        assert (await c.get("/console/app.css")).status_code == 200


async def test_queue_filters_by_condition_and_reads_resolved_as_closed() -> None:
    """?condition=cleared lists alarms whose cause ended; an older client's ?state=resolved gets
    the closed ones."""
    w = make_world()
    aid = w.raise_exclusion()
    for i in range(4):
        w.clock.now = T0 + 60 + 10 * i
        w.send(w.subject.fix(w.clock.now, BAN[0] + 3000, BAN[1]))
    async with w.client() as c:
        cleared = (await c.get("/api/alerts", params={"condition": "cleared"})).json()["alerts"]
        assert [a["alert_id"] for a in cleared] == [aid] and cleared[0]["state"] == "open"
        assert (await c.get("/api/alerts", params={"state": "resolved"})).json()["alerts"] == []
        body = {"outcome": "false_alarm", "note": "multipath"}
        assert (await c.post(f"/api/alerts/{aid}/close", json=body)).status_code == 200
        closed = (await c.get("/api/alerts", params={"state": "resolved"})).json()["alerts"]
        assert [a["alert_id"] for a in closed] == [aid] and closed[0]["state"] == "closed"


async def test_close_without_outcome_is_422_and_a_claimed_alert_is_409_for_another() -> None:
    """Incomplete requests are 422 with the engine's reason; conflicts with another operator's
    claim are 409; a supervisor takes over."""
    tokens = {
        "anna-token-0123456789": Principal("anna", "operator"),
        "bert-token-0123456789": Principal("bert", "operator"),
        "sara-token-0123456789": Principal("sara", "supervisor"),
    }
    w = make_world(tokens=tokens)
    aid = w.raise_exclusion()
    async with (
        w.client("anna-token-0123456789") as anna,
        w.client("bert-token-0123456789") as bert,
        w.client("sara-token-0123456789") as sara,
    ):
        r = await anna.post(f"/api/alerts/{aid}/close", json={"note": "x"})
        assert r.status_code == 422 and "needs an outcome" in r.json()["error"]
        r = await anna.post(f"/api/alerts/{aid}/escalate", json={"target": "mayor"})
        assert r.status_code == 422 and "unknown escalation target" in r.json()["error"]
        assert (await anna.post(f"/api/alerts/{aid}/claim", json={})).json()["claimed_by"] == "anna"
        r = await bert.post(f"/api/alerts/{aid}/claim", json={})
        assert r.status_code == 409 and "claimed by anna" in r.json()["error"]
        assert (await bert.post(f"/api/alerts/{aid}/note", json={"note": "I know him"})).status_code == 200
        r = await sara.post(f"/api/alerts/{aid}/claim", json={"note": "taking over"})
        assert r.status_code == 200 and r.json()["claimed_by"] == "sara"
        me = (await bert.get("/api/me")).json()
        assert (me["name"], me["role"], me["may_act"], me["may_take_over"]) == ("bert", "operator", True, False)
