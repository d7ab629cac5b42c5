"""The console map's settings, policy and data, without a browser (issue 24, the console)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyproj import Transformer

from engine.core.testing import ORIGIN, T0
from engine.errors import ConfigError
from engine.web.console_map import NONE, OSM, PDOK, MapTiles, tiles_from_env
from engine.web.edge import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, console_policy
from engine.web.server import HttpServer
from tests.engine.api_support import make_world


def test_tiles_default_to_pdok_and_take_presets_templates_and_none() -> None:
    """PDOK's BRT-Achtergrondkaart by default; osm and none by name; a template of your own."""
    assert tiles_from_env({}) is PDOK and "EPSG:3857/{z}/{x}/{y}.png" in PDOK.url
    assert tiles_from_env({"EMGUARD_MAP_TILES": "osm"}) is OSM
    assert (PDOK.referrer_policy, OSM.referrer_policy) == ("no-referrer", "origin")
    assert tiles_from_env({"EMGUARD_MAP_TILES": "none"}).url == ""
    own = tiles_from_env({
        "EMGUARD_MAP_TILES": "https://tiles.example.nl/brt/{z}/{x}/{y}.png",
        "EMGUARD_MAP_ATTRIBUTION": "our own",
    })
    assert (own.origin, own.attribution) == ("https://tiles.example.nl", "our own")
    assert MapTiles("s", "https://{s}.tile.example.org/{z}/{x}/{y}.png", "").origin == (
        "https://*.tile.example.org"
    )
    for bad in ("http://tiles.example.nl/{z}/{x}/{y}.png", "https://tiles.example.nl/a.png", "pdk"):
        with pytest.raises(ConfigError, match="EMGUARD_MAP_TILES"):
            tiles_from_env({"EMGUARD_MAP_TILES": bad})


def test_only_the_console_page_may_load_tiles_and_only_from_the_tile_host() -> None:
    """img-src gains the tile origin on the console page; everything else is untouched."""
    policy = console_policy(PDOK)
    assert "img-src 'self' data: https://service.pdok.nl;" in policy
    assert policy.replace(" https://service.pdok.nl", "") == CONTENT_SECURITY_POLICY
    assert console_policy(NONE) == CONTENT_SECURITY_POLICY
    assert SECURITY_HEADERS["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_page_config_vendor_files_and_policy_are_served(tmp_path: Path) -> None:
    """/console/config.json tells the page the tiles and where Leaflet is; the vendor folder
    is served; the API keeps the strict policy while the page allows the tile host."""
    (tmp_path / "leaflet.js").write_text("/* leaflet */")
    (tmp_path / "leaflet.css").write_text("/* css */")
    w = make_world()
    server = HttpServer(w.service, orders_doc=w.doc, tokens={}, map_tiles=PDOK, console_vendor=tmp_path)
    async with _client(server) as c:
        config = (await c.get("/console/config.json")).json()
        page = await c.get("/")
        js = await c.get("/console/vendor/leaflet/leaflet.js")
        api = await c.get("/api/alerts")
    assert config["tiles"]["url"] == PDOK.url and config["leaflet"] == "/console/vendor/leaflet/"
    assert config["timezone"] == "Europe/Amsterdam"
    assert "https://service.pdok.nl" in page.headers["content-security-policy"]
    assert js.status_code == 200 and js.text == "/* leaflet */"
    assert api.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


async def test_without_leaflet_the_server_warns_and_the_page_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No `npm ci`: a warning saying what to run, no vendor route, config says no Leaflet."""
    w = make_world()
    with caplog.at_level("WARNING", logger="engine.web.console_map"):
        server = HttpServer(w.service, orders_doc=w.doc, tokens={}, map_tiles=NONE, console_vendor=tmp_path)
    assert "npm ci" in caplog.text
    async with _client(server) as c:
        config = (await c.get("/console/config.json")).json()
        missing = await c.get("/console/vendor/leaflet/leaflet.js")
    assert config["leaflet"] is None and config["tiles"]["url"] is None
    assert missing.status_code == 404


async def test_alert_detail_gives_latest_positions_in_wgs84_and_rd_and_the_case() -> None:
    """map.latest: each person's latest fix with lat/lon, pyproj's RD New, accuracy and source;
    case: names, phone and address from the orders document, and the order."""
    doc = make_world().doc
    doc["protected_persons"][0].update(name="Eva Jansen", phone="+31 6 8765 4321", address="Coolsingel 40")
    w = make_world(doc=doc)
    w.send(w.victim.fix(T0, ORIGIN[0], ORIGIN[1], acc=260, src="wifi"))
    for i in range(3):
        w.clock.now = T0 + 30 + 20 * i
        w.send(w.subject.fix(w.clock.now, ORIGIN[0] + 600 - 120 * i, ORIGIN[1] + 150))
    aid = next(a.alert_id for a in w.engine.alerts.alerts.values() if a.kind == "proximity")
    async with w.client() as c:
        detail = (await c.get(f"/api/alerts/{aid}")).json()
        readyz = (await c.get("/readyz")).json()
    latest = {p["device"]: p for p in detail["map"]["latest"]}
    him, her = latest["AM-1001"], latest["VD-2001"]
    rd = Transformer.from_crs("EPSG:4326", "EPSG:28992", always_xy=True)
    x, y = rd.transform(him["lon"], him["lat"])
    assert abs(him["rd_x"] - x) < 0.01 and abs(him["rd_y"] - y) < 0.01
    assert abs(him["rd_x"] - (ORIGIN[0] + 360)) < 0.05 and abs(him["rd_y"] - (ORIGIN[1] + 150)) < 0.05
    assert (him["role"], him["person"], him["src"]) == ("subject", "S-1", "gnss")
    assert (her["role"], her["src"], her["acc"]) == ("protected", "wifi", 260.0)
    assert all("src" in p for p in detail["map"]["tracks"]["AM-1001"])
    case = detail["case"]
    assert case["protected_person"]["name"] == "Eva Jansen"
    assert case["protected_person"]["address"] == "Coolsingel 40"
    assert case["subject"]["name"] is None and case["subject"]["devices"] == ["AM-1001"]
    assert case["order"]["id"] == "O-1" and case["order"]["legal_basis"]
    assert readyz["dead_letters"] == 0


def _client(server: HttpServer):  # type: ignore[no-untyped-def]
    import httpx

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app), base_url="http://test")
