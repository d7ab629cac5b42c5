"""Crossings: what happens *between* fixes, and crossings the court approved.

**Sparse fixes.**  A car with a fix every 30 s moves ~400 m between fixes;
it can pass through a small ban zone or close by the victim with no fix
inside.  The best estimate of the path between two consecutive accepted
fixes is the straight line (the partner's track is interpolated the same
way), so the zone and proximity rules also test that segment
(``segment_depth``, ``closest_approach``).  Such a finding is never
``observed`` (nobody saw it): it is ``likely`` when the straight path is
inside / within the distance by more than the larger accuracy radius plus
``PATH_MARGIN_FRAC`` of the segment length (roads curve: a chord of a road
that skirts a circle cuts into it by about L²/8R), else ``possible``.
Segments across a gap longer than ``sparse_max_gap_s`` are not interpolated,
and the jump filter has already dropped implausible fixes, so a multipath
jump never becomes a "path".

**Reception gaps.**  After a broker or platform outage a device's buffered
fixes arrive in a burst; they are evaluated in device time (alerts from them
are marked ``late``) and ``report_reception_gap`` adds one record per device:
a ``signal_loss`` alert at ``info`` with target ``{device}/gap``, raised and
resolved at once (a report, not a condition to handle), whose detail gives
``gap_s``, the covered device-time span and the number of buffered fixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from devices.model import Fix
from engine.config import RuleConfig
from engine.rules.context import RuleContext
from engine.timeutil import format_time
from engine.tracks import DeviceTrack, TrackPoint
from geo.index import ZoneIndex
from geo.proximity import predict_position

PATH_MARGIN_FRAC = 0.1  # the real path may bow away from the chord by this fraction of its length
SAMPLE_STEP_M = 5.0
MAX_SAMPLES = 400


def previous_point(track: DeviceTrack, point: TrackPoint) -> TrackPoint | None:
    """The accepted point just before ``point`` in device time (None if there is none)."""
    best = None
    for p in track.points:
        if p.t < point.t and (best is None or p.t >= best.t):
            best = p
    return best


def segment_usable(p0: TrackPoint | None, p1: TrackPoint, rules: RuleConfig) -> bool:
    """A straight path is assumed only between two accepted fixes at most ``sparse_max_gap_s`` apart."""
    return (
        rules.sparse_crossing_enabled
        and p0 is not None
        and 0.0 < p1.t - p0.t <= rules.sparse_max_gap_s
    )


def path_margin(p0: TrackPoint, p1: TrackPoint) -> float:
    """How far the real path may be from the straight line: accuracy plus curvature allowance."""
    return max(p0.acc, p1.acc) + PATH_MARGIN_FRAC * math.hypot(p1.x - p0.x, p1.y - p0.y)


@dataclass(frozen=True, slots=True)
class SegmentHit:
    """A straight segment inside a zone: how deep, and when it entered (interpolated)."""

    depth_m: float  # > 0: the segment runs this far inside the zone boundary
    entry_t: float
    deepest_t: float


def segments_in_zones(
    index: ZoneIndex, slots: np.ndarray, p0: TrackPoint, p1: TrackPoint
) -> list[SegmentHit | None]:
    """Per zone slot: where the straight path p0 -> p1 runs inside it (None: it does not)."""
    n = len(slots)
    if n == 0:
        return []
    hit = index.crossing(
        slots, np.full(n, p0.x), np.full(n, p0.y), np.full(n, p1.x), np.full(n, p1.y)
    )
    out: list[SegmentHit | None] = [None] * n
    if not hit.any():
        return out
    length = math.hypot(p1.x - p0.x, p1.y - p0.y)
    k = int(min(MAX_SAMPLES, max(2, math.ceil(length / SAMPLE_STEP_M) + 1)))
    frac = np.linspace(0.0, 1.0, k)
    xs = p0.x + frac * (p1.x - p0.x)
    ys = p0.y + frac * (p1.y - p0.y)
    for i in np.flatnonzero(hit).tolist():
        sd = index.signed_distance(np.full(k, slots[i], dtype=np.int64), xs, ys)
        inside = np.flatnonzero(sd <= 0.0)
        deepest = int(np.argmin(sd))
        first = int(inside[0]) if len(inside) else deepest
        dt = p1.t - p0.t
        out[i] = SegmentHit(
            depth_m=max(0.0, -float(sd[deepest])),
            entry_t=p0.t + float(frac[first]) * dt,
            deepest_t=p0.t + float(frac[deepest]) * dt,
        )
    return out


@dataclass(frozen=True, slots=True)
class Approach:
    """Closest approach of two interpolated tracks over a segment's interval."""

    distance_m: float
    t: float
    partner_extra_m: float  # uncertainty added by extrapolating the partner


