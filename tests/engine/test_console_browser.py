"""The operator console in a real headless Chromium against a live broker, engine and HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import time
from pathlib import Path
from urllib.parse import urlparse

import aiomqtt
import httpx
import pytest

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import T0, DeviceScript, orders_doc, square
from engine.runtime.broker import EmbeddedBroker
from engine.runtime.service import Service
from engine.web.auth import Principal
from engine.web.console_map import NONE
from engine.web.server import HttpServer
from tests.engine.api_support import BAN, make_world

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
        server = HttpServer(service, port=0, orders_doc=doc, tokens={}, map_tiles=NONE)
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
                    await page.locator("h1").click()  # a user gesture: the page may make sound

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
                    # an alarm over MQTT: the row pulses and the page tried to beep
                    await wait_until(lambda: engine.alerts.alerts[alert_id].level == "alarm")
                    await expect(row).to_have_class(re.compile(r"\bfresh\b"), timeout=10_000)
                    await page.wait_for_function("() => window.emguardBeeps >= 1")

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


# --- working an alarm (issue 24): tokens, roles, a cleared condition, claim/ack/close ---------

OPERATOR_TOKEN = "operator-token-0123456789"
READER_TOKEN = "readonly-token-0123456789"
TOKENS = {
    OPERATOR_TOKEN: Principal("anna", "operator"),
    READER_TOKEN: Principal("rita", "read-only"),
}


@contextlib.asynccontextmanager
async def console_page(tokens: dict[str, Principal] | None = None):  # type: ignore[no-untyped-def]
    """An engine with a served console (real HTTP, no broker: device messages are handed to the
    engine and published through the service) and a Chromium page on it; the page's console
    messages are checked for CSP violations at the end."""
    from playwright.async_api import async_playwright

    executable = chromium_path()
    w = make_world(tokens=TOKENS if tokens is None else tokens)
    server = HttpServer(
        w.service, port=0, orders_doc=w.doc, tokens=TOKENS if tokens is None else tokens,
        map_tiles=NONE,  # no tile requests leave the machine in tests
    )
    await server.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
            try:
                page = await browser.new_page()
                messages: list[str] = []
                page.on("console", lambda m: messages.append(m.text))
                await page.goto(server.url + "/")
                yield w, page
                assert not [m for m in messages if "Content Security Policy" in m], messages
            finally:
                await browser.close()
    finally:
        await server.stop()


async def log_in(page, token: str, who: str) -> None:  # type: ignore[no-untyped-def]
    from playwright.async_api import expect

    await page.fill("#token", token)
    await page.click("#btn-login")
    await expect(page.locator("#whoami")).to_have_text(who, timeout=10_000)
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


async def test_login_with_a_typed_token_shows_the_user_and_the_queue_and_logout_clears_it() -> None:
    """Before login nothing is shown; typing the token and logging in shows who and the open
    alarm (the token used to be read only at page load); logging out empties the page."""
    from playwright.async_api import expect

    async with console_page() as (w, page):
        aid = w.raise_exclusion()
        await expect(page.locator("#whoami")).to_have_text("not logged in")
        await page.wait_for_timeout(300)
        assert await page.locator("#queue tbody tr").count() == 0
        await page.fill("#token", "wrong-token-0123456789")
        await page.click("#btn-login")
        await expect(page.locator("#login-msg")).to_have_text("Token not accepted.")
        await log_in(page, OPERATOR_TOKEN, "anna (operator)")
        await expect(page.locator(f'#queue tbody tr[data-alert-id="{aid}"]')).to_be_visible()
        await page.click("#btn-logout")
        await expect(page.locator("#whoami")).to_have_text("not logged in")
        await expect(page.locator("#queue tbody tr")).to_have_count(0)


async def test_a_read_only_user_sees_no_enabled_action() -> None:
    """rita (read-only) sees the alarm and its detail, and every action is disabled."""
    from playwright.async_api import expect

    async with console_page() as (w, page):
        aid = w.raise_exclusion()
        await log_in(page, READER_TOKEN, "rita (read-only)")
        await page.click(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(page.locator("#detail-id")).to_have_text(aid)
        controls = page.locator(".actions button, .actions select, .actions input")
        assert await controls.count() >= 7
        for i in range(await controls.count()):
            await expect(controls.nth(i)).to_be_disabled()


async def test_the_engine_clearing_a_condition_does_not_remove_the_alarm_from_the_queue() -> None:
    """He leaves the zone: the row stays, its condition shows cleared, its state still open."""
    from playwright.async_api import expect

    async with console_page() as (w, page):
        await log_in(page, OPERATOR_TOKEN, "anna (operator)")
        aid = w.raise_exclusion()
        row = page.locator(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(row.locator(".condition")).to_have_text("active", timeout=10_000)
        for i in range(4):  # clearly outside, 3 km away
            w.clock.now = T0 + 60 + 10 * i
            w.send(w.subject.fix(w.clock.now, BAN[0] + 3000, BAN[1]))
        assert w.engine.alerts.alerts[aid].condition == "cleared"
        await expect(row.locator(".condition")).to_have_text("cleared", timeout=10_000)
        await expect(row.locator(".state")).to_have_text("open")
        await page.wait_for_timeout(1200)  # a queue refresh later it is still there
        await expect(row).to_be_visible()


async def test_claim_acknowledge_and_close_a_critical_with_outcome_note_and_confirmation() -> None:
    """anna claims a strap-cut (critical), acknowledges it, is told to give an outcome and a
    note, confirms the close of a critical, and the alert leaves the queue closed."""
    from playwright.async_api import expect

    async with console_page() as (w, page):
        await log_in(page, OPERATOR_TOKEN, "anna (operator)")
        w.send(w.subject.event(T0 + 5, "strap_cut"))
        aid = next(a.alert_id for a in w.engine.alerts.alerts.values() if a.kind == "tamper")
        row = page.locator(f'#queue tbody tr[data-alert-id="{aid}"]')
        await row.click()
        await expect(page.locator("#detail-id")).to_have_text(aid)
        await page.click("#btn-claim")
        await expect(row.locator(".claimed")).to_have_text("anna", timeout=10_000)
        await expect(page.locator("#btn-claim")).to_be_disabled()
        await page.click("#btn-ack")
        await expect(row.locator(".state")).to_have_text("acknowledged", timeout=10_000)
        await page.click("#btn-close")
        await expect(page.locator("#action-msg")).to_contain_text("choose an outcome")
        assert w.engine.alerts.alerts[aid].state == "acknowledged"
        await page.select_option("#outcome", "device_issue")
        await page.fill("#note", "strap replaced by field service")
        await page.click("#btn-close")
        await expect(page.locator("#confirm-close")).to_be_visible()
        assert w.engine.alerts.alerts[aid].state == "acknowledged"
        await page.click("#btn-close-confirm")
        await expect(row).to_have_count(0, timeout=10_000)
        alert = w.engine.alerts.alerts[aid]
        assert (alert.state, alert.outcome, alert.closed_by) == ("closed", "device_issue", "anna")
        assert alert.history[-1].note == "strap replaced by field service"


async def test_ask_him_to_call_the_centre_after_a_confirmation() -> None:
    """anna presses "Ask him to call the centre" on the exclusion alarm: nothing is sent until
    she confirms; then his ankle monitor gets contact_centre and the history shows the prompt."""
    from playwright.async_api import expect

    async with console_page() as (w, page):
        await log_in(page, OPERATOR_TOKEN, "anna (operator)")
        aid = w.raise_exclusion()
        await page.click(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(page.locator("#detail-id")).to_have_text(aid)

        def prompts() -> list[dict[str, object]]:
            return [m.payload for _, m in w.service.outbox if m.channel == "subject"
                    and m.payload["instruction"] == "contact_centre"]  # fmt: skip

        button = page.get_by_role("button", name="Ask him to call the centre")
        await expect(button).to_be_enabled()
        await button.click()
        await expect(page.locator("#confirm-prompt")).to_be_visible()
        await page.click("#btn-prompt-cancel")
        await expect(page.locator("#confirm-prompt")).to_be_hidden()
        await button.click()
        await page.fill("#note", "no answer on his phone")
        assert prompts() == []
        await page.click("#btn-prompt-confirm")
        await expect(page.locator("#history li").last).to_contain_text("prompt", timeout=10_000)
        await expect(page.locator("#confirm-prompt")).to_be_hidden()
        assert [p["level"] for p in prompts()] == ["warning"]
        entry = w.engine.alerts.alerts[aid].history[-1]
        assert (entry.action, entry.by, entry.note) == ("prompt", "anna", "no answer on his phone")
