"""HTTP API edge (issue 21): JSON-only bounded bodies, JSON errors, audit of every outcome, headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from engine.runtime.acks import MAX_NOTE_CHARS
from engine.web.auth import Principal
from engine.web.edge import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_ORDER_BYTES,
    SECURITY_HEADERS,
    console_policy,
)
from engine.web.views import CONSOLE_DIR
from tests.engine.api_support import World, make_world

OP_TOKEN = "op-token-0123456789abcdef"
TOKENS = {OP_TOKEN: Principal("oscar", "operator")}


def _snapshot(w: World, aid: str) -> tuple[int, int, str]:
    """What an action could change: the outbox, the alert's history, its state."""
    alert = w.engine.alerts.alerts[aid]
    return len(w.service.outbox), len(alert.history), alert.state


async def _last_audit(c: httpx.AsyncClient) -> dict[str, Any]:
    entries: list[dict[str, Any]] = (await c.get("/api/audit")).json()["audit"]
    return entries[0]


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
async def test_post_that_is_not_json_is_415_and_changes_nothing(content_type: str | None) -> None:
    """What a cross-site form or text/plain fetch can send is refused (CSRF), and audited."""
    w = make_world()
    aid = w.raise_exclusion()
    before = _snapshot(w, aid)
    headers = {"content-type": content_type} if content_type else {}
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/ack", content=b'{"note": "x"}', headers=headers)
        assert r.status_code == 415 and "application/json" in r.json()["error"]
        audit = await _last_audit(c)
    assert _snapshot(w, aid) == before
    assert (audit["status"], audit["action"], audit["target"]) == (415, "ack", aid)


@pytest.mark.parametrize("note_bytes", [20 * 1024 * 1024, 2 * 1024 * 1024, MAX_BODY_BYTES])
async def test_huge_note_is_413_and_nothing_is_stored_or_published(note_bytes: int) -> None:
    """A note past the body limit is refused before parsing; the alert, outbox and audit stay clean."""
    w = make_world()
    aid = w.raise_exclusion()
    before = _snapshot(w, aid)
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/resolve", json={"note": "n" * note_bytes})
        assert r.status_code == 413 and str(MAX_BODY_BYTES) in r.json()["error"]
        audit = await _last_audit(c)
    assert _snapshot(w, aid) == before
    assert audit["status"] == 413 and audit["note"] == ""


async def test_body_is_counted_while_streaming_without_content_length() -> None:
    """A chunked body with no Content-Length is cut off at the limit, not read to the end."""
    w = make_world()
    aid = w.raise_exclusion()
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'{"note": "'
        for _ in range(2000):  # 32 MB if it were all read
            sent += 16 * 1024
            yield b"n" * (16 * 1024)
        yield b'"}'

    before = _snapshot(w, aid)
    async with w.client() as c:
        r = await c.post(
            f"/api/alerts/{aid}/ack",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
    assert r.status_code == 413
    assert _snapshot(w, aid) == before


async def test_a_false_content_length_does_not_lift_the_limit() -> None:
    """Content-Length says 10 bytes, more than the limit arrives: still refused with 413."""
    w = make_world()
    aid = w.raise_exclusion()
    before = _snapshot(w, aid)
    body = b'{"note": "' + b"n" * (MAX_BODY_BYTES + 1024) + b'"}'
    pieces = [body[i : i + 8192] for i in range(0, len(body), 8192)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pieces:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path = f"/api/alerts/{aid}/ack"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await w.server.app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert _snapshot(w, aid) == before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"note": "n" * (MAX_NOTE_CHARS + 1)}, "'note' is 4001 characters"),
        ({"note": "ok", "by": "b" * 201}, "'by'"),
        ({"note": {"nested": "object"}}, "'note' must be a string"),
        ({"note": ["a"]}, "'note' must be a string"),
    ],
)
async def test_action_fields_have_types_and_length_limits(
    body: dict[str, Any], needle: str
) -> None:
    """A note over 4,000 characters (within the body limit) is 422 and never reaches the alert."""
    w = make_world()
    aid = w.raise_exclusion()
    before = _snapshot(w, aid)
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/resolve", json=body)
        assert r.status_code == 422 and needle in r.json()["error"], r.text
        audit = await _last_audit(c)
    assert _snapshot(w, aid) == before
    assert audit["status"] == 422 and len(audit["note"]) <= 500


async def test_a_note_at_the_limit_is_accepted() -> None:
    """Exactly 4,000 characters is still a valid note."""
    w = make_world()
    aid = w.raise_exclusion()
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/ack", json={"note": "é" * MAX_NOTE_CHARS})
    assert r.status_code == 200
    assert w.engine.alerts.alerts[aid].history[-1].note == "é" * MAX_NOTE_CHARS