def closest_approach(
    p0: TrackPoint, p1: TrackPoint, partner: DeviceTrack, max_extrap_s: float
) -> Approach | None:
    """Minimum distance between the straight path p0 -> p1 and the partner's track over [t0, t1].

    Both tracks are piecewise linear between the sample times (the segment's
    ends and the partner's fixes within it), so the relative motion is linear
    on each piece and its minimum is exact.
    """
    pts = list(partner.points)
    if not pts:
        return None
    tt = np.array([p.t for p in pts])
    tx = np.array([p.x for p in pts])
    ty = np.array([p.y for p in pts])
    inner = tt[(tt > p0.t) & (tt < p1.t)]
    ts = np.concatenate(([p0.t], inner, [p1.t]))
    frac = (ts - p0.t) / (p1.t - p0.t)
    ax = p0.x + frac * (p1.x - p0.x)
    ay = p0.y + frac * (p1.y - p0.y)
    bx = np.empty_like(ts)
    by = np.empty_like(ts)
    extra = 0.0
    for j, t in enumerate(ts.tolist()):
        x, y, unc, _ = predict_position(tt, tx, ty, t, max_extrap_s)
        bx[j], by[j] = x, y
        extra = max(extra, unc)
    rx, ry = ax - bx, ay - by
    best_d, best_t = math.inf, float(p1.t)
    for j in range(len(ts) - 1):
        r0x, r0y = float(rx[j]), float(ry[j])
        dx, dy = float(rx[j + 1]) - r0x, float(ry[j + 1]) - r0y
        dd = dx * dx + dy * dy
        s = 0.0 if dd == 0.0 else min(1.0, max(0.0, -(r0x * dx + r0y * dy) / dd))
        d = math.hypot(r0x + s * dx, r0y + s * dy)
        if d < best_d:
            best_d, best_t = d, float(ts[j] + s * (ts[j + 1] - ts[j]))
    return Approach(best_d, best_t, extra)


def report_reception_gap(
    ctx: RuleContext, device: str, fixes: list[Fix], newest_before_t: float
) -> None:
    """One gap record for a device whose buffered fixes arrived ``gap_report_s`` or more after
    its last data (a device never heard before has no gap to report)."""
    if not math.isfinite(newest_before_t):
        return  # never heard before: there is no "before" to measure a gap from
    late = [f for f in fixes if ctx.now - f.t > ctx.rules.late_after_s and f.t > newest_before_t]
    if not late:
        return
    since = newest_before_t
    arrived = max(f.arrival for f in late)
    gap_s = arrived - since
    if gap_s < ctx.rules.gap_report_s:
        return
    owner = ctx.book.owner_of(device)
    if owner is None:
        return
    role, person = owner
    orders = (
        ctx.book.orders_of_subject(person)
        if role == "subject"
        else ctx.book.orders_protecting(person)
    )
    valid = [o for o in orders if o.valid_at(late[0].t)] or orders[:1]
    order = valid[0].id if valid else None
    target = f"{device}/gap"
    detail = (
        f"reception gap: gap_s {gap_s:.0f} ({gap_s / 60:.0f} min without data from {device} "
        f"after {format_time(since)}); {len(late)} buffered fixes from {format_time(late[0].t)} "
        f"to {format_time(late[-1].t)} arrived late and were evaluated (their alerts are marked late)"
    )
    ctx.emit(
        ctx.alerts.raise_or_update(
            order=order,
            kind="signal_loss",
            target=target,
            level="info",
            now=ctx.now,
            device_time=late[0].t,
            episode_start=since,
            subject=person if role == "subject" else None,
            protected_person=person if role == "protected" else None,
            certainty="observed",
            evidence=(late[0].key, late[-1].key),
            late=True,
            device=device,
            detail=detail,
        )
    )
    ctx.emit(
        ctx.alerts.resolve_episode(
            order, "signal_loss", target, ctx.now, "buffered fixes evaluated"
        )
    )
