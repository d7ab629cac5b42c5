"""What every route of the HTTP API shares: its state, its security headers, its limits.

Kept apart from the routes (``engine.web.api``) so the victim app (``engine.web.victim_api``),
mounted beside them, shares the same state and edge rules without importing the routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.core.effects import Effects
from engine.runtime.acks import MAX_NAME_CHARS, MAX_NOTE_CHARS  # the same limits as em/ack
from engine.runtime.service import Service
from engine.web import views
from engine.web.auth import AuditTrail, Authenticator
from engine.web.console_map import PDOK, MapTiles
from engine.web.metrics import EngineMetrics

# an action body: a 4,000-character note fully \u-escaped is 24 KB; the margin lets a nesting bomb
# of a few hundred KB be parsed and answered 400 (named as such) instead of only "too large"
STREAM_QUEUE = 1000  # alert changes waiting for one slow browser before it is told to reload
HEARTBEAT_S = 15.0  # an SSE comment this often keeps proxies from closing an idle stream

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
    tiles: MapTiles = PDOK  # the console map's background (engine.web.console_map)
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


def error(status: int, message: str) -> JSONResponse:
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


async def http_error(request: Request, exc: Exception) -> Response:
    """404, 405 and other routing errors as JSON (with Starlette's ``Allow`` header on 405)."""
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return error(500, "internal error (logged)")
    response = error(exc.status_code, str(exc.detail))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


async def server_error(request: Request, exc: Exception) -> Response:
    """Last resort outside any handler: Starlette logs the exception, the caller gets JSON."""
    return error(500, "internal error (logged)")


def check_fields(body: Mapping[str, Any]) -> str | None:
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


def depth_exceeds(value: Any, limit: int) -> bool:
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


class BadRequest(Exception):
    """A request body that is not JSON, or nests too deeply."""


class StreamHub(Protocol):
    """The open SSE streams of an API (``ApiState``, the NATS workers' ``CentreState``)."""

    streams: set[asyncio.Queue[dict[str, Any] | None]]
    closing: bool


def alert_stream(hub: StreamHub) -> StreamingResponse:
    """``/api/stream``: every alert change as a server-sent event, heartbeats while idle.

    The hub's listener puts changes in this stream's queue; ``None`` or ``hub.closing`` ends it.
    """
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)
    hub.streams.add(queue)

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n: connected\n\n"
            while not hub.closing:
                try:
                    item = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if item is None:
                    return
                yield f"event: alert\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"
        finally:
            hub.streams.discard(queue)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )
