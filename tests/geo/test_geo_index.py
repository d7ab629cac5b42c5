"""ZoneIndex: upsert/remove patch the arrays without changing other zones' answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

from geo.errors import GeoError
from geo.index import ZoneIndex
from geo.projection import Projector
from geo.zones import parse_zone

POOL = [
    box(0, 0, 100, 100),
    Polygon(
        [(0, 0), (300, 0), (300, 300), (0, 300)], [[(100, 100), (200, 100), (200, 200), (100, 200)]]
    ),
    MultiPolygon([box(-50, -50, -10, -10), box(400, 400, 450, 460)]),
    Polygon([(10, 10), (90, 40), (50, 50), (40, 90)]),
    (150.0, 150.0, 75.0),
    (-20.0, 300.0, 5.0),
]
KEYS = [f"k{i}" for i in range(6)]
_rng = np.random.default_rng(3)
PX = _rng.uniform(-100, 500, 400)
PY = _rng.uniform(-100, 500, 400)

ops = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "remove", "compact"]),
        st.sampled_from(KEYS),
        st.integers(0, len(POOL) - 1),
    ),
    min_size=1,
    max_size=25,
)


def answers(ix: ZoneIndex, key: str) -> np.ndarray:
    return ix.signed_distance(np.full(PX.shape, ix.slot(key)), PX, PY)


@settings(max_examples=150, deadline=None)
@given(ops)
def test_incremental_updates_equal_a_fresh_build(sequence) -> None:
    """After any upsert/remove/compact sequence every live zone answers as in a fresh index,
    and a key's slot never changes while it lives."""
    ix = ZoneIndex()
    live: dict[str, int] = {}
    slots: dict[str, int] = {}
    for op, key, g in sequence:
        if op == "upsert":
            before = {k: answers(ix, k) for k in live if k != key}
            (s,) = ix.upsert_planar_many([(key, POOL[g])])
            if key in slots:
                assert s == slots[key]
            slots[key] = int(s)
            live[key] = g
            for k, a in before.items():
                np.testing.assert_array_equal(answers(ix, k), a)
        elif op == "remove":
            if key in live:
                ix.remove(key)
                del live[key]
                del slots[key]
            else:
                with pytest.raises(GeoError):
                    ix.remove(key)
        else:
            ix.compact()
        assert len(ix) == len(live) and all(k in ix for k in live)
    fresh = ZoneIndex()
    fresh.upsert_planar_many([(k, POOL[g]) for k, g in live.items()])
    for k in live:
        assert ix.slot(k) == slots[k]
        np.testing.assert_array_equal(answers(ix, k), answers(fresh, k))


def test_garbage_is_compacted_automatically() -> None:
    """Replacing a big zone many times does not grow the vertex arrays without bound."""
    ring = [
        (np.cos(a) * 1000, np.sin(a) * 1000)
        for a in np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    ]
    big = Polygon(ring)
    ix = ZoneIndex()
    ix.upsert_planar_many([("keep", box(0, 0, 1, 1))])
    for _ in range(60):
        ix.upsert_planar_many([("big", big)])
    record = int(ix.zlen[ix.slot("big")])
    assert ix.blob.shape[0] < 20 * record  # 60 versions were written; garbage was reclaimed
    sd = ix.signed_distance(
        np.array([ix.slot("big"), ix.slot("keep")]), np.array([0.0, 0.5]), np.array([0.0, 0.5])
    )
    assert sd[0] == pytest.approx(-1000.0, rel=1e-5) and sd[1] == -0.5


def test_upsert_from_lonlat_shapes_and_bounds() -> None:
    """Zones parsed from the orders file compile to projected arrays with metre bounds."""
    ix = ZoneIndex(Projector())
    home = parse_zone({"circle": {"lat": 51.93, "lon": 4.48, "radius_m": 5000}}, "home")
    school = parse_zone(
        {"polygon": [[4.46, 51.91], [4.47, 51.91], [4.47, 51.92], [4.46, 51.92]]}, "school"
    )
    ix.upsert("home", home)
    ix.upsert("school", school)
    minx, miny, maxx, maxy = ix.bounds("home")
    assert maxx - minx == pytest.approx(10_000.0, rel=2e-4)
    assert maxy - miny == pytest.approx(10_000.0, rel=2e-4)
    projected = ix.projector.project_geometry(school.geometry)
    np.testing.assert_allclose(ix.bounds("school"), projected.bounds, rtol=0, atol=1e-9)
    sd = ix.signed_distance_lonlat(
        ["home", "school", "school"],
        np.array([4.48, 4.465, 4.6]),
        np.array([51.93, 51.915, 51.915]),
    )
    assert sd[0] == pytest.approx(-5000.0, rel=2e-4)
    assert sd[1] == pytest.approx(-343.3, rel=0.01)  # half of 0.01 deg of longitude at 51.9 N
    assert sd[2] > 8000.0
    assert ix.nbytes > 0 and sorted(ix.keys()) == ["home", "school"]


