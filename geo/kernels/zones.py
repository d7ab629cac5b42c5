"""Signed distance and segment crossing for compiled zones, in projected metres.

Layout (built by ``geo.index.ZoneIndex``; CSR-style: one flat float array
plus int offsets).  ``zoff[slot]`` (int64) is the offset of the slot's record
in ``blob`` (float64), or ``-1`` for a free slot.  Records start on a 64-byte
boundary (offsets are multiples of ``ALIGN``) and are self-contained, so one
zone is one contiguous stretch of memory:

* header, 8 doubles: ``kind, minx, miny, maxx, maxy, a, b, c`` with
  ``kind`` = ``KIND_CIRCLE`` (``a, b, c`` = centre x, y and radius, metres) or
  ``KIND_POLYGON`` (``a`` = number of edge blocks ``nb``);
* polygon only: ``nb`` block boxes (``minx, miny, maxx, maxy``), then ``nb``
  edge blocks of ``BLOCK_EDGES`` consecutive edges of one ring, each stored as
  ``BLOCK_EDGES + 1`` x-values, as many y-values, then ``1 / |edge|^2`` per
  edge (0 for a zero-length edge; it makes the distance scan division- and
  branch-free).  The last block of a ring is padded by repeating its last
  vertex (zero-length edges change no distance and cross nothing).

A polygon zone is the even-odd region of all its rings (shells and holes of
every part): exactly the union of the parts for a valid (multi)polygon.

Boundary convention: signed distance is NEGATIVE inside, POSITIVE outside and
``0.0`` on the boundary; a point on the boundary counts as inside (``<= 0``),
which matches shapely's ``covers``.  Points that are outside but closer to the
boundary than float64 can express get the smallest positive double, so
``<= 0`` always means "covered".

Fast pass (``hot``, no allocation): the distance scans the block with the
nearest box first, then only blocks whose box is nearer than the best edge
found, each block's 8 edges as one 8-lane vector (``block_min_d2``, equal to
the scalar loop bit for bit); the inside test counts ray crossings in blocks the +x ray can reach, and
only when the point is inside the zone's box.  The crossing test can only be
wrong for a point within rounding error of an edge, so when the nearest edge is
closer than ``1e-9 * (|x| + |y| + extent)`` metres the pair is flagged and
located again with exact predicates (the GEOS ray-crossing rules) by
``resolve_exact``.
"""

from __future__ import annotations

import math

from numba import prange

from ._intrinsics import EDGES_PER_VECTOR, block_min_d2, prefetch, stack_f64
from ._jit import hot, jit, phot
from .predicates import orient, segment_distance2, segments_touch

KIND_EMPTY = 0
KIND_CIRCLE = 1
KIND_POLYGON = 2

ALIGN = 8  # record offsets are multiples of 8 doubles (64-byte cache lines)
HEADER = 8  # doubles in a record header
BLOCK_EDGES = EDGES_PER_VECTOR  # edges per block (8): 8 blocks for a 64-vertex ring
BLOCK_SIZE = 3 * BLOCK_EDGES + 2  # doubles per edge block: 9 x, 9 y, 8 inverse squared lengths
BOX_SIZE = 4
MAX_STACK_BLOCKS = 64  # polygon_fast keeps box distances on the stack up to this many blocks

FLAG_OK = 0
FLAG_EXACT = 1  # within rounding distance of an edge: resolve with exact predicates
FLAG_BAD_SLOT = 2  # free or unknown slot

PREFETCH_AHEAD = 16  # pairs ahead whose zone record is prefetched (input order)
STREAM_AHEAD = 256  # pairs ahead of the blob prefetch stream (locality order)
STREAM_LINES = 32  # at most this many cache lines prefetched per pair

_TINY = 5e-324  # smallest positive double: "outside, but closer than float64 resolves"
_REL_TOL = 1e-9


