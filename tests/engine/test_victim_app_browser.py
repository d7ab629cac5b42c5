"""The victim app in a real headless Chromium on a phone-sized screen, against a live engine.

The service runs with an embedded broker and the HTTP server in-process, as in
``emguard serve``; Chromium's geolocation and network are emulated.  With
``EMGUARD_SCREENSHOTS=<dir>`` each state is saved as ``victim-*.png`` (the
README's pictures come from here).  Every page is served under a strict
Content-Security-Policy (``default-src 'self'``) and any console error fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.core.config import ServiceConfig
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, DeviceScript, lonlat, orders_doc
from engine.runtime.broker import EmbeddedBroker
from engine.runtime.service import Service
from engine.web.server import HttpServer
from tests.engine.test_console_browser import ARGS, chromium_path, wait_until

pytestmark = pytest.mark.browser

TOKEN = "victim-token-0123456789abcdef"
PHONE = {"width": 390, "height": 844}
CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
HOME = lonlat(*ORIGIN)  # where she is: (lon, lat)


@dataclass(slots=True)
class Live:
    """A running engine, its HTTP server, one browser page on the app, and what reached the engine."""

    service: Service
    server: HttpServer
    context: Any
    page: Any
    submitted: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    posts: list[list[dict[str, Any]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    subject: DeviceScript | None = None  # his ankle monitor, once he moves

    def her_fixes(self) -> list[dict[str, Any]]:
        return [p for _, topic, p in self.submitted if topic == "em/dev/VD-2001/fix"]

    async def move(self, east_m: float, north_m: float = 0.0) -> None:
        lon, lat = lonlat(ORIGIN[0] + east_m, ORIGIN[1] + north_m)
        await self.context.set_geolocation({"latitude": lat, "longitude": lon, "accuracy": 12})

    async def shot(self, name: str) -> None:
        folder = os.environ.get("EMGUARD_SCREENSHOTS")
        if folder:
            from PIL import Image  # matplotlib's dependency; 256 colours keep the PNGs ~3x smaller

            await asyncio.sleep(0.3)  # let the panic fill and colours settle
            png = await self.page.screenshot()
            image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256)
            image.save(Path(folder) / f"victim-{name}.png", optimize=True)


def _csp(app: Any) -> Any:
    """Wrap an ASGI app so every response carries the strict policy another engineer ships."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def send_with_csp(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      (b"content-security-policy", CSP.encode())]
            await send(message)

        await app(scope, receive, send_with_csp)

    return wrapped


@contextlib.asynccontextmanager
async def live_app(
    locale: str = "en-GB", provision: bool = True, expected_errors: tuple[str, ...] = ()
) -> AsyncIterator[Live]:
    """Engine, HTTP server and a phone-sized Chromium page at home, linked by the provisioning link.

    Any console error fails the test, except those containing one of ``expected_errors``.
    """
    from playwright.async_api import async_playwright

    executable = chromium_path()
    now = time.time()
    doc = orders_doc(
        proximity=[{"protected_person": "P-1", "alert_m": 500, "warn_m": 1000}],
        valid_from=now - 86400,
        valid_until=now + 30 * 86400,
    )
    old = os.environ.get("EMGUARD_DEVICE_TOKENS")
    os.environ["EMGUARD_DEVICE_TOKENS"] = f"{TOKEN}:VD-2001"
    async with EmbeddedBroker() as info:
        engine = Engine(load_orders(doc))
        service = Service(
            engine,
            ServiceConfig(broker=info.url, client_id="victim-app-test"),
            protocol=info.protocol,
            persistent_session=False,
        )
        try:
            server = HttpServer(service, port=0, orders_doc=doc, tokens={})
        finally:
            if old is None:
                del os.environ["EMGUARD_DEVICE_TOKENS"]
            else:
                os.environ["EMGUARD_DEVICE_TOKENS"] = old
        server.app = _csp(server.app)
        live_submit = service.submit
        record: list[tuple[float, str, dict[str, Any]]] = []

        async def spy(topic: str, payload: bytes) -> None:
            record.append((time.time(), topic, json.loads(payload)))
            await live_submit(topic, payload)

        service.submit = spy  # type: ignore[method-assign]
        await server.start()
        stop = asyncio.Event()
        runner = asyncio.create_task(service.run(stop))
        try:
            await wait_until(lambda: service.connected)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=executable, args=ARGS)
                try:
                    context = await browser.new_context(
                        viewport=PHONE,
                        device_scale_factor=2,
                        is_mobile=True,
                        has_touch=True,
                        locale=locale,
                        geolocation={"latitude": HOME[1], "longitude": HOME[0], "accuracy": 12},
                        permissions=["geolocation"],
                    )
                    page = await context.new_page()
                    live = Live(service, server, context, page, record)
                    page.on("console", lambda m: m.type == "error" and live.errors.append(m.text))
                    page.on("pageerror", lambda e: live.errors.append(str(e)))
                    page.on("request", lambda r: _note_post(live, r))
                    if provision:
                        await page.goto(f"{server.url}/victim/#token={TOKEN}")
                    yield live
                    unexpected = [e for e in live.errors if not any(x in e for x in expected_errors)]
                    assert unexpected == [], unexpected
                finally:
                    await browser.close()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 15)
            await server.stop()


