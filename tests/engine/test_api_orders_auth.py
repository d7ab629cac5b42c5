"""HTTP API: bearer-token roles, audit, order changes without restart, OpenAPI coverage."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from devices.timeutil import format_time
from engine.core.testing import ORIGIN, T0, square
from engine.errors import ConfigError
from engine.web.auth import Principal, parse_tokens
from engine.web.openapi import openapi_schema
from tests.engine.api_support import BAN, make_world

TOKENS = {
    "tok-ro-0123456789": Principal("rita", "read-only"),
    "tok-op-0123456789": Principal("oscar", "operator"),
    "tok-sup-0123456789": Principal("sue", "supervisor"),
}
RO, OP, SUP = TOKENS


def test_parse_tokens_reads_env_form_and_rejects_bad_roles() -> None:
    """``token:name:role`` entries parse; an unknown role or malformed entry fails at start-up."""
    a, b = "a" * 16, "b" * 16
    assert parse_tokens(f"{a}:alice:operator, {b}:bob:supervisor") == {
        a: Principal("alice", "operator"),
        b: Principal("bob", "supervisor"),
    }
    assert parse_tokens("") == {}
    for bad in (f"{a}:alice:admin", f"{a}:alice", "::operator", "short:alice:operator"):
        with pytest.raises(ConfigError):
            parse_tokens(bad)


@pytest.mark.parametrize(
    ("token", "method", "path", "status"),
    [
        (None, "GET", "/api/alerts", 401),
        ("wrong", "GET", "/api/alerts", 401),
        (RO, "GET", "/api/alerts", 200),
        (RO, "POST", "/api/alerts/{aid}/ack", 403),
        (OP, "POST", "/api/alerts/{aid}/ack", 200),
        (OP, "DELETE", "/api/orders/O-1", 403),
        (OP, "GET", "/api/audit", 200),
        (RO, "GET", "/api/audit", 403),
        (SUP, "DELETE", "/api/orders/O-1", 200),
        (None, "GET", "/healthz", 200),
        (None, "GET", "/metrics", 200),
    ],
)
async def test_roles(token: str | None, method: str, path: str, status: int) -> None:
    """Read-only may look, operators act on alerts, only supervisors change orders."""
    w = make_world(tokens=TOKENS)
    aid = w.raise_exclusion()
    async with w.client(token) as c:
        r = await c.request(method, path.format(aid=aid), json={} if method != "GET" else None)
    assert r.status_code == status, r.text


async def test_authenticated_actor_name_wins_over_body_and_is_audited() -> None:
    """With auth on, ``by`` is the token's operator, not what the body claims; refusals are audited too."""
    w = make_world(tokens=TOKENS)
    aid = w.raise_exclusion()
    async with w.client(RO) as ro:
        assert (await ro.post(f"/api/alerts/{aid}/ack", json={"by": "oscar"})).status_code == 403
    async with w.client(OP) as op:
        r = await op.post(f"/api/alerts/{aid}/ack", json={"by": "somebody-else", "note": "n"})
        assert r.status_code == 200 and r.json()["changed_by"] == "oscar"
        audit = (await op.get("/api/audit")).json()["audit"]
    assert [(e["user"], e["status"]) for e in audit] == [("oscar", 200), ("rita", 403)]


async def test_demo_mode_uses_body_by_or_demo_operator() -> None:
    """Without tokens every call is allowed; ``by`` defaults to demo-operator."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/ack", json={})
    assert r.json()["changed_by"] == "demo-operator"


async def test_put_order_takes_effect_without_restart() -> None:
    """A new exclusion zone PUT over HTTP raises an alert for the next fix inside it."""
    w = make_world()
    new_zone = (ORIGIN[0] - 6000.0, ORIGIN[1])
    order = copy.deepcopy(w.doc["orders"][0])
    order["exclusion_zones"].append({"id": "Z-new", "polygon": square(*new_zone, 150.0)})
    async with w.client() as c:
        r = await c.put("/api/orders/O-1", json={"order": order})
        assert r.status_code == 200 and r.json()["exclusion_zones"] == ["Z-ban", "Z-new"]
        for i in range(3):
            w.send(w.subject.fix(T0 + i, new_zone[0] + i, new_zone[1]))
        zones = {
            a["zone"]
            for a in (await c.get("/api/alerts", params={"kind": "exclusion"})).json()["alerts"]
        }
        assert zones == {"Z-new"}
        assert (await c.get("/api/orders/O-1")).json()["document"]["exclusion_zones"][-1][
            "id"
        ] == "Z-new"


async def test_put_new_order_with_new_subject_creates_it() -> None:
    """PUT of an unknown id with its new subject creates the order (201) and lists it."""
    w = make_world()
    order: dict[str, Any] = {
        "subject": "S-2",
        "legal_basis": "gedragsaanwijzing",
        "valid_from": "2026-11-01T00:00:00Z",
        "valid_until": "2027-01-20T00:00:00Z",
        "exclusion_zones": [{"id": "Z-x", "polygon": square(*BAN, 100.0)}],
    }
    async with w.client() as c:
        r = await c.put(
            "/api/orders/O-2",
            json={"order": order, "subjects": [{"id": "S-2", "devices": ["AM-2"]}]},
        )
        assert r.status_code == 201, r.text
        assert sorted(o["id"] for o in (await c.get("/api/orders")).json()["orders"]) == [
            "O-1",
            "O-2",
        ]
    assert w.engine.book.owner_of("AM-2") == ("subject", "S-2")


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"order": {"subject": "S-nobody"}}, 422, "unknown subject"),
        (
            {
                "order": {
                    "subject": "S-1",
                    "exclusion_zones": [
                        {"id": "Z", "circle": {"lat": 52, "lon": 4, "radius_m": -1}}
                    ],
                }
            },
            422,
            "radius",
        ),
        ({"order": {"id": "O-9", "subject": "S-1"}}, 400, "does not match"),
        ({"nothing": 1}, 400, "order"),
    ],
)
async def test_put_invalid_order_is_refused_and_changes_nothing(
    body: dict[str, Any], status: int, needle: str
) -> None:
    """An invalid order is refused with the loader's message and the engine keeps its book."""
    w = make_world()
    before = w.engine.book
    async with w.client() as c:
        r = await c.put("/api/orders/O-1", json=body)
    assert r.status_code == status and needle in r.json()["error"]
    assert w.engine.book is before


