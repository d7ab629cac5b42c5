"""The HTTP server of a NATS worker's centre-wide API (``engine.web.centre_api``), in-process.

As ``engine.web.server.HttpServer``: uvicorn on the worker's own event loop, its signal capture
and logging set-up off, no access log (a request line can carry ``access_token``), HTTPS with
``tls_cert``/``tls_key``, and no tokens refused on any interface but loopback unless the caller
says ``insecure_no_auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from engine.errors import ConfigError
from engine.web.centre_api import CentreState, build_centre_app
from engine.web.server import STOP_TIMEOUT_S, _check_tls, _loopback, _Server

log = logging.getLogger(__name__)


class CentreHttpServer:
    """``await CentreHttpServer(state, host=..., port=...).start()`` ... ``await stop()``."""

    def __init__(self, state: CentreState, *, host: str = "127.0.0.1", port: int = 8080,
                 insecure_no_auth: bool = False, tls_cert: str | None = None,
                 tls_key: str | None = None) -> None:
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("HTTPS needs both EMGUARD_HTTP_TLS_CERT and EMGUARD_HTTP_TLS_KEY")
        self.state = state
        self.host, self.port = host, port
        self.insecure_no_auth = insecure_no_auth
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.app = build_centre_app(state)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; returns once listening (``port=0`` picks a free port)."""
        if not self.state.auth.enabled:
            if not (self.insecure_no_auth or _loopback(self.host)):
                raise ConfigError(f"HTTP API on {self.host} without tokens: set EMGUARD_API_TOKENS or "
                                  "EMGUARD_API_TOKENS_FILE (token:name:role), or bind 127.0.0.1")
            log.warning("the HTTP API on %s:%d has NO authentication", self.host, self.port)
        if self.tls_cert and self.tls_key:
            _check_tls(self.tls_cert, self.tls_key)
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=STOP_TIMEOUT_S,
                                ssl_certfile=self.tls_cert, ssl_keyfile=self.tls_key)
        self._server = server = _Server(config)
        self._task = asyncio.create_task(self._serve(server), name="http")
        while not server.started:
            if self._task.done():
                await self._task
                raise ConfigError(f"HTTP server on {self.host}:{self.port} stopped while starting")
            await asyncio.sleep(0.01)
        sockets = server.servers[0].sockets if server.servers else []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """End SSE streams, stop accepting, wait for open requests (bounded)."""
        if self._server is None or self._task is None:
            return
        self.state.close_streams()
        self._server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S + 1.0)
        except TimeoutError:
            self._server.force_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        finally:
            self._server = None
            self._task = None

    async def _serve(self, server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind
            raise ConfigError(f"HTTP server cannot listen on {self.host}:{self.port} "
                              "(port in use or not permitted)") from exc