def _note_post(live: Live, request: Any) -> None:
    if request.method == "POST" and request.url.endswith("/victim/api/fixes"):
        live.posts.append(json.loads(request.post_data or "[]"))


async def his_alarm(live: Live) -> float:
    """His ankle monitor 600 m away, coming at 5 m/s (contact in 2 min): an alarm for her.

    Fixes are stamped with the real time, as the engine extrapolates live tracks to the present.
    Returns the device time of the last fix.
    """
    tracks = live.service.engine.tracks  # her position is in the engine, not only submitted
    await wait_until(lambda: "VD-2001" in tracks and bool(tracks["VD-2001"].points))
    live.subject = DeviceScript("AM-1001")
    now = time.time()
    await live.service.submit(*live.subject.fix(now - 20, ORIGIN[0] + 700, ORIGIN[1]))
    await live.service.submit(*live.subject.fix(now, ORIGIN[0] + 600, ORIGIN[1]))
    return now


async def his_dash(live: Live, since: float) -> None:
    """Then at 50 m/s (under the jump filter's 70) to within 450 m: contact in seconds, critical."""
    await asyncio.sleep(max(0.0, since + 3.0 - time.time()))
    now = time.time()
    d = max(300.0, 600.0 - 50.0 * (now - since))
    assert live.subject is not None
    await live.service.submit(*live.subject.fix(now, ORIGIN[0] + d, ORIGIN[1]))


async def test_the_warning_rises_as_he_approaches_and_her_fixes_follow_her() -> None:
    """His approach shows an alarm then critical, then the centre's replies; her moves become fixes."""
    from playwright.async_api import expect

    async with live_app() as live:
        page = live.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        assert "#" not in page.url, "the provisioning token is wiped from the address bar"
        await wait_until(lambda: len(live.her_fixes()) >= 1)
        await expect(page.locator("body")).to_have_attribute("data-level", "none")
        await live.shot("calm")

        since = await his_alarm(live)
        await expect(page.locator("body")).to_have_attribute("data-level", "alarm", timeout=10_000)
        await expect(page.locator("#level-text")).to_have_text("Alarm: get yourself to safety")
        await expect(page.locator("#near")).to_have_text("Distance: within 1 km")
        await expect(page.locator("#interval-text")).to_have_attribute("data-seconds", "15")
        await expect(page.locator("body")).to_have_attribute("data-sounding", "alarm")
        await live.shot("alarm")

        await his_dash(live, since)
        await expect(page.locator("body")).to_have_attribute("data-level", "critical", timeout=10_000)
        await expect(page.locator("#near")).to_have_text(re.compile(r"^Distance: within (1 km|500 m)$"))
        await live.shot("critical")

        proximity = [a for a in live.service.engine.alerts.alerts.values() if a.kind == "proximity"]
        assert [a.level for a in proximity] == ["critical"]
        alert_id = proximity[0].alert_id
        live.service.act(alert_id, "ack", "operator-1", "calling her")
        await expect(page.locator("#status")).to_have_text("The centre is handling it.", timeout=10_000)
        live.service.act(alert_id, "escalate", "operator-1", "police dispatched", target="police")
        await expect(page.locator("#status")).to_have_text("The police have been alerted.", timeout=10_000)
        await page.locator("#silence").click()
        await expect(page.locator("body")).to_have_attribute("data-sounding", "")
        await live.shot("police-alerted")

        await page.locator("#lang").click()
        await expect(page.locator("#level-text")).to_have_text("Gevaar: breng jezelf nu in veiligheid")
        await expect(page.locator("#status")).to_have_text("De politie is gewaarschuwd.")
        await live.shot("critical-nl")
        await page.locator("#lang").click()

        live.service.act(alert_id, "close", "operator-1", "arrested", outcome="police_dispatched")
        await expect(page.locator("body")).to_have_attribute("data-level", "clear", timeout=10_000)
        await expect(page.locator("#level-text")).to_have_text("All clear")
        await live.shot("all-clear")

        # she walks north: every step of 40 m is a fix at once, numbered without a gap
        before = len(live.her_fixes())
        for step in (1, 2, 3):
            await live.move(0.0, 40.0 * step)
            await wait_until(lambda n=step: len(live.her_fixes()) >= before + n)
        fixes = live.her_fixes()
        seqs = [f["seq"] for f in fixes]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "contiguous sequence numbers"
        assert all(f["device"] == "VD-2001" and f["acc"] == 12 for f in fixes)
        assert fixes[-1]["lat"] > fixes[before - 1]["lat"], "she moved north"
        if await page.evaluate("'getBattery' in navigator"):
            assert 0 <= fixes[-1]["batt"] <= 100, "battery level where the browser offers it"

        stored = await page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
        for kept in ("alert_id", "within", "critical", '"lat"'):
            assert kept not in stored, f"no warning or sent position kept on the phone ({kept})"


async def go_offline(live: Any) -> None:
    """Once the app is live and has sent a fix, take the phone offline and wait until it knows."""
    from playwright.async_api import expect

    page = live.page
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
    await wait_until(lambda: len(live.her_fixes()) >= 1)
    await live.context.set_offline(True)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "offline", timeout=5_000)


async def test_offline_fixes_are_kept_and_arrive_as_one_burst() -> None:
    """Offline, her moves are buffered on the phone; back online they reach the engine in one upload."""
    from playwright.async_api import expect

    async with live_app() as live:
        page = live.page
        await go_offline(live)
        # no stream, no warnings: the app must not look calm
        await expect(page.locator("body")).to_have_attribute("data-level", "unknown")
        await expect(page.locator("#level-text")).to_have_text("No connection")
        sent_before = len(live.her_fixes())
        for step in (1, 2, 3, 4):
            await live.move(0.0, 60.0 * step)
            await expect(page.locator("body")).to_have_attribute("data-unsent", str(step), timeout=5_000)
        await live.shot("offline")
        await asyncio.sleep(1.0)
        assert len(live.her_fixes()) == sent_before, "nothing reached the engine while offline"
        stored = await page.evaluate("JSON.parse(localStorage.getItem('emg.unsent'))")
        assert [item["kind"] for item in stored] == ["fix"] * 4

        posts_before = len(live.posts)
        await live.context.set_offline(False)
        await wait_until(lambda: len(live.her_fixes()) >= sent_before + 4)
        await expect(page.locator("body")).to_have_attribute("data-unsent", "0", timeout=5_000)
        burst = live.posts[posts_before]
        assert len(burst) == 4, "the buffered fixes went up together"
        arrived = [at for at, topic, _ in live.submitted if topic.endswith("/fix")][sent_before:]
        assert max(arrived) - min(arrived) < 1.0
        assert [f["seq"] for f in burst] == [f["seq"] for f in live.her_fixes()[sent_before:]]
        assert await page.evaluate("localStorage.getItem('emg.unsent')") is None
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)


async def hold(page: Any, selector: str, seconds: float) -> None:
    """Press the middle of an element with the mouse for ``seconds``, then let go."""
    box = await page.locator(selector).bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    await asyncio.sleep(seconds)
    await page.mouse.up()


async def test_a_panic_held_offline_waits_and_goes_first_when_back() -> None:
    """Offline, the alarm is kept and she is told to call 112; back online it is sent before her fixes."""
    from playwright.async_api import expect

    async with live_app() as live:
        page = live.page
        await go_offline(live)
        await live.move(0.0, 60.0)
        await hold(page, "#panic", 1.8)
        await expect(page.locator("#panic-state")).to_have_text(
            "No connection: the alarm is sent as soon as possible. Call 112!"
        )
        stored = await page.evaluate("JSON.parse(localStorage.getItem('emg.unsent'))")
        assert "panic" in [item["kind"] for item in stored]
        sent_before = len(live.submitted)
        await live.context.set_offline(False)
        await expect(page.locator("#panic-state")).to_have_text(
            "Alarm sent. The monitoring centre has been alerted.", timeout=10_000
        )
        await wait_until(lambda: len(live.her_fixes()) >= 3)
        after = [topic for _, topic, _ in live.submitted[sent_before:]]
        assert after[0] == "em/dev/VD-2001/event", "the alarm goes before the positions"
        panics = [a for a in live.service.engine.alerts.alerts.values() if a.kind == "panic"]
        assert [a.level for a in panics] == ["critical"]


