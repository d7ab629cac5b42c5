"""``emguard serve``: the production service assembled from configuration.

It refuses to start with an open HTTP API: no ``EMGUARD_API_TOKENS`` /
``EMGUARD_API_TOKENS_FILE`` is a ConfigError unless ``--insecure-no-auth``
(``EMGUARD_INSECURE_NO_AUTH=1``) says so explicitly, and then it warns loudly.
Secrets of the configuration (URL passwords, the MQTT password, the tokens)
are registered with ``engine.redact`` before anything is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from engine.core.config import EngineConfig, ServiceConfig, load_engine_config
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.errors import ConfigError
from engine.evidence import Chain, attach, open_log
from engine.redact import redact_url, register_secret
from engine.runtime.heap import FreezeAfterFullPass, freeze_loaded_state
from engine.runtime.logjson import use_json_logs
from engine.runtime.service import Service
from engine.runtime.store_redis import RedisStore
from engine.tools.native import build_name, stale_extensions
from engine.web.auth import Principal, load_tokens

log = logging.getLogger(__name__)


def read_orders_doc(path: str) -> dict[str, Any]:
    """The orders document as JSON (the HTTP API edits it and re-validates on every change)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read orders file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"orders file {path}: top level must be a JSON object")
    return doc


def api_tokens(cfg: ServiceConfig) -> dict[str, Principal]:
    """The API's tokens; none without ``insecure_no_auth`` is a ConfigError saying what to set.

    Also registers every secret of ``cfg`` with ``engine.redact`` so none can reach a log line.
    """
    register_secret(cfg.mqtt_password)
    register_secret(getattr(cfg, "mqtt_publish_password", None))  # the publishing login (main)
    for url in (cfg.broker, cfg.redis):
        password = _url_password(url)
        register_secret(password)
        register_secret(unquote(password) if password else None)  # as redis-py decodes it
    tokens = load_tokens(cfg.api_tokens, cfg.api_tokens_file)
    if tokens or not cfg.http_port:
        return tokens
    if not cfg.insecure_no_auth:
        raise ConfigError(
            "the HTTP API has no credentials: set EMGUARD_API_TOKENS_FILE (a file of "
            "token:name:role lines) or EMGUARD_API_TOKENS, or pass --insecure-no-auth "
            "(EMGUARD_INSECURE_NO_AUTH=1) to run it open on a trusted network, or "
            "--http-port 0 to run without it"
        )
    return tokens  # empty: HttpServer.start() warns loudly once logging is set up


def _url_password(url: str | None) -> str | None:
    if not url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


async def run_serve(cfg: ServiceConfig) -> None:
    """Load orders, start the service, stop cleanly on SIGTERM/SIGINT (drain, then publish)."""
    stale = stale_extensions()
    if stale:  # an in-place build older than an edited source: the edit would not run
        raise ConfigError(f"compiled extensions older than their sources: {', '.join(stale)}")
    tokens = api_tokens(cfg)
    if not cfg.orders:
        raise ConfigError("no orders file: pass --orders or set EMGUARD_ORDERS")
    doc = read_orders_doc(cfg.orders)
    book = load_orders(doc)
    use_json_logs(cfg.log_level)
    engine_config = (
        load_engine_config(cfg.config, cfg.topic_prefix) if cfg.config else EngineConfig(prefix=cfg.topic_prefix)
    )
    engine = Engine(book, engine_config)
    # the orders and zone index are most of the heap and live as long as the process: keep
    # them out of the collector's full passes (at 10,000 subjects those took ~15 % of the
    # engine's CPU time; objects freed by reference counting are still freed), and what
    # traffic adds out of the next one once a full pass has seen it (engine.runtime.heap)
    freeze_loaded_state()
    FreezeAfterFullPass().install()
    store = RedisStore(cfg.redis) if cfg.redis else None
    if store is None:
        log.warning("no --redis: state is in memory only; a restart loses open alerts")
    service = Service(engine, cfg, store=store)
    chain = None
    if cfg.evidence_log:
        # one log per worker process: the chain is single-writer by design
        chain = Chain(open_log(cfg.evidence_log, fsync=True))
        service.listeners.append(attach(engine, chain))
        service.before_ack.append(chain.flush)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    server = None
    if cfg.http_port:
        try:
            from engine.web.server import HttpServer
        except ImportError:
            HttpServer = None  # type: ignore[assignment,misc]
        if HttpServer is not None:
            server = HttpServer(
                service,
                host=cfg.http_host,
                port=cfg.http_port,
                orders_doc=doc,  # without it the API refused every order edit (409, issue 24)
                tokens=tokens,
                insecure_no_auth=cfg.insecure_no_auth,
                tls_cert=cfg.http_tls_cert,
                tls_key=cfg.http_tls_key,
            )
            await server.start()
    log.info(
        "emguard serving %d orders from %s on %s (%s build)",
        len(book.orders), cfg.orders, redact_url(cfg.broker), build_name(),
    )
    try:
        await service.run(stop)
    finally:
        if server is not None:
            await server.stop()
        if chain is not None:
            chain.close()
