"""Segment crossing (sparse fixes) agrees with shapely's intersects on a LineString."""

from __future__ import annotations

import math

import numpy as np
import shapely
import shapely.affinity
from _geo_strategies import planar_zones
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from geo.index import ZoneIndex, path_may_touch
from geo.kernels import segment_distance2

SQUARE = box(0.0, 0.0, 10.0, 10.0)


@st.composite
def segment_scenes(draw):
    geom = draw(planar_zones())
    minx, miny, maxx, maxy = geom.bounds
    span = max(maxx - minx, maxy - miny)
    verts = shapely.get_coordinates(geom)
    segs = []
    for _ in range(12):
        pts = []
        for _ in range(2):
            if draw(st.integers(0, 4)) == 0:
                pts.extend(verts[draw(st.integers(0, len(verts) - 1))])
            else:
                pts.append(draw(st.floats(minx - span, maxx + span)))
                pts.append(draw(st.floats(miny - span, maxy + span)))
        segs.append(pts)
    return geom, np.asarray(segs, dtype=np.float64)


@settings(max_examples=200, deadline=None)
@given(segment_scenes())
@example(
    (
        SQUARE,
        np.array(
            [
                [-5.0, 5.0, 15.0, 5.0],
                [-5.0, 10.0, 15.0, 10.0],
                [-5.0, 11.0, 15.0, 11.0],
                [10.0, 10.0, 20.0, 20.0],
                [2.0, 2.0, 3.0, 3.0],
                [-1.0, -1.0, -1.0, 20.0],
            ]
        ),
    )
)
def test_polygon_crossing_matches_shapely(scene) -> None:
    """A segment touches the zone exactly when shapely says the LineString intersects it."""
    geom, segs = scene
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("z", geom)])
    got = ix.crossing(np.full(len(segs), s), segs[:, 0], segs[:, 1], segs[:, 2], segs[:, 3])
    lines = shapely.linestrings(segs.reshape(-1, 2, 2))
    np.testing.assert_array_equal(got, shapely.intersects(geom, lines))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.floats(-300, 300).map(lambda v: 0.0 if abs(v) < 1e-6 else v), min_size=4, max_size=4
    ),
    st.floats(1.0, 200.0),
)
@example([-300.0, 100.0, 300.0, 100.0], 100.0)
def test_circle_crossing_matches_exact_distance(seg, r) -> None:
    """A segment touches a circle when its distance to the centre is at most the radius.

    Within 1e-12 relative of tangency the two float formulas may round differently;
    there only the kernel's own formula is checked."""
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("c", (0.0, 0.0, r))])
    got = ix.crossing(np.array([s]), *(np.array([v]) for v in seg))[0]
    line = shapely.linestrings([[seg[0], seg[1]], [seg[2], seg[3]]])
    ref = shapely.distance(line, shapely.points(0.0, 0.0))
    if abs(ref - r) > 1e-12 * r:
        assert got == (ref <= r)
    else:
        assert got == (math.sqrt(segment_distance2(0.0, 0.0, *seg)) <= r)


@settings(max_examples=200, deadline=None)
@given(segment_scenes(), st.floats(0.0, 2e5), st.floats(0.0, 5e5))
def test_a_path_farther_from_a_zone_than_long_never_crosses_it(scene, ox, oy) -> None:
    """Both ends outside with distances summing to more than the path's length: no crossing
    (the distance to a zone changes by at most the distance moved), also at RD-sized
    coordinates; the engine skips the crossing test for such zones."""
    geom, segs = scene
    geom = shapely.affinity.translate(geom, ox, oy)
    segs = segs + np.array([ox, oy, ox, oy])
    ix = ZoneIndex()
    (s,) = ix.upsert_planar_many([("z", geom)])
    slots = np.full(len(segs), s)
    got = ix.crossing(slots, segs[:, 0], segs[:, 1], segs[:, 2], segs[:, 3])
    d0 = ix.signed_distance(slots, segs[:, 0], segs[:, 1])
    d1 = ix.signed_distance(slots, segs[:, 2], segs[:, 3])
    for k in range(len(segs)):
        length = math.hypot(segs[k, 2] - segs[k, 0], segs[k, 3] - segs[k, 1])
        if d0[k] > 0.0 and d1[k] > 0.0 and not path_may_touch(float(d0[k]), float(d1[k]), length):
            assert not got[k]