async def test_delete_order_ends_it_now_and_keeps_alerts() -> None:
    """DELETE sets valid_until to now: later fixes raise nothing, the open alert stays."""
    w = make_world()
    aid = w.raise_exclusion()
    w.clock.now = T0 + 100
    async with w.client() as c:
        r = await c.delete("/api/orders/O-1")
        assert r.status_code == 200 and r.json()["valid_until"] == format_time(T0 + 100)
        w.clock.now = T0 + 101
        assert (await c.get("/api/orders/O-1")).json()["in_force"] is False
        assert (await c.get(f"/api/alerts/{aid}")).json()["state"] == "open"
        assert (await c.delete("/api/orders/O-404")).status_code == 404
    assert w.engine.book.orders["O-1"].valid_until == pytest.approx(T0 + 100, abs=0.01)
    before = len(w.engine.alerts.alerts)
    w.send(w.subject.event(T0 + 200, "strap_cut"))
    for i in range(3):
        w.send(w.subject.fix(T0 + 300 + i, ORIGIN[0] - 6000.0, ORIGIN[1]))
    assert not [a for a in list(w.engine.alerts.alerts.values())[before:] if a.kind == "exclusion"]


async def test_orders_read_only_without_document() -> None:
    """A server started without the orders document refuses order changes with 409."""
    w = make_world()
    w.server.state.orders_doc = None
    async with w.client() as c:
        assert (
            await c.put("/api/orders/O-1", json={"order": {"subject": "S-1"}})
        ).status_code == 409
        assert (await c.get("/api/orders/O-1")).status_code == 200


def _route_paths(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.routes:
        for method in getattr(route, "methods", None) or []:
            if method != "HEAD":
                out.add((route.path, method.lower()))
    return out


async def test_openapi_lists_every_route_and_responses_have_required_fields() -> None:
    """Every API route is in /openapi.json, and real responses carry each schema's required fields."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        schema = (await c.get("/openapi.json")).json()
        documented = {(p, m) for p, ops in schema["paths"].items() for m in ops}
        assert _route_paths(w.server.app) <= documented
        comps = schema["components"]["schemas"]

        def required(s: dict[str, Any]) -> list[str]:
            if "$ref" in s:
                return required(comps[s["$ref"].rsplit("/", 1)[1]])
            return list(s.get("required", [])) + [
                r for part in s.get("allOf", []) for r in required(part)
            ]

        checks = {
            "/api/alerts": "/api/alerts",
            "/api/me": "/api/me",
            f"/api/alerts/{aid}": "/api/alerts/{id}",
            "/api/orders": "/api/orders",
            "/api/orders/O-1": "/api/orders/{id}",
            "/api/devices": "/api/devices",
            "/api/zones": "/api/zones",
            "/healthz": "/healthz",
        }
        for url, path in checks.items():
            r = await c.get(url)
            assert r.status_code == 200
            s = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
                "schema"
            ]
            body = r.json()
            assert set(required(s)) <= set(body), (url, required(s))
            for key, prop in s.get("properties", {}).items():
                if prop.get("type") == "array" and "items" in prop:
                    for item in body[key]:
                        assert set(required(prop["items"])) <= set(item), (url, key)
        assert openapi_schema()["openapi"].startswith("3.")


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (
            {"legal_basis": "gedragsaanwijzing", "valid_until": "2030-01-01T00:00:00Z"},
            "validity_exceeds_legal_basis",
        ),
        ({"legal_basis": "gedragsaanwijzng"}, "unknown_legal_basis"),
    ],
)
async def test_put_runs_the_enforceability_checks_and_refuses_a_blocking_finding(
    change: dict[str, Any], code: str
) -> None:
    """The checks `emguard orders check` blocks on refuse an order PUT with 422 naming them;
    the engine keeps its book and the document is unchanged."""
    w = make_world()
    before, doc_before = w.engine.book, copy.deepcopy(w.server.state.orders_doc)
    order = dict(copy.deepcopy(w.doc["orders"][0]), **change)
    async with w.client() as c:
        r = await c.put("/api/orders/O-1", json={"order": order})
    assert r.status_code == 422, r.text
    assert code in r.json()["error"] and code in [f["code"] for f in r.json()["findings"]]
    assert w.engine.book is before and w.server.state.orders_doc == doc_before
