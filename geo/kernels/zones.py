"""Signed distance and segment crossing for compiled zones, in projected metres.

Array layout (shared by every kernel here; built by ``geo.index.ZoneIndex``):

* ``zf``: float64 ``(n_slots, 8)``, one row per zone slot:
  ``cx, cy, r, minx, miny, maxx, maxy, unused``.  ``cx, cy, r`` are the centre
  and radius (metres) of a circle; ``minx..maxy`` the zone's bounding box.
* ``zi``: int64 ``(n_slots, 4)``: ``kind, ring_lo, ring_hi, unused``.
  ``kind`` is ``KIND_EMPTY`` (free slot), ``KIND_CIRCLE`` or ``KIND_POLYGON``;
  a polygon zone owns rings ``ring_lo <= k < ring_hi``.
* ``rings``: int64 ``(n_rings, 2)``: ``start, stop`` into the vertex arrays.
  Every ring is stored closed (``v[stop - 1] == v[start]``), so its edges are
  consecutive vertex pairs.
* ``vx, vy``: float64 vertex coordinates in metres.

A polygon zone is the even-odd region of all its rings (shells and holes of
every part): exactly the union of the parts for a valid (multi)polygon.

Boundary convention: signed distance is NEGATIVE inside, POSITIVE outside and
``0.0`` on the boundary; a point on the boundary counts as inside (``<= 0``),
which matches shapely's ``covers``.  Points that are outside but closer to the
boundary than float64 can express get the smallest positive double, so
``<= 0`` always means "covered".

The fast path decides inside/outside with a plain crossing test.  That test
can only be wrong for a point within rounding error of an edge, so when the
nearest edge is closer than ``1e-9 * (|x| + |y| + extent)`` metres the point is
located again with exact predicates (the GEOS ray-crossing rules).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ._jit import jit, pjit
from .predicates import orient, segment_distance2, segments_touch

KIND_EMPTY = 0
KIND_CIRCLE = 1
KIND_POLYGON = 2

_TINY = 5e-324  # smallest positive double: "outside, but closer than float64 resolves"
_REL_TOL = 1e-9


@jit
def locate_exact(px, py, ring_lo, ring_hi, rings, vx, vy):
    """Exact point location against rings ``ring_lo..ring_hi`` (even-odd).

    Returns ``(on_boundary, inside)``; follows GEOS' RayCrossingCounter so the
    answer equals shapely's for points on vertices and edges.
    """
    crossings = 0
    for k in range(ring_lo, ring_hi):
        start = rings[k, 0]
        stop = rings[k, 1]
        for i in range(start + 1, stop):
            x1 = vx[i - 1]
            y1 = vy[i - 1]
            x2 = vx[i]
            y2 = vy[i]
            if x1 < px and x2 < px:
                continue
            if px == x2 and py == y2:
                return True, True
            if y1 == py and y2 == py:
                if min(x1, x2) <= px <= max(x1, x2):
                    return True, True
                continue
            if (y1 > py and y2 <= py) or (y2 > py and y1 <= py):
                sign = orient(x1, y1, x2, y2, px, py)
                if sign == 0:
                    return True, True
                if y2 < y1:
                    sign = -sign
                if sign > 0:
                    crossings += 1
    return False, (crossings & 1) == 1


@jit
def polygon_signed_distance(px, py, ring_lo, ring_hi, rings, vx, vy, minx, miny, maxx, maxy):
    """Signed distance (m) from (px, py) to a polygon zone; ``<= 0`` means covered.

    Points outside the bounding box skip the crossing test (they cannot be
    inside) but still get the exact distance to the nearest edge.
    """
    in_box = minx <= px <= maxx and miny <= py <= maxy
    best = math.inf
    inside = False
    for k in range(ring_lo, ring_hi):
        start = rings[k, 0]
        stop = rings[k, 1]
        ax = vx[start]
        ay = vy[start]
        for i in range(start + 1, stop):
            bx = vx[i]
            by = vy[i]
            ex = bx - ax
            ey = by - ay
            wx = px - ax
            wy = py - ay
            dot = wx * ex + wy * ey
            if dot <= 0.0:
                d2 = wx * wx + wy * wy
            else:
                len2 = ex * ex + ey * ey
                if dot >= len2:
                    ux = px - bx
                    uy = py - by
                    d2 = ux * ux + uy * uy
                else:
                    cr = wx * ey - wy * ex
                    d2 = cr * cr / len2
            if d2 < best:
                best = d2
            if in_box and ((ay > py) != (by > py)):
                if px < ax + (py - ay) * ex / ey:
                    inside = not inside
            ax = bx
            ay = by
    d = math.sqrt(best)
    tol = _REL_TOL * (abs(px) + abs(py) + (maxx - minx) + (maxy - miny) + 1.0)
    if d > tol:
        return -d if inside else d
    on_boundary, inside = locate_exact(px, py, ring_lo, ring_hi, rings, vx, vy)
    if on_boundary:
        return 0.0
    if inside:
        return -d
    return d if d > 0.0 else _TINY


@jit
def zone_signed_distance(slot, px, py, zf, zi, rings, vx, vy):
    """Signed distance (m) from (px, py) to zone ``slot``; NaN for a free or unknown slot."""
    if slot < 0 or slot >= zi.shape[0]:
        return math.nan
    kind = zi[slot, 0]
    if kind == KIND_CIRCLE:
        return math.hypot(px - zf[slot, 0], py - zf[slot, 1]) - zf[slot, 2]
    if kind == KIND_POLYGON:
        return polygon_signed_distance(
            px,
            py,
            zi[slot, 1],
            zi[slot, 2],
            rings,
            vx,
            vy,
            zf[slot, 3],
            zf[slot, 4],
            zf[slot, 5],
            zf[slot, 6],
        )
    return math.nan


@jit
def signed_distance_batch(slots, x, y, zf, zi, rings, vx, vy, out):
    """Signed distance for each pair ``(slots[i], (x[i], y[i]))`` into ``out[i]`` (metres).

    ``slots`` int64, ``x, y, out`` float64, all length n.  Negative inside,
    positive outside, boundary ``0.0`` (inside).  Returns the number of pairs
    whose slot was free or out of range (their ``out`` is NaN).
    """
    bad = 0
    for i in range(slots.shape[0]):
        v = zone_signed_distance(slots[i], x[i], y[i], zf, zi, rings, vx, vy)
        out[i] = v
        if math.isnan(v):
            bad += 1
    return bad


@pjit
def signed_distance_batch_parallel(slots, x, y, zf, zi, rings, vx, vy, out):
    """``signed_distance_batch`` split over Numba threads (same layout and result)."""
    n = slots.shape[0]
    bad = np.zeros(n, dtype=np.uint8)
    for i in prange(n):
        v = zone_signed_distance(slots[i], x[i], y[i], zf, zi, rings, vx, vy)
        out[i] = v
        if math.isnan(v):
            bad[i] = 1
    return int(bad.sum())


@jit
def zone_segment_touches(slot, x0, y0, x1, y1, zf, zi, rings, vx, vy):
    """Does the closed segment (x0, y0)-(x1, y1) share a point with zone ``slot``?

    Returns 1 (touches or enters), 0 (misses), -1 (free or unknown slot).
    Touching the boundary counts as entering, as for points.
    """
    if slot < 0 or slot >= zi.shape[0]:
        return -1
    kind = zi[slot, 0]
    if kind == KIND_EMPTY:
        return -1
    if max(x0, x1) < zf[slot, 3] or min(x0, x1) > zf[slot, 5]:
        return 0
    if max(y0, y1) < zf[slot, 4] or min(y0, y1) > zf[slot, 6]:
        return 0
    if kind == KIND_CIRCLE:
        d2 = segment_distance2(zf[slot, 0], zf[slot, 1], x0, y0, x1, y1)
        return 1 if math.sqrt(d2) <= zf[slot, 2] else 0
    if zone_signed_distance(slot, x0, y0, zf, zi, rings, vx, vy) <= 0.0:
        return 1
    if zone_signed_distance(slot, x1, y1, zf, zi, rings, vx, vy) <= 0.0:
        return 1
    sminx = min(x0, x1)
    smaxx = max(x0, x1)
    sminy = min(y0, y1)
    smaxy = max(y0, y1)
    for k in range(zi[slot, 1], zi[slot, 2]):
        for i in range(rings[k, 0] + 1, rings[k, 1]):
            ax = vx[i - 1]
            ay = vy[i - 1]
            bx = vx[i]
            by = vy[i]
            if max(ax, bx) < sminx or min(ax, bx) > smaxx:
                continue
            if max(ay, by) < sminy or min(ay, by) > smaxy:
                continue
            if segments_touch(x0, y0, x1, y1, ax, ay, bx, by):
                return 1
    return 0


@jit
def crossing_batch(slots, x0, y0, x1, y1, zf, zi, rings, vx, vy, out):
    """For each i: does segment (x0[i], y0[i])-(x1[i], y1[i]) touch zone ``slots[i]``.

    Writes 1/0 into ``out`` (uint8, length n); free or unknown slots write 0 and
    are counted in the returned number.
    """
    bad = 0
    for i in range(slots.shape[0]):
        r = zone_segment_touches(slots[i], x0[i], y0[i], x1[i], y1[i], zf, zi, rings, vx, vy)
        if r < 0:
            bad += 1
            out[i] = 0
        else:
            out[i] = r
    return bad
