"""Moving-to-moving proximity: distance, closing speed, time to contact; track prediction.

Units: projected metres, seconds, metres per second, in the projection's
x (east-ish) and y (north-ish) axes.

A planar length is ``sqrt(x*x + y*y)`` (``_norm``), not ``math.hypot``: the engine asks
about one pair at a time from compiled Python (``geo.proximity.assess_pair`` and
``predict_from_two``), where a Numba call costs more than the arithmetic, and those scalar
versions must give these kernels' numbers bit for bit.  CPython's ``math.hypot`` and the C
library's, which Numba calls, differ in the last bit for about one pair in 700; ``sqrt`` is
correctly rounded in both.  For projected metres neither overflows.
"""

from __future__ import annotations

import math

from numba import prange

from ._jit import jit, pjit

MIN_CLOSING_MPS = 0.05  # below this closing speed the time to contact is infinite


@jit
def _norm(x, y):
    """Length of (x, y): the same operations as ``geo.proximity``'s scalar versions."""
    return math.sqrt(x * x + y * y)


@jit
def assess_pair(ax, ay, avx, avy, bx, by, bvx, bvy):
    """(distance m, closing speed m/s, time to contact s) for one pair of moving points.

    Closing speed is ``-d|b - a|/dt`` (positive when approaching).  Time to
    contact is ``distance / closing`` when closing > ``MIN_CLOSING_MPS``, else
    ``inf``.  At zero distance the pair is in contact: closing 0, time 0.
    """
    rx = bx - ax
    ry = by - ay
    d = _norm(rx, ry)
    if d == 0.0:
        return 0.0, 0.0, 0.0
    closing = -(rx * (bvx - avx) + ry * (bvy - avy)) / d
    if closing > MIN_CLOSING_MPS:
        ttc = d / closing
    else:
        ttc = math.inf
    return d, closing, ttc


@jit
def assess_pairs_batch(ax, ay, avx, avy, bx, by, bvx, bvy, out_d, out_closing, out_ttc):
    """Batch ``assess_pair`` over n pairs; all arrays float64 length n, outputs caller-given."""
    for i in range(ax.shape[0]):
        d, c, t = assess_pair(ax[i], ay[i], avx[i], avy[i], bx[i], by[i], bvx[i], bvy[i])
        out_d[i] = d
        out_closing[i] = c
        out_ttc[i] = t


@pjit
def assess_pairs_batch_parallel(ax, ay, avx, avy, bx, by, bvx, bvy, out_d, out_closing, out_ttc):
    """``assess_pairs_batch`` split over Numba threads (same layout and result)."""
    for i in prange(ax.shape[0]):
        d, c, t = assess_pair(ax[i], ay[i], avx[i], avy[i], bx[i], by[i], bvx[i], bvy[i])
        out_d[i] = d
        out_closing[i] = c
        out_ttc[i] = t


@jit
def _velocity(t0, x0, y0, t1, x1, y1):
    """Velocity (m/s) from sample 0 to sample 1 (t0 <= t1); zero if they share a time stamp."""
    dt = t1 - t0
    if dt <= 0.0:
        return 0.0, 0.0
    return (x1 - x0) / dt, (y1 - y0) / dt


@jit
def _after(t, t1, x1, y1, vx, vy, max_extrapolation_s, min_speed_mps):
    """Dead reckoning from the last sample (t1 <= t) with velocity (vx, vy): see ``predict_track``."""
    gap = t - t1
    dt = min(gap, max_extrapolation_s)
    speed = max(_norm(vx, vy), min_speed_mps)
    return x1 + vx * dt, y1 + vy * dt, speed * dt, gap


@jit
def _before(t, t0, x0, y0, vx, vy, max_extrapolation_s, min_speed_mps):
    """Dead reckoning back from the first sample (t <= t0): see ``predict_track``."""
    gap = t0 - t
    dt = min(gap, max_extrapolation_s)
    speed = max(_norm(vx, vy), min_speed_mps)
    return x0 - vx * dt, y0 - vy * dt, speed * dt, gap


