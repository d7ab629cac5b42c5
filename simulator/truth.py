"""Ground truth from the noise-free paths: what really happened, exactly.

Proximity and circle zones are solved in closed form: between consecutive
vertices of both paths the offset between the two positions is linear in
time, so the squared distance is a quadratic whose roots give the exact
instants a threshold is crossed and whose vertex gives the closest approach.
Polygon zones are cut with shapely (the reference geometry library): each
path segment is intersected with the zone and the pieces mapped back to time.
A point on the boundary counts as inside, as in the engine's convention.

Episodes of one key separated by less than the scenario's ``merge_gap_s``
are one episode (an offender hovering round 1,000 m is one encounter, not five).

Truth file line (contract §7) plus three optional extensions the scorer uses:
``device`` (device episodes), ``closest_at`` (time of the minimum distance)
and ``contact_at`` (first time the true distance fell below each contact
distance, keyed by metres as text).  ``min_distance_m`` is the closest
distance for proximity; for zones it is the signed distance to the boundary
at the worst point, negative meaning "into the violation" (metres deep in an
exclusion zone, metres outside an inclusion zone); null for device episodes.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import MultiPolygon, Polygon

from devices.timeutil import format_time, parse_time
from simulator.errors import TraceError

FloatArray = NDArray[np.float64]
Interval = tuple[float, float]
DENSIFY_M = 5.0  # spacing of the points that measure depth inside / distance outside a polygon


@dataclass(frozen=True, slots=True)
class Episode:
    """One true episode (contract §7 ground-truth line)."""

    kind: str
    start: float
    end: float
    order: str | None = None
    subject: str | None = None
    protected_person: str | None = None
    zone: str | None = None
    min_distance_m: float | None = None
    device: str | None = None
    closest_at: float | None = None
    contact_at: Mapping[str, float] = field(default_factory=dict)
    # why no engine can warn before this proximity episode starts, when none can: the victim's
    # device was not with her ("device_left"), his device was offline and buffering
    # ("offline"), or he came within alert_m on a corridor the order approves ("corridor").
    # The "warned before" target leaves these out and says how many (simulator/score.py).
    excluded: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The truth-file object (keys in contract order, extensions after)."""
        d: dict[str, Any] = {"kind": self.kind, "order": self.order, "subject": self.subject}
        if self.zone is not None:
            d["zone"] = self.zone
        else:
            d["protected_person"] = self.protected_person
        d["start"] = format_time(self.start)
        d["end"] = format_time(self.end)
        d["min_distance_m"] = None if self.min_distance_m is None else round(self.min_distance_m, 1)
        if self.device is not None:
            d["device"] = self.device
        if self.closest_at is not None:
            d["closest_at"] = format_time(self.closest_at)
        if self.contact_at:
            d["contact_at"] = {
                k: format_time(v)
                for k, v in sorted(self.contact_at.items(), key=lambda kv: float(kv[0]))
            }
        if self.excluded is not None:
            d["excluded"] = self.excluded
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Episode:
        """Parse a truth-file object (raises KeyError/ValueError/TypeError on bad input)."""
        dist = d.get("min_distance_m")
        closest = d.get("closest_at")
        return cls(
            kind=str(d["kind"]),
            start=parse_time(d["start"]),
            end=parse_time(d["end"]),
            order=d.get("order"),
            subject=d.get("subject"),
            protected_person=d.get("protected_person"),
            zone=d.get("zone"),
            min_distance_m=None if dist is None else float(dist),
            device=d.get("device"),
            closest_at=None if closest is None else parse_time(closest),
            contact_at={str(k): parse_time(v) for k, v in (d.get("contact_at") or {}).items()},
            excluded=None if d.get("excluded") is None else str(d["excluded"]),
        )


def write_truth(episodes: Iterable[Episode], path: str | FilePath) -> None:
    """One episode per line, in (start, kind, keys) order."""
    with open(path, "w", encoding="utf-8") as fh:
        for ep in sort_episodes(episodes):
            fh.write(json.dumps(ep.to_json()) + "\n")


