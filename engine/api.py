"""HTTP routes of the monitoring centre: alerts, actions, orders, devices, zones, audit, stream.

Handlers are thin: they read the engine's in-memory state (the engine runs on
the same event loop, so no locking is needed) and act through
``Service.act`` / ``Engine.set_orders`` so an action over HTTP is published
exactly like one over ``em/ack``.  Views of engine state live in
``engine.views``; auth and the audit trail in ``engine.auth``.

No request may stop alerting or slip past the audit trail (issue 21), so the
edge is strict and every failure is a JSON answer:

* bodies of POST/PUT must be ``application/json`` (415 otherwise): an HTML
  form or a ``text/plain`` fetch from another site cannot be JSON without a
  CORS preflight, which this server never grants, so an operator's browser
  cannot be used to ack or close an alert behind his back (CSRF);
* bodies are counted as they stream in and refused past ``MAX_BODY_BYTES``
  (``MAX_ORDER_BYTES`` for orders) with 413, whatever Content-Length claims;
* JSON nested deeper than ``MAX_JSON_DEPTH`` (or deep enough to exhaust the
  parser's recursion) is a 400, and action fields have length limits (422),
  so a huge note is never stored, published or written to the evidence log;
* an unexpected exception in a handler is logged and answered with a JSON
  500, and on mutating routes audited like any other outcome;
* 404 and 405 are JSON, and every response carries ``SECURITY_HEADERS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine import views
from engine.acks import MAX_NAME_CHARS, MAX_NOTE_CHARS  # the same limits as em/ack
from engine.alerts import LEVEL_RANK, AlertActionError, AlertActionInvalid
from engine.auth import AuditEntry, AuditTrail, Authenticator, Principal
from engine.console_map import PDOK, TIMEZONE, VENDOR_URL, MapTiles
from engine.enforceability import check_orders
from engine.errors import EngineError
from engine.metrics import EngineMetrics
from engine.openapi import openapi_schema
from engine.orders import load_orders
from engine.pipeline import Effects
from engine.service import Service
from engine.timeutil import format_time, parse_time
from engine.victim_api import victim_app
from geo.errors import GeoError

log = logging.getLogger(__name__)

CONSOLE_DIR = views.CONSOLE_DIR
# route name -> engine action; ``resolve`` is the older name of ``close``
ACTIONS = {
    "claim": "claim", "ack": "ack", "escalate": "escalate", "note": "note", "close": "close",
    "resolve": "close",
}
STREAM_QUEUE = 1000
HEARTBEAT_S = 15.0

# an action body: a 4,000-character note fully \u-escaped is 24 KB; the margin lets a nesting bomb
# of a few hundred KB be parsed and answered 400 (named as such) instead of only "too large"
MAX_BODY_BYTES = 256 * 1024
MAX_ORDER_BYTES = 1024 * 1024  # an order with its zones (a detailed polygon is ~25 B a vertex)
MAX_JSON_DEPTH = 32  # orders nest ~8 deep; deeper is an attack on the recursive code after us

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "cache-control": "no-store",  # alerts and positions must not linger in caches
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}

Handler = Callable[[Request], Awaitable[Response]]


def console_policy(tiles: MapTiles) -> str:
    """The console page's CSP: ``CONTENT_SECURITY_POLICY`` with the tile host (and only it)
    added to ``img-src``, so the map's background can load while scripts, styles and
    connections stay ``'self'``.  Every other response keeps the strict policy."""
    origin = tiles.origin
    if origin is None:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace("img-src 'self' data:", f"img-src 'self' data: {origin}")


@dataclass(slots=True)
class ApiState:
    """What the routes share: the service, the orders document, auth, audit, metrics, streams."""

    service: Service
    orders_doc: dict[str, Any] | None
    auth: Authenticator
    metrics: EngineMetrics
    audit: AuditTrail = field(default_factory=AuditTrail)
    streams: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    closing: bool = False
    # listeners of sub-applications (the victim app's feed), removed with the server's own
    listeners: list[Callable[[Effects, float], None]] = field(default_factory=list)
    tiles: MapTiles = PDOK  # the console map's background (engine.console_map)
    vendor: Path | None = None  # Leaflet's dist folder, None when `npm ci` was not run

    def on_effects(self, effects: Effects, now: float) -> None:
        """Service listener: fan every alert change out to the open SSE streams."""
        for change in effects.changes:
            event = {"change": change.change, "alert": views.alert_summary(change.alert, now)}
            for queue in list(self.streams):
                if queue.full():  # a stalled browser: tell it to reload instead of growing
                    with contextlib.suppress(asyncio.QueueEmpty):
                        while True:
                            queue.get_nowait()
                    queue.put_nowait({"change": "resync"})
                queue.put_nowait(event)

    def close_streams(self) -> None:
        """End every SSE response so the server can stop."""
        self.closing = True
        for queue in list(self.streams):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class SecurityHeaders:
    """ASGI middleware adding ``SECURITY_HEADERS`` to every response that lacks them.

    Pure ASGI (not ``BaseHTTPMiddleware``) so the SSE stream is not buffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through; add the headers at ``http.response.start``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def build_app(state: ApiState) -> Starlette:
    """The Starlette application for one running service."""
    service = state.service

    def safe(handler: Callable[[Request], Awaitable[Response]]) -> Handler:
        """Run an unauthenticated handler; an unexpected exception is a logged JSON 500."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.url.path)
                return _error(500, "internal error (logged)")

        return endpoint

    def guarded(
        role: str, action: str, handler: Callable[[Request, Principal], Awaitable[Response]]
    ) -> Handler:
        """Authenticate, check the role, run, and audit mutating calls (also refused ones)."""

        async def endpoint(request: Request) -> Response:
            header = request.headers.get("authorization")
            if (
                header is None
                and request.url.path == "/api/stream"
                and "access_token" in request.query_params
            ):
                header = (
                    "Bearer " + request.query_params["access_token"]
                )  # EventSource cannot set headers
            who = state.auth.identify(header)
            mutating = request.method in ("POST", "PUT", "DELETE")
            if who is None:
                response: Response = _error(401, "missing or unknown bearer token")
                response.headers["www-authenticate"] = "Bearer"
            elif not who.may(role):
                response = _error(403, f"{who.role} may not {action}")
            else:
                try:
                    refused = await admit_body(request)
                    response = refused or await handler(request, who)
                except Exception:  # a bug must answer, and be audited, not vanish in a 500 page
                    log.exception("HTTP %s %s failed", request.method, request.url.path)
                    response = _error(500, "internal error (logged)")
            if mutating:
                note = ""
                body = getattr(request.state, "body", None)
                if isinstance(body, Mapping) and isinstance(body.get("note"), str):
                    note = body["note"][:500]
                state.audit.record(
                    AuditEntry(
                        at=service.clock(),
                        user=who.name if who else "-",
                        role=who.role if who else "-",
                        method=request.method,
                        path=request.url.path,
                        action=action,
                        target=str(request.path_params.get("id", "")),
                        status=response.status_code,
                        note=note,
                    )
                )
            return response

        return endpoint

    async def admit_body(request: Request) -> Response | None:
        """Refuse a POST/PUT body that is not JSON (415) or too large (413); keep it otherwise.

        The body is counted while it streams in, so a missing or false
        Content-Length cannot get more than the limit into memory.
        """
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return _error(415, "request body must be application/json")
        limit = MAX_ORDER_BYTES if request.url.path.startswith("/api/orders") else MAX_BODY_BYTES
        too_large = _error(413, f"request body larger than {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return too_large if declared.isdigit() else _error(400, "bad Content-Length")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
        request.state.raw_body = b"".join(chunks)
        return None

    async def read_json(request: Request) -> Any:
        raw: bytes = getattr(request.state, "raw_body", b"")
        if not raw.strip():
            body: Any = {}
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise _BadRequest(f"body is not JSON: {exc}") from exc
            except RecursionError as exc:
                raise _BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels") from exc
            if _depth_exceeds(body, MAX_JSON_DEPTH):
                raise _BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
        request.state.body = body
        return body

    # --- health --------------------------------------------------------------------------
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        # ready: messages reach us, alerts can leave, the store answers, every task runs,
        # nothing waits too long (Service.readiness says which of these fails)
        doc = service.readiness()
        # never a reason to be unready, but the console's header shows it to the operators
        doc["dead_letters"] = state.metrics.dead_letter_total()
        return JSONResponse(doc, status_code=200 if doc["ready"] else 503)

    # --- alerts --------------------------------------------------------------------------
    async def list_alerts(request: Request, who: Principal) -> Response:
        q = request.query_params
        now = service.clock()
        try:
            since = parse_time(q["since"]) if q.get("since") else None
            limit = int(q.get("limit", "500"))
        except ValueError as exc:
            return _error(400, f"bad query parameter: {exc}")
        # an older client's "resolved" is today's "closed"
        states = {"closed" if s == "resolved" else s for s in _csv(q.get("state"))}
        conditions = _csv(q.get("condition"))
        levels = _csv(q.get("level"))
        kinds = _csv(q.get("kind"))
        bad = (levels - set(LEVEL_RANK)) if levels else set()
        if bad:
            return _error(400, f"unknown level {sorted(bad)}")
        out = []
        for alert in service.engine.alerts.alerts.values():
            if states and alert.state not in states:
                continue
            if conditions and alert.condition not in conditions:
                continue
            if levels and alert.level not in levels:
                continue
            if kinds and alert.kind not in kinds:
                continue
            if q.get("subject") and alert.subject != q["subject"]:
                continue
            if since is not None and (alert.updated_at or alert.raised_at) < since:
                continue
            out.append(alert)
        out.sort(key=views.queue_order)
        return JSONResponse(
            {
                "alerts": [views.alert_summary(a, now) for a in out[: max(0, limit)]],
                "total": len(out),
                "now": format_time(now),
            }
        )

    async def get_alert(request: Request, who: Principal) -> Response:
        alert = service.engine.alerts.alerts.get(request.path_params["id"])
        if alert is None:
            return _error(404, f"unknown alert {request.path_params['id']}")
        return JSONResponse(
            views.alert_detail(service.engine, alert, service.clock(), state.orders_doc)
        )

    async def whoami(request: Request, who: Principal) -> Response:
        # the console shows who is logged in and enables only what this role may do
        return JSONResponse({
            "name": who.name,
            "role": who.role,
            "may_act": who.may("operator"),
            "may_take_over": who.may("supervisor"),
            "may_edit_orders": who.may("supervisor"),
            "outcomes": list(service.engine.alerts.policy.outcomes),
        })

    def action_handler(action: str) -> Callable[[Request, Principal], Awaitable[Response]]:
        async def act(request: Request, who: Principal) -> Response:
            aid = request.path_params["id"]
            try:
                body = await read_json(request)
            except _BadRequest as exc:
                return _error(400, str(exc))
            if not isinstance(body, Mapping):
                return _error(400, 'body must be a JSON object {"by", "note", "outcome", "target"}')
            if aid not in service.engine.alerts.alerts:
                return _error(404, f"unknown alert {aid}")
            problem = _check_fields(body)
            if problem:
                return _error(422, problem)
            by = str(body.get("by") or who.name) if who.demo else who.name
            try:
                # through Engine.act like em/ack, then published like every other change; the
                # role is known here (a supervisor may take over another operator's claim)
                effects = service.engine.act(
                    aid, action, by, body.get("note") or "", service.clock(),
                    outcome=body.get("outcome") or "", target=body.get("target") or "",
                    supervisor=who.may("supervisor"),
                )
            except AlertActionInvalid as exc:
                return _error(422, str(exc))
            except AlertActionError as exc:
                return _error(409, str(exc))
            service.apply(effects)
            alert = (
                effects.changes[-1].alert if effects.changes else service.engine.alerts.alerts[aid]
            )
            return JSONResponse(views.alert_summary(alert, service.clock()))

        return act

    # --- orders --------------------------------------------------------------------------
    async def list_orders(request: Request, who: Principal) -> Response:
        book = service.engine.book
        now = service.clock()
        return JSONResponse(
            {
                "orders": [
                    views.order_summary(o, now)
                    for o in sorted(book.orders.values(), key=lambda o: o.id)
                ]
            }
        )

    async def get_order(request: Request, who: Principal) -> Response:
        order = service.engine.book.orders.get(request.path_params["id"])
        if order is None:
            return _error(404, f"unknown order {request.path_params['id']}")
        doc = views.order_summary(order, service.clock())
        doc["document"] = _doc_order(state.orders_doc, order.id)
        return JSONResponse(doc)

    async def put_order(request: Request, who: Principal) -> Response:
        oid = request.path_params["id"]
        if state.orders_doc is None:
            return _error(
                409, "this server was started without the orders document; orders are read-only"
            )
        try:
            body = await read_json(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        if not isinstance(body, Mapping):
            return _error(400, "body must be a JSON object")
        order = body.get("order", body if "subject" in body else None)
        if not isinstance(order, Mapping):
            return _error(400, "body needs 'order' (contract §4 form)")
        order = dict(order)
        if order.setdefault("id", oid) != oid:
            return _error(400, f"order id {order['id']!r} does not match the URL ({oid!r})")
        merged = copy.deepcopy(state.orders_doc)
        for key in ("subjects", "protected_persons"):
            extra = body.get(key, []) if order is not body else []
            if not isinstance(extra, list) or not all(isinstance(x, Mapping) for x in extra):
                return _error(400, f"{key!r} must be a list of objects")
            merged[key] = _upsert(merged.get(key, []) or [], [dict(x) for x in extra])
        created = _doc_order(merged, oid) is None
        merged["orders"] = _upsert(merged.get("orders", []) or [], [order])
        return _install(merged, oid, 201 if created else 200, check=True)

    async def delete_order(request: Request, who: Principal) -> Response:
        oid = request.path_params["id"]
        if state.orders_doc is None:
            return _error(
                409, "this server was started without the orders document; orders are read-only"
            )
        current = _doc_order(state.orders_doc, oid)
        if current is None or oid not in service.engine.book.orders:
            return _error(404, f"unknown order {oid}")
        now = service.clock()
        order = service.engine.book.orders[oid]
        merged = copy.deepcopy(state.orders_doc)
        if order.valid_from >= now:
            # never in force: nothing can refer to it, so it is withdrawn entirely
            merged["orders"] = [o for o in merged["orders"] if o.get("id") != oid]
        else:
            ended = dict(current, valid_until=format_time(min(now, order.valid_until)))
            merged["orders"] = _upsert(merged["orders"], [ended])
        return _install(merged, oid, 200)

    def _install(
        merged: dict[str, Any], oid: str, status: int, *, check: bool = False
    ) -> Response:
        try:
            book = load_orders(merged)
        except (EngineError, GeoError) as exc:
            return _error(422, str(exc))
        if check:
            # the checks `emguard orders check` blocks on, for the order being put: an order
            # the centre cannot enforce must not go live through the API either
            found = check_orders(book, service.clock(), service.engine.projector, only=oid)
            blocking = [f for f in found if f.severity == "blocking"]
            if blocking:
                return JSONResponse(
                    {
                        "error": "order is not enforceable: " + "; ".join(
                            f"{f.code}{' (' + f.zone + ')' if f.zone else ''}: {f.message}"
                            for f in blocking
                        ),
                        "findings": [
                            {"code": f.code, "zone": f.zone, "message": f.message}
                            for f in blocking
                        ],
                    },
                    status_code=422,
                )
        service.engine.set_orders(book)
        state.orders_doc = merged
        log.info("orders changed: %s (%d orders in force)", oid, len(book.orders))
        order = book.orders.get(oid)
        body = (
            views.order_summary(order, service.clock()) if order else {"id": oid, "withdrawn": True}
        )
        return JSONResponse(body, status_code=status)

    # --- devices, zones, audit, metrics ----------------------------------------------------
    async def list_devices(request: Request, who: Principal) -> Response:
        return JSONResponse({"devices": views.devices(service.engine, service.clock())})

    async def list_zones(request: Request, who: Principal) -> Response:
        return JSONResponse({"zones": views.zones(service.engine, service.clock())})

    async def audit(request: Request, who: Principal) -> Response:
        return JSONResponse({"audit": state.audit.recent()})

    async def metrics(request: Request) -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def console(request: Request) -> Response:
        return FileResponse(
            CONSOLE_DIR / "index.html",
            media_type="text/html",
            headers={"content-security-policy": console_policy(state.tiles)},
        )

    async def console_config(request: Request) -> Response:
        # read by the page (no inline script under the CSP): nothing in it is secret
        return JSONResponse({
            "tiles": state.tiles.to_json(),
            "leaflet": VENDOR_URL if state.vendor is not None else None,
            "timezone": TIMEZONE,
        })

    # --- stream --------------------------------------------------------------------------
    async def stream(request: Request, who: Principal) -> Response:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)
        state.streams.add(queue)

        async def events() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n: connected\n\n"
                while not state.closing:
                    try:
                        item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
                        continue
                    if item is None:
                        return
                    yield f"event: alert\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"
            finally:
                state.streams.discard(queue)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    read = "read-only"
    vendor = (
        [Mount(VENDOR_URL.rstrip("/"), app=StaticFiles(directory=str(state.vendor)), name="leaflet")]
        if state.vendor is not None
        else []
    )
    routes = [
        Route("/", safe(console), methods=["GET"]),
        Route("/console/config.json", safe(console_config), methods=["GET"]),
        *vendor,
        Route("/healthz", safe(healthz), methods=["GET"]),
        Route("/readyz", safe(readyz), methods=["GET"]),
        Route("/metrics", safe(metrics), methods=["GET"]),
        Route("/openapi.json", safe(openapi), methods=["GET"]),
        Route("/api/me", guarded(read, "read alerts", whoami), methods=["GET"]),
        Route("/api/alerts", guarded(read, "read alerts", list_alerts), methods=["GET"]),
        Route("/api/alerts/{id}", guarded(read, "read alerts", get_alert), methods=["GET"]),
        *[
            Route(
                f"/api/alerts/{{id}}/{name}",
                guarded("operator", name, action_handler(action)),
                methods=["POST"],
            )
            for name, action in ACTIONS.items()
        ],
        Route("/api/orders", guarded(read, "read orders", list_orders), methods=["GET"]),
        Route("/api/orders/{id}", guarded(read, "read orders", get_order), methods=["GET"]),
        Route(
            "/api/orders/{id}", guarded("supervisor", "change orders", put_order), methods=["PUT"]
        ),
        Route(
            "/api/orders/{id}",
            guarded("supervisor", "end orders", delete_order),
            methods=["DELETE"],
        ),
        Route("/api/devices", guarded(read, "read devices", list_devices), methods=["GET"]),
        Route("/api/zones", guarded(read, "read zones", list_zones), methods=["GET"]),
        Route("/api/audit", guarded("operator", "read the audit trail", audit), methods=["GET"]),
        Route("/api/stream", guarded(read, "read alerts", stream), methods=["GET"]),
        Mount("/console", app=StaticFiles(directory=str(CONSOLE_DIR)), name="console"),
        Mount("/victim", app=victim_app(state), name="victim"),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and other routing errors as JSON (with Starlette's ``Allow`` header on 405)."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return _error(500, "internal error (logged)")
    response = _error(exc.status_code, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def _server_error(request: Request, exc: Exception) -> Response:
    """Last resort outside any handler: Starlette logs the exception, the caller gets JSON."""
    return _error(500, "internal error (logged)")


def _check_fields(body: Mapping[str, Any]) -> str | None:
    """Why an action body's fields are unacceptable, or None: types and length limits."""
    for key, limit in (
        ("note", MAX_NOTE_CHARS),
        ("by", MAX_NAME_CHARS),
        ("outcome", MAX_NAME_CHARS),
        ("target", MAX_NAME_CHARS),
    ):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{key!r} must be a string"
        if len(value) > limit:
            return f"{key!r} is {len(value)} characters; at most {limit} are accepted"
    return None


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class _BadRequest(Exception):
    """A request body that is not JSON, or nests too deeply."""


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if value else set()


def _doc_order(doc: Mapping[str, Any] | None, oid: str) -> dict[str, Any] | None:
    for o in (doc or {}).get("orders", []) or []:
        if isinstance(o, Mapping) and o.get("id") == oid:
            return dict(o)
    return None


def _upsert(items: list[Any], new: list[dict[str, Any]]) -> list[Any]:
    """Replace entries with the same id, append the rest (order preserved)."""
    out = list(items)
    for item in new:
        for i, old in enumerate(out):
            if isinstance(old, Mapping) and old.get("id") == item.get("id"):
                out[i] = item
                break
        else:
            out.append(item)
    return out