@jit
def _between(t, t0, x0, y0, t1, x1, y1):
    """Linear interpolation between the bracketing samples (t0 <= t < t1)."""
    span = t1 - t0
    f = (t - t0) / span if span > 0.0 else 1.0
    return x0 + f * (x1 - x0), y0 + f * (y1 - y0), 0.0, 0.0


PREDICT_BEFORE = -1  # ``predict_from_samples``: t at or before the first sample
PREDICT_BETWEEN = 0  # ... strictly inside the track, between two bracketing samples
PREDICT_AFTER = 1  # ... at or after the last sample


@jit
def predict_track(tt, xx, yy, t, max_extrapolation_s, min_speed_mps):
    """Position of a track at time ``t``: ``(x, y, extra_uncertainty_m, extrapolated_s)``.

    ``tt`` float64 seconds ascending, ``xx, yy`` metres, length n >= 1.

    * Inside the track: linear interpolation between the bracketing samples,
      extra uncertainty 0 (straight-line motion between fixes is assumed).
    * Outside it: dead reckoning with the velocity of the nearest segment for
      ``dt = min(gap, max_extrapolation_s)`` seconds, then the position is held.
      Extra uncertainty is ``max(speed, min_speed_mps) * dt``: the distance
      between straight-line extrapolation and a partner who keeps its speed but
      turns by up to 60 degrees (chord ``2 v dt sin(60/2) = v dt``).  The floor
      ``min_speed_mps`` covers a partner that was standing still and starts to move.
    * ``extrapolated_s`` is the unclamped gap to the nearest sample (0 inside).
    """
    n = tt.shape[0]
    if t >= tt[n - 1]:
        if n >= 2:
            vx, vy = _velocity(tt[n - 2], xx[n - 2], yy[n - 2], tt[n - 1], xx[n - 1], yy[n - 1])
        else:
            vx, vy = 0.0, 0.0
        return _after(t, tt[n - 1], xx[n - 1], yy[n - 1], vx, vy, max_extrapolation_s, min_speed_mps)
    if t <= tt[0]:
        if n >= 2:
            vx, vy = _velocity(tt[0], xx[0], yy[0], tt[1], xx[1], yy[1])
        else:
            vx, vy = 0.0, 0.0
        return _before(t, tt[0], xx[0], yy[0], vx, vy, max_extrapolation_s, min_speed_mps)
    lo = 0
    hi = n - 1
    while hi - lo > 1:  # invariant: tt[lo] < t < tt[hi]
        mid = (lo + hi) // 2
        if tt[mid] <= t:
            lo = mid
        else:
            hi = mid
    return _between(t, tt[lo], xx[lo], yy[lo], tt[hi], xx[hi], yy[hi])


@jit
def predict_from_samples(
    where, moving, t, t0, x0, y0, t1, x1, y1, max_extrapolation_s, min_speed_mps
):
    """``predict_track`` for a caller that has found the two samples it reads: the same
    helpers, so the same numbers, with no arrays (the engine's tracks are short deques).

    ``where`` is ``PREDICT_AFTER`` (``t`` at or after the last sample ``(t1, x1, y1)``;
    ``(t0, x0, y0)`` the sample before it), ``PREDICT_BEFORE`` (``t`` at or before the
    first sample ``(t0, x0, y0)``; ``(t1, x1, y1)`` the second) or ``PREDICT_BETWEEN``
    (``t0 <= t < t1``, the last sample at or before ``t`` and the one after it, for a
    ``t`` strictly inside the track).  ``moving`` is False for a one-sample track (no
    velocity; pass that sample twice).  Seconds and metres.
    """
    if where == PREDICT_BETWEEN:
        return _between(t, t0, x0, y0, t1, x1, y1)
    if moving:
        vx, vy = _velocity(t0, x0, y0, t1, x1, y1)
    else:
        vx, vy = 0.0, 0.0
    if where == PREDICT_AFTER:
        return _after(t, t1, x1, y1, vx, vy, max_extrapolation_s, min_speed_mps)
    return _before(t, t0, x0, y0, vx, vy, max_extrapolation_s, min_speed_mps)
