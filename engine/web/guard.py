"""Authentication, role checks, the audit trail and body limits shared by the HTTP APIs.

``engine.web.api`` (single node) and ``engine.web.centre_api`` (a NATS worker's centre-wide
view) wrap every route the same way: ``guarded`` authenticates (bearer token, or
``?access_token=`` on the SSE stream, which EventSource cannot give a header), checks the role,
admits a JSON body within its limits, runs the handler, answers a bug with a logged JSON 500,
and audits every mutating call, refused ones too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.web.auth import AuditEntry, AuditTrail, Authenticator, Principal
from engine.web.edge import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    MAX_ORDER_BYTES,
    BadRequest,
    depth_exceeds,
    error,
)

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


class Guard:
    """The route wrappers of one app: its authenticator, audit trail and clock."""

    def __init__(self, auth: Authenticator, audit: AuditTrail, clock: Callable[[], float]) -> None:
        self.auth = auth
        self.audit = audit
        self.clock = clock

    def safe(self, handler: Callable[[Request], Awaitable[Response]]) -> Handler:
        """Run an unauthenticated handler; an unexpected exception is a logged JSON 500."""

        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception:
                log.exception("HTTP %s %s failed", request.method, request.url.path)
                return error(500, "internal error (logged)")

        return endpoint

    def guarded(
        self,
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
            who = self.auth.identify(header)
            mutating = request.method in ("POST", "PUT", "DELETE")
            if who is None:
                response: Response = error(401, "missing or unknown bearer token")
                response.headers["www-authenticate"] = "Bearer"
            elif not who.may(role):
                response = error(403, f"{who.role} may not {action}")
            else:
                try:
                    refused = await self.admit_body(request)
                    response = refused or await handler(request, who)
                except Exception:  # a bug must answer, and be audited, not vanish in a 500 page
                    log.exception("HTTP %s %s failed", request.method, request.url.path)
                    response = error(500, "internal error (logged)")
            if mutating:
                note = ""
                body = getattr(request.state, "body", None)
                if isinstance(body, Mapping) and isinstance(body.get("note"), str):
                    note = body["note"][:500]
                self.audit.record(
                    AuditEntry(
                        at=self.clock(),
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

    async def admit_body(self, request: Request) -> Response | None:
        """Refuse a POST/PUT body that is not JSON (415) or too large (413); keep it otherwise.

        The body is counted while it streams in, so a missing or false
        Content-Length cannot get more than the limit into memory.
        """
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json":
            return error(415, "request body must be application/json")
        limit = MAX_ORDER_BYTES if request.url.path.startswith("/api/orders") else MAX_BODY_BYTES
        too_large = error(413, f"request body larger than {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return too_large if declared.isdigit() else error(400, "bad Content-Length")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
        request.state.raw_body = b"".join(chunks)
        return None

    async def read_json(self, request: Request) -> Any:
        raw: bytes = getattr(request.state, "raw_body", b"")
        if not raw.strip():
            body: Any = {}
        else:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                raise BadRequest(f"body is not JSON: {exc}") from exc
            except RecursionError as exc:
                raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels") from exc
            if depth_exceeds(body, MAX_JSON_DEPTH):
                raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
        request.state.body = body
        return body
