"""HTTP routes of the monitoring centre: alerts, actions, orders, devices, zones, audit, stream.

Handlers are thin: they read the engine's in-memory state (the engine runs on
the same event loop, so no locking is needed) and act through
``Service.act`` / ``Engine.set_orders`` so an action over HTTP is published
exactly like one over ``em/ack``.  Views of engine state live in
``engine.web.views``; auth and the audit trail in ``engine.web.auth``.

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

import copy
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from devices.timeutil import format_time, parse_time
from engine.core.alert_records import LEVEL_RANK, AlertActionError, AlertActionInvalid
from engine.core.enforceability import check_orders
from engine.core.orders_load import load_orders
from engine.errors import EngineError
from engine.web import views
from engine.web.auth import Principal
from engine.web.console_map import TIMEZONE, VENDOR_URL
from engine.web.edge import (
    ApiState,
    BadRequest,
    SecurityHeaders,
    alert_stream,
    check_fields,
    console_policy,
    error,
    http_error,
    server_error,
)
from engine.web.guard import Guard
from engine.web.openapi import openapi_schema
from engine.web.victim_api import victim_app
from geo.errors import GeoError

log = logging.getLogger(__name__)

CONSOLE_DIR = views.CONSOLE_DIR
# route name -> engine action; ``resolve`` is the older name of ``close``
ACTIONS = {
    "claim": "claim", "ack": "ack", "escalate": "escalate", "note": "note", "close": "close",
    "resolve": "close", "prompt": "prompt",
}

Handler = Callable[[Request], Awaitable[Response]]


def build_app(state: ApiState) -> Starlette:
    """The Starlette application for one running service."""
    service = state.service

    guard = Guard(state.auth, state.audit, service.clock)
    safe, guarded, read_json = guard.safe, guard.guarded, guard.read_json

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
            return error(400, f"bad query parameter: {exc}")
        # an older client's "resolved" is today's "closed"
        states = {"closed" if s == "resolved" else s for s in _csv(q.get("state"))}
        conditions = _csv(q.get("condition"))
        levels = _csv(q.get("level"))
        kinds = _csv(q.get("kind"))
        bad = (levels - set(LEVEL_RANK)) if levels else set()
        if bad:
            return error(400, f"unknown level {sorted(bad)}")
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
            return error(404, f"unknown alert {request.path_params['id']}")
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
            except BadRequest as exc:
                return error(400, str(exc))
            if not isinstance(body, Mapping):
                return error(400, 'body must be a JSON object {"by", "note", "outcome", "target"}')
            if aid not in service.engine.alerts.alerts:
                return error(404, f"unknown alert {aid}")
            problem = check_fields(body)
            if problem:
                return error(422, problem)
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
                return error(422, str(exc))
            except AlertActionError as exc:
                return error(409, str(exc))
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
            return error(404, f"unknown order {request.path_params['id']}")
        doc = views.order_summary(order, service.clock())
        doc["document"] = _doc_order(state.orders_doc, order.id)
        return JSONResponse(doc)

    async def put_order(request: Request, who: Principal) -> Response:
        oid = request.path_params["id"]
        if state.orders_doc is None:
            return error(
                409, "this server was started without the orders document; orders are read-only"
            )
        try:
            body = await read_json(request)
        except BadRequest as exc:
            return error(400, str(exc))
        if not isinstance(body, Mapping):
            return error(400, "body must be a JSON object")
        order = body.get("order", body if "subject" in body else None)
        if not isinstance(order, Mapping):
            return error(400, "body needs 'order' (contract §4 form)")
        order = dict(order)
        if order.setdefault("id", oid) != oid:
            return error(400, f"order id {order['id']!r} does not match the URL ({oid!r})")
        merged = copy.deepcopy(state.orders_doc)
        for key in ("subjects", "protected_persons"):
            extra = body.get(key, []) if order is not body else []
            if not isinstance(extra, list) or not all(isinstance(x, Mapping) for x in extra):
                return error(400, f"{key!r} must be a list of objects")
            merged[key] = _upsert(merged.get(key, []) or [], [dict(x) for x in extra])
        created = _doc_order(merged, oid) is None
        merged["orders"] = _upsert(merged.get("orders", []) or [], [order])
        return _install(merged, oid, 201 if created else 200, check=True)

    async def delete_order(request: Request, who: Principal) -> Response:
        oid = request.path_params["id"]
        if state.orders_doc is None:
            return error(
                409, "this server was started without the orders document; orders are read-only"
            )
        current = _doc_order(state.orders_doc, oid)
        if current is None or oid not in service.engine.book.orders:
            return error(404, f"unknown order {oid}")
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
            return error(422, str(exc))
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
        return alert_stream(state)

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
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )


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
