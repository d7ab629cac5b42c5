"""The compiled polygon kernel agrees with shapely (the reference) on containment and distance."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from _geo_strategies import zone_scenes
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from geo.errors import GeoError
from geo.index import ZoneIndex
from geo.kernels import BLOCK_EDGES, BLOCK_SIZE

SQUARE = box(100_000.0, 400_000.0, 101_000.0, 401_000.0)
HOLED = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(3, 3), (7, 3), (7, 7), (3, 7)]])
TOUCHING = MultiPolygon([box(0, 0, 1, 1), box(1, 1, 2, 2)])
DIAGONAL = Polygon([(0.1, 0.1), (0.7, 0.3), (0.2, 0.9)])


def _xy(*pts: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(pts, dtype=np.float64)
    return a[:, 0].copy(), a[:, 1].copy()


def signed_distance(geom, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ix = ZoneIndex()
    (slot,) = ix.upsert_planar_many([("z", geom)])
    return ix.signed_distance(np.full(x.shape, slot), x, y)


def assert_matches_shapely(geom, x: np.ndarray, y: np.ndarray) -> None:
    sd = signed_distance(geom, x, y)
    pts = shapely.points(x, y)
    covered = shapely.covers(geom, pts)
    on_boundary = shapely.intersects(geom.boundary, pts)
    ref = shapely.distance(geom.boundary, pts)
    np.testing.assert_array_equal(sd <= 0.0, covered)
    assert np.all(sd[on_boundary] == 0.0)
    assert np.all(np.abs(np.abs(sd) - ref) <= np.maximum(1e-6, 1e-6 * ref))


@settings(max_examples=250, deadline=None)
@given(zone_scenes())
@example(
    (
        SQUARE,
        *_xy(
            (100_000.0, 400_000.0),
            (100_500.0, 400_000.0),
            (101_000.0, 400_500.0),
            (100_500.0, 400_500.0),
            (99_999.999, 400_500.0),
            (101_000.0, 401_000.0),
        ),
    )
)
@example((HOLED, *_xy((3, 3), (5, 3), (5, 5), (1, 1), (7, 5), (10, 5), (11, 5), (5, 10))))
@example((TOUCHING, *_xy((1, 1), (0.5, 0.5), (1.5, 1.5), (1.5, 0.5), (1, 0.5), (2, 2))))
@example((DIAGONAL, *_xy((0.1, 0.1), (0.4, 0.2), (0.45, 0.6), (0.7, 0.3), (0.3, 0.3))))
def test_polygon_signed_distance_matches_shapely(scene) -> None:
    """Containment equals shapely covers (boundary inside); |distance| equals boundary distance."""
    geom, x, y = scene
    assert_matches_shapely(geom, x, y)


def test_point_exactly_on_vertex_and_edge_is_inside_with_zero_distance() -> None:
    """Vertices and points on axis-parallel edges are on the boundary: signed distance 0."""
    x, y = _xy((100_000.0, 400_000.0), (100_250.0, 401_000.0), (101_000.0, 400_999.0))
    np.testing.assert_array_equal(signed_distance(SQUARE, x, y), [0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [(5.0, 5.0, 2.0), (1.0, 5.0, -1.0), (12.0, 5.0, 2.0), (3.0, 5.0, 0.0)],
    ids=["in-hole", "in-ring", "outside", "on-hole-edge"],
)
def test_hole_is_outside(x: float, y: float, expected: float) -> None:
    """A point in a hole is outside, its distance measured to the hole's ring."""
    sd = signed_distance(HOLED, np.array([x]), np.array([y]))
    assert sd[0] == pytest.approx(expected, abs=1e-12)


def test_tiny_and_huge_zones_keep_precision() -> None:
    """A 1 m square and a 50 km square at RD coordinates give exact distances."""
    tiny = box(150_000.0, 450_000.0, 150_001.0, 450_001.0)
    huge = box(150_000.0, 450_000.0, 200_000.0, 500_000.0)
    x, y = _xy((150_000.5, 450_000.5), (150_000.5, 450_002.0))
    np.testing.assert_allclose(signed_distance(tiny, x, y), [-0.5, 1.0], atol=1e-9)
    x, y = _xy((175_000.0, 475_000.0), (175_000.0, 500_000.25))
    np.testing.assert_allclose(signed_distance(huge, x, y), [-25_000.0, 0.25], atol=1e-9)


def test_far_point_outside_bounding_box_gets_exact_distance() -> None:
    """Bounding-box rejection skips containment work but the distance stays exact."""
    x, y = _xy((90_000.0, 400_500.0), (100_500.0, 350_000.0))
    np.testing.assert_allclose(signed_distance(SQUARE, x, y), [10_000.0, 50_000.0], rtol=1e-12)


def test_parallel_kernel_equals_serial() -> None:
    """The prange variant returns the same numbers as the serial kernel."""
    rng = np.random.default_rng(7)
    ix = ZoneIndex()
    slots = ix.upsert_planar_many(
        [("s", SQUARE), ("h", HOLED), ("c", (100_500.0, 400_500.0, 300.0))]
    )
    n = 5_000
    sl = rng.choice(slots, n)
    x = rng.uniform(-5, 102_000, n)
    y = rng.uniform(-5, 402_000, n)
    a = ix.signed_distance(sl, x, y, parallel=False)
    b = ix.signed_distance(sl, x, y, parallel=True)
    np.testing.assert_array_equal(a, b)


