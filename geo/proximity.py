"""Offender-victim proximity: batch distance / closing speed / time to contact, track prediction.

Thin wrappers that validate shapes and dtypes and call ``geo.kernels``;
velocities are in m/s along the projection's x and y axes.

Two functions are not wrappers: ``assess_pair`` and ``predict_from_two`` answer for one pair
or one track from the engine's per-fix path (compiled by mypyc: engine.tools.native), where a call
into Numba cost 3,000 instructions, more than the arithmetic it ran.  They repeat the
kernels' arithmetic operation for operation (``geo.kernels.proximity``: lengths as
``sqrt(x*x + y*y)``), so they give the kernels' numbers bit for bit; a hypothesis test holds
them to that (tests/geo/test_geo_proximity.py).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from operator import attrgetter
from typing import Final, Protocol

import numpy as np

from . import kernels
from .errors import GeoError
from .geodesy import geodesic_distance_m

__all__ = [
    "PARALLEL_MIN_PAIRS",
    "Sample",
    "assess_pair",
    "assess_pairs",
    "geodesic_distance_m",
    "predict_from_two",
    "predict_on_samples",
    "predict_position",
    "predict_position_unchecked",
]

PARALLEL_MIN_PAIRS = 500_000
DEFAULT_MIN_SPEED_MPS: Final = 1.5  # walking pace: a partner seen standing still may start to move
# the kernels' codes, as constants of this module (read per call from compiled code)
PREDICT_BEFORE: Final[int] = kernels.PREDICT_BEFORE
PREDICT_BETWEEN: Final[int] = kernels.PREDICT_BETWEEN
PREDICT_AFTER: Final[int] = kernels.PREDICT_AFTER
MIN_CLOSING_MPS: Final[float] = kernels.MIN_CLOSING_MPS


def assess_pairs(
    ax: np.ndarray,
    ay: np.ndarray,
    avx: np.ndarray,
    avy: np.ndarray,
    bx: np.ndarray,
    by: np.ndarray,
    bvx: np.ndarray,
    bvy: np.ndarray,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    *,
    parallel: bool | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance m, closing speed m/s, time to contact s) for each pair a[i], b[i].

    Closing speed is ``-d(distance)/dt``, positive when approaching; time to
    contact is ``distance / closing`` when closing > 0.05 m/s, else ``inf``;
    a pair at distance 0 has closing 0 and time 0.
    """
    arrs = [np.ascontiguousarray(a, dtype=np.float64) for a in (ax, ay, avx, avy, bx, by, bvx, bvy)]
    n = arrs[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrs):
        raise GeoError("assess_pairs: all inputs must be 1-D arrays of equal length")
    if out is None:
        out = (np.empty(n), np.empty(n), np.empty(n))
    elif any(o.shape != (n,) or o.dtype != np.float64 for o in out):
        raise GeoError("assess_pairs: out must be three float64 arrays of the input length")
    use_par = parallel if parallel is not None else n >= PARALLEL_MIN_PAIRS
    fn = kernels.assess_pairs_batch_parallel if use_par else kernels.assess_pairs_batch
    fn(*arrs, *out)
    return out


def assess_pair(
    ax: float, ay: float, avx: float, avy: float, bx: float, by: float, bvx: float, bvy: float
) -> tuple[float, float, float]:
    """``assess_pairs`` for a single pair of floats: ``kernels.assess_pair``'s operations in
    Python, so the same numbers without a Numba call (see the module docstring)."""
    rx = bx - ax
    ry = by - ay
    d = math.sqrt(rx * rx + ry * ry)
    if d == 0.0:
        return 0.0, 0.0, 0.0
    closing = -(rx * (bvx - avx) + ry * (bvy - avy)) / d
    ttc = d / closing if closing > MIN_CLOSING_MPS else math.inf
    return d, closing, ttc


def predict_from_two(
    where: int, moving: bool, t: float, t0: float, x0: float, y0: float, t1: float, x1: float,
    y1: float, max_extrapolation_s: float, min_speed_mps: float,
) -> tuple[float, float, float, float]:
    """``kernels.predict_from_samples`` in Python: the same operations in the same order, so
    the same numbers without a Numba call (see the module docstring and that kernel for what
    ``where``, ``moving`` and the two samples mean)."""
    if where == PREDICT_BETWEEN:  # kernels._between
        span = t1 - t0
        f = (t - t0) / span if span > 0.0 else 1.0
        return x0 + f * (x1 - x0), y0 + f * (y1 - y0), 0.0, 0.0
    vx = vy = 0.0
    if moving:  # kernels._velocity
        dt = t1 - t0
        if dt > 0.0:
            vx, vy = (x1 - x0) / dt, (y1 - y0) / dt
    if where == PREDICT_AFTER:  # kernels._after
        gap = t - t1
        dt = min(gap, max_extrapolation_s)
        speed = max(math.sqrt(vx * vx + vy * vy), min_speed_mps)
        return x1 + vx * dt, y1 + vy * dt, speed * dt, gap
    gap = t0 - t  # kernels._before
    dt = min(gap, max_extrapolation_s)
    speed = max(math.sqrt(vx * vx + vy * vy), min_speed_mps)
    return x0 - vx * dt, y0 - vy * dt, speed * dt, gap


