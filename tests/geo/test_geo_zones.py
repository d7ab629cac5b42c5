"""Zone parsing accepts every contract form and rejects bad geometry with a message naming the zone."""

from __future__ import annotations

import pytest
from shapely.geometry import MultiPolygon, Polygon

from geo.errors import GeoError, ZoneError
from geo.geodesy import geodesic_distance_m
from geo.zones import ZoneShape, parse_zone

SQUARE = [[4.46, 51.91], [4.47, 51.91], [4.47, 51.92], [4.46, 51.92]]
HOLE = [[4.463, 51.913], [4.467, 51.913], [4.467, 51.917], [4.463, 51.917]]
FAR_SQUARE = [[4.50, 51.91], [4.51, 51.91], [4.51, 51.92], [4.50, 51.92]]


@pytest.mark.parametrize(
    ("spec", "geom_type", "n_interiors"),
    [
        ({"polygon": SQUARE}, "Polygon", 0),
        ({"polygon": [*SQUARE, SQUARE[0]]}, "Polygon", 0),
        ({"polygon": {"type": "Polygon", "coordinates": [SQUARE, HOLE]}}, "Polygon", 1),
        ({"geometry": {"type": "Polygon", "coordinates": [[*SQUARE, SQUARE[0]]]}}, "Polygon", 0),
        (
            {"geometry": {"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [FAR_SQUARE]]}},
            "MultiPolygon",
            1,
        ),
        (
            {"polygon": SQUARE, "schedule": [{"days": "mon-sun"}], "protected_person": "P-1"},
            "Polygon",
            0,
        ),
    ],
    ids=[
        "open-ring",
        "closed-ring",
        "polygon-holds-geojson",
        "geometry",
        "multipolygon",
        "extra-keys",
    ],
)
def test_polygon_forms_parse(spec: dict, geom_type: str, n_interiors: int) -> None:
    """Single rings (closing point optional), GeoJSON Polygon and MultiPolygon with holes parse."""
    shape = parse_zone({"id": "Z-1", **spec}, "Z-1")
    assert isinstance(shape, ZoneShape)
    assert shape.kind == "polygon" and shape.zone_id == "Z-1"
    assert shape.geometry.geom_type == geom_type and shape.geometry.is_valid
    parts = shape.geometry.geoms if isinstance(shape.geometry, MultiPolygon) else [shape.geometry]
    assert sum(len(p.interiors) for p in parts) == n_interiors
    assert shape.center is None and shape.radius_m is None


def test_circle_parses_with_geodesic_outline() -> None:
    """A circle keeps centre and radius; its outline lies on the geodesic circle."""
    shape = parse_zone(
        {"id": "Z-home", "circle": {"lat": 51.93, "lon": 4.48, "radius_m": 5000}}, "Z-home"
    )
    assert shape.kind == "circle" and shape.center == (51.93, 4.48) and shape.radius_m == 5000.0
    assert isinstance(shape.geometry, Polygon) and shape.geometry.is_valid
    for lon, lat in list(shape.geometry.exterior.coords)[::16]:
        assert geodesic_distance_m(51.93, 4.48, lat, lon) == pytest.approx(5000.0, abs=1e-6)


BAD = [
    ({}, "needs one of"),
    ({"circle": {"lat": 51.9, "lon": 4.4, "radius_m": 0}}, "radius_m must be > 0"),
    ({"circle": {"lat": 51.9, "lon": 4.4, "radius_m": -5}}, "radius_m must be > 0"),
    ({"circle": {"lat": 51.9, "lon": 4.4}}, "missing 'radius_m'"),
    ({"circle": {"lat": 95.0, "lon": 4.4, "radius_m": 100}}, "latitude 95.0 out of range"),
    ({"circle": {"lat": 51.9, "lon": 200.0, "radius_m": 100}}, "longitude 200.0 out of range"),
    ({"circle": {"lat": "x", "lon": 4.4, "radius_m": 100}}, "must be a number"),
    ({"circle": {"lat": float("nan"), "lon": 4.4, "radius_m": 100}}, "must be finite"),
    ({"circle": {"lat": 51.9, "lon": 4.4, "radius_m": 5e6}}, "exceeds"),
    ({"circle": [51.9, 4.4]}, "must be an object"),
    ({"polygon": [[4.46, 51.91], [4.47, 51.91], [4.46, 51.91]]}, "at least 3 distinct vertices"),
    ({"polygon": [[4.46, 51.91], [4.47, 51.91], [4.48, 51.91]]}, "zero area"),
    (
        {"polygon": [[4.46, 51.91], [4.48, 51.92], [4.48, 51.91], [4.46, 51.92]]},
        "invalid polygon: Self-intersection",
    ),
    (
        {"polygon": [[4.46, 51.91], [4.47, 51.92], [4.47, 51.91], [4.46, 51.92]]},
        "Self-intersection",
    ),
    ({"polygon": [[4.46, 91.0], [4.47, 51.91], [4.47, 51.92]]}, "latitude 91.0 out of range"),
    ({"polygon": [[4.46], [4.47, 51.91], [4.47, 51.92]]}, "must be [lon, lat]"),
    ({"polygon": "POLYGON((...))"}, "must be a [lon, lat] ring or a GeoJSON"),
    ({"geometry": {"type": "Point", "coordinates": [4.4, 51.9]}}, "unsupported geometry type"),
    ({"geometry": {"type": "Polygon"}}, "needs a 'coordinates' array"),
    ({"geometry": {"type": "MultiPolygon", "coordinates": []}}, "no parts"),
    ({"geometry": {"type": "Polygon", "coordinates": []}}, "no rings"),
    (
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [SQUARE, [[4.5, 51.5], [4.6, 51.5], [4.6, 51.6]]],
            }
        },
        "invalid polygon",
    ),
    (
        {"geometry": {"type": "MultiPolygon", "coordinates": [[SQUARE], [SQUARE]]}},
        "invalid polygon",
    ),
    ({"polygon": [[-179.0, 0.0], [179.0, 0.0], [179.0, 1.0]]}, "antimeridian"),
    ({"circle": {"lat": 51.9, "lon": 4.4, "radius_m": 10}, "polygon": SQUARE}, "only one of"),
]


@pytest.mark.parametrize(("spec", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_zone_raises_zone_error_naming_the_zone(spec: dict, message: str) -> None:
    """Each kind of bad zone raises ZoneError (a GeoError) naming the zone and the problem."""
    with pytest.raises(ZoneError) as info:
        parse_zone({"id": "Z-bad-7", **spec}, "Z-bad-7")
    assert "Z-bad-7" in str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, GeoError)


def test_non_mapping_spec_is_rejected() -> None:
    """A zone that is not an object is a ZoneError, not a TypeError."""
    with pytest.raises(ZoneError, match="Z-9"):
        parse_zone(["circle"], "Z-9")  # type: ignore[arg-type]
