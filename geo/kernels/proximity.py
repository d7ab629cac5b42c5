"""Moving-to-moving proximity: distance, closing speed, time to contact; track prediction.

Units: projected metres, seconds, metres per second, in the projection's
x (east-ish) and y (north-ish) axes.
"""

from __future__ import annotations

import math

from numba import prange

from ._jit import jit, pjit

MIN_CLOSING_MPS = 0.05  # below this closing speed the time to contact is infinite


@jit
def assess_pair(ax, ay, avx, avy, bx, by, bvx, bvy):
    """(distance m, closing speed m/s, time to contact s) for one pair of moving points.

    Closing speed is ``-d|b - a|/dt`` (positive when approaching).  Time to
    contact is ``distance / closing`` when closing > ``MIN_CLOSING_MPS``, else
    ``inf``.  At zero distance the pair is in contact: closing 0, time 0.
    """
    rx = bx - ax
    ry = by - ay
    d = math.hypot(rx, ry)
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
def _velocity(tt, xx, yy, i, j):
    """Velocity (m/s) between samples i < j; zero if they share a time stamp."""
    dt = tt[j] - tt[i]
    if dt <= 0.0:
        return 0.0, 0.0
    return (xx[j] - xx[i]) / dt, (yy[j] - yy[i]) / dt


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
        gap = t - tt[n - 1]
        if n >= 2:
            vx, vy = _velocity(tt, xx, yy, n - 2, n - 1)
        else:
            vx, vy = 0.0, 0.0
        dt = min(gap, max_extrapolation_s)
        speed = max(math.hypot(vx, vy), min_speed_mps)
        return xx[n - 1] + vx * dt, yy[n - 1] + vy * dt, speed * dt, gap
    if t <= tt[0]:
        gap = tt[0] - t
        if n >= 2:
            vx, vy = _velocity(tt, xx, yy, 0, 1)
        else:
            vx, vy = 0.0, 0.0
        dt = min(gap, max_extrapolation_s)
        speed = max(math.hypot(vx, vy), min_speed_mps)
        return xx[0] - vx * dt, yy[0] - vy * dt, speed * dt, gap
    lo = 0
    hi = n - 1
    while hi - lo > 1:  # invariant: tt[lo] < t < tt[hi]
        mid = (lo + hi) // 2
        if tt[mid] <= t:
            lo = mid
        else:
            hi = mid
    span = tt[hi] - tt[lo]
    f = (t - tt[lo]) / span if span > 0.0 else 1.0
    return xx[lo] + f * (xx[hi] - xx[lo]), yy[lo] + f * (yy[hi] - yy[lo]), 0.0, 0.0
