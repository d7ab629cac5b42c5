"""Projected distances agree with WGS84 geodesics; circles follow the true geodesic circle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon
from shapely.geometry.polygon import orient

from geo.errors import GeoError
from geo.geodesy import WGS84, geodesic_destination, geodesic_distance_m
from geo.index import ZoneIndex
from geo.projection import Projector, utm_epsg
from geo.zones import parse_zone

nl_points = st.tuples(st.floats(3.4, 7.2), st.floats(50.75, 53.5))
world_points = st.tuples(st.floats(-179.0, 179.0), st.floats(-79.0, 83.0))
bearings = st.floats(0.0, 360.0)
dists = st.floats(1.0, 50_000.0)


def _projected_vs_geodesic(
    proj: Projector, lon: float, lat: float, az: float, dist: float
) -> float:
    lon2, lat2 = geodesic_destination(lat, lon, az, dist)
    x1, y1 = proj.forward(lon, lat)
    x2, y2 = proj.forward(lon2, lat2)
    return math.hypot(x2 - x1, y2 - y1) / dist - 1.0


@settings(max_examples=200, deadline=None)
@given(nl_points, bearings, dists)
@example((3.4, 50.75), 45.0, 50_000.0)
@example((7.2, 53.5), 225.0, 50_000.0)
def test_rd_new_distances_match_geodesic_in_the_netherlands(p, az, dist) -> None:
    """RD New distances are within 0.5 % (in fact ~0.02 %) of WGS84 geodesics up to 50 km."""
    assert abs(_projected_vs_geodesic(Projector(), p[0], p[1], az, dist)) < 0.005


@settings(max_examples=200, deadline=None)
@given(world_points, bearings, dists)
@example((2.999, 10.0), 90.0, 50_000.0)  # starts at a UTM zone edge, ends in the next zone
@example((-72.0, -45.0), 0.0, 50_000.0)
def test_auto_utm_distances_match_geodesic_elsewhere(p, az, dist) -> None:
    """The local UTM zone keeps distances within 0.5 % of geodesics up to 50 km."""
    proj = Projector.auto_for(p[0], p[1])
    assert abs(_projected_vs_geodesic(proj, p[0], p[1], az, dist)) < 0.005


@pytest.mark.parametrize(
    ("lon", "lat", "epsg"),
    [
        (4.9, 52.4, "EPSG:32631"),
        (6.5, 52.0, "EPSG:32632"),
        (-58.4, -34.6, "EPSG:32721"),
        (5.3, 60.4, "EPSG:32632"),
        (15.0, 78.0, "EPSG:32633"),
        (179.9, 10.0, "EPSG:32660"),
    ],
    ids=["amsterdam", "enschede", "buenos-aires", "bergen-exception", "svalbard", "dateline"],
)
def test_utm_zone_selection(lon: float, lat: float, epsg: str) -> None:
    """UTM zone numbers, hemispheres and the Norway/Svalbard exceptions."""
    assert utm_epsg(lon, lat) == epsg
    assert Projector.auto_for(lon, lat).crs == epsg


def test_forward_inverse_round_trip_arrays_and_scalars() -> None:
    """forward/inverse accept floats and arrays and invert each other to ~1e-9 degrees."""
    proj = Projector()
    lon = np.array([4.48, 5.12, 6.56])
    lat = np.array([51.93, 52.09, 53.22])
    x, y = proj.forward(lon, lat)
    lon2, lat2 = proj.inverse(x, y)
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    xs, ys = proj.forward(4.48, 51.93)
    assert isinstance(xs, float) and xs == pytest.approx(x[0]) and ys == pytest.approx(y[0])
    assert 0 < xs < 300_000 and 300_000 < ys < 625_000  # RD New range


def test_project_geometry_is_vectorised_and_keeps_structure() -> None:
    """A lon/lat polygon with a hole projects vertex by vertex, same structure."""
    proj = Projector()
    shape = parse_zone(
        {
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[4.46, 51.91], [4.47, 51.91], [4.47, 51.92], [4.46, 51.92]],
                    [[4.463, 51.913], [4.467, 51.913], [4.467, 51.917], [4.463, 51.917]],
                ],
            }
        },
        "Z",
    )
    g = proj.project_geometry(shape.geometry)
    assert isinstance(g, Polygon) and len(g.interiors) == 1
    x, y = proj.forward(*shapely.get_coordinates(shape.geometry).T)
    np.testing.assert_allclose(shapely.get_coordinates(g), np.column_stack((x, y)))
    # area agrees with the ellipsoidal area to 0.1 %
    area, _ = WGS84.geometry_area_perimeter(orient(shape.geometry))
    assert g.area == pytest.approx(abs(area), rel=1e-3)


def test_unknown_or_geographic_crs_is_an_error() -> None:
    """A CRS that is unknown or not projected is refused with a GeoError."""
    with pytest.raises(GeoError, match="unknown CRS"):
        Projector("EPSG:999999")
    with pytest.raises(GeoError, match="not a projected CRS"):
        Projector("EPSG:4326")


@settings(max_examples=150, deadline=None)
@given(nl_points, st.sampled_from([1.0, 150.0, 1_000.0, 5_000.0, 50_000.0]), bearings)
def test_circle_zone_follows_geodesic_circle(centre, radius, az) -> None:
    """Points 1e-3·r (min 1 cm) inside/outside the geodesic circle land on the right side."""
    lon, lat = centre
    shape = parse_zone({"circle": {"lat": lat, "lon": lon, "radius_m": radius}}, "C")
    ix = ZoneIndex()
    ix.upsert("C", shape)
    margin = max(1e-3 * radius, 0.01)
    pts = [geodesic_destination(lat, lon, az, radius + s * margin) for s in (-1.0, 1.0)]
    sd = ix.signed_distance_lonlat(
        "C", np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    )
    assert sd[0] < 0.0 < sd[1]
    # and the value is the geodesic distance to the circle within the projection's scale error
    np.testing.assert_allclose(np.abs(sd), margin, rtol=0.05, atol=2e-4 * radius)


def test_geodesic_distance_reference() -> None:
    """geodesic_distance_m gives the WGS84 distance (the quarter meridian is 10,001,965.729 m)."""
    assert geodesic_distance_m(0.0, 0.0, 90.0, 0.0) == pytest.approx(10_001_965.729, abs=1e-3)


def test_forward_bulk_equals_forward(monkeypatch) -> None:
    """The threaded bulk projection used for index builds gives exactly forward()'s numbers."""
    import geo.projection as projection_module

    monkeypatch.setattr(projection_module, "BULK_MIN_POINTS", 10)
    proj = Projector()
    rng = np.random.default_rng(5)
    lon = rng.uniform(3.4, 7.2, 1001)
    lat = rng.uniform(50.8, 53.5, 1001)
    x1, y1 = proj.forward(lon, lat)
    x2, y2 = proj.forward_bulk(lon, lat)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
