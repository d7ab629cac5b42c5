"""The victim app's HTTP side, mounted at ``/victim``: the app itself, her fixes, her panic, her warnings.

Why emguard's own HTTPS with server-sent events and not MQTT over WebSockets:
the phone talks to one origin with one credential per device that the engine
itself checks (``engine.web.device_tokens``); no broker WebSocket listener is
exposed to the internet, no broker ACL has to keep one victim's phone off
another's topics, and the app needs no npm package.  Her messages still join
the engine exactly where MQTT messages do: ``Service.submit`` puts them in the
same inbox, so they are decoded, deduplicated, evaluated and dead-lettered
alike, and it returns once the message is committed, so the app forgets a fix
only after the engine has it.

Routes (all ``/victim/api/*`` need ``Authorization: Bearer <device token>``):

* ``GET /victim/`` — the progressive web app (``engine/web/victim_app``).
* ``POST /victim/api/fixes`` — a JSON array of contract §2 fixes of her own
  device (``application/json``, at most ``MAX_BODY`` bytes and ``MAX_FIXES``).
* ``POST /victim/api/panic`` — a contract §3 ``panic`` event of her device.
* ``GET /victim/api/state`` — the warnings she should see now, and the last
  interval command.
* ``GET /victim/api/stream`` — server-sent events: ``state`` on connect, then
  ``warning`` and ``command`` events for her device only (``engine.web.victim_feed``).

A token acts only for its own device, and only while that device belongs to a
protected person in the orders book: a fix or event naming another device is
refused whole (403), never partly submitted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from engine.runtime.supervise import ServiceFailed
from engine.web.device_tokens import DeviceTokens, device_tokens_from_env
from engine.web.edge import ApiState
from engine.web.victim_feed import VictimFeed

log = logging.getLogger(__name__)

APP_DIR = Path(__file__).parent / "victim_app"
MAX_BODY = 256 * 1024  # a day offline at one fix a minute is ~1,440 fixes of ~160 bytes
MAX_FIXES = 2000
HEARTBEAT_S = 15.0  # keeps mobile networks' NAT and proxies from dropping an idle stream
CLOSE_POLL_S = 0.25  # how soon an open stream notices the server is stopping
NO_STORE = {"cache-control": "no-store"}  # no API answer is kept on the phone
# the app's own policy, sent with the page and the service worker: only this origin, nothing
# inline; manifest-src and worker-src named, since a stricter server-wide default-src 'none'
# would otherwise block the manifest (installing) and the service worker (working offline)
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
APP_HEADERS = {"cache-control": "no-cache", "content-security-policy": CONTENT_SECURITY_POLICY}

DeviceHandler = Callable[[Request, str], Awaitable[Response]]


def victim_app(state: ApiState, tokens: DeviceTokens | None = None) -> Starlette:
    """The ``/victim`` sub-application for one running service (tokens default to the environment).

    Registers a ``VictimFeed`` as a listener of the service, so streams hear the engine.
    """
    service = state.service
    prefix = service.engine.config.prefix
    tokens = DeviceTokens(device_tokens_from_env()) if tokens is None else tokens
    feed = VictimFeed(prefix)
    service.listeners.append(feed.on_effects)
    state.listeners.append(feed.on_effects)  # HttpServer.stop removes it again
    if not tokens.enabled:
        log.info("victim app: no device tokens (EMGUARD_DEVICE_TOKENS); its API refuses every call")

    def device_only(handler: DeviceHandler) -> Callable[[Request], Awaitable[Response]]:
        """Resolve the bearer token to its device and check that device is a protected person's."""

        async def endpoint(request: Request) -> Response:
            if not tokens.enabled:
                return _error(503, "no device tokens are configured on this server")
            device = tokens.device(request.headers.get("authorization"))
            if device is None:
                response = _error(401, "missing or unknown device token")
                response.headers["www-authenticate"] = "Bearer"
                return response
            owner = service.engine.book.owner_of(device)
            if owner is None or owner[0] != "protected":
                return _error(403, f"device {device} is not a protected person's device")
            return await handler(request, device)

        return endpoint

    async def submit(topic: str, payloads: list[dict[str, Any]]) -> Response | None:
        """Submit all, in order; None once every one is committed, a 503 if the service stops."""
        results = await asyncio.gather(
            *(
                service.submit(topic, json.dumps(p, separators=(",", ":")).encode())
                for p in payloads
            ),
            return_exceptions=True,  # wait for all: none is left running unobserved
        )
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        if isinstance(failed, ServiceFailed):
            response = _error(503, f"not taken, send again later: {failed}")
            response.headers["retry-after"] = "5"
            return response
        if failed is not None:
            raise failed
        return None

    async def post_fixes(request: Request, device: str) -> Response:
        body = await _json_body(request)
        if isinstance(body, Response):
            return body
        fixes = [body] if isinstance(body, dict) else body
        if not isinstance(fixes, list) or not all(isinstance(f, dict) for f in fixes):
            return _error(400, "body must be a JSON array of fixes (contract §2)")
        if len(fixes) > MAX_FIXES:
            return _error(413, f"at most {MAX_FIXES} fixes per request")
        if any(f.get("device") != device for f in fixes):
            return _error(403, f"this token may send fixes of device {device} only")
        refused = await submit(f"{prefix}/dev/{device}/fix", fixes)
        if refused is not None:
            return refused
        seqs = [f.get("seq") for f in fixes]
        return JSONResponse({"accepted": len(fixes), "seqs": seqs}, headers=NO_STORE)

    async def post_panic(request: Request, device: str) -> Response:
        event = await _json_body(request)
        if isinstance(event, Response):
            return event
        if not isinstance(event, dict) or event.get("type") != "panic":
            return _error(400, 'body must be a contract §3 event with "type": "panic"')
        if event.get("device") != device:
            return _error(403, f"this token may send events of device {device} only")
        log.warning("victim app: panic from device %s", device)
        refused = await submit(f"{prefix}/dev/{device}/event", [event])
        if refused is not None:
            return refused
        return JSONResponse({"accepted": 1, "seq": event.get("seq")}, headers=NO_STORE)

    async def get_state(request: Request, device: str) -> Response:
        doc = feed.current_state(service.engine, device, service.clock())
        return JSONResponse(doc, headers=NO_STORE)

    async def stream(request: Request, device: str) -> Response:
        async def events() -> AsyncIterator[str]:
            with feed.subscribe(device) as queue:
                yield "retry: 3000\n: connected\n\n"
                yield _sse("state", feed.current_state(service.engine, device, service.clock()))
                quiet = 0.0
                while not state.closing:
                    try:
                        item = await asyncio.wait_for(queue.get(), CLOSE_POLL_S)
                    except TimeoutError:
                        quiet += CLOSE_POLL_S
                        if quiet >= HEARTBEAT_S:
                            quiet = 0.0
                            yield ": heartbeat\n\n"
                        continue
                    if item is None:
                        return
                    quiet = 0.0
                    name, payload = item
                    if name == "resync":
                        payload = feed.current_state(service.engine, device, service.clock())
                        name = "state"
                    yield _sse(name, payload)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def index(request: Request) -> Response:
        return FileResponse(APP_DIR / "index.html", media_type="text/html", headers=APP_HEADERS)

    async def worker(request: Request) -> Response:
        # the service worker is re-checked on every load, so a new app shell reaches phones
        return FileResponse(APP_DIR / "sw.js", media_type="text/javascript", headers=APP_HEADERS)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/sw.js", worker, methods=["GET"]),
        Route("/api/fixes", device_only(post_fixes), methods=["POST"]),
        Route("/api/panic", device_only(post_panic), methods=["POST"]),
        Route("/api/state", device_only(get_state), methods=["GET"]),
        Route("/api/stream", device_only(stream), methods=["GET"]),
        Mount("/", app=StaticFiles(directory=str(APP_DIR)), name="victim-app"),
    ]
    return Starlette(routes=routes)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _sse(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


async def _json_body(request: Request) -> Any:
    """The parsed JSON body, or the error response: 415 not JSON, 413 too large, 400 malformed."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return _error(415, "send application/json")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return _error(413, f"body larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # a chunked body has no length to check up front
        size += len(chunk)
        if size > MAX_BODY:
            return _error(413, f"body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except ValueError as exc:
        return _error(400, f"body is not JSON: {exc}")