def test_unknown_or_removed_slot_is_an_error() -> None:
    """Evaluating against a free slot raises instead of returning garbage."""
    ix = ZoneIndex()
    ix.upsert_planar_many([("a", SQUARE), ("b", HOLED)])
    ix.remove("a")
    with pytest.raises(GeoError, match="free or unknown"):
        ix.signed_distance(np.array([0]), np.array([1.0]), np.array([1.0]))
    with pytest.raises(GeoError, match="free or unknown"):
        ix.signed_distance(np.array([99]), np.array([1.0]), np.array([1.0]))


def test_out_array_is_filled_in_place() -> None:
    """A caller-given out array receives the result."""
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("a", HOLED)])
    out = np.full(2, np.nan)
    res = ix.signed_distance(np.array([s, s]), np.array([1.0, 5.0]), np.array([1.0, 5.0]), out)
    assert res is out
    np.testing.assert_allclose(out, [-1.0, 2.0])


def test_points_one_ulp_off_a_diagonal_edge_agree_with_shapely() -> None:
    """Points within float rounding of a slanted edge are located exactly, as GEOS does."""
    poly = Polygon([(120_000.1, 480_000.3), (120_700.7, 480_300.9), (120_200.2, 480_900.4)])
    ax, ay, bx, by = 120_000.1, 480_000.3, 120_700.7, 480_300.9
    xs, ys = [], []
    for t in np.linspace(0.0, 1.0, 41):
        x = ax + t * (bx - ax)
        y = ay + t * (by - ay)
        for dx in (np.nextafter(x, -np.inf), x, np.nextafter(x, np.inf)):
            xs.append(dx)
            ys.append(y)
    assert_matches_shapely(poly, np.array(xs), np.array(ys))


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "threads"])
def test_locality_ordered_batch_equals_plain_order(monkeypatch, parallel: bool) -> None:
    """Visiting a big batch grouped by record address gives the same answers, in input order."""
    import geo.index as index_module

    rng = np.random.default_rng(11)
    ix = ZoneIndex()
    zones = [("s", SQUARE), ("h", HOLED), ("c", (100_500.0, 400_500.0, 300.0)), ("t", TOUCHING)]
    slots = ix.upsert_planar_many(zones)
    n = 20_000
    sl = rng.choice(slots, n)
    x = rng.uniform(-5, 102_000, n)
    y = rng.uniform(-5, 402_000, n)
    x[:50] = 1.0  # a few exactly on TOUCHING's shared vertex (exact pass)
    y[:50] = 1.0
    sl[:50] = slots[3]
    plain = ix.signed_distance(sl, x, y, parallel=False)
    monkeypatch.setattr(index_module, "LOCALITY_MIN_PAIRS", 1)
    ordered = ix.signed_distance(sl, x, y, parallel=parallel)
    np.testing.assert_array_equal(plain, ordered)
    assert np.all(plain[:50] == 0.0)


def test_repeated_vertices_and_long_rings_are_handled() -> None:
    """Zero-length edges (repeated vertices) and rings longer than one edge block agree with shapely."""
    ring = [
        (0.0, 0.0),
        (5.0, 0.0),
        (5.0, 0.0),
        (10.0, 0.0),
        (10.0, 10.0),
        (10.0, 10.0),
        (0.0, 10.0),
    ]
    poly = Polygon(ring)
    assert poly.is_valid
    x, y = _xy((5.0, 0.0), (5.0, -1.0), (5.0, 5.0), (10.0, 10.0), (11.0, 11.0), (7.5, 0.0))
    assert_matches_shapely(poly, x, y)
    angles = np.linspace(0.0, 2 * np.pi, 1001)[:-1]
    radii = 1_000.0 + 200.0 * np.sin(7 * angles)
    big = Polygon(
        np.column_stack((150_000 + radii * np.cos(angles), 450_000 + radii * np.sin(angles)))
    )
    rng = np.random.default_rng(2)
    x = rng.uniform(148_000, 152_000, 500)
    y = rng.uniform(448_000, 452_000, 500)
    assert_matches_shapely(big, x, y)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32 - 1))
@example(0)
def test_vector_block_scan_equals_scalar_loop_bit_for_bit(seed: int) -> None:
    """The 8-lane block scan gives exactly the scalar loop's squared distance (incl. vertices, zero-length edges)."""
    from geo.kernels.zones import _block_distance2, block_distance2_scalar

    rng = np.random.default_rng(seed)
    blk = np.empty(BLOCK_SIZE)
    xs = rng.normal(150_000.0, 2_000.0, BLOCK_EDGES + 1)
    ys = rng.normal(450_000.0, 2_000.0, BLOCK_EDGES + 1)
    repeat = rng.random(BLOCK_EDGES) < 0.2  # zero-length edges, as in padded blocks
    for j in np.flatnonzero(repeat):
        xs[j + 1], ys[j + 1] = xs[j], ys[j]
    ex, ey = np.diff(xs), np.diff(ys)
    len2 = ex * ex + ey * ey
    blk[: BLOCK_EDGES + 1] = xs
    blk[BLOCK_EDGES + 1 : 2 * BLOCK_EDGES + 2] = ys
    blk[2 * BLOCK_EDGES + 2 :] = np.where(len2 > 0, 1.0 / np.where(len2 > 0, len2, 1.0), 0.0)
    points = [(float(xs[j]), float(ys[j])) for j in range(0, BLOCK_EDGES + 1, 3)]
    points += [tuple(p) for p in rng.normal((150_000.0, 450_000.0), 3_000.0, (20, 2))]
    for px, py in points:
        for best in (np.inf, 1e6, 0.0):
            assert _block_distance2(px, py, blk, best) == block_distance2_scalar(px, py, blk, best)