def test_removed_slot_is_reused_and_unknown_key_is_an_error() -> None:
    """A freed slot goes to the next new key; asking for an absent key raises GeoError."""
    ix = ZoneIndex()
    a, b = ix.upsert_planar_many([("a", box(0, 0, 1, 1)), ("b", box(0, 0, 2, 2))])
    ix.remove("a")
    (c,) = ix.upsert_planar_many([("c", (0.0, 0.0, 1.0))])
    assert c == a and ix.slot("b") == b
    with pytest.raises(GeoError, match="'a' is not in the index"):
        ix.slot("a")
    with pytest.raises(GeoError, match="duplicate"):
        ix.upsert_planar_many([("d", box(0, 0, 1, 1)), ("d", box(0, 0, 1, 1))])


@settings(max_examples=150, deadline=None)
@given(
    st.floats(-1e5, 1e5),
    st.floats(-1e5, 1e5),
    st.floats(1.0, 5e4),
    st.floats(-2e5, 2e5),
    st.floats(-2e5, 2e5),
)
def test_circle_signed_distance_is_the_exact_formula(cx, cy, r, px, py) -> None:
    """Circles evaluate |p - c| - r exactly; the boundary counts as inside."""
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("c", (cx, cy, r))])
    sd = ix.signed_distance(np.array([s, s]), np.array([px, cx + r]), np.array([py, cy]))
    dx, dy = px - cx, py - cy
    assert sd[0] == math.sqrt(dx * dx + dy * dy) - r
    assert ix.signed_distance_at(int(s), px, py) == sd[0]  # the single pair's own circle arithmetic
    assert sd[0] == pytest.approx(math.hypot(dx, dy) - r, rel=1e-12, abs=1e-9)
    assert sd[1] <= 0.0 or (cx + r) - cx != r  # exactly on the boundary when representable


def test_single_pair_equals_the_batch() -> None:
    """``signed_distance_at`` gives the batch's number for every pair, vertices and edges included."""
    ix = ZoneIndex()
    slots = ix.upsert_planar_many(list(zip(KEYS, POOL, strict=True)))
    # random points plus points exactly on vertices and edge midpoints (the exact second pass)
    edge_x = [0.0, 100.0, 50.0, 300.0, 150.0, 90.0, 70.0, -50.0, 450.0]
    edge_y = [0.0, 100.0, 0.0, 150.0, 100.0, 40.0, 25.0, -30.0, 430.0]
    xs = np.concatenate((PX, edge_x))
    ys = np.concatenate((PY, edge_y))
    for s in slots.tolist():
        batch = ix.signed_distance(np.full(xs.shape, s), xs, ys).tolist()
        single = [ix.signed_distance_at(s, x, y) for x, y in zip(xs.tolist(), ys.tolist(), strict=True)]
        assert single == batch
    assert ix.signed_distance_at(int(slots[0]), 0.0, 0.0) == 0.0  # a vertex is on the boundary


def test_single_pair_follows_a_zone_replaced_removed_or_its_slot_reused() -> None:
    """A circle replaced by a polygon (and back), removed, or its slot given to another zone:
    the single-pair answer is always the batch's for the zone the slot holds now."""
    ix = ZoneIndex()
    points = (np.array([0.5, 30.0, -7.0]), np.array([0.5, 4.0, 12.0]))

    def same(slot: int) -> None:
        batch = ix.signed_distance(np.full(3, slot), *points).tolist()
        assert [ix.signed_distance_at(slot, x, y) for x, y in zip(*points, strict=True)] == batch

    (s,) = ix.upsert_planar_many([("z", (0.0, 0.0, 10.0))]).tolist()
    same(s)
    assert ix.upsert_planar_many([("z", box(0, 0, 1, 1))]).tolist() == [s]
    same(s)
    ix.upsert_planar_many([("z", (5.0, 5.0, 2.0))])
    same(s)
    ix.remove("z")
    with pytest.raises(GeoError):
        ix.signed_distance_at(s, 0.5, 0.5)
    assert ix.upsert_planar_many([("other", box(-1, -1, 3, 3))]).tolist() == [s]
    same(s)
    ix.compact()
    same(s)


def test_single_pair_with_a_free_slot_is_an_error() -> None:
    """A removed zone's slot is refused by the single-pair call as by the batch."""
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("a", box(0, 0, 1, 1))]).tolist()
    ix.remove("a")
    with pytest.raises(GeoError):
        ix.signed_distance_at(s, 0.5, 0.5)
    with pytest.raises(GeoError):
        ix.signed_distance_at(99, 0.5, 0.5)
