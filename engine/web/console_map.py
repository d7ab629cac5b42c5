"""The console's map: which tiles it draws on, and where the Leaflet files it runs come from.

Leaflet is an npm package (``package.json`` at the repository root, ``npm ci``), served by
emguard itself under ``/console/vendor/leaflet/`` so the console needs no CDN and its
Content-Security-Policy stays ``'self'`` for scripts and styles.  Only the tile host is let in,
and only as ``img-src`` of the console page: a tile is a picture, never code.

Tiles are configurable because a monitoring centre may not reach the internet at all:
``EMGUARD_MAP_TILES`` is ``pdok`` (default: the Dutch government's BRT-Achtergrondkaart in
Web Mercator), ``osm`` (OpenStreetMap), ``none`` (no background: zones, tracks and positions
still draw) or a URL template ``https://host/{z}/{x}/{y}.png`` with
``EMGUARD_MAP_ATTRIBUTION`` saying whose it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine.errors import ConfigError

log = logging.getLogger(__name__)

TIMEZONE = "Europe/Amsterdam"  # what the console shows times in (the centre's local time)
VENDOR_URL = "/console/vendor/leaflet/"
VENDOR_ENV = "EMGUARD_CONSOLE_VENDOR_DIR"


@dataclass(frozen=True, slots=True)
class MapTiles:
    """A raster tile source in Web Mercator (Leaflet's ``L.tileLayer``); ``url`` empty: none."""

    name: str
    url: str
    attribution: str
    max_zoom: int = 19
    # the page says no-referrer; a tile server that insists on a Referer (OpenStreetMap's usage
    # policy) gets the console's origin only, never a URL (alert ids stay in the centre)
    referrer_policy: str = "no-referrer"

    @property
    def origin(self) -> str | None:
        """``scheme://host[:port]`` the tiles come from (what the CSP must allow), or None."""
        if not self.url:
            return None
        parts = urlsplit(self.url.replace("{s}", "a"))
        host = parts.netloc
        if "{s}" in self.url:  # subdomains a/b/c: allow the wildcard of the parent domain
            host = "*." + urlsplit(self.url).netloc.split(".", 1)[1]
        return f"{parts.scheme}://{host}"

    def to_json(self) -> dict[str, Any]:
        """What the console page reads (``/console/config.json``)."""
        return {
            "name": self.name,
            "url": self.url or None,
            "attribution": self.attribution,
            "max_zoom": self.max_zoom,
            "referrer_policy": self.referrer_policy,
        }


PDOK = MapTiles(
    "pdok",
    "https://service.pdok.nl/brt/achtergrondkaart/wmts/v2_0/standaard/EPSG:3857/{z}/{x}/{y}.png",
    'Kaartgegevens &copy; <a href="https://www.kadaster.nl">Kadaster</a> (BRT-Achtergrondkaart, PDOK)',
    19,
)
OSM = MapTiles(
    "osm",
    "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
    19,
    "origin",
)
NONE = MapTiles("none", "", "no background map (EMGUARD_MAP_TILES=none)", 22)
PRESETS: Mapping[str, MapTiles] = {t.name: t for t in (PDOK, OSM, NONE)}


def tiles_from_env(env: Mapping[str, str] | None = None) -> MapTiles:
    """The tile source named by ``EMGUARD_MAP_TILES`` (default ``pdok``).

    A URL template must be https (a console on https would refuse mixed content anyway) and
    contain ``{z}``, ``{x}`` and ``{y}``; anything else stops start-up with a message.
    """
    env = os.environ if env is None else env
    value = env.get("EMGUARD_MAP_TILES", "").strip() or "pdok"
    attribution = env.get("EMGUARD_MAP_ATTRIBUTION", "").strip()
    preset = PRESETS.get(value.lower())
    if preset is not None:
        if attribution and preset.url:
            return MapTiles(
                preset.name, preset.url, attribution, preset.max_zoom, preset.referrer_policy
            )
        return preset
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.netloc or not all(
        k in value for k in ("{z}", "{x}", "{y}")
    ):
        raise ConfigError(
            "EMGUARD_MAP_TILES must be pdok, osm, none or an https URL template with {z}, {x} "
            f"and {{y}}; got {value!r}"
        )
    return MapTiles("custom", value, attribution or parts.netloc, 19)


def vendor_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where Leaflet's ``dist`` folder is: ``EMGUARD_CONSOLE_VENDOR_DIR``, else the
    ``node_modules`` that ``npm ci`` made at the repository root beside this package."""
    env = os.environ if env is None else env
    configured = env.get(VENDOR_ENV, "").strip()
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "node_modules" / "leaflet" / "dist"


def leaflet_present(folder: Path) -> bool:
    """True when ``folder`` holds what the console loads: leaflet.js, leaflet.css, images/."""
    return (folder / "leaflet.js").is_file() and (folder / "leaflet.css").is_file()


def warn_if_missing(folder: Path) -> bool:
    """Log why the console will have no map (and what to run); True when Leaflet is there."""
    if leaflet_present(folder):
        return True
    log.warning(
        "console map unavailable: Leaflet not found in %s; run `npm ci` in the repository "
        "(or set %s to a folder holding leaflet.js, leaflet.css and images/). The console "
        "works without the map.",
        folder,
        VENDOR_ENV,
    )
    return False
