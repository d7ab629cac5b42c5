"""The console's map, attention and health in a real headless Chromium (issue 24, the console).

Leaflet comes from ``npm ci`` (node_modules/leaflet/dist) and is served by emguard; the tiles
are off (``EMGUARD_MAP_TILES=none``), so these tests also prove that nothing leaves the machine.
With ``EMGUARD_SCREENSHOTS=docs/screenshots`` the README's console screenshots are refreshed.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from pyproj import Transformer

from engine.core.testing import ORIGIN, T0
from engine.web import views
from engine.web.console_map import NONE, PDOK, MapTiles, vendor_dir
from engine.web.server import HttpServer
from tests.engine.api_support import BAN, World, make_world
from tests.engine.test_console_browser import ARGS, OPERATOR_TOKEN, TOKENS, chromium_path

pytestmark = pytest.mark.browser


@contextlib.asynccontextmanager
async def map_page(
    width: int = 1280, height: int = 720, vendor: Path | None = None, tiles: MapTiles = NONE,
    fake_tiles: bool = False, slow_anonymous_me: bool = False,
) -> AsyncIterator[tuple[World, Any, list[str], list[str]]]:
    """A served console without tiles, a page of the given size, every URL it requested and
    every console error (the test fails on errors and CSP violations at the end)."""
    from playwright.async_api import async_playwright

    if vendor is None and not (vendor_dir() / "leaflet.js").is_file():
        pytest.fail("Leaflet is missing: run `npm ci` in the repository root")
    w = make_world(tokens=TOKENS, doc=_doc_with_names())
    server = HttpServer(
        w.service, port=0, orders_doc=w.doc, tokens=TOKENS, map_tiles=tiles,
        console_vendor=vendor,
    )
    await server.start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium_path(), args=ARGS)
            try:
                page = await browser.new_page(viewport={"width": width, "height": height})
                requests: list[str] = []
                errors: list[str] = []
                page.on("request", lambda r: requests.append(r.url))
                # a refused token (401) and an unready engine (/readyz 503) are answers the page
                # handles, which Chromium logs as "Failed to load resource"; any other error,
                # and any failed load of the console's own files, fails the test
                page.on(
                    "console",
                    lambda m: errors.append(m.text)
                    if (m.type == "error" and not _expected_refusal(m.text))
                    or "Content Security Policy" in m.text
                    else None,
                )
                page.on(
                    "response",
                    lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and "/console/" in r.url
                    else None,
                )
                page.on("pageerror", lambda e: errors.append(str(e)))
                if fake_tiles and tiles.origin:  # answered here: nothing leaves the machine
                    await page.route(tiles.origin + "/**", _fake_tile)
                if slow_anonymous_me:
                    await page.route("**/api/me", _slow_if_anonymous)
                await page.goto(server.url + "/")
                yield w, page, requests, errors
                assert not errors, errors
            finally:
                await browser.close()
    finally:
        await server.stop()


# a 1x1 grey PNG
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415478"
    "9c633871e2040004b40259162e81400000000049454e44ae426082"
)


async def _fake_tile(route: Any) -> None:
    await route.fulfill(status=200, content_type="image/png", body=_PNG)


async def _slow_if_anonymous(route: Any) -> None:
    """The page's own token-less login at start answers late (a slow network or server)."""
    if "authorization" not in route.request.headers:
        await asyncio.sleep(1.5)
    await route.continue_()


def _expected_refusal(text: str) -> bool:
    """Chromium's log line for a 401 (no token yet) or a 503 (/readyz of an unready engine)."""
    return "Failed to load resource" in text and ("status of 401" in text or "status of 503" in text)


def _doc_with_names() -> dict[str, Any]:
    """The api_support world, with the optional personal fields of the orders document."""
    doc = make_world().doc
    doc["subjects"][0].update(name="Jan de Vries", alias="JdV", phone="+31 6 1234 5678")
    doc["protected_persons"][0].update(
        name="Eva Jansen", phone="+31 6 8765 4321", address="Coolsingel 40, Rotterdam"
    )
    return doc


async def _log_in(page: Any) -> None:
    from playwright.async_api import expect

    await page.fill("#token", OPERATOR_TOKEN)
    await page.click("#btn-login")  # also the user gesture that lets the page make sound
    await expect(page.locator("#whoami")).to_have_text("anna (operator)", timeout=10_000)
    await expect(page.locator("#conn")).to_have_text("live", timeout=10_000)


def _proximity_alarm(w: World) -> tuple[float, float]:
    """Her phone reports a coarse Wi-Fi fix, he comes within 300 m: a proximity alarm.
    Returns the (lat, lon) of his last fix as sent on the wire."""
    w.send(w.victim.fix(T0, ORIGIN[0], ORIGIN[1], acc=260, src="wifi"))
    sent: dict[str, Any] = {}
    for i in range(3):
        w.clock.now = T0 + 30 + 20 * i
        topic, payload = w.subject.fix(w.clock.now, ORIGIN[0] + 600 - 120 * i, ORIGIN[1] + 150)
        sent = json.loads(payload)
        w.send((topic, payload))
    return float(sent["lat"]), float(sent["lon"])


async def _shot(page: Any, name: str) -> None:
    folder = os.environ.get("EMGUARD_SCREENSHOTS")
    if folder:
        from PIL import Image  # matplotlib's dependency; 256 colours keep the PNGs small

        png = await page.screenshot()
        image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256)
        image.save(Path(folder) / f"console-{name}.png", optimize=True)


async def test_an_alarm_beeps_flashes_and_the_map_puts_him_where_his_fix_said() -> None:
    """A proximity alarm arrives over the stream: highlighted row, a beep tried, the title
    flashes; opening it, Leaflet's marker for his latest fix is at the lat/lon he sent
    (within 1e-6 degrees), the RD coordinates shown are pyproj's, her Wi-Fi fix's accuracy
    circle is drawn as coarse, a scale bar is there, and no request left 127.0.0.1."""
    from playwright.async_api import expect

    async with map_page() as (w, page, requests, _errors):
        await _log_in(page)
        await page.wait_for_function("() => window.L !== undefined")
        lat, lon = _proximity_alarm(w)
        aid = next(a.alert_id for a in w.engine.alerts.alerts.values() if a.kind == "proximity")
        assert w.engine.alerts.alerts[aid].level in ("alarm", "critical")
        row = page.locator(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(row).to_have_class(_has("fresh"), timeout=10_000)
        await page.wait_for_function("() => window.emguardBeeps >= 1")
        await page.wait_for_function("() => document.title.startsWith('⚠')", timeout=5_000)

        await row.click()
        await expect(page.locator("#detail-id")).to_have_text(aid)
        await page.wait_for_function("() => window.emguardMap.latest['AM-1001'] !== undefined")
        shown = await page.evaluate(
            "(() => { const p = window.emguardMap.latest['AM-1001'].getLatLng();"
            " return [p.lat, p.lng]; })()"
        )
        assert abs(shown[0] - lat) < 1e-6 and abs(shown[1] - lon) < 1e-6, (shown, lat, lon)
        assert "VD-2001" in await page.evaluate("Object.keys(window.emguardMap.latest)")

        rd = Transformer.from_crs("EPSG:4326", "EPSG:28992", always_xy=True)
        want_x, want_y = rd.transform(lon, lat)
        text = await page.locator('#coords tr[data-device="AM-1001"] .rd').inner_text()
        got_x, got_y = (float(v) for v in text.split(","))
        assert abs(got_x - want_x) < 0.02 and abs(got_y - want_y) < 0.02, (text, want_x, want_y)
        wgs = await page.locator('#coords tr[data-device="AM-1001"] .wgs84').inner_text()
        wgs_lat, wgs_lon = (float(v) for v in wgs.split(","))
        assert abs(wgs_lat - lat) < 1.5e-6 and abs(wgs_lon - lon) < 1.5e-6, wgs

        copy = page.locator('#coords tr[data-device="AM-1001"] button.copy')
        await copy.click()  # what dispatch gets pasted: both coordinate systems, rounded
        await expect(copy).to_have_attribute(
            "data-copied",
            re.compile(rf"WGS84 {lat:.5f}\d, {lon:.5f}\d; RD {want_x:.0f}, {want_y:.0f}; ±8 m gnss"),
        )
        assert await page.locator("#map path.acc-coarse").count() >= 1  # her 260 m Wi-Fi fix
        assert await page.locator("#map path.acc-gnss").count() >= 3  # his GNSS fixes
        await expect(page.locator("#map .leaflet-control-scale-line")).to_be_visible()
        await expect(page.locator("#map .time-label").first).to_be_visible()
        await expect(page.locator("#case")).to_contain_text("Eva Jansen")
        await expect(page.locator("#case")).to_contain_text("Coolsingel 40, Rotterdam")
        await expect(page.locator("#case")).to_contain_text("vrijheidsbeperkende maatregel")
        await expect(page.locator("#case ol.script li").first).to_contain_text("Call the protected person")
        await expect(page.locator("#health")).to_contain_text("dead letters 0")
        # meanwhile he walks into the ban zone: a second alarm, highlighted while unopened
        for i in range(4):
            w.clock.now = T0 + 400 + 10 * i
            w.send(w.subject.fix(w.clock.now, BAN[0] + i, BAN[1]))
        ban = next(a.alert_id for a in w.engine.alerts.alerts.values() if a.kind == "exclusion")
        ban_row = page.locator(f'#queue tbody tr[data-alert-id="{ban}"]')
        await expect(ban_row).to_have_class(_has("fresh"), timeout=10_000)
        await page.wait_for_function("() => window.emguardBeeps >= 2")
        await expect(row).not_to_have_class(_has("fresh"))  # opened: no longer flashing
        await page.wait_for_timeout(300)  # tooltips and fitBounds settle for the pictures
        await _shot(page, "1280x720")
        await page.set_viewport_size({"width": 1920, "height": 1080})
        await page.wait_for_timeout(500)
        await _shot(page, "1920x1080")

        # the orders table: clicking an order draws its zones (a ban square, a home circle)
        await page.click('#orders tbody tr[data-order="O-1"]')
        await expect(page.locator("#map path.zone-exclusion")).to_have_count(1)
        await expect(page.locator("#map path.zone-inclusion")).to_have_count(1)
        await expect(page.locator("#map-title")).to_have_text("order O-1")

        outside = [u for u in requests if urlparse(u).hostname not in ("127.0.0.1", None)]
        assert not outside, outside


async def test_the_queue_is_worked_from_the_keyboard_and_deadlines_are_coloured() -> None:
    """j/k (or arrows) move through the queue, Enter opens; the unacknowledged alarm nearest
    its deadline is red once under 2 minutes; times are local with human durations."""
    from playwright.async_api import expect

    async with map_page() as (w, page, _requests, _errors):
        await _log_in(page)
        first = w.raise_exclusion()
        _proximity_alarm(w)
        rows = page.locator("#queue tbody tr")
        await expect(rows).to_have_count(2, timeout=10_000)
        ids = [await rows.nth(i).get_attribute("data-alert-id") for i in range(2)]
        assert first in ids
        await page.locator("h1").click()  # focus the page, not an input
        await page.keyboard.press("j")
        await page.keyboard.press("j")
        await page.keyboard.press("k")
        await page.keyboard.press("Enter")
        await expect(page.locator("#detail-id")).to_have_text(ids[0] or "")
        await page.keyboard.press("ArrowDown")
        await page.keyboard.press("Enter")
        await expect(page.locator("#detail-id")).to_have_text(ids[1] or "")
        # the world's clock stands still: deadlines are minutes away; move it to 90 s before one
        alert = w.engine.alerts.alerts[ids[0] or ""]
        w.clock.now = alert.deadline - 90
        await page.evaluate("loadAlerts()")
        await expect(rows.first.locator(".deadline")).to_have_class(_has("due-red"), timeout=5_000)
        # nobody acknowledged it in time: the engine escalates it, and the console calls again
        beeps = await page.evaluate("() => window.emguardBeeps")
        w.clock.now = alert.deadline + 1
        w.service.apply(w.engine.tick(w.clock.now))
        assert w.engine.alerts.alerts[alert.alert_id].state == "escalated"
        await page.wait_for_function(f"() => window.emguardBeeps > {beeps}")
        escalated = page.locator(f'#queue tbody tr[data-alert-id="{alert.alert_id}"]')
        await expect(escalated.locator(".state")).to_have_text("escalated")
        # acknowledged goes below every unacknowledged one; the page sorts as the server does
        await page.click(f'#queue tbody tr[data-alert-id="{alert.alert_id}"]')
        await page.click("#btn-ack")
        await expect(escalated.locator(".state")).to_have_text("acknowledged", timeout=10_000)
        expected = [
            a.alert_id
            for a in sorted(w.engine.alerts.alerts.values(), key=views.queue_order)
            if a.is_open
        ]
        await expect(rows).to_have_count(len(expected))
        shown = [await rows.nth(i).get_attribute("data-alert-id") for i in range(len(expected))]
        assert shown == expected and shown[-1] == alert.alert_id, (shown, expected)
        # the mute toggle is remembered across a reload
        await page.click("#btn-mute")
        await expect(page.locator("#btn-mute")).to_have_text("sound off")
        await page.reload()  # the tab's session keeps the token: logged in again
        await expect(page.locator("#btn-mute")).to_have_text("sound off")
        await expect(page.locator("#whoami")).to_have_text("anna (operator)", timeout=10_000)
        await page.click(f'#queue tbody tr[data-alert-id="{ids[1]}"]')
        # T0 is 11:06:40 UTC, 12:06:40 in Amsterdam: local time, with a human duration
        device_time = page.locator('#detail-fields dd[data-field="device time"]')
        await expect(device_time).to_have_text(re.compile(r"^12:0\d:\d\d \((in |just now|.* ago)"))


async def test_without_leaflet_the_console_works_and_says_it_has_no_map(tmp_path: Path) -> None:
    """`npm ci` not run: the queue, detail and dispatch coordinates work, the page says why
    there is no map, and nothing is requested from the missing vendor folder."""
    from playwright.async_api import expect

    async with map_page(vendor=tmp_path) as (w, page, requests, _errors):
        await _log_in(page)
        aid = w.raise_exclusion()
        await page.click(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(page.locator("#map-msg")).to_contain_text("npm ci")
        await expect(page.locator('#coords tr[data-device="AM-1001"] .rd')).to_be_visible()
        assert not [u for u in requests if "/vendor/" in u]


def _has(cls: str) -> Any:
    return re.compile(rf"(^|\s){re.escape(cls)}(\s|$)")



async def test_pdok_tiles_are_requested_from_the_tile_host_and_allowed_by_the_policy() -> None:
    """With the default tiles the page asks PDOK's WMTS for Web Mercator z/x/y PNGs (answered
    by the test, not the internet) and the console page's policy lets them in: no CSP
    violation, tiles loaded, and no other host is asked for anything."""
    from playwright.async_api import expect

    async with map_page(tiles=PDOK, fake_tiles=True) as (w, page, requests, _errors):
        await _log_in(page)
        aid = w.raise_exclusion()
        await page.click(f'#queue tbody tr[data-alert-id="{aid}"]')
        await expect(page.locator("#map img.leaflet-tile-loaded").first).to_be_attached(
            timeout=10_000
        )
        await page.wait_for_function(  # drawn, not blocked: a refused image has no pixels
            "() => [...document.querySelectorAll('#map img.leaflet-tile')]"
            ".some(i => i.complete && i.naturalWidth > 0)"
        )
        tile = re.compile(
            r"^https://service\.pdok\.nl/brt/achtergrondkaart/wmts/v2_0/standaard/"
            r"EPSG:3857/\d+/\d+/\d+\.png$"
        )
        hosts = {urlparse(u).hostname for u in requests}
        assert hosts <= {"127.0.0.1", "service.pdok.nl"}, hosts
        pdok = [u for u in requests if urlparse(u).hostname == "service.pdok.nl"]
        assert pdok and all(tile.match(u) for u in pdok), pdok[:3]
        await expect(page.locator("#map .leaflet-control-attribution")).to_contain_text("Kadaster")


async def test_a_login_typed_while_the_page_still_starts_is_kept() -> None:
    """The page tries a token-less login when it loads; if that answer (401) comes after the
    operator logged in with a token, it must not log her out again (it used to race)."""
    from playwright.async_api import expect

    async with map_page(slow_anonymous_me=True) as (w, page, _requests, _errors):
        await _log_in(page)
        await page.wait_for_timeout(2000)  # the late 401 has arrived by now
        await expect(page.locator("#whoami")).to_have_text("anna (operator)")
        aid = w.raise_exclusion()
        await expect(page.locator(f'#queue tbody tr[data-alert-id="{aid}"]')).to_be_visible()