# ---------------------------------------------------------------- fast pass
@hot
def block_distance2_scalar(px, py, blk, best):
    """Min of ``best`` and the squared distances (m^2) to the 8 edges of the block ``blk``.

    The reference for ``_block_distance2`` (same result bit for bit).  ``blk``
    is a view of one edge block (``BLOCK_SIZE`` doubles).  Branch-free: the
    projection parameter ``t = ((p - a) . e) / |e|^2`` is clamped to [0, 1]
    with min/max (no mispredicted branches, no division).
    """
    m = math.inf
    for j in range(BLOCK_EDGES):
        ax = blk[j]
        ay = blk[BLOCK_EDGES + 1 + j]
        ex = blk[j + 1] - ax
        ey = blk[BLOCK_EDGES + 2 + j] - ay
        wx = px - ax
        wy = py - ay
        t = min(max((wx * ex + wy * ey) * blk[2 * BLOCK_EDGES + 2 + j], 0.0), 1.0)
        dx = wx - t * ex
        dy = wy - t * ey
        m = min(m, dx * dx + dy * dy)
    return min(best, m)


@hot
def _block_distance2(px, py, blk, best):
    """``block_distance2_scalar`` with the 8 edges in one vector (``block_min_d2``).

    ``blk`` is a view of the block: indexing views with small constant offsets
    also spares the negative-index checks that ``blob[o + j]`` needs.  Numba
    does not vectorise the scalar loop itself (its SLP vectoriser is off).
    """
    return min(best, block_min_d2(px, py, blk))


@hot
def _block_parity(px, py, blk):
    """Parity (True = odd) of the block's edges crossed by the ray from p towards +x.

    GEOS' half-open rule: an edge counts when exactly one end is strictly above p.
    """
    odd = False
    ax = blk[0]
    ay = blk[BLOCK_EDGES + 1]
    for j in range(1, BLOCK_EDGES + 1):
        bx = blk[j]
        by = blk[BLOCK_EDGES + 1 + j]
        if (ay > py) != (by > py):
            if px < ax + (py - ay) * (bx - ax) / (by - ay):
                odd = not odd
        ax = bx
        ay = by
    return odd


@hot
def _box_distance2(px, py, rec, q):
    """Squared distance (m^2) from p to the box ``minx, miny, maxx, maxy`` at ``rec[q:q + 4]``."""
    dx = max(max(rec[q] - px, px - rec[q + 2]), 0.0)
    dy = max(max(rec[q + 1] - py, py - rec[q + 3]), 0.0)
    return dx * dx + dy * dy


@hot
def polygon_fast(px, py, blob, o):
    """Fast-pass signed distance (m) to the polygon record at ``o``: ``(value, certain)``.

    ``certain`` is False when the nearest edge is within rounding distance;
    ``value`` is then the unsigned distance and the side must be resolved
    exactly (``resolve_exact``).  The block boxes' distances are kept in a
    stack buffer (records of up to ``MAX_STACK_BLOCKS`` blocks; longer ones
    compute them again), so the scan after the nearest block reads no box twice.
    """
    nb = int(blob[o + 5])
    rec = blob[o : o + HEADER + (BOX_SIZE + BLOCK_SIZE) * nb]
    minx = rec[1]
    miny = rec[2]
    maxx = rec[3]
    maxy = rec[4]
    blocks = HEADER + BOX_SIZE * nb
    inside = False
    if minx <= px <= maxx and miny <= py <= maxy:
        for c in range(nb):
            q = HEADER + BOX_SIZE * c
            if rec[q + 1] <= py < rec[q + 3] and px < rec[q + 2]:
                b = blocks + BLOCK_SIZE * c
                if _block_parity(px, py, rec[b : b + BLOCK_SIZE]):
                    inside = not inside
    lbs = stack_f64(MAX_STACK_BLOCKS)
    first = 0
    lb_first = math.inf
    for c in range(nb):
        lb = _box_distance2(px, py, rec, HEADER + BOX_SIZE * c)
        if c < MAX_STACK_BLOCKS:
            lbs[c] = lb
        first = c if lb < lb_first else first
        lb_first = min(lb, lb_first)
    b = blocks + BLOCK_SIZE * first
    best = _block_distance2(px, py, rec[b : b + BLOCK_SIZE], math.inf)
    for c in range(nb):
        if c < MAX_STACK_BLOCKS:
            lb = lbs[c]
        else:
            lb = _box_distance2(px, py, rec, HEADER + BOX_SIZE * c)
        if lb < best and c != first:  # this block may hold a nearer edge
            b = blocks + BLOCK_SIZE * c
            best = _block_distance2(px, py, rec[b : b + BLOCK_SIZE], best)
    d = math.sqrt(best)
    tol = _REL_TOL * (abs(px) + abs(py) + (maxx - minx) + (maxy - miny) + 1.0)
    if d > tol:
        return (-d if inside else d), True
    return d, False


@hot
def record_fast(o, px, py, blob):
    """Fast-pass signed distance to the record at offset ``o``: ``(value, flag)`` (``FLAG_*``)."""
    if blob[o] == KIND_CIRCLE:
        dx = px - blob[o + 5]
        dy = py - blob[o + 6]
        return math.sqrt(dx * dx + dy * dy) - blob[o + 7], FLAG_OK
    v, certain = polygon_fast(px, py, blob, o)
    return v, (FLAG_OK if certain else FLAG_EXACT)


@hot
def zone_fast(slot, px, py, zoff, blob):
    """Fast-pass signed distance to zone ``slot``: ``(value, flag)`` with a ``FLAG_*`` code."""
    if slot < 0 or slot >= zoff.shape[0]:
        return math.nan, FLAG_BAD_SLOT
    o = zoff[slot]
    if o < 0:
        return math.nan, FLAG_BAD_SLOT
    return record_fast(o, px, py, blob)


@hot
def _prefetch_zone(slot, zoff, blob):
    """Prefetch a zone's header and first box lines (a no-op hint)."""
    if 0 <= slot < zoff.shape[0]:
        o = zoff[slot]
        if o >= 0:
            prefetch(blob, o)
            prefetch(blob, o + 8)
            prefetch(blob, o + 16)


@hot
def signed_distance_batch(slots, x, y, zoff, blob, out, flags):
    """Fast pass: signed distance for each pair ``(slots[i], (x[i], y[i]))`` into ``out[i]`` (m).

    ``slots`` int64; ``x, y, out`` float64; ``flags`` uint8; all length n.
    Negative inside, positive outside.  ``flags[i]`` is ``FLAG_OK``, or
    ``FLAG_EXACT`` (``out[i]`` holds the unsigned distance; finish with
    ``resolve_exact``), or ``FLAG_BAD_SLOT`` (``out[i]`` is NaN).  Returns the
    number of pairs not ``FLAG_OK``.  Zone records ``PREFETCH_AHEAD`` pairs
    ahead are prefetched.
    """
    n = slots.shape[0]
    n_flagged = 0
    for i in range(n):
        if i + PREFETCH_AHEAD < n:
            _prefetch_zone(slots[i + PREFETCH_AHEAD], zoff, blob)
        v, f = zone_fast(slots[i], x[i], y[i], zoff, blob)
        out[i] = v
        flags[i] = f
        if f != FLAG_OK:
            n_flagged += 1
    return n_flagged


@hot
def signed_distance_batch_packed(packed, blob, out, flagged, shift):
    """``signed_distance_batch`` over pairs packed in visiting order by ``locality_pack``.

    ``packed`` (float64, n x 4) holds per pair ``x, y``, the zone record's
    offset in ``blob`` (``-1`` for a free or unknown slot) and the pair's input
    position ``i``, grouped by ``2**shift``-double stretches of ``blob`` and read
    sequentially; the signed distance goes to ``out[i]``.  Pairs that are not
    ``FLAG_OK`` are not flagged in a per-pair array (one more scattered write
    per pair) but listed: their input positions go to ``flagged[0:k]`` (int64,
    length n) and ``k`` is returned.  For a listed pair ``out[i]`` is NaN (free
    or unknown slot) or the unsigned distance (``FLAG_EXACT``: finish with
    ``resolve_exact``).  Since the groups come in address order, ``blob`` is
    prefetched as one stream running ``STREAM_AHEAD`` pairs ahead, at most
    ``STREAM_LINES`` lines per pair.
    """
    n = packed.shape[0]
    n_flagged = 0
    pf = 0  # next blob index (a line start) to prefetch
    for j in range(n):
        if j + STREAM_AHEAD < n:
            ahead = int(packed[j + STREAM_AHEAD, 2])
            if ahead >= 0:
                group = ahead >> shift
                end = (group + 1) << shift
                if end - pf > (4 << shift):  # jumped over a gap: restart the stream
                    pf = group << shift
                k = 0
                while pf < end and k < STREAM_LINES:
                    prefetch(blob, pf)
                    pf += ALIGN
                    k += 1
        o = int(packed[j, 2])
        i = int(packed[j, 3])
        if o < 0:
            out[i] = math.nan
            flagged[n_flagged] = i
            n_flagged += 1
            continue
        v, f = record_fast(o, packed[j, 0], packed[j, 1], blob)
        out[i] = v
        if f != FLAG_OK:
            flagged[n_flagged] = i
            n_flagged += 1
    return n_flagged


@phot
def signed_distance_batch_parallel(slots, x, y, zoff, blob, out, flags):
    """``signed_distance_batch`` split over Numba threads, in input order.

    Returns nothing: count the non-zero ``flags`` afterwards (a reduction would
    need Numba's runtime).
    """
    for i in prange(slots.shape[0]):
        v, f = zone_fast(slots[i], x[i], y[i], zoff, blob)
        out[i] = v
        flags[i] = f


@phot
def signed_distance_batch_packed_parallel(packed, blob, out, flags):
    """``signed_distance_batch_packed`` split over Numba threads (same layout, no prefetch)."""
    for j in prange(packed.shape[0]):
        o = int(packed[j, 2])
        i = int(packed[j, 3])
        if o < 0:
            out[i] = math.nan
            flags[i] = FLAG_BAD_SLOT
        else:
            v, f = record_fast(o, packed[j, 0], packed[j, 1], blob)
            out[i] = v
            flags[i] = f


@hot
def locality_pack(slots, x, y, zoff, shift, offs, start, packed):
    """Group pairs by which ``2**shift``-double stretch of ``blob`` their zone record
    starts in (stable counting sort; free or unknown slots first).

    Writes ``packed`` (float64, n x 4): per pair in visiting order ``x, y``,
    the record offset (``-1`` for a free or unknown slot) and the input
    position.  Scratch from the caller, so nothing is allocated here: ``offs``
    (int64, n) and ``start`` (int64, at least ``(len(blob) >> shift) + 3``;
    any contents).  Each group is written as one sequential stream, so the
    copy costs little more than reading the input once, and the evaluation pass
    then reads sequentially.
    """
    n = slots.shape[0]
    n_keys = 1
    for k in range(start.shape[0]):
        start[k] = 0
    for i in range(n):
        s = slots[i]
        o = -1
        k = 0
        if 0 <= s < zoff.shape[0] and zoff[s] >= 0:
            o = zoff[s]
            k = (o >> shift) + 1
        offs[i] = o
        start[k + 1] += 1
        if k + 1 > n_keys:
            n_keys = k + 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    for i in range(n):
        o = offs[i]
        k = (o >> shift) + 1 if o >= 0 else 0
        j = start[k]
        start[k] = j + 1
        packed[j, 0] = x[i]
        packed[j, 1] = y[i]
        packed[j, 2] = o
        packed[j, 3] = i


# --------------------------------------------------------------- exact pass
@jit
def locate_exact(px, py, blob, o):
    """Exact point location against the polygon record at ``o`` (even-odd over all edges).

    Returns ``(on_boundary, inside)``; follows GEOS' RayCrossingCounter so the
    answer equals shapely's for points on vertices and edges.
    """
    nb = int(blob[o + 5])
    blocks = o + HEADER + BOX_SIZE * nb
    crossings = 0
    for c in range(nb):
        b = blocks + BLOCK_SIZE * c
        ys = b + BLOCK_EDGES + 1
        for j in range(1, BLOCK_EDGES + 1):
            x1 = blob[b + j - 1]
            y1 = blob[ys + j - 1]
            x2 = blob[b + j]
            y2 = blob[ys + j]
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
def exact_side(px, py, d, blob, o):
    """Signed distance from the unsigned distance ``d`` and an exact point location."""
    on_boundary, inside = locate_exact(px, py, blob, o)
    if on_boundary:
        return 0.0
    if inside:
        return -d
    return d if d > 0.0 else _TINY


@jit
def resolve_exact(idx, slots, x, y, zoff, blob, out):
    """Second pass: give the pairs ``idx`` (flagged ``FLAG_EXACT``) their exact sign.

    ``out[i]`` holds the unsigned distance on entry and the signed distance on
    exit: 0 on the boundary (exact predicates), negative inside, positive outside.
    """
    for j in range(idx.shape[0]):
        i = idx[j]
        out[i] = exact_side(x[i], y[i], out[i], blob, zoff[slots[i]])


@jit
def zone_signed_distance(slot, px, py, zoff, blob):
    """Exact signed distance (m) from (px, py) to zone ``slot``; NaN for a free or unknown slot.

    Negative inside, positive outside, ``0.0`` on the boundary (inside).
    """
    v, flag = zone_fast(slot, px, py, zoff, blob)
    if flag == FLAG_EXACT:
        return exact_side(px, py, v, blob, zoff[slot])
    return v


# ----------------------------------------------------------------- crossing
@jit
def zone_segment_touches(slot, x0, y0, x1, y1, zoff, blob):
    """Does the closed segment (x0, y0)-(x1, y1) share a point with zone ``slot``?

    Returns 1 (touches or enters), 0 (misses), -1 (free or unknown slot).
    Touching the boundary counts as entering, as for points.
    """
    if slot < 0 or slot >= zoff.shape[0] or zoff[slot] < 0:
        return -1
    o = zoff[slot]
    if max(x0, x1) < blob[o + 1] or min(x0, x1) > blob[o + 3]:
        return 0
    if max(y0, y1) < blob[o + 2] or min(y0, y1) > blob[o + 4]:
        return 0
    if blob[o] == KIND_CIRCLE:
        d2 = segment_distance2(blob[o + 5], blob[o + 6], x0, y0, x1, y1)
        return 1 if math.sqrt(d2) <= blob[o + 7] else 0
    if zone_signed_distance(slot, x0, y0, zoff, blob) <= 0.0:
        return 1
    if zone_signed_distance(slot, x1, y1, zoff, blob) <= 0.0:
        return 1
    sminx = min(x0, x1)
    smaxx = max(x0, x1)
    sminy = min(y0, y1)
    smaxy = max(y0, y1)
    nb = int(blob[o + 5])
    boxes = o + HEADER
    blocks = boxes + BOX_SIZE * nb
    for c in range(nb):
        q = boxes + BOX_SIZE * c
        if blob[q + 2] < sminx or blob[q] > smaxx or blob[q + 3] < sminy or blob[q + 1] > smaxy:
            continue
        b = blocks + BLOCK_SIZE * c
        ys = b + BLOCK_EDGES + 1
        for j in range(1, BLOCK_EDGES + 1):
            if segments_touch(
                x0, y0, x1, y1, blob[b + j - 1], blob[ys + j - 1], blob[b + j], blob[ys + j]
            ):
                return 1
    return 0


