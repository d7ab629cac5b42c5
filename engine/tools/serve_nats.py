"""``emguard serve --transport nats``: a NATS worker with the centre's HTTP API and console.

The worker (``engine.runtime.nats_worker``) evaluates the partitions it owns; its HTTP API
(``engine.web.centre_api``) shows every alert of the centre, whoever owns it, from the
centre-wide view the worker keeps of ``EM_OUT``.  Like the single-node ``serve`` it refuses to
start with an open API: no ``EMGUARD_API_TOKENS``/``EMGUARD_API_TOKENS_FILE`` is a ConfigError
unless ``--insecure-no-auth`` says so, and ``--http-port 0`` runs the worker without the API.
When the HTTP port is the worker's health port (``EMGUARD_NATS_HEALTH_PORT``, the deployments'
probe port) the API serves ``/healthz`` and ``/readyz`` there itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import replace

from engine.core.config import EngineConfig, ServiceConfig, load_engine_config
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.redact import register_secret
from engine.runtime.centre_view import CentreView
from engine.runtime.nats_jetstream import NatsSettings
from engine.runtime.nats_worker import Worker
from engine.tools.serve import api_tokens, read_orders_doc
from engine.web import views
from engine.web.auth import Authenticator
from engine.web.centre_api import CentreState
from engine.web.centre_server import CentreHttpServer
from engine.web.console_map import tiles_from_env, vendor_dir, warn_if_missing

log = logging.getLogger(__name__)


async def run_serve_nats(settings: NatsSettings, cfg: ServiceConfig) -> None:
    """Run one worker, and its HTTP API unless ``cfg.http_port`` is 0, until SIGTERM/SIGINT."""
    register_secret(settings.password)
    tokens = api_tokens(cfg)  # refuses an open API before anything starts
    doc = read_orders_doc(settings.orders)
    book = load_orders(doc)
    config = load_engine_config(settings.config, settings.prefix) if settings.config else EngineConfig(
        prefix=settings.prefix)
    view = CentreView() if cfg.http_port else None
    if view is not None and settings.health_port == cfg.http_port:
        settings = replace(settings, health_port=0)  # the API answers the probes on that port
    worker = Worker(settings, book, config, view=view, device_health=views.devices)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = None
    if view is not None:
        vendor = vendor_dir()
        state = CentreState(view, Engine(book, config), Authenticator(tokens), worker.health, orders_doc=doc,
                            tiles=tiles_from_env(), vendor=vendor if warn_if_missing(vendor) else None)
        server = CentreHttpServer(state, host=cfg.http_host, port=cfg.http_port,
                                  insecure_no_auth=cfg.insecure_no_auth,
                                  tls_cert=cfg.http_tls_cert, tls_key=cfg.http_tls_key)
        await server.start()
        log.info("centre HTTP API of worker %s on %s:%d", settings.worker_id, cfg.http_host, server.port)
    try:
        await worker.run(stop)
    finally:
        if server is not None:
            await server.stop()