@pytest.mark.parametrize(
    ("path_fmt", "payload"),
    [
        ("/api/orders/O-1", b"[" * 100_000),  # under the 1 MiB order limit: the parser's recursion
        ("/api/alerts/{aid}/ack", b"[" * 100_000 + b"]" * 100_000),  # the acceptance test's bomb
        ("/api/alerts/{aid}/ack", b'{"note": ' + b"[" * 40 + b"]" * 40 + b"}"),  # parses, too deep
    ],
)
async def test_deeply_nested_json_is_a_json_400_and_audited(path_fmt: str, payload: bytes) -> None:
    """A nesting bomb is a JSON 400 naming the depth limit, audited, never an unaudited 500."""
    w = make_world()
    aid = w.raise_exclusion()
    path = path_fmt.format(aid=aid)
    method = "PUT" if path.startswith("/api/orders") else "POST"
    before = _snapshot(w, aid)
    book = w.engine.book
    async with w.client() as c:
        r = await c.request(
            method, path, content=payload, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, r.text
        assert f"deeper than {MAX_JSON_DEPTH}" in r.json()["error"]
        audit = await _last_audit(c)
    assert (audit["status"], audit["path"]) == (400, path)
    assert _snapshot(w, aid) == before and w.engine.book is book


async def test_order_body_limit_is_larger_but_still_enforced() -> None:
    """An order PUT over 1 MiB is 413 and the book is kept."""
    w = make_world()
    book = w.engine.book
    async with w.client() as c:
        r = await c.put(
            "/api/orders/O-1",
            json={"order": {"subject": "S-1", "pad": "x" * MAX_ORDER_BYTES}},
        )
    assert r.status_code == 413 and w.engine.book is book


async def test_handler_exception_is_a_logged_audited_json_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in an action answers JSON 500, is logged with its traceback and lands in the audit."""
    w = make_world()
    aid = w.raise_exclusion()

    class Broken:
        """The engine with a bug in ``act`` (a proxy: the compiled Engine's methods are read-only)."""

        def __init__(self, engine: object) -> None:
            self.engine = engine

        def __getattr__(self, name: str) -> object:
            return getattr(self.engine, name)

        def act(self, *args: object, **kw: object) -> None:
            raise RuntimeError("bug in act")

    w.service.engine = Broken(w.service.engine)  # type: ignore[assignment]
    async with w.client() as c:
        r = await c.post(f"/api/alerts/{aid}/ack", json={"note": "n"})
        assert r.status_code == 500 and r.json() == {"error": "internal error (logged)"}
        audit = await _last_audit(c)
    assert (audit["status"], audit["action"], audit["note"]) == (500, "ack", "n")
    assert any(
        rec.getMessage() == f"HTTP POST /api/alerts/{aid}/ack failed" and rec.exc_info
        for rec in caplog.records
    )


async def test_unguarded_route_exception_is_a_json_500() -> None:
    """/metrics failing answers JSON 500 instead of dropping the connection."""
    w = make_world()

    def broken() -> tuple[bytes, str]:
        raise RuntimeError("bug in metrics")

    w.server.state.metrics.render = broken  # type: ignore[method-assign]
    async with w.client() as c:
        r = await c.get("/metrics")
    assert r.status_code == 500 and r.json()["error"].startswith("internal error")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/console/missing.js", 404),
        ("POST", "/api/alerts", 405),
        ("DELETE", "/healthz", 405),
    ],
)
async def test_routing_errors_are_json(method: str, path: str, status: int) -> None:
    """404 and 405 come back as {"error": ...} like every other API error."""
    w = make_world()
    async with w.client() as c:
        r = await c.request(method, path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["error"], str)
    if status == 405:
        assert "GET" in r.headers["allow"]


@pytest.mark.parametrize(
    ("method", "path", "token"),
    [
        ("GET", "/", None),
        ("GET", "/console/app.js", None),
        ("GET", "/console/app.css", None),
        ("GET", "/healthz", None),
        ("GET", "/openapi.json", None),
        ("GET", "/api/alerts", OP_TOKEN),
        ("GET", "/api/alerts", None),  # 401
        ("POST", "/api/alerts/A-none/ack", OP_TOKEN),  # 415
        ("GET", "/nowhere", None),  # 404
    ],
)
async def test_every_response_has_the_security_headers(
    method: str, path: str, token: str | None
) -> None:
    """no-store, CSP, DENY, nosniff, no-referrer on pages, assets, API answers and errors."""
    w = make_world(tokens=TOKENS)
    async with w.client(token) as c:
        r = await c.request(method, path)
    expected = dict(SECURITY_HEADERS)
    if path == "/":  # the console page alone may load map tiles, from the tile host only
        expected["content-security-policy"] = console_policy(w.server.state.tiles)
    for name, value in expected.items():
        assert r.headers.get(name) == value, (path, name, r.headers.get(name))
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["content-security-policy"]


def test_console_needs_nothing_the_policy_forbids() -> None:
    """No inline script, style, event handler or eval in the console: it runs under 'self' only."""
    html = (CONSOLE_DIR / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert "<style" not in html and not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    js = (CONSOLE_DIR / "app.js").read_text(encoding="utf-8")
    assert "eval(" not in js and "new Function" not in js and "innerHTML" not in js
    assert not re.search(r"setAttribute\(\s*['\"](style|on[a-z]+)['\"]", js)


def test_openapi_states_the_limits_the_api_enforces() -> None:
    """The documented maxLength of an action's note and by are the enforced ones."""
    from engine.runtime.acks import MAX_NAME_CHARS
    from engine.web.openapi import openapi_schema

    body = openapi_schema()["components"]["schemas"]["ActionBody"]["properties"]
    assert body["note"]["maxLength"] == MAX_NOTE_CHARS
    assert body["by"]["maxLength"] == MAX_NAME_CHARS
    responses = openapi_schema()["paths"]["/api/alerts/{id}/ack"]["post"]["responses"]
    assert {"413", "415", "422", "500"} <= set(responses)
