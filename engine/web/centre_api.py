"""The centre's HTTP API and console on a NATS worker: every alert, whoever owns it.

A NATS worker evaluates only the partitions it owns, so its routes read the centre-wide view
(``engine.runtime.centre_view``, fed from ``EM_OUT``) instead of an engine, and an operator
action is not applied here: it is checked as on a single node (auth, role, body limits, field
limits, the alert exists, a close of an alarm has an outcome and a note), sent as an ``em/ack``
message (the authenticated operator as ``by``) and applied by the alert's owner.  The request
then waits (``ACTION_WAIT_S``) for the change to come back through the view and answers with it;
a refusal by the owner is a 409 with its reason, no result in time a 504.

Same routes, auth, audit and console as ``engine.web.api``.  Device health and latest positions
come from the owners' per-partition snapshots (``engine.runtime.device_view``, a period old at
most, each device with ``as_of`` and ``owner``).  What only an alert's owner holds (device
tracks, evidence positions) is not shown centre-wide yet: those answers say so
(``unavailable``) instead of being silently empty.  Orders are read-only here (every worker
loads the same orders file).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from devices.timeutil import format_time, parse_time
from engine.core.alert_records import ALARM_RANK, LEVEL_RANK
from engine.core.pipeline import Engine
from engine.runtime.acks import MAX_ACK_BYTES
from engine.runtime.centre_view import CentreView, Seen, payload_key
from engine.web import views
from engine.web.auth import AuditTrail, Authenticator, Principal
from engine.web.console_map import PDOK, TIMEZONE, VENDOR_URL, MapTiles
from engine.web.edge import (
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

log = logging.getLogger(__name__)

ACTIONS = {"claim": "claim", "ack": "ack", "escalate": "escalate", "note": "note", "close": "close",
           "resolve": "close"}
ACTION_WAIT_S = 5.0
OWNER_ONLY = ("device tracks and positions are held by the worker that owns the case; "
              "a NATS worker's centre-wide view does not show them yet")
TRACKS_OWNER_ONLY = ("device tracks are held by the worker that owns the case and not shown "
                     "centre-wide yet; the latest positions come from the owner's device snapshot (as_of)")


@dataclass(slots=True)
class CentreState:
    """What the centre routes share: the view, a reference engine, auth, audit, streams.

    ``reference`` is an engine over the whole order book that is never fed: it gives the order,
    zone and case views and the alert policy, the same on every worker.  ``readiness`` is the
    worker's own state (connected, set up, partitions held).
    """

    view: CentreView
    reference: Engine
    auth: Authenticator
    readiness: Callable[[], dict[str, Any]]
    orders_doc: dict[str, Any] | None = None
    clock: Callable[[], float] = time.time
    audit: AuditTrail = field(default_factory=AuditTrail)
    streams: set[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=set)
    closing: bool = False
    tiles: MapTiles = PDOK
    vendor: Any = None  # Leaflet's dist folder (a Path), None when `npm ci` was not run

    def on_change(self, change: str, seen: Seen) -> None:
        """View listener: fan every alert change out to the open SSE streams."""
        if not self.streams:  # every worker follows every change: no summary nobody reads
            return
        event = {"change": change, "alert": seen.summary(self.clock())}
        for queue in list(self.streams):
            if queue.full():  # a stalled browser: tell it to reload instead of growing
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"change": "resync"})
            queue.put_nowait(event)

    def close_streams(self) -> None:
        self.closing = True
        for queue in list(self.streams):
            if not queue.full():
                queue.put_nowait(None)


def build_centre_app(state: CentreState) -> Starlette:
    """The Starlette application of one NATS worker's centre-wide view."""
    view, ref = state.view, state.reference
    guard = Guard(state.auth, state.audit, state.clock)
    safe, guarded = guard.safe, guard.guarded
    state.view.listeners.append(state.on_change)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        doc = dict(state.readiness())
        doc["centre_view_caught_up"] = view.caught_up
        doc["centre_view_alerts"] = len(view.alerts)
        doc["ready"] = bool(doc.get("ready")) and view.caught_up
        return JSONResponse(doc, status_code=200 if doc["ready"] else 503)

    async def metrics(request: Request) -> Response:
        by_state: dict[str, int] = {}
        for seen in view.alerts.values():
            key = str(seen.doc.get("state"))
            by_state[key] = by_state.get(key, 0) + 1
        lines = ["# HELP emguard_centre_alerts Alerts in the centre-wide view by state.",
                 "# TYPE emguard_centre_alerts gauge"]
        lines += [f'emguard_centre_alerts{{state="{k}"}} {v}' for k, v in sorted(by_state.items())]
        lines += ["# HELP emguard_centre_view_changes_total Alert changes taken into the view.",
                  "# TYPE emguard_centre_view_changes_total counter",
                  f"emguard_centre_view_changes_total {view.changes}",
                  "# HELP emguard_centre_view_caught_up 1 once the view read EM_OUT to its end.",
                  "# TYPE emguard_centre_view_caught_up gauge",
                  f"emguard_centre_view_caught_up {int(view.caught_up)}"]
        worker = state.readiness()  # this worker's own partitions and counters
        for name, help_text in (("processed", "Messages this worker evaluated."),
                                ("published", "Outgoing messages this worker published."),
                                ("fenced", "Partitions this worker dropped when fenced.")):
            if isinstance(worker.get(name), int):
                lines += [f"# HELP emguard_worker_{name}_total {help_text}",
                          f"# TYPE emguard_worker_{name}_total counter", f"emguard_worker_{name}_total {worker[name]}"]
        lines += ["# HELP emguard_worker_partitions Partitions this worker owns.",
                  "# TYPE emguard_worker_partitions gauge",
                  f"emguard_worker_partitions {len(worker.get('partitions') or [])}"]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def list_alerts(request: Request, who: Principal) -> Response:
        q = request.query_params
        now = state.clock()
        try:
            since = parse_time(q["since"]) if q.get("since") else None
            limit = int(q.get("limit", "500"))
        except ValueError as exc:
            return error(400, f"bad query parameter: {exc}")
        states = {"closed" if s == "resolved" else s for s in _csv(q.get("state"))}
        conditions, levels, kinds = _csv(q.get("condition")), _csv(q.get("level")), _csv(q.get("kind"))
        bad = (levels - set(LEVEL_RANK)) if levels else set()
        if bad:
            return error(400, f"unknown level {sorted(bad)}")
        out = []
        for seen in view.alerts.values():
            d = seen.doc
            if (states and d.get("state") not in states) or (conditions and d.get("condition") not in conditions) \
                    or (levels and d.get("level") not in levels) or (kinds and d.get("kind") not in kinds) \
                    or (q.get("subject") and d.get("subject") != q["subject"]):
                continue
            if since is not None and parse_time(str(d.get("updated_at") or d.get("raised_at"))) < since:
                continue
            out.append(seen)
        out.sort(key=Seen.queue_key)
        return JSONResponse({"alerts": [s.summary(now) for s in out[: max(0, limit)]], "total": len(out),
                             "now": format_time(now), "centre_view": _coverage()})

    def _coverage() -> dict[str, Any]:
        return {"caught_up": view.caught_up, "alerts": len(view.alerts)}

    async def get_alert(request: Request, who: Principal) -> Response:
        seen = view.alerts.get(request.path_params["id"])
        if seen is None:
            return error(404 if view.caught_up else 503, f"unknown alert {request.path_params['id']}"
                         + ("" if view.caught_up else " (the centre view is still catching up)"))
        return JSONResponse(await detail(seen))

    async def detail(seen: Seen) -> dict[str, Any]:
        now = state.clock()
        doc = seen.summary(now)
        record = None
        if view.archive is not None:
            try:
                record = await view.archive(seen.doc["alert_id"])
            except Exception:  # the store is down: the alert still shows, without its history
                log.warning("centre view: the record of %s could not be read", seen.doc["alert_id"], exc_info=True)
        history = list(record.get("history", [])) if record else []
        for h in history:
            if isinstance(h.get("at"), int | float):
                h["at"] = format_time(float(h["at"]))
        doc["history"] = history
        doc["notes"] = [{"at": h["at"], "by": h.get("by"), "note": h.get("note"), "action": h.get("action") or h.get("state")}
                        for h in history if h.get("by") != "engine" and h.get("note")]
        kind = str(doc.get("kind"))
        policy = ref.alerts.policy
        doc["procedure"] = {"escalation_targets": list(policy.targets_for(kind)),
                            "outcomes": list(policy.outcomes), "script": list(policy.script_for(kind))}
        doc["evidence_fixes"] = [{"key": k, "device": k.rsplit(":", 1)[0], "found": False}
                                 for k in (doc.get("evidence") or {}).get("fixes", [])]
        order = ref.book.orders.get(str(doc.get("order") or ""))
        latest = _latest(doc, now)
        doc["map"] = {"crs": ref.config.crs, "tracks": {}, "latest": latest,
                      "order_zones": [z.zone_id for z in order.zones] if order else [],
                      "zone": doc.get("zone"), "victim_area": _victim_area(doc, order, latest),
                      "unavailable": TRACKS_OWNER_ONLY}
        doc["case"] = _case(doc, now)
        doc["unavailable"] = {"map": TRACKS_OWNER_ONLY, "evidence_fixes": OWNER_ONLY}
        if record is None:
            doc["unavailable"]["history"] = "the alert's record could not be read from the store"
        return doc

    def _latest(doc: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """The latest position of every device of the alert's people, as a single node's
        ``map.latest`` (``views.alert_map``) but from the owners' device snapshots, so each also
        says ``as_of`` and ``owner``: the owner's engine may hold a fix up to a period newer."""
        book = ref.book
        people = (book.subjects.get(str(doc.get("subject") or "")),
                  book.protected_persons.get(str(doc.get("protected_person") or "")))
        devices = [d for p in people if p is not None for d in p.devices]
        if doc.get("device") and doc["device"] not in devices:
            devices.append(str(doc["device"]))
        out = []
        for d in devices:
            r = view.devices.record(d, now)
            pos = r.get("position") if r else None
            if r is None or not isinstance(pos, dict):
                continue
            out.append(dict(pos, t=r.get("last_fix_time"), acc=r.get("accuracy_m"), src=r.get("src"), device=d,
                            role=r.get("role"), person=r.get("person"),
                            **views.rd_new(float(pos["lon"]), float(pos["lat"])),
                            as_of=r.get("as_of"), owner=r.get("owner")))
        return out

    def _victim_area(doc: dict[str, Any], order: Any, latest: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The protected person's freshest position with the order's distances (as a single node)."""
        pid = doc.get("protected_person")
        rule = next((r for r in order.proximity if r.protected_person == pid), None) if order and pid else None
        person = ref.book.protected_persons.get(str(pid)) if pid else None
        mine = [p for p in latest if person is not None and p["device"] in person.devices and p.get("t")]
        if rule is None or not mine:
            return None
        p = max(mine, key=lambda q: str(q["t"]))
        return {"x": p["x"], "y": p["y"], "lat": p["lat"], "lon": p["lon"],
                "alert_m": rule.alert_m, "warn_m": rule.warn_m, "t": p["t"]}

    def _case(doc: dict[str, Any], now: float) -> dict[str, Any]:
        book, people = ref.book, (state.orders_doc or {})

        def person(kind: str, pid: Any) -> dict[str, Any] | None:
            if not pid:
                return None
            known = book.subjects.get(pid) if kind == "subjects" else book.protected_persons.get(pid)
            raw = next((p for p in people.get(kind, []) or [] if isinstance(p, dict) and p.get("id") == pid), {})
            entry: dict[str, Any] = {"id": pid, "devices": list(known.devices) if known else []}
            for key in views.PERSON_FIELDS:
                value = raw.get(key)
                entry[key] = str(value) if isinstance(value, str | int | float) and value != "" else None
            return entry

        order = book.orders.get(str(doc.get("order") or ""))
        return {"subject": person("subjects", doc.get("subject")),
                "protected_person": person("protected_persons", doc.get("protected_person")),
                "order": views.order_summary(order, now) if order is not None else None}

    async def whoami(request: Request, who: Principal) -> Response:
        return JSONResponse({"name": who.name, "role": who.role, "may_act": who.may("operator"),
                             "may_take_over": False, "may_edit_orders": False,
                             "outcomes": list(ref.alerts.policy.outcomes), "centre_view": True})

    def action_handler(action: str) -> Callable[[Request, Principal], Any]:
        async def act(request: Request, who: Principal) -> Response:
            aid = request.path_params["id"]
            try:
                body = await guard.read_json(request)
            except BadRequest as exc:
                return error(400, str(exc))
            if not isinstance(body, dict):
                return error(400, 'body must be a JSON object {"by", "note", "outcome", "target"}')
            seen = view.alerts.get(aid)
            if seen is None:
                return error(404 if view.caught_up else 503, f"unknown alert {aid}")
            problem = check_fields(body) or _invalid(action, seen, body)
            if problem:
                return error(422, problem)
            by = str(body.get("by") or who.name) if who.demo else who.name
            command = {"alert_id": aid, "action": action, "by": by, "note": body.get("note") or "",
                       "outcome": body.get("outcome") or "", "target": body.get("target") or ""}
            payload = json.dumps(command, ensure_ascii=False, separators=(",", ":")).encode()
            if len(payload) > MAX_ACK_BYTES:
                return error(413, f"the action is {len(payload)} bytes as em/ack; at most {MAX_ACK_BYTES}")
            if view.send is None:
                return error(503, "this worker is not connected to the cluster; the action was not sent")
            try:
                await view.send(payload)
            except Exception as exc:  # the cluster did not store it: nothing was sent
                return error(503, f"the action could not be sent to the cluster: {exc!r}")
            changed, refused = await view.outcome(aid, seen.seq, by, payload_key(payload), ACTION_WAIT_S)
            if changed is not None:
                return JSONResponse(changed.summary(state.clock()))
            if refused is not None:
                return error(409, f"refused by the alert's owner: {refused.get('detail') or refused.get('reason')}")
            return error(504, f"the {action} was sent to the alert's owner, but its result was not seen "
                              f"within {ACTION_WAIT_S:g} s; the alert list shows it once applied")

        return act

    def _invalid(action: str, seen: Seen, body: dict[str, Any]) -> str | None:
        """What the owner's engine would refuse as invalid (422 on a single node), checked here."""
        policy = ref.alerts.policy
        note, outcome, target = str(body.get("note") or ""), body.get("outcome"), body.get("target")
        if action == "note" and not note.strip():
            return "a note needs text"
        if action == "escalate" and target and target not in policy.targets_for(str(seen.doc.get("kind"))):
            return f"unknown escalation target {target!r}"
        if action == "close" and outcome and outcome not in policy.outcomes:
            return f"unknown outcome {outcome!r} (use one of {', '.join(policy.outcomes)})"
        if action == "close" and seen.peak >= ALARM_RANK and (not outcome or not note.strip()):
            return "an alert that reached alarm is closed only with an outcome and a note"
        return None

    async def list_orders(request: Request, who: Principal) -> Response:
        now = state.clock()
        return JSONResponse({"orders": [views.order_summary(o, now)
                                        for o in sorted(ref.book.orders.values(), key=lambda o: o.id)]})

    async def get_order(request: Request, who: Principal) -> Response:
        order = ref.book.orders.get(request.path_params["id"])
        if order is None:
            return error(404, f"unknown order {request.path_params['id']}")
        return JSONResponse(views.order_summary(order, state.clock()))

    async def change_order(request: Request, who: Principal) -> Response:
        return error(409, "orders cannot be changed through a NATS worker yet: change the orders "
                          "file every worker loads and restart the workers one by one")

    async def list_devices(request: Request, who: Principal) -> Response:
        now = state.clock()
        devices = view.devices  # the owners' snapshots (em_view), a period old at most
        body: dict[str, Any] = {"devices": devices.devices(now), "centre_view": devices.coverage(now)}
        missing = devices.missing()
        if missing:
            body["unavailable"] = (f"no device snapshot yet from the owners of partitions {missing}: "
                                   "their devices are not listed")
        return JSONResponse(body)

    async def list_zones(request: Request, who: Principal) -> Response:
        return JSONResponse({"zones": views.zones(ref, state.clock())})

    async def audit(request: Request, who: Principal) -> Response:
        return JSONResponse({"audit": state.audit.recent(), "scope": "this worker's HTTP API only"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_schema())

    async def console(request: Request) -> Response:
        return FileResponse(views.CONSOLE_DIR / "index.html", media_type="text/html",
                            headers={"content-security-policy": console_policy(state.tiles)})

    async def console_config(request: Request) -> Response:
        return JSONResponse({"tiles": state.tiles.to_json(),
                             "leaflet": VENDOR_URL if state.vendor is not None else None, "timezone": TIMEZONE})

    async def stream(request: Request, who: Principal) -> Response:
        return alert_stream(state)

    read = "read-only"
    vendor = ([Mount(VENDOR_URL.rstrip("/"), app=StaticFiles(directory=str(state.vendor)), name="leaflet")]
              if state.vendor is not None else [])
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
        *[Route(f"/api/alerts/{{id}}/{name}", guarded("operator", name, action_handler(action)), methods=["POST"])
          for name, action in ACTIONS.items()],
        Route("/api/orders", guarded(read, "read orders", list_orders), methods=["GET"]),
        Route("/api/orders/{id}", guarded(read, "read orders", get_order), methods=["GET"]),
        Route("/api/orders/{id}", guarded("supervisor", "change orders", change_order), methods=["PUT"]),
        Route("/api/orders/{id}", guarded("supervisor", "end orders", change_order), methods=["DELETE"]),
        Route("/api/devices", guarded(read, "read devices", list_devices), methods=["GET"]),
        Route("/api/zones", guarded(read, "read zones", list_zones), methods=["GET"]),
        Route("/api/audit", guarded("operator", "read the audit trail", audit), methods=["GET"]),
        Route("/api/stream", guarded(read, "read alerts", stream), methods=["GET"]),
        Mount("/console", app=StaticFiles(directory=str(views.CONSOLE_DIR)), name="console"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                     exception_handlers={HTTPException: http_error, Exception: server_error})


def _csv(value: str | None) -> set[str]:
    return {v.strip() for v in value.split(",") if v.strip()} if value else set()