@jit
def crossing_batch(slots, x0, y0, x1, y1, zoff, blob, out):
    """For each i: does segment (x0[i], y0[i])-(x1[i], y1[i]) touch zone ``slots[i]``.

    Writes 1/0 into ``out`` (uint8, length n); free or unknown slots write 0 and
    are counted in the returned number.
    """
    bad = 0
    for i in range(slots.shape[0]):
        r = zone_segment_touches(slots[i], x0[i], y0[i], x1[i], y1[i], zoff, blob)
        if r < 0:
            bad += 1
            out[i] = 0
        else:
            out[i] = r
    return bad


# -------------------------------------------------------------------- build
@jit
def write_polygon_records(x, y, ring_off, part_off, geom_off, rec_off, buf):
    """Write one polygon record per geometry into ``buf`` at ``rec_off[g]`` (see module doc).

    Input is ragged and planar (metres): closed rings ``x[ring_off[r]:ring_off[r + 1]]``,
    rings of part ``p`` are ``part_off[p]:part_off[p + 1]``, parts of geometry
    ``g`` are ``geom_off[g]:geom_off[g + 1]`` (the layout of
    ``shapely.to_ragged_array`` for MultiPolygon).  ``buf`` must be zeroed
    and sized for ``HEADER + (BOX_SIZE + BLOCK_SIZE) * blocks`` doubles per record.
    """
    for g in range(geom_off.shape[0] - 1):
        r0 = part_off[geom_off[g]]
        r1 = part_off[geom_off[g + 1]]
        nb = 0
        for r in range(r0, r1):
            nb += (ring_off[r + 1] - ring_off[r] - 1 + BLOCK_EDGES - 1) // BLOCK_EDGES
        o = rec_off[g]
        boxes = o + HEADER
        blocks = boxes + BOX_SIZE * nb
        gminx = math.inf
        gminy = math.inf
        gmaxx = -math.inf
        gmaxy = -math.inf
        k = 0
        for r in range(r0, r1):
            start = ring_off[r]
            last = ring_off[r + 1] - 1
            s = start
            while s < last:
                b = blocks + BLOCK_SIZE * k
                ys = b + BLOCK_EDGES + 1
                inv = ys + BLOCK_EDGES + 1
                minx = math.inf
                miny = math.inf
                maxx = -math.inf
                maxy = -math.inf
                for j in range(BLOCK_EDGES + 1):
                    v = min(s + j, last)
                    vx = x[v]
                    vy = y[v]
                    buf[b + j] = vx
                    buf[ys + j] = vy
                    minx = min(minx, vx)
                    miny = min(miny, vy)
                    maxx = max(maxx, vx)
                    maxy = max(maxy, vy)
                for j in range(BLOCK_EDGES):
                    ex = buf[b + j + 1] - buf[b + j]
                    ey = buf[ys + j + 1] - buf[ys + j]
                    len2 = ex * ex + ey * ey
                    buf[inv + j] = 1.0 / len2 if len2 > 0.0 else 0.0
                q = boxes + BOX_SIZE * k
                buf[q] = minx
                buf[q + 1] = miny
                buf[q + 2] = maxx
                buf[q + 3] = maxy
                gminx = min(gminx, minx)
                gminy = min(gminy, miny)
                gmaxx = max(gmaxx, maxx)
                gmaxy = max(gmaxy, maxy)
                k += 1
                s += BLOCK_EDGES
        buf[o] = KIND_POLYGON
        buf[o + 1] = gminx
        buf[o + 2] = gminy
        buf[o + 3] = gmaxx
        buf[o + 4] = gmaxy
        buf[o + 5] = nb
        buf[o + 6] = r1 - r0
        buf[o + 7] = 0.0
