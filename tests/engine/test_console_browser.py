"""The operator console in a real headless Chromium against a live broker, engine and HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import aiomqtt
import httpx
import pytest

from engine.broker import EmbeddedBroker
from engine.config import ServiceConfig
from engine.http import HttpServer
from engine.orders import load_orders
from engine.pipeline import Engine
from engine.service import Service
from engine.testing import DeviceScript, orders_doc, square
from tests.engine.api_support import BAN

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def chromium_path() -> str:
    """The system Chromium; the test fails (never skips) when it is missing."""
    path = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not path:
        pytest.fail("Debian chromium is required for the console test: apt-get install chromium")
    return path


async def wait_until(predicate, limit_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.05)


async def test_alert_appears_live_and_is_acknowledged_from_the_console() -> None:
    """A fix in a ban zone shows up in the console queue via SSE; clicking Acknowledge acknowledges it.

    The page runs under the server's Content-Security-Policy; any violation fails the test.
    """
    from playwright.async_api import async_playwright, expect

    executable = chromium_path()
    now = time.time()
    doc = orders_doc(
        exclusion=[{"id": "Z-ban", "polygon": square(BAN[0], BAN[1], 200.0)}],
        valid_from=now - 86400,
        valid_until=now + 30 * 86400,
    )
    async with EmbeddedBroker() as info:
        engine = Engine(load_orders(doc))
        service = Service(
            engine,
            ServiceConfig(broker=info.url, client_id="console-test"),
            protocol=info.protocol,
            persistent_session=False,
        )
        server = HttpServer(service, port=0, orders_doc=doc, tokens={})
        await server.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await wait_until(lambda: service.connected)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
                try:
                    page = await browser.new_page()
                    console: list[str] = []  # the page runs under the server's CSP: no violations
                    page.on("console", lambda m: console.append(m.text))
                    await page.goto(server.url + "/")
                    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)
                    assert await page.locator("#queue tbody tr").count() == 0

                    u = urlparse(info.url)
                    version = (
                        aiomqtt.ProtocolVersion.V5
                        if info.protocol == "5"
                        else aiomqtt.ProtocolVersion.V311
                    )
                    script = DeviceScript("AM-1001")
                    async with aiomqtt.Client(
                        u.hostname or "127.0.0.1",
                        u.port or 1883,
                        identifier="console-test-device",
                        protocol=version,
                    ) as dev:
                        for i in range(3):
                            topic, payload = script.fix(time.time(), BAN[0] + 5 * i, BAN[1])
                            await dev.publish(topic, payload, qos=1)
                            await asyncio.sleep(0.1)

                    row = page.locator("#queue tbody tr").first
                    await expect(row).to_be_visible(timeout=10_000)
                    await expect(row.locator(".state")).to_have_text("open")
                    alert_id = await row.get_attribute("data-alert-id")
                    assert alert_id and engine.alerts.alerts[alert_id].kind == "exclusion"

                    await row.click()
                    await expect(page.locator("#detail-id")).to_have_text(alert_id)
                    await expect(page.locator("#map")).to_have_attribute("data-drawn", "1:1")
                    await page.fill("#note", "called subject")
                    await page.click("#btn-ack")
                    await expect(row.locator(".state")).to_have_text("acknowledged", timeout=10_000)
                    assert not [m for m in console if "Content Security Policy" in m], console
                finally:
                    await browser.close()

            async with httpx.AsyncClient(base_url=server.url) as c:
                detail = (await c.get(f"/api/alerts/{alert_id}")).json()
            assert detail["state"] == "acknowledged"
            assert detail["history"][-1]["by"] == "demo-operator"
            assert detail["history"][-1]["note"] == "called subject"
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 15)
            await server.stop()
