"""The HTTP server (API, console, metrics) running on the service's own event loop.

uvicorn is started in-process as a task so handlers read the engine's state
directly, with no thread and no lock.  uvicorn's own signal capture is turned
off: ``emguard serve``/``demo`` own SIGINT/SIGTERM and stop the server
through ``stop()`` after the engine has drained.

uvicorn's own logging set-up is turned off too (``log_config=None``): its
records then reach the process's handlers, which write JSON and mask secrets
(``engine.redact``), and the access log stays off because a request line can
carry the SSE stream's ``access_token``.

Without tokens the server allows every caller (demo mode).  That is refused
on any interface but loopback unless the caller says ``insecure_no_auth``,
so no path can expose an open API to a network by accident.  With
``tls_cert``/``tls_key`` it speaks HTTPS itself (uvicorn's ``ssl_certfile``/
``ssl_keyfile``); otherwise TLS belongs to a reverse proxy (docs/http-api.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from engine.errors import ConfigError
from engine.runtime.service import Service
from engine.web.api import build_app
from engine.web.auth import Authenticator, Principal, tokens_from_env
from engine.web.console_map import MapTiles, tiles_from_env, vendor_dir, warn_if_missing
from engine.web.edge import ApiState
from engine.web.metrics import EngineMetrics

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 5


class _Server(uvicorn.Server):
    """uvicorn without signal handlers: the embedding service owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """``await HttpServer(service, host=..., port=..., orders_doc=doc).start()`` ... ``await stop()``.

    ``orders_doc`` is the parsed orders file the engine's book was loaded
    from; without it the order endpoints are read-only.  ``tokens`` maps a
    bearer token to a principal; None reads ``EMGUARD_API_TOKENS`` (and
    ``EMGUARD_API_TOKENS_FILE``) and an empty mapping means demo mode (no
    auth, see ``engine.web.auth``), which ``start()`` refuses on a non-loopback
    host unless ``insecure_no_auth`` is set.
    """

    def __init__(
        self,
        service: Service,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        orders_doc: Mapping[str, Any] | None = None,
        tokens: Mapping[str, Principal] | None = None,
        registry: CollectorRegistry | None = None,
        insecure_no_auth: bool = False,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        map_tiles: MapTiles | None = None,
        console_vendor: Path | None = None,
    ) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.insecure_no_auth = insecure_no_auth
        if bool(tls_cert) != bool(tls_key):
            raise ConfigError("HTTPS needs both EMGUARD_HTTP_TLS_CERT and EMGUARD_HTTP_TLS_KEY")
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.metrics = EngineMetrics(service, registry)
        auth = Authenticator(tokens_from_env() if tokens is None else tokens)
        doc = dict(orders_doc) if orders_doc is not None else None
        # the console map: tiles from EMGUARD_MAP_TILES, Leaflet from `npm ci` (or
        # EMGUARD_CONSOLE_VENDOR_DIR); without Leaflet the console runs and says it has no map
        vendor = vendor_dir() if console_vendor is None else console_vendor
        self.state = ApiState(
            service,
            doc,
            auth,
            self.metrics,
            tiles=tiles_from_env() if map_tiles is None else map_tiles,
            vendor=vendor if warn_if_missing(vendor) else None,
        )
        self.app = build_app(self.state)
        service.listeners.append(self.metrics.on_effects)
        service.listeners.append(self.state.on_effects)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; returns once listening (``port=0`` picks a free port, see ``.port``)."""
        if not self.state.auth.enabled:
            if not (self.insecure_no_auth or _loopback(self.host)):
                raise ConfigError(
                    f"HTTP API on {self.host} without tokens: set EMGUARD_API_TOKENS or "
                    "EMGUARD_API_TOKENS_FILE (token:name:role), or bind 127.0.0.1"
                )
            if self.insecure_no_auth:
                log.warning(
                    "INSECURE (--insecure-no-auth): the HTTP API on %s:%d has NO authentication; "
                    "anyone who can reach it can acknowledge and close alerts and change orders",
                    self.host,
                    self.port,
                )
            else:
                log.warning(
                    "HTTP API without tokens on loopback %s: every local caller acts as "
                    "demo-operator with supervisor rights",
                    self.host,
                )
        if self.tls_cert and self.tls_key:
            _check_tls(self.tls_cert, self.tls_key)
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            log_config=None,  # our handlers: JSON lines, secrets masked
            access_log=False,  # a request line may carry ?access_token=
            lifespan="off",
            timeout_graceful_shutdown=STOP_TIMEOUT_S,
            ssl_certfile=self.tls_cert,
            ssl_keyfile=self.tls_key,
        )
        self._server = _Server(config)
        self.state.closing = False
        self._task = asyncio.create_task(self._serve(self._server), name="http")
        while not self._server.started:
            if self._task.done():
                await self._task
                raise ConfigError(f"HTTP server on {self.host}:{self.port} stopped while starting")
            await asyncio.sleep(0.01)
        sockets = self._server.servers[0].sockets if self._server.servers else []
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
            for listener in (self.metrics.on_effects, self.state.on_effects, *self.state.listeners):
                with contextlib.suppress(ValueError):
                    self.service.listeners.remove(listener)
            self._server = None
            self._task = None

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    async def _serve(self, server: _Server) -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind
            raise ConfigError(
                f"HTTP server cannot listen on {self.host}:{self.port} "
                "(port in use or not permitted)"
            ) from exc


def _loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_tls(cert: str, key: str) -> None:
    """Load the pair once here so a bad path or a mismatched key is a ConfigError, not a crash."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"EMGUARD_HTTP_TLS_CERT/KEY ({cert}, {key}) cannot be used: {exc}"
        ) from exc
