"""Zone authoring: parse and validate a zone object from the orders file (contract §4).

A zone is a circle (centre + radius in metres) or a polygon given as a single
``[lon, lat]`` ring, a GeoJSON ``Polygon`` / ``MultiPolygon`` (holes allowed),
under ``"polygon"`` or ``"geometry"``.  Bad geometry fails here, at load time,
with a ``ZoneError`` naming the zone, never later in the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.validation import explain_validity

from .errors import ZoneError
from .geodesy import geodesic_circle

CIRCLE_OUTLINE_VERTICES = 128
MAX_RADIUS_M = 1_000_000.0  # planar evaluation is not meant for continent-sized circles


@dataclass(frozen=True, slots=True)
class ZoneShape:
    """A validated zone in WGS84.

    ``geometry`` is lon/lat; for a circle it is a fine polygon outline (for
    display and checks); the kernels evaluate circles exactly from ``center``
    (lat, lon) and ``radius_m``.
    """

    zone_id: str
    kind: Literal["circle", "polygon"]
    geometry: Polygon | MultiPolygon
    center: tuple[float, float] | None = None
    radius_m: float | None = None


def parse_zone(spec: Mapping[str, Any], zone_id: str) -> ZoneShape:
    """Parse one zone object; raise ``ZoneError`` naming ``zone_id`` and the problem."""
    if not isinstance(spec, Mapping):
        raise ZoneError(f"zone {zone_id!r}: must be an object, got {type(spec).__name__}")
    present = [k for k in ("circle", "polygon", "geometry") if spec.get(k) is not None]
    if not present:
        raise ZoneError(f"zone {zone_id!r}: needs one of 'circle', 'polygon' or 'geometry'")
    if len(present) > 1:
        raise ZoneError(f"zone {zone_id!r}: give only one of {present}")
    key = present[0]
    raw = spec[key]
    if key == "circle":
        return _parse_circle(raw, zone_id)
    if key == "polygon" and isinstance(raw, Sequence) and not isinstance(raw, str):
        geom = _polygon_from_rings([raw], zone_id, "polygon")
    elif isinstance(raw, Mapping):
        geom = _parse_geojson(raw, zone_id)
    else:
        raise ZoneError(
            f"zone {zone_id!r}: {key!r} must be a [lon, lat] ring or a GeoJSON geometry object"
        )
    _check_valid(geom, zone_id)
    return ZoneShape(zone_id=zone_id, kind="polygon", geometry=geom)


def _number(value: Any, what: str, zone_id: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ZoneError(f"zone {zone_id!r}: {what} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ZoneError(f"zone {zone_id!r}: {what} must be finite, got {value!r}")
    return x


def _check_lonlat(lon: float, lat: float, zone_id: str, where: str) -> None:
    if not -180.0 <= lon <= 180.0:
        raise ZoneError(f"zone {zone_id!r}: {where} longitude {lon} out of range [-180, 180]")
    if not -90.0 <= lat <= 90.0:
        raise ZoneError(f"zone {zone_id!r}: {where} latitude {lat} out of range [-90, 90]")


def _parse_circle(raw: Any, zone_id: str) -> ZoneShape:
    if not isinstance(raw, Mapping):
        raise ZoneError(f"zone {zone_id!r}: 'circle' must be an object with lat, lon, radius_m")
    for k in ("lat", "lon", "radius_m"):
        if k not in raw:
            raise ZoneError(f"zone {zone_id!r}: circle is missing {k!r}")
    lat = _number(raw["lat"], "circle lat", zone_id)
    lon = _number(raw["lon"], "circle lon", zone_id)
    radius = _number(raw["radius_m"], "circle radius_m", zone_id)
    _check_lonlat(lon, lat, zone_id, "circle centre")
    if abs(lat) > 84.0:
        raise ZoneError(f"zone {zone_id!r}: circle centre latitude {lat} too close to a pole")
    if radius <= 0.0:
        raise ZoneError(f"zone {zone_id!r}: circle radius_m must be > 0, got {radius}")
    if radius > MAX_RADIUS_M:
        raise ZoneError(
            f"zone {zone_id!r}: circle radius_m {radius} exceeds the {MAX_RADIUS_M:.0f} m limit"
        )
    lons, lats = geodesic_circle(lat, lon, radius, CIRCLE_OUTLINE_VERTICES)
    outline = Polygon(np.column_stack((lons, lats)))
    return ZoneShape(zone_id, "circle", outline, center=(lat, lon), radius_m=radius)


def _parse_geojson(raw: Mapping[str, Any], zone_id: str) -> Polygon | MultiPolygon:
    gtype = raw.get("type")
    coords = raw.get("coordinates")
    if not isinstance(coords, Sequence) or isinstance(coords, str):
        raise ZoneError(f"zone {zone_id!r}: GeoJSON geometry needs a 'coordinates' array")
    if gtype == "Polygon":
        return _polygon_from_rings(coords, zone_id, "polygon")
    if gtype == "MultiPolygon":
        if not coords:
            raise ZoneError(f"zone {zone_id!r}: MultiPolygon has no parts")
        parts = []
        for p, rings in enumerate(coords):
            if not isinstance(rings, Sequence) or isinstance(rings, str):
                raise ZoneError(f"zone {zone_id!r}: MultiPolygon part {p} must be a list of rings")
            parts.append(_polygon_from_rings(rings, zone_id, f"part {p}"))
        return MultiPolygon(parts)
    raise ZoneError(
        f"zone {zone_id!r}: unsupported geometry type {gtype!r} (use Polygon or MultiPolygon)"
    )


def _ring(raw: Any, zone_id: str, where: str) -> np.ndarray:
    """Validate one ring of [lon, lat] positions; return an open (n, 2) array, n >= 3."""
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ZoneError(f"zone {zone_id!r}: {where} must be a list of [lon, lat] positions")
    pts: list[tuple[float, float]] = []
    for i, pos in enumerate(raw):
        if not isinstance(pos, Sequence) or isinstance(pos, str) or len(pos) not in (2, 3):
            raise ZoneError(
                f"zone {zone_id!r}: {where} position {i} must be [lon, lat], got {pos!r}"
            )
        lon = _number(pos[0], f"{where} position {i} longitude", zone_id)
        lat = _number(pos[1], f"{where} position {i} latitude", zone_id)
        _check_lonlat(lon, lat, zone_id, f"{where} position {i}")
        if not pts or pts[-1] != (lon, lat):  # drop repeated consecutive points
            pts.append((lon, lat))
    if len(pts) > 1 and pts[0] == pts[-1]:  # closing point is optional
        pts.pop()
    if len(set(pts)) < 3:
        raise ZoneError(
            f"zone {zone_id!r}: {where} is degenerate: needs at least 3 distinct vertices, "
            f"got {len(set(pts))}"
        )
    arr = np.asarray(pts, dtype=np.float64)
    if np.ptp(arr[:, 0]) > 180.0:
        raise ZoneError(
            f"zone {zone_id!r}: {where} spans more than 180 degrees of longitude "
            "(zones crossing the antimeridian are not supported)"
        )
    return arr


def _polygon_from_rings(rings: Sequence[Any], zone_id: str, where: str) -> Polygon:
    if not rings:
        raise ZoneError(f"zone {zone_id!r}: {where} has no rings")
    shell = _ring(rings[0], zone_id, f"{where} outer ring")
    holes = [_ring(r, zone_id, f"{where} hole {h}") for h, r in enumerate(rings[1:], start=1)]
    return Polygon(shell, holes)


def _check_valid(geom: Polygon | MultiPolygon, zone_id: str) -> None:
    if not shapely.is_valid(geom):
        reason = explain_validity(geom)
        if geom.convex_hull.area == 0.0:
            raise ZoneError(f"zone {zone_id!r}: polygon is degenerate: zero area ({reason})")
        raise ZoneError(f"zone {zone_id!r}: invalid polygon: {reason}")
    if not geom.area > 0.0:
        raise ZoneError(f"zone {zone_id!r}: polygon is degenerate: zero area")
