"""``emguard serve``: the production service assembled from configuration."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from engine.config import EngineConfig, ServiceConfig
from engine.errors import ConfigError
from engine.orders import load_orders
from engine.pipeline import Engine
from engine.service import Service

log = logging.getLogger(__name__)


async def run_serve(cfg: ServiceConfig) -> None:
    """Load orders, start the service, stop cleanly on SIGTERM/SIGINT (drain, then publish)."""
    if not cfg.orders:
        raise ConfigError("no orders file: pass --orders or set EMGUARD_ORDERS")
    book = load_orders(cfg.orders)
    engine = Engine(book, EngineConfig(prefix=cfg.topic_prefix))
    service = Service(engine, cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = None
    if cfg.http_port:
        try:
            from engine.http import HttpServer
        except ImportError:
            HttpServer = None  # type: ignore[assignment,misc]
        if HttpServer is not None:
            server = HttpServer(service, host=cfg.http_host, port=cfg.http_port)
            await server.start()
    log.info("emguard serving %d orders from %s on %s", len(book.orders), cfg.orders, cfg.broker)
    try:
        await service.run(stop)
    finally:
        if server is not None:
            await server.stop()
