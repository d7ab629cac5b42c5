"""Hypothesis strategies for planar zones (projected metres) and probe points.

Zones are star-shaped rings around a centre (so concave but always simple),
optionally with holes, islands in holes and several parts, at sizes from 1 m
to 50 km and at realistic RD New coordinates (x ~ 1e5, y ~ 4e5 m).
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from hypothesis import assume
from hypothesis import strategies as st
from shapely.geometry import MultiPolygon, Polygon, box

SIZES = (1.0, 37.5, 1_000.0, 50_000.0)

sizes = st.one_of(st.sampled_from(SIZES), st.floats(1.0, 50_000.0))
centres = st.tuples(st.floats(20_000.0, 280_000.0), st.floats(300_000.0, 620_000.0))


@st.composite
def star_rings(draw, cx: float, cy: float, rmin: float, rmax: float, max_n: int = 40):
    """An open star-shaped ring around (cx, cy): strictly increasing angles, radii in [rmin, rmax]."""
    n = draw(st.integers(3, max_n))
    gaps = draw(st.lists(st.floats(0.05, 1.0), min_size=n, max_size=n))
    phase = draw(st.floats(0.0, 2 * math.pi))
    total = sum(gaps)
    angles = phase + 2 * math.pi * np.cumsum(gaps) / total
    radii = draw(st.lists(st.floats(rmin, rmax), min_size=n, max_size=n))
    return [
        (cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)
    ]


@st.composite
def planar_zones(draw):
    """A valid planar Polygon or MultiPolygon in metres (concave, holes, islands, parts, boxes)."""
    cx, cy = draw(centres)
    s = draw(sizes)
    kind = draw(st.sampled_from(["star", "holed", "multi", "island", "box", "ell"]))
    if kind == "star":
        geom = Polygon(draw(star_rings(cx, cy, 0.1 * s, s)))
    elif kind == "holed":
        shell = draw(star_rings(cx, cy, 0.6 * s, s))
        hole = draw(star_rings(cx, cy, 0.1 * s, 0.5 * s, max_n=12))
        geom = Polygon(shell, [hole])
    elif kind == "multi":
        a = draw(star_rings(cx, cy, 0.1 * s, s))
        b = draw(star_rings(cx + 2.5 * s, cy + 0.3 * s, 0.1 * s, s))
        geom = MultiPolygon([Polygon(a), Polygon(b)])
    elif kind == "island":
        shell = draw(star_rings(cx, cy, 0.8 * s, s))
        hole = draw(star_rings(cx, cy, 0.5 * s, 0.7 * s, max_n=12))
        islet = draw(star_rings(cx, cy, 0.1 * s, 0.3 * s, max_n=12))
        geom = MultiPolygon([Polygon(shell, [hole]), Polygon(islet)])
    elif kind == "box":
        geom = box(cx, cy, cx + s, cy + draw(st.floats(0.2, 1.0)) * s)
    else:  # an L shape with axis-parallel edges and a reflex corner
        geom = Polygon(
            [
                (cx, cy),
                (cx + s, cy),
                (cx + s, cy + s / 2),
                (cx + s / 2, cy + s / 2),
                (cx + s / 2, cy + s),
                (cx, cy + s),
            ]
        )
    assume(shapely.is_valid(geom) and geom.area > 0)
    return geom


def _edges(geom) -> list[tuple[float, float, float, float]]:
    out = []
    rings = [r for part in shapely.get_parts(geom) for r in shapely.get_rings(part)]
    for ring in rings:
        c = shapely.get_coordinates(ring)
        out.extend((c[i, 0], c[i, 1], c[i + 1, 0], c[i + 1, 1]) for i in range(len(c) - 1))
    return out


@st.composite
def probe_points(draw, geom, n: int = 24):
    """Points near and far, exactly on vertices, interpolated on edges, on axis-parallel edges."""
    minx, miny, maxx, maxy = geom.bounds
    span = max(maxx - minx, maxy - miny)
    verts = shapely.get_coordinates(geom)
    edges = _edges(geom)
    pts = []
    for _ in range(n):
        how = draw(st.sampled_from(["box", "box", "box", "vertex", "edge", "far"]))
        if how == "box":
            x = draw(st.floats(minx - 0.5 * span, maxx + 0.5 * span))
            y = draw(st.floats(miny - 0.5 * span, maxy + 0.5 * span))
        elif how == "vertex":
            x, y = verts[draw(st.integers(0, len(verts) - 1))]
        elif how == "edge":
            ax, ay, bx, by = edges[draw(st.integers(0, len(edges) - 1))]
            t = draw(st.sampled_from([0.5, 0.25])) if draw(st.booleans()) else draw(st.floats(0, 1))
            x = ax + t * (bx - ax)
            y = ay + t * (by - ay)
            if ay == by:
                y = ay  # exactly on an axis-parallel edge
            if ax == bx:
                x = ax
        else:
            ang = draw(st.floats(0, 2 * math.pi))
            x = minx + 10 * span * math.cos(ang)
            y = miny + 10 * span * math.sin(ang)
        pts.append((float(x), float(y)))
    arr = np.asarray(pts, dtype=np.float64)
    return arr[:, 0].copy(), arr[:, 1].copy()


@st.composite
def zone_scenes(draw):
    """(geometry, x array, y array) for one planar zone and its probe points."""
    geom = draw(planar_zones())
    x, y = draw(probe_points(geom))
    return geom, x, y