async def test_holding_the_panic_button_raises_a_panic_critical_at_the_centre() -> None:
    """A tap does nothing; holding 1.5 s sends the panic event and the centre gets a critical."""
    from playwright.async_api import expect

    async with live_app() as live:
        page = live.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        box = await page.locator("#panic").bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        await page.mouse.move(x, y)
        await page.mouse.down()
        await asyncio.sleep(0.5)
        await page.mouse.up()
        await asyncio.sleep(1.5)
        assert not any(t.endswith("/event") for _, t, _ in live.submitted), "a short press sends nothing"

        await page.mouse.down()
        await asyncio.sleep(0.8)
        await live.shot("panic-holding")
        await asyncio.sleep(1.0)
        await page.mouse.up()
        await expect(page.locator("#panic-state")).to_have_text(
            "Alarm sent. The monitoring centre has been alerted.", timeout=10_000
        )
        panics = [a for a in live.service.engine.alerts.alerts.values() if a.kind == "panic"]
        assert [(a.level, a.protected_person) for a in panics] == [("critical", "P-1")]
        await expect(page.locator("#message")).to_have_text(
            "Your alarm has been received by the monitoring centre.", timeout=10_000
        )
        await expect(page.locator("#level-text")).to_have_text("Alarm received")
        assert await page.evaluate("document.body.dataset.sounding") == "", "her own alarm is silent"
        await live.shot("panic-sent")


async def test_quick_exit_hides_everything_until_she_holds_the_temperature() -> None:
    """One tap shows a plain weather page, clears the warning, survives a reload, and comes back on hold."""
    from playwright.async_api import expect

    async with live_app() as live:
        page = live.page
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        await his_alarm(live)
        await expect(page.locator("body")).to_have_attribute("data-level", "alarm", timeout=10_000)

        await page.locator("#exit").click()
        await expect(page.locator("#neutral")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()
        assert await page.title() == "Weather"
        visible = await page.locator("body").inner_text()
        for word in ("Alarm", "112", "safety", "protected", "warning"):
            assert word not in visible
        assert await page.locator("#message").text_content() == ""
        assert await page.evaluate("document.body.dataset.sounding") == ""
        await live.shot("quick-exit")

        await page.reload()
        await expect(page.locator("#neutral")).to_be_visible()
        await expect(page.locator("#app")).to_be_hidden()

        box = await page.locator("#n-temp").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        await asyncio.sleep(2.3)
        await page.mouse.up()
        await expect(page.locator("#app")).to_be_visible()
        await expect(page.locator("body")).to_have_attribute("data-level", "alarm", timeout=10_000)


async def test_linking_refuses_a_wrong_code_and_the_shell_works_installed() -> None:
    """A wrong code is refused; the service worker caches the app shell and never an API answer."""
    from playwright.async_api import expect

    refused = "the server responded with a status of 401"  # the wrong code, as the test means
    async with live_app(locale="nl-NL", provision=False, expected_errors=(refused,)) as live:
        page = live.page
        await page.goto(f"{live.server.url}/victim/")
        await expect(page.locator("#setup")).to_be_visible()
        await expect(page.locator("#setup h1")).to_have_text("Koppel deze telefoon")
        await page.fill("#token", "not-the-right-code-000000")
        await page.click("#link")
        await expect(page.locator("#setup-msg")).to_contain_text("niet herkend")
        await live.shot("setup")
        await page.fill("#token", TOKEN)
        await page.click("#link")
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=10_000)
        await expect(page.locator("#level-text")).to_have_text("Geen waarschuwing")
        assert await page.title() == "Weer"
        assert await page.locator("#manifest").get_attribute("href") == "manifest.webmanifest"
        await page.click("#settings-open")
        await page.locator("#discreet").uncheck()
        await expect(page).to_have_title("Veilig")
        assert await page.locator("#manifest").get_attribute("href") == "manifest-plain.webmanifest"
        assert await page.locator("#favicon").get_attribute("href") == "icon-shield.svg"
        await expect(page.locator("#device-id")).to_have_text("Apparaat: VD-2001")
        await live.shot("settings")
        await page.locator("#discreet").check()
        await page.click("#settings-close")
        await expect(page).to_have_title("Weer")

        await page.evaluate("navigator.serviceWorker.ready")
        await page.evaluate("fetch('api/state', {headers: {authorization: 'Bearer " + TOKEN + "'}})")
        cached = await page.evaluate(
            "caches.keys().then(ks => Promise.all(ks.map(k => caches.open(k).then(c => c.keys()))))"
            ".then(all => all.flat().map(r => r.url))"
        )
        paths = {u.split("/victim/", 1)[1] for u in cached}
        assert {"", "app.js", "app.css", "text.js", "manifest.webmanifest"} <= paths
        assert not any(p.startswith("api/") for p in paths)
