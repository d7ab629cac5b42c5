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
