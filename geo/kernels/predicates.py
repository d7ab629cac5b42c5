"""Exact geometric predicates and point-segment distance in projected metres.

``orient`` is a filtered predicate: a plain floating-point determinant is used
when its error bound proves the sign, otherwise the determinant is evaluated
exactly with error-free transformations (Dekker split / Knuth two-sum) and the
sign of the exact expansion is returned.  This gives the same answers as the
robust predicates in GEOS for points exactly on edges and vertices.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

_SPLITTER = 134217729.0  # 2**27 + 1, Dekker split for float64
_ERRBOUND = 1e-15  # same safety factor as GEOS' orientationIndexFilter


@jit
def _two_sum(a, b):
    """Return (s, e) with s + e == a + b exactly and s == fl(a + b)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


@jit
def _split(a):
    c = _SPLITTER * a
    big = c - a
    hi = c - big
    return hi, a - hi


@jit
def _two_product(a, b):
    """Return (p, e) with p + e == a * b exactly (no overflow/underflow assumed)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    e = al * bl - (((p - ah * bh) - al * bh) - ah * bl)
    return p, e


@jit
def _exact_sign(terms, n):
    """Sign of the exact sum of ``terms[:n]`` (float64), via Shewchuk's grow-expansion.

    The expansion is kept non-overlapping with increasing magnitude, so the sign
    of the sum is the sign of its largest non-zero component.
    """
    exp = np.zeros(n + 1)
    m = 0
    for k in range(n):
        q = terms[k]
        for i in range(m):
            q, h = _two_sum(q, exp[i])
            exp[i] = h
        exp[m] = q
        m += 1
    for i in range(m - 1, -1, -1):
        if exp[i] > 0.0:
            return 1
        if exp[i] < 0.0:
            return -1
    return 0


@jit
def orient_exact(ax, ay, bx, by, cx, cy):
    """Exact sign of the orientation determinant of (a, b, c): +1 left turn, -1 right, 0 collinear."""
    dx1, dx1e = _two_sum(bx, -ax)
    dy2, dy2e = _two_sum(cy, -ay)
    dy1, dy1e = _two_sum(by, -ay)
    dx2, dx2e = _two_sum(cx, -ax)
    terms = np.empty(16)
    terms[0], terms[1] = _two_product(dx1, dy2)
    terms[2], terms[3] = _two_product(dx1, dy2e)
    terms[4], terms[5] = _two_product(dx1e, dy2)
    terms[6], terms[7] = _two_product(dx1e, dy2e)
    terms[8], terms[9] = _two_product(-dy1, dx2)
    terms[10], terms[11] = _two_product(-dy1, dx2e)
    terms[12], terms[13] = _two_product(-dy1e, dx2)
    terms[14], terms[15] = _two_product(-dy1e, dx2e)
    return _exact_sign(terms, 16)


@jit
def orient(ax, ay, bx, by, cx, cy):
    """Sign of ((b - a) x (c - a)): +1 if c is left of a->b, -1 right, 0 exactly collinear.

    Units: any consistent planar coordinates (projected metres here).  Exact
    unless an intermediate product underflows (coordinate differences below
    ~1e-150), which cannot happen with metre coordinates.
    """
    detleft = (bx - ax) * (cy - ay)
    detright = (by - ay) * (cx - ax)
    det = detleft - detright
    detsum = abs(detleft) + abs(detright)
    if abs(det) > _ERRBOUND * detsum:
        return 1 if det > 0.0 else -1
    if detsum == 0.0:
        return 0
    return orient_exact(ax, ay, bx, by, cx, cy)


@jit
def segment_distance2(px, py, ax, ay, bx, by):
    """Squared distance in m^2 from point p to the closed segment a-b (a == b allowed)."""
    ex = bx - ax
    ey = by - ay
    wx = px - ax
    wy = py - ay
    dot = wx * ex + wy * ey
    if dot <= 0.0:
        return wx * wx + wy * wy
    len2 = ex * ex + ey * ey
    if dot >= len2:
        ux = px - bx
        uy = py - by
        return ux * ux + uy * uy
    cr = wx * ey - wy * ex
    return cr * cr / len2


@jit
def segments_touch(ax, ay, bx, by, cx, cy, dx, dy):
    """True if closed segments a-b and c-d share at least one point (exact predicates)."""
    o1 = orient(ax, ay, bx, by, cx, cy)
    o2 = orient(ax, ay, bx, by, dx, dy)
    o3 = orient(cx, cy, dx, dy, ax, ay)
    o4 = orient(cx, cy, dx, dy, bx, by)
    if o1 * o2 < 0 and o3 * o4 < 0:
        return True
    if o1 == 0 and _on_collinear(ax, ay, bx, by, cx, cy):
        return True
    if o2 == 0 and _on_collinear(ax, ay, bx, by, dx, dy):
        return True
    if o3 == 0 and _on_collinear(cx, cy, dx, dy, ax, ay):
        return True
    return o4 == 0 and _on_collinear(cx, cy, dx, dy, bx, by)


@jit
def _on_collinear(ax, ay, bx, by, px, py):
    """For p collinear with a-b: is p within the segment's bounding box."""
    return min(ax, bx) <= px <= max(ax, bx) and min(ay, by) <= py <= max(ay, by)
