"""One centre-wide view: any NATS worker's HTTP API shows every alert, and its actions reach the owner.

A real 3-node cluster, Redis and two ``emguard serve --transport nats`` workers (each with its
centre HTTP API); the approach alert is owned by one worker and worked through the other, and
the other lists the pair's device health and positions from the owner's snapshot (``em_view``).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from engine.core.cases import cases_of
from engine.core.orders_load import load_orders
from engine.runtime.nats_jetstream import OUT_STREAM, lease_key, partition_of
from tests.integration import nats_helpers as h
from tests.integration import nats_procs, procs
from tests.integration.test_nats_scale_out import PARTITIONS, Rig, _owners

pytestmark = pytest.mark.integration
OPERATOR = {"authorization": f"Bearer {nats_procs.OPERATOR_TOKEN}"}
READER = {"authorization": f"Bearer {nats_procs.READER_TOKEN}"}


def _api(w: procs.Proc) -> httpx.AsyncClient:
    assert w.env is not None
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{w.env['EMGUARD_HTTP_PORT']}", timeout=10)


async def _listed(c: httpx.AsyncClient, alert_id: str, within_s: float) -> dict:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while True:
        r = await c.get("/api/alerts", headers=READER)
        assert r.status_code == 200, r.text
        found = [a for a in r.json()["alerts"] if a["alert_id"] == alert_id]
        if found and found[0]["level"] == "critical":
            return found[0]
        assert loop.time() < end, f"{alert_id} not listed critical: {r.json()}"
        await asyncio.sleep(0.2)


async def _state_on(c: httpx.AsyncClient, alert_id: str) -> str | None:
    try:
        r = await c.get("/api/alerts", headers=READER)
    except httpx.TransportError:
        return None  # not listening yet
    found = r.json()["alerts"] if r.status_code == 200 else []
    return next((a["state"] for a in found if a["alert_id"] == alert_id), None)


async def _devices_on(c: httpx.AsyncClient, want: set[str], within_s: float) -> dict:
    """``GET /api/devices`` once it lists every device of ``want`` with a position."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while True:
        r = await c.get("/api/devices", headers=READER)
        assert r.status_code == 200, r.text
        body = r.json()
        if {d["device"] for d in body["devices"] if d["position"]} >= want:
            return body
        assert loop.time() < end, f"{sorted(want)} not listed with a position: {body}"
        await asyncio.sleep(0.2)


async def test_any_worker_shows_every_alert_and_acts_through_the_owner(tmp_path, monkeypatch):
    """The alert owned by worker A is listed on B; an ack POSTed to B is applied by A and seen on
    both; B lists the pair's devices from A's snapshots."""
    monkeypatch.setenv("EMGUARD_NATS_VIEW_S", "0.5")  # the workers' env: snapshots 4x as often as by default
    async with Rig(tmp_path, pairs=1) as rig:
        for name in ("wa", "wb"):
            await rig.add_worker(name)
        leases = await _owners(rig.centre, 2, 60)
        book = load_orders(json.loads(rig.orders.read_text()))
        owner_id = leases[lease_key(partition_of(cases_of(book).of_order["O-0"], PARTITIONS))]
        owner = next(w for w in rig.workers if w.env and w.env["EMGUARD_NATS_WORKER_ID"] == owner_id)
        other = next(w for w in rig.workers if w is not owner)
        await h.publish(rig.cluster.nodes[0].mqtt_port, h.workload(1), 0.01)
        await procs.until(lambda: h.critical_pairs(rig.centre.got) == {"P-0"}, 60, "a critical proximity alert")
        (alert_id,) = h.proximity_ids(rig.centre.got)["P-0"]
        async with _api(owner) as a, _api(other) as b:
            assert (await b.get("/api/alerts")).status_code == 401  # the same auth as a single node
            listed = await _listed(b, alert_id, 20)  # B owns nothing of this case, yet lists it
            assert listed["state"] == "open" and listed["peak_level"] == "critical"
            assert (await b.post(f"/api/alerts/{alert_id}/ack", headers=READER, json={})).status_code == 403
            refused = await b.post(f"/api/alerts/{alert_id}/close", headers=OPERATOR, json={"note": "x"})
            assert refused.status_code == 422  # an alarm closes only with an outcome and a note
            started = asyncio.get_running_loop().time()
            acked = await b.post(f"/api/alerts/{alert_id}/ack", headers=OPERATOR, json={"note": "on it"})
            print(f"ack_via_other_worker_s={asyncio.get_running_loop().time() - started:.3f}")
            assert acked.status_code == 200, acked.text
            assert acked.json()["state"] == "acknowledged" and acked.json()["changed_by"] == "op-1"
            again = await a.post(f"/api/alerts/{alert_id}/ack", headers=OPERATOR, json={})
            assert again.status_code == 409 and "already acknowledged" in again.json()["error"]  # the owner's refusal
            on_owner = (await a.get(f"/api/alerts/{alert_id}", headers=READER)).json()
            assert on_owner["state"] == "acknowledged"
            assert [x["by"] for x in on_owner["history"] if x.get("action") == "ack"] == ["op-1"]
            assert on_owner["map"]["unavailable"] and on_owner["map"]["tracks"] == {}  # said, not silently empty
            # device health centre-wide: B owns nothing of the pair, yet lists both devices with
            # their health and latest position from A's snapshot of the partition
            started = asyncio.get_running_loop().time()
            body = await _devices_on(b, {"AM-0", "VD-0"}, 10)
            print(f"devices_on_other_worker_s={asyncio.get_running_loop().time() - started:.3f}")
            assert "unavailable" not in body and body["centre_view"]["with_snapshot"] == PARTITIONS
            pair = {d["device"]: d for d in body["devices"] if d["device"] in ("AM-0", "VD-0")}
            assert {d["owner"] for d in pair.values()} == {owner_id}
            assert pair["AM-0"]["role"] == "subject" and pair["VD-0"]["person"] == "P-0"
            assert all(d["last_seen"] and d["accuracy_m"] is not None and d["as_of"] for d in pair.values())
            assert pair["VD-0"]["position"]["x"] == pytest.approx(h.X0, abs=0.5)
            on_other = (await b.get(f"/api/alerts/{alert_id}", headers=READER)).json()
            assert {p["device"] for p in on_other["map"]["latest"]} == {"AM-0", "VD-0"}
            text = (await b.get("/metrics")).text
            assert 'emguard_centre_alerts{state="acknowledged"} 1' in text and "emguard_worker_partitions 8" in text
            ready = await b.get("/readyz")
            assert ready.status_code == 200 and ready.json()["centre_view_caught_up"] is True
            audit = (await b.get("/api/audit", headers=OPERATOR)).json()["audit"]
            assert {(e["user"], e["status"]) for e in audit if e["action"] == "ack"} == {("viewer", 403), ("op-1", 200)}
        await procs.until(lambda: any(x["alert_id"] == alert_id and x["state"] == "acknowledged"
                                      for x in rig.centre.got), 10, "the ack published on EM_OUT")
        # an open alert whose changes have left EM_OUT (7 days' retention; purged here) is still
        # shown by a worker started since: its view starts from the open alerts archived in Redis
        await rig.centre.nc.jetstream().purge_stream(OUT_STREAM)
        late = await rig.add_worker("wc")
        async with _api(late) as c:
            loop = asyncio.get_running_loop()
            end = loop.time() + 30
            while (state := await _state_on(c, alert_id)) != "acknowledged":
                assert loop.time() < end, f"the late worker shows {alert_id} as {state}"
                await asyncio.sleep(0.3)