def read_truth(path: str | FilePath) -> list[Episode]:
    """Episodes from a truth file; a bad line is a TraceError naming the line."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(Episode.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                raise TraceError(f"{path}:{n}: not a ground-truth line ({exc})") from exc
    return out


def sort_episodes(episodes: Iterable[Episode]) -> list[Episode]:
    """Deterministic order: start, kind, then the keys."""
    return sorted(
        episodes,
        key=lambda e: (
            e.start,
            e.kind,
            e.order or "",
            e.subject or "",
            e.protected_person or "",
            e.zone or "",
            e.device or "",
        ),
    )


# --- closed-form distance episodes ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pieces:
    """Per-interval solution of |A(t) - B(t)| against a threshold on a common time grid."""

    inside: list[Interval]  # maximal intervals with distance < threshold
    t: FloatArray  # grid
    dmin: FloatArray  # minimum distance on each grid interval
    tmin: FloatArray  # time of that minimum


def distance_pieces(
    ta: FloatArray,
    xa: FloatArray,
    ya: FloatArray,
    tb: FloatArray,
    xb: FloatArray,
    yb: FloatArray,
    threshold: float,
    t0: float,
    t1: float,
) -> Pieces:
    """Exact intervals of |A - B| < threshold in [t0, t1] for two piecewise-linear tracks."""
    grid = np.unique(np.concatenate([ta, tb, [t0, t1]]))
    grid = grid[(grid >= t0) & (grid <= t1)]
    if grid.size < 2:
        grid = np.array([t0, max(t1, t0)])
    rx = np.interp(grid, ta, xa) - np.interp(grid, tb, xb)
    ry = np.interp(grid, ta, ya) - np.interp(grid, tb, yb)
    px, py = rx[:-1], ry[:-1]
    dx, dy = np.diff(rx), np.diff(ry)
    a = dx * dx + dy * dy
    b = 2.0 * (px * dx + py * dy)
    c = px * px + py * py
    with np.errstate(divide="ignore", invalid="ignore"):
        s_star = np.where(a > 0, np.clip(-b / (2 * a), 0.0, 1.0), 0.0)
    dmin = np.hypot(px + s_star * dx, py + s_star * dy)  # vector form: no cancellation
    dt = np.diff(grid)
    tmin = grid[:-1] + s_star * dt
    r2 = threshold * threshold
    # roots of a s^2 + b s + (c - r2) = 0 bound the inside part of each interval
    disc = b * b - 4 * a * (c - r2)
    lo = np.zeros_like(a)
    hi = np.ones_like(a)
    moving = a > 1e-18
    with np.errstate(divide="ignore", invalid="ignore"):
        sq = np.sqrt(np.where(disc > 0, disc, 0.0))
        # stable roots (no -b + sqrt(b^2 ...) cancellation): q / a and (c - r2) / q
        q = -0.5 * (b + np.copysign(sq, b))
        r_a = q / a
        r_b = np.where(q != 0, (c - r2) / q, r_a)
        lo = np.where(moving, np.clip(np.minimum(r_a, r_b), 0.0, 1.0), lo)
        hi = np.where(moving, np.clip(np.maximum(r_a, r_b), 0.0, 1.0), hi)
    has = np.where(moving, (disc > 0) & (hi > lo), c < r2)
    intervals: list[Interval] = []
    for i in np.flatnonzero(has):
        s, e = float(grid[i] + lo[i] * dt[i]), float(grid[i] + hi[i] * dt[i])
        if intervals and s <= intervals[-1][1] + 1e-6:
            intervals[-1] = (intervals[-1][0], max(intervals[-1][1], e))
        else:
            intervals.append((s, e))
    return Pieces(intervals, grid, dmin, tmin)


def closest_in(p: Pieces, start: float, end: float) -> tuple[float, float]:
    """(minimum distance, its time) over grid intervals overlapping [start, end]."""
    sel = (p.t[:-1] < end) & (p.t[1:] > start)
    if not sel.any():
        sel = (p.t[:-1] <= end) & (p.t[1:] >= start)
    i = np.flatnonzero(sel)[np.argmin(p.dmin[sel])]
    return float(p.dmin[i]), float(p.tmin[i])


# --- polygon zones ---------------------------------------------------------------------------


def polygon_inside(
    t: FloatArray, x: FloatArray, y: FloatArray, geom: Polygon | MultiPolygon, t0: float, t1: float
) -> list[Interval]:
    """Exact intervals in [t0, t1] during which the track is inside (or on) the polygon."""
    grid = np.unique(np.concatenate([t, [t0, t1]]))
    grid = grid[(grid >= t0) & (grid <= t1)]
    if grid.size < 2:
        grid = np.array([t0, max(t1, t0)])
    gx, gy = np.interp(grid, t, x), np.interp(grid, t, y)
    starts = np.column_stack([gx[:-1], gy[:-1]])
    ends = np.column_stack([gx[1:], gy[1:]])
    still = np.hypot(ends[:, 0] - starts[:, 0], ends[:, 1] - starts[:, 1]) < 1e-9
    intervals: list[Interval] = []
    covered = shapely.intersects_xy(geom, starts[:, 0], starts[:, 1])
    moving_idx = np.flatnonzero(~still)
    lines = shapely.linestrings(np.stack([starts[moving_idx], ends[moving_idx]], axis=1))
    hit = np.zeros(grid.size - 1, dtype=bool)
    hit[moving_idx] = shapely.intersects(lines, geom)
    hit[still] = covered[still]
    line_of = {int(i): lines[k] for k, i in enumerate(moving_idx)}
    for i in np.flatnonzero(hit):
        ta_, tb_ = float(grid[i]), float(grid[i + 1])
        if still[i]:
            _add(intervals, ta_, tb_)
            continue
        seg = line_of[int(i)]
        inter = shapely.intersection(seg, geom)
        for part in shapely.get_parts(inter):
            if shapely.get_type_id(part) not in (
                1,
                2,
            ):  # lines only; touching points have no duration
                continue
            ends_ = shapely.get_coordinates(part)
            s = shapely.line_locate_point(seg, shapely.points(ends_), normalized=True)
            _add(intervals, ta_ + float(s.min()) * (tb_ - ta_), ta_ + float(s.max()) * (tb_ - ta_))
    return merge_intervals(intervals, 1e-6)


def _add(intervals: list[Interval], s: float, e: float) -> None:
    if e > s:
        intervals.append((s, e))


def densified(
    t: FloatArray, x: FloatArray, y: FloatArray, start: float, end: float
) -> tuple[FloatArray, FloatArray]:
    """Points of the track in [start, end] at most ``DENSIFY_M`` apart (plus all vertices)."""
    inner = t[(t > start) & (t < end)]
    knots = np.concatenate([[start], inner, [end]])
    samples = [knots]
    for a, b in itertools.pairwise(knots):
        (xa, xb), (ya, yb) = np.interp([a, b], t, x), np.interp([a, b], t, y)
        n = int(math.hypot(xb - xa, yb - ya) // DENSIFY_M)
        if n > 0:
            samples.append(np.linspace(a, b, n + 2)[1:-1])
    ts = np.unique(np.concatenate(samples))
    return np.interp(ts, t, x), np.interp(ts, t, y)


# --- interval algebra --------------------------------------------------------------------------


def merge_intervals(intervals: Iterable[Interval], gap: float) -> list[Interval]:
    """Sorted union, joining intervals separated by less than ``gap``."""
    out: list[Interval] = []
    for s, e in sorted(intervals):
        if out and s - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def intersect_intervals(a: list[Interval], b: list[Interval]) -> list[Interval]:
    """Pairwise intersection of two sorted, disjoint interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        s, e = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if e > s:
            out.append((s, e))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def complement(intervals: list[Interval], t0: float, t1: float) -> list[Interval]:
    """[t0, t1] minus the sorted, disjoint intervals."""
    out: list[Interval] = []
    cur = t0
    for s, e in intervals:
        if s > cur:
            out.append((cur, min(s, t1)))
        cur = max(cur, e)
    if cur < t1:
        out.append((cur, t1))
    return [(s, e) for s, e in out if e > s]
