"""The OpenAPI 3.1 description of the HTTP API (hand-written: it is the contract for clients).

A test checks that every route of ``engine.web.api`` is described here and that
real responses carry the required fields listed in these schemas.  Every
error, including 404/405 from routing and 500, is a JSON ``Error``; the
limits stated here are the ones ``engine.web.api`` enforces.
"""

from __future__ import annotations

from typing import Any

_ALERT = {
    "type": "object",
    "required": [
        "alert_id",
        "kind",
        "level",
        "state",
        "condition",
        "claimed_by",
        "deadline",
        "raised_at",
        "overdue",
        "seconds_to_deadline",
        "evidence",
    ],
    "properties": {
        "alert_id": {"type": "string"},
        "kind": {"type": "string"},
        "level": {"enum": ["info", "warning", "alarm", "critical"]},
        "state": {
            "enum": ["open", "acknowledged", "escalated", "closed"],
            "description": "the centre's handling; older consumers read closed as resolved",
        },
        "condition": {
            "enum": ["active", "cleared"],
            "description": "the engine's view: cleared once the violation or risk ended",
        },
        "cleared_at": {"type": ["string", "null"], "description": "device time it cleared"},
        "claimed_by": {"type": ["string", "null"], "description": "the operator working it"},
        "escalated_to": {"type": "string", "description": "target of the last escalation"},
        "outcome": {"type": ["string", "null"], "description": "outcome code (closed only)"},
        "closed_by": {"type": ["string", "null"], "description": "who closed it (engine or a person)"},
        "peak_level": {"enum": ["info", "warning", "alarm", "critical"]},
        "close_needs": {"type": "array", "items": {"enum": ["outcome", "note"]}},
        "order": {"type": ["string", "null"]},
        "subject": {"type": ["string", "null"]},
        "protected_person": {"type": ["string", "null"]},
        "zone": {"type": ["string", "null"]},
        "device_time": {"type": "string"},
        "raised_at": {"type": "string"},
        "deadline": {"type": "string"},
        "distance_m": {"type": ["number", "null"]},
        "certainty": {"type": ["string", "null"]},
        "overdue": {"type": "boolean"},
        "seconds_to_deadline": {"type": ["number", "null"]},
        "evidence": {"type": "object"},
    },
}
_ALERT_DETAIL = {
    "allOf": [{"$ref": "#/components/schemas/Alert"}],
    "type": "object",
    "required": ["history", "notes", "procedure", "evidence_fixes", "map"],
    "properties": {
        "history": {"type": "array"},
        "notes": {"type": "array", "description": "people's notes: at, by, note, action"},
        "procedure": {
            "type": "object",
            "description": "escalation_targets of this kind's procedure and the outcome codes",
        },
        "evidence_fixes": {"type": "array"},
        "map": {"type": "object"},
    },
}
_ORDER = {
    "type": "object",
    "required": ["id", "subject", "legal_basis", "valid_from", "valid_until", "in_force"],
    "properties": {
        "id": {"type": "string"},
        "subject": {"type": "string"},
        "in_force": {"type": "boolean"},
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_ACTION_BODY = {
    "type": "object",
    "properties": {
        "by": {"type": "string", "maxLength": 200},
        "note": {"type": "string", "maxLength": 4000},
        "outcome": {
            "type": "string",
            "maxLength": 200,
            "description": "close: an outcome code (required, with a note, for alarm and above)",
        },
        "target": {
            "type": "string",
            "maxLength": 200,
            "description": "escalate: a target of the kind's procedure (default: its first)",
        },
    },
}
_ME = {
    "type": "object",
    "required": ["name", "role", "may_act", "may_take_over", "may_edit_orders", "outcomes"],
    "properties": {
        "name": {"type": "string"},
        "role": {"enum": ["read-only", "operator", "supervisor"]},
        "may_act": {"type": "boolean"},
        "may_take_over": {"type": "boolean"},
        "may_edit_orders": {"type": "boolean"},
        "outcomes": {"type": "array", "items": {"type": "string"}},
    },
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "bad request",
        401: "no or unknown token",
        403: "role not allowed",
        404: "not found",
        409: (
            "action conflicts with the alert's state (closed, claimed by another operator; a "
            "prompt on an alert without a subject or ankle monitor)"
        ),
        413: "body over the limit (256 KiB for actions, 1 MiB for orders)",
        415: "body is not application/json",
        422: (
            "invalid: an order the loader or the enforceability check refuses, an action field "
            "too long or not a string, or an incomplete action (close without outcome or note, "
            "unknown outcome or escalation target)"
        ),
        500: "internal error (logged and audited)",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    """An object with one required array property of ``item``."""
    return _obj(**{key: {"type": "array", "items": item}})


ID = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document served at ``/openapi.json``."""
    action = {
        "parameters": ID,
        "requestBody": {"content": {"application/json": {"schema": _ref("ActionBody")}}},
        "responses": {
            "200": _json(_ref("Alert")),
            **_errors(400, 401, 403, 404, 409, 413, 415, 422, 500),
        },
    }
    query = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
        for n in ("state", "condition", "level", "kind", "subject", "since", "limit")
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "emguard monitoring-centre API", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Alert": _ALERT,
                "AlertDetail": _ALERT_DETAIL,
                "Order": _ORDER,
                "Error": _ERROR,
                "ActionBody": _ACTION_BODY,
                "Me": _ME,
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/": {
                "get": {
                    "summary": "Operator console (HTML)",
                    "security": [],
                    "responses": {"200": {"description": "HTML page"}},
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Process alive",
                    "security": [],
                    "responses": {"200": _json(_obj(status={"type": "string"}))},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Ready: connected to the broker",
                    "security": [],
                    "responses": {
                        "200": _json(
                            _obj(
                                ready={"type": "boolean"},
                                broker_connected={"type": "boolean"},
                                inbox_depth={"type": "integer"},
                                dead_letters={"type": "integer"},
                            )
                        ),
                        "503": {"description": "not connected (same body)"},
                    },
                }
            },
            "/console/config.json": {
                "get": {
                    "summary": "The console's map settings: tile source, Leaflet's path, time zone",
                    "security": [],
                    "responses": {
                        "200": _json(
                            _obj(
                                tiles={"type": "object"},
                                leaflet={"type": ["string", "null"]},
                                timezone={"type": "string"},
                            )
                        )
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "security": [],
                    "responses": {"200": {"description": "text exposition format"}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": {"description": "OpenAPI document"}},
                }
            },
            "/api/alerts": {
                "get": {
                    "summary": "Alert queue: open first, by level then deadline",
                    "parameters": query,
                    "responses": {
                        "200": _json(list_of("alerts", _ref("Alert"))),
                        **_errors(400, 401),
                    },
                }
            },
            "/api/alerts/{id}": {
                "get": {
                    "summary": "One alert with history, evidence fixes and map data",
                    "parameters": ID,
                    "responses": {"200": _json(_ref("AlertDetail")), **_errors(401, 404)},
                }
            },
            "/api/alerts/{id}/claim": {
                "post": {"summary": "Claim: work this alert (a supervisor may take over)", **action}
            },
            "/api/alerts/{id}/ack": {"post": {"summary": "Acknowledge (operator)", **action}},
            "/api/alerts/{id}/escalate": {
                "post": {"summary": "Escalate to a procedure target (operator)", **action}
            },
            "/api/alerts/{id}/note": {"post": {"summary": "Add a note (operator)", **action}},
            "/api/alerts/{id}/close": {
                "post": {"summary": "Close with an outcome code and a note (operator)", **action}
            },
            "/api/alerts/{id}/prompt": {
                "post": {
                    "summary": "Ask the subject to call the centre (operator)",
                    "description": (
                        "Sends the subject's ankle monitor(s) contact_centre (contract §6) with a "
                        "fixed level and nothing about the victim; state unchanged, the history "
                        "keeps who, when and the note. 409 on a closed alert, one without a "
                        "subject or ankle monitor, or one claimed by another operator."
                    ),
                    **action,
                }
            },
            "/api/alerts/{id}/resolve": {
                "post": {"summary": "Older name of close (operator)", **action}
            },
            "/api/me": {
                "get": {
                    "summary": "Who the token belongs to, the role and what it may do",
                    "responses": {"200": _json(_ref("Me")), **_errors(401)},
                }
            },
            "/api/orders": {
                "get": {
                    "summary": "Orders",
                    "responses": {"200": _json(list_of("orders", _ref("Order"))), **_errors(401)},
                }
            },
            "/api/orders/{id}": {
                "get": {
                    "summary": "One order with its orders-file entry",
                    "parameters": ID,
                    "responses": {"200": _json(_ref("Order")), **_errors(401, 404)},
                },
                "put": {
                    "summary": "Create or replace an order (supervisor); takes effect at once",
                    "parameters": ID,
                    "requestBody": {
                        "content": {"application/json": {"schema": _obj(order={"type": "object"})}}
                    },
                    "responses": {
                        "200": _json(_ref("Order")),
                        "201": _json(_ref("Order"), "created"),
                        **_errors(400, 401, 403, 409, 413, 415, 422, 500),
                    },
                },
                "delete": {
                    "summary": "End an order now (valid_until = now); alerts are kept (supervisor)",
                    "parameters": ID,
                    "responses": {
                        "200": _json(_obj(id={"type": "string"})),
                        **_errors(401, 403, 404, 409, 422),
                    },
                },
            },
            "/api/devices": {
                "get": {
                    "summary": "Device health",
                    "responses": {
                        "200": _json(
                            list_of(
                                "devices",
                                _obj(
                                    device={"type": "string"},
                                    silent={"type": "boolean"},
                                    last_seen={"type": ["string", "null"]},
                                    position={"type": ["object", "null"]},
                                ),
                            )
                        ),
                        **_errors(401),
                    },
                }
            },
            "/api/zones": {
                "get": {
                    "summary": "Zones as lon/lat rings and projected rings",
                    "responses": {
                        "200": _json(
                            list_of(
                                "zones",
                                _obj(
                                    order={"type": "string"},
                                    zone={"type": "string"},
                                    kind={"type": "string"},
                                    rings={"type": "array"},
                                    xy={"type": "array"},
                                ),
                            )
                        ),
                        **_errors(401),
                    },
                }
            },
            "/api/audit": {
                "get": {
                    "summary": "Operator actions, newest first (operator)",
                    "responses": {
                        "200": _json(
                            list_of(
                                "audit",
                                _obj(
                                    user={"type": "string"},
                                    action={"type": "string"},
                                    status={"type": "integer"},
                                ),
                            )
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            "/api/stream": {
                "get": {
                    "summary": "Server-sent events: one 'alert' event per alert change",
                    "responses": {"200": {"description": "text/event-stream"}, **_errors(401)},
                }
            },
        },
    }
