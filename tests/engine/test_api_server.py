"""The real uvicorn server in-process: start on a free port, SSE pushes alert changes, clean stop."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from engine.errors import ConfigError
from engine.runtime.logjson import JsonFormatter
from engine.web.server import HttpServer
from tests.engine.api_support import make_world


async def test_server_streams_alert_changes_and_stops_cleanly() -> None:
    """An SSE client receives the raised alert and the acknowledgement; stop() ends the stream."""
    w = make_world()
    w.server.port = 0
    await w.server.start()
    try:
        assert w.server.port > 0
        async with httpx.AsyncClient(base_url=w.server.url, timeout=5) as c:
            assert (await c.get("/healthz")).json() == {"status": "alive"}
            events: list[dict[str, object]] = []

            async def listen() -> None:
                async with c.stream("GET", "/api/stream") as r:
                    assert r.headers["content-type"].startswith("text/event-stream")
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            events.append(json.loads(line[6:]))

            task = asyncio.create_task(listen())
            for _ in range(200):
                if w.server.state.streams:
                    break
                await asyncio.sleep(0.01)
            aid = w.raise_exclusion()
            w.service.act(aid, "ack", "alice", "")
            for _ in range(200):
                if len(events) >= 3:
                    break
                await asyncio.sleep(0.01)
            # raised at warning by the first fix inside, confirmed as alarm by the next, then acked
            assert [(e["change"], e["alert"]["state"]) for e in events[:3]] == [  # type: ignore[index]
                ("raised", "open"),
                ("level", "open"),
                ("ack", "acknowledged"),
            ]
            await asyncio.wait_for(w.server.stop(), 8)
            await asyncio.wait_for(task, 3)
    finally:
        await w.server.stop()
    assert w.server.metrics.on_effects not in w.service.listeners


async def test_port_in_use_is_a_config_error() -> None:
    """A second server on a taken port fails with a ConfigError instead of exiting the process."""
    a = make_world()
    a.server.port = 0
    await a.server.start()
    try:
        b = HttpServer(make_world().service, port=a.server.port, tokens={})
        with pytest.raises(ConfigError, match="cannot listen"):
            await b.start()
    finally:
        await a.server.stop()


def test_json_log_formatter_one_object_per_line() -> None:
    """Log records become single-line JSON with level, logger, message and extra fields."""
    record = logging.LogRecord(
        "emguard.x", logging.WARNING, __file__, 1, "hello %s\nworld", ("a",), None
    )
    record.alert_id = "A-1"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert (
        doc["level"] == "warning"
        and doc["logger"] == "emguard.x"
        and doc["msg"] == "hello a\nworld"
    )
    assert doc["alert_id"] == "A-1" and doc["t"].endswith("Z")
