"""The NATS worker's centre API in-process: actions sent as em/ack, answered by the view (200/409/503/504)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import orders_doc
from engine.runtime.centre_view import CentreView, payload_key
from engine.web import centre_api
from engine.web.auth import Authenticator, Principal
from engine.web.centre_api import CentreState, build_centre_app

TOKEN = "op-token-0123456789abcdef"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def _alert(seq: int, state: str = "open", by: str = "engine") -> dict[str, Any]:
    return {"v": 1, "alert_id": "A-1", "kind": "proximity", "level": "alarm", "state": state,
            "condition": "active", "order": "O-1", "subject": "S-1", "protected_person": "P-1", "zone": None,
            "deadline": "2099-01-01T00:00:00Z", "raised_at": "2026-12-07T10:00:00Z",
            "updated_at": "2026-12-07T10:00:00Z", "change_seq": seq, "changed_by": by,
            "evidence": {"fixes": ["AM-1001:1"]}}


def _client(view: CentreView) -> httpx.AsyncClient:
    doc = orders_doc()
    book = load_orders(doc)
    state = CentreState(view, Engine(book), Authenticator({TOKEN: Principal("op-1", "operator")}),
                        lambda: {"ready": True, "partitions": [0]}, orders_doc=doc)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=build_centre_app(state)), base_url="http://t")


async def test_an_action_is_sent_as_em_ack_and_answered_with_the_owner_s_change() -> None:
    """The payload is contract §1's em/ack with the authenticated operator as ``by``."""
    view = CentreView(caught_up=True)
    view.apply(_alert(1))
    sent: list[dict[str, Any]] = []

    async def owner(payload: bytes) -> None:  # the owner applies it; the change comes back
        sent.append(json.loads(payload))
        view.apply(_alert(2, state="acknowledged", by="op-1"))

    view.send = owner
    async with _client(view) as c:
        r = await c.post("/api/alerts/A-1/ack", headers=AUTH, json={"by": "someone-else", "note": "on it"})
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        assert sent == [{"alert_id": "A-1", "action": "ack", "by": "op-1", "note": "on it", "outcome": "", "target": ""}]
        detail = (await c.get("/api/alerts/A-1", headers=AUTH)).json()
        assert detail["map"]["unavailable"] and detail["case"]["order"]["id"] == "O-1"
        assert (await c.post("/api/alerts/A-2/ack", headers=AUTH, json={})).status_code == 404
        assert (await c.post("/api/alerts/A-1/note", headers=AUTH, json={"note": " "})).status_code == 422
        assert (await c.put("/api/orders/O-1", headers=AUTH, json={})).status_code == 403  # operator


async def test_a_refusal_is_409_no_result_504_and_no_connection_503(monkeypatch: pytest.MonkeyPatch) -> None:
    """The owner's dead letter quoting the payload refuses; silence is bounded; unsent is said."""
    monkeypatch.setattr(centre_api, "ACTION_WAIT_S", 0.2)
    view = CentreView(caught_up=True)
    view.apply(_alert(1))
    async with _client(view) as c:
        r = await c.post("/api/alerts/A-1/claim", headers=AUTH, json={})
        assert r.status_code == 503 and "not connected" in r.json()["error"]

        async def refusing(payload: bytes) -> None:
            view.refused({"topic": "em/ack", "payload": payload_key(payload), "reason": "bad_ack",
                          "detail": "alert A-1 is claimed by op-2"}, "em/ack")

        view.send = refusing
        r = await c.post("/api/alerts/A-1/claim", headers=AUTH, json={})
        assert r.status_code == 409 and "claimed by op-2" in r.json()["error"]

        async def silent(payload: bytes) -> None:
            return None

        view.send = silent
        r = await c.post("/api/alerts/A-1/ack", headers=AUTH, json={})
        assert r.status_code == 504 and "not seen" in r.json()["error"]


async def test_devices_and_an_alert_s_latest_positions_come_from_the_owners_snapshots() -> None:
    """``/api/devices`` lists the snapshots' records with ``as_of`` and ``owner`` and names the
    partitions without one; an alert's map shows its people's latest positions from them."""
    from engine.core.testing import ORIGIN, T0, DeviceScript
    from engine.runtime.device_view import encode_snapshot
    from engine.web import views

    owner = Engine(load_orders(orders_doc()))
    for d, dx in (("AM-1001", -300.0), ("VD-2001", 0.0)):
        topic, payload = DeviceScript(d).fix(T0, ORIGIN[0] + dx, ORIGIN[1])
        owner.handle(topic, payload, T0 + 1)
    owner.tick(T0 + 2)
    view = CentreView(caught_up=True)
    view.devices.partitions = 2
    view.apply(_alert(1))
    async with _client(view) as c:
        empty = (await c.get("/api/devices", headers=AUTH)).json()
        assert empty["devices"] == [] and "[0, 1]" in empty["unavailable"]
        view.devices.take(encode_snapshot(1, "w-a", T0 + 2, views.devices(owner, T0 + 2)))
        body = (await c.get("/api/devices", headers=AUTH)).json()
        assert "[0]" in body["unavailable"] and body["centre_view"]["with_snapshot"] == 1
        am = next(d for d in body["devices"] if d["device"] == "AM-1001")
        assert am["owner"] == "w-a" and am["position"]["lat"] > 51 and am["accuracy_m"] == 8.0
        latest = {p["device"]: p for p in (await c.get("/api/alerts/A-1", headers=AUTH)).json()["map"]["latest"]}
        assert set(latest) == {"AM-1001", "VD-2001"} and latest["VD-2001"]["role"] == "protected"
        assert latest["AM-1001"]["rd_x"] == pytest.approx(ORIGIN[0] - 300, abs=0.5)
        assert latest["AM-1001"]["as_of"] == am["as_of"]