def predict_position_unchecked(
    track_t: np.ndarray,
    track_x: np.ndarray,
    track_y: np.ndarray,
    t: float,
    max_extrapolation_s: float,
    min_speed_mps: float = DEFAULT_MIN_SPEED_MPS,
) -> tuple[float, float, float, float]:
    """``predict_position`` for callers whose tracks are non-empty, ascending float64 1-D
    arrays by construction (the engine's device tracks): the same kernel without the array
    checks (a negative ``max_extrapolation_s`` still raises)."""
    _require_extrapolation_bound(max_extrapolation_s)
    x, y, unc, gap = kernels.predict_track(
        track_t, track_x, track_y, float(t), float(max_extrapolation_s), float(min_speed_mps)
    )
    return float(x), float(y), float(unc), float(gap)


def _require_extrapolation_bound(max_extrapolation_s: float) -> None:
    # "not >=" also refuses NaN
    if not max_extrapolation_s >= 0.0:
        raise GeoError("predict_position: max_extrapolation_s must be >= 0")


class Sample(Protocol):
    """One point of a track: device time (s) and projected position (m)."""

    @property
    def t(self) -> float: ...

    @property
    def x(self) -> float: ...

    @property
    def y(self) -> float: ...


_time_of = attrgetter("t")


def predict_on_samples(
    samples: Sequence[Sample],
    t: float,
    max_extrapolation_s: float,
    min_speed_mps: float = DEFAULT_MIN_SPEED_MPS,
) -> tuple[float, float, float, float]:
    """``predict_position`` for a non-empty track of samples in ascending time (the engine's
    device tracks), without building its arrays.

    The kernel reads at most two samples: the last two, the first two, or the two that
    bracket ``t`` (found here by bisection, as the kernel's search finds them).  Copying a
    whole track into three arrays for each question cost more than the answer; the same
    arithmetic then gives the same numbers (``predict_from_two``).
    """
    _require_extrapolation_bound(max_extrapolation_s)
    n = len(samples)
    last = samples[-1]
    if t >= last.t:
        a, b, where = (samples[-2] if n >= 2 else last), last, PREDICT_AFTER
    elif t <= samples[0].t:
        a, b, where = samples[0], (samples[1] if n >= 2 else samples[0]), PREDICT_BEFORE
    else:
        hi = bisect_right(samples, t, key=_time_of)  # first sample after t: 0 < hi < n
        a, b, where = samples[hi - 1], samples[hi], PREDICT_BETWEEN
    return predict_from_two(
        where, n >= 2, float(t), float(a.t), float(a.x), float(a.y), float(b.t), float(b.x),
        float(b.y), float(max_extrapolation_s), float(min_speed_mps),
    )


def predict_position(
    track_t: np.ndarray,
    track_x: np.ndarray,
    track_y: np.ndarray,
    t: float,
    max_extrapolation_s: float,
    *,
    min_speed_mps: float = DEFAULT_MIN_SPEED_MPS,
) -> tuple[float, float, float, float]:
    """Where was/is a partner at time ``t``: ``(x, y, extra_uncertainty_m, extrapolated_s)``.

    Within the track: linear interpolation, no extra uncertainty.  Beyond it:
    extrapolation with the nearest segment's velocity for at most
    ``max_extrapolation_s`` (then the position is held) and extra uncertainty
    ``max(speed, min_speed_mps) * min(gap, max_extrapolation_s)``, which covers a
    partner keeping its speed and turning by up to 60 degrees.
    ``extrapolated_s`` is the full gap to the nearest fix, so callers can see staleness.
    Track times must be ascending (ties allowed).
    """
    tt = np.ascontiguousarray(track_t, dtype=np.float64)
    xx = np.ascontiguousarray(track_x, dtype=np.float64)
    yy = np.ascontiguousarray(track_y, dtype=np.float64)
    n = tt.shape[0]
    if n == 0 or tt.ndim != 1 or xx.shape != (n,) or yy.shape != (n,):
        raise GeoError("predict_position: need a non-empty track of equal-length 1-D arrays")
    if n > 1 and np.any(np.diff(tt) < 0):
        raise GeoError("predict_position: track times must be ascending")
    return predict_position_unchecked(tt, xx, yy, t, max_extrapolation_s, min_speed_mps)
