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

**Approved crossings.**  An order may list corridors (a motorway, a bus
route past her street) and time windows (a court hearing).  While the
subject moves through a corridor, or is in a window (and its area, if any),
the order's proximity and exclusion alerts (and inclusion alerts, for
windows) are capped at ``info``: they still reach the centre, each with the
note "suppressed: in corridor X ...", nothing is hidden.  Standing still in a
corridor for ``max_dwell_s`` (moving less than ``corridor_stop_radius_m`` plus
the accuracies) or leaving it brings the normal levels back at once.  The
cap is applied by ``CappedAlerts``, which the alert book hands every raise to
while a suppression holds, so the rules themselves do not change.

**Reception gaps.**  After a broker or platform outage a device's buffered
fixes arrive in a burst; they are evaluated in device time (alerts from them
are marked ``late``) and ``report_reception_gap`` adds one record per device:
a ``signal_loss`` alert at ``info`` with target ``{device}/gap``, raised and
cleared at once (a report, not a condition to handle: closed by the engine), whose detail gives
``gap_s``, the covered device-time span and the number of buffered fixes.  When the device's
silence already raised a ``signal_loss`` alert ("no message for ..."), that alert is the
outage's one alert: the gap's detail goes into the note that clears it, and no record is
added (issue 25: one alert per episode).  A gap is measured from the last data of the device
that arrived before (``DeviceTrack.released_arrival``), so the second part of a burst released
in two steps is not a gap of its own.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from math import hypot
from operator import attrgetter
from typing import Any

import numpy as np
from mypy_extensions import mypyc_attr

from devices.model import Fix
from devices.timeutil import format_time
from engine.core.alert_records import LEVEL_RANK, AlertChange, HistoryEntry, copy_alert
from engine.core.alerts import AlertBook, RaiseCap
from engine.core.config import RuleConfig
from engine.core.orders import Order, OrderBook
from engine.core.rules.context import RuleContext
from engine.core.tracks import DeviceTrack, TrackPoint
from geo.index import ZoneIndex
from geo.zones import ZoneShape

_time_of = attrgetter("t")

PATH_MARGIN_FRAC = 0.1  # the real path may bow away from the chord by this fraction of its length
SAMPLE_STEP_M = 5.0
REFINE_SAMPLES = 41  # second pass between the two samples around the deepest one
MAX_SAMPLES = 400


def previous_point(track: DeviceTrack, point: TrackPoint) -> TrackPoint | None:
    """The accepted point just before ``point`` in device time (None if there is none)."""
    # the track's points are in ascending time (DeviceTrack._insert): the first one before
    # ``point`` from the end is the latest (of equal times, the one a forward pass keeps)
    for p in reversed(track.points):
        if p.t < point.t:
            return p
    return None


def segment_usable(p0: TrackPoint | None, p1: TrackPoint, rules: RuleConfig) -> bool:
    """A straight path is assumed only between two accepted fixes at most ``sparse_max_gap_s`` apart."""
    return (
        rules.sparse_crossing_enabled
        and p0 is not None
        and 0.0 < p1.t - p0.t <= rules.sparse_max_gap_s
    )


def path_margin(p0: TrackPoint, p1: TrackPoint) -> float:
    """How far the real path may be from the straight line: accuracy plus curvature allowance."""
    return max(p0.acc, p1.acc) + PATH_MARGIN_FRAC * hypot(p1.x - p0.x, p1.y - p0.y)


@dataclass(slots=True, init=False)
class SegmentHit:
    """A straight segment inside a zone: how deep, and when it entered (interpolated; a written
    ``__init__``, as every record made per fix: engine.tools.native)."""

    depth_m: float  # > 0: the segment runs this far inside the zone boundary
    entry_t: float
    deepest_t: float

    def __init__(self, depth_m: float, entry_t: float, deepest_t: float) -> None:
        self.depth_m = depth_m
        self.entry_t = entry_t
        self.deepest_t = deepest_t


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
    length = hypot(p1.x - p0.x, p1.y - p0.y)
    k = int(min(MAX_SAMPLES, max(2, math.ceil(length / SAMPLE_STEP_M) + 1)))
    frac = np.linspace(0.0, 1.0, k)
    xs = p0.x + frac * (p1.x - p0.x)
    ys = p0.y + frac * (p1.y - p0.y)
    for i in np.flatnonzero(hit).tolist():
        sd = index.signed_distance(np.full(k, slots[i], dtype=np.int64), xs, ys)
        inside = np.flatnonzero(sd <= 0.0)
        deepest = int(np.argmin(sd))
        first = int(inside[0]) if len(inside) else deepest
        # the samples can straddle the deepest point by up to half a step: refine between the
        # neighbouring samples, so a depth right at the alarm margin is not underestimated
        lo, hi = frac[max(0, deepest - 1)], frac[min(k - 1, deepest + 1)]
        fine = np.linspace(lo, hi, REFINE_SAMPLES)
        sd_fine = index.signed_distance(
            np.full(REFINE_SAMPLES, slots[i], dtype=np.int64),
            p0.x + fine * (p1.x - p0.x),
            p0.y + fine * (p1.y - p0.y),
        )
        j = int(np.argmin(sd_fine))
        depth, deepest_frac = -float(sd_fine[j]), float(fine[j])
        if -float(sd[deepest]) > depth:
            depth, deepest_frac = -float(sd[deepest]), float(frac[deepest])
        dt = p1.t - p0.t
        out[i] = SegmentHit(
            depth_m=max(0.0, depth),
            entry_t=p0.t + float(frac[first]) * dt,
            deepest_t=p0.t + deepest_frac * dt,
        )
    return out


@dataclass(slots=True, init=False)
class Approach:
    """Closest approach of two interpolated tracks over a segment's interval (a written
    ``__init__``: engine.tools.native)."""

    distance_m: float
    t: float
    partner_extra_m: float  # uncertainty added by extrapolating the partner

    def __init__(self, distance_m: float, t: float, partner_extra_m: float) -> None:
        self.distance_m = distance_m
        self.t = t
        self.partner_extra_m = partner_extra_m


def closest_approach(
    p0: TrackPoint, p1: TrackPoint, partner: DeviceTrack, max_extrap_s: float
) -> Approach | None:
    """Minimum distance between the straight path p0 -> p1 and the partner's track over [t0, t1].

    Both tracks are piecewise linear between the sample times (the segment's
    ends and the partner's fixes within it), so the relative motion is linear
    on each piece and its minimum is exact.
    """
    pts = partner.points
    if not pts:
        return None
    # elementwise in floats rather than on arrays of a few elements: the same IEEE operations
    # in the same order, so the same numbers (numpy's per-call overhead was most of the cost)
    t0, t1 = float(p0.t), float(p1.t)
    # the partner's points strictly inside (t0, t1): a run, since they are in ascending time
    # (DeviceTrack._insert)
    first, end = bisect_right(pts, t0, key=_time_of), bisect_left(pts, t1, key=_time_of)
    ts = [t0, *(pts[i].t for i in range(first, end)), t1]
    span, ddx, ddy = t1 - t0, p1.x - p0.x, p1.y - p0.y
    rx, ry = [], []
    extra = 0.0
    for t in ts:
        frac = (t - t0) / span
        x, y, unc, _ = partner.position_at(t, max_extrap_s)
        rx.append((p0.x + frac * ddx) - x)
        ry.append((p0.y + frac * ddy) - y)
        extra = max(extra, unc)
    best_d, best_t = math.inf, t1
    for j in range(len(ts) - 1):
        r0x, r0y = rx[j], ry[j]
        dx, dy = rx[j + 1] - r0x, ry[j + 1] - r0y
        dd = dx * dx + dy * dy
        s = 0.0 if dd == 0.0 else min(1.0, max(0.0, -(r0x * dx + r0y * dy) / dd))
        d = hypot(r0x + s * dx, r0y + s * dy)
        if d < best_d:
            best_d, best_t = d, ts[j] + s * (ts[j + 1] - ts[j])
    return Approach(best_d, best_t, extra)


def stays_beyond(
    p0: TrackPoint, p1: TrackPoint, partner: DeviceTrack, max_extrap_s: float, limit_m: float
) -> bool:
    """True only when ``closest_approach`` would find the pair farther apart than ``limit_m``.

    Over the segment the two are at least as far apart as at its end, less how far each can
    have moved meanwhile: the mover along the chord, the partner along its track
    (``DeviceTrack.travel_bound``).  That is a fraction of the closest approach's cost, and
    decides nearly every path, which passes nowhere near the partner.  The slack (1e-9
    relative, 1 mm) covers the rounding of either computation.  The partner must have points.
    """
    px, py, _, _ = partner.position_at(p1.t, max_extrap_s)
    ax, ay = p1.x - px, p1.y - py
    mx, my = p1.x - p0.x, p1.y - p0.y
    apart = math.sqrt(ax * ax + ay * ay)
    moved = math.sqrt(mx * mx + my * my) + partner.travel_bound(p0.t, p1.t, max_extrap_s)
    return apart - moved > limit_m + 1e-9 * (apart + moved + limit_m) + 1e-3


def report_reception_gap(
    ctx: RuleContext, device: str, fixes: list[Fix], newest_before_t: float,
    released_before: float = -math.inf, silence_note: Callable[[str, float], bool] | None = None,
) -> None:
    """One gap record for a device whose buffered fixes arrived ``gap_report_s`` or more after
    its last data (a device never heard before has no gap to report).

    ``released_before``: the latest arrival of the device's fixes evaluated before these; a
    burst whose first part arrived less than ``gap_report_s`` before is the same gap.
    ``silence_note``, when given, is called with the gap's detail and start first: True when it
    put that detail on the device's silence alert (clearing it, or on the change after an event
    that arrived first cleared it), and then no record is raised.
    """
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
    if min(f.arrival for f in late) - released_before < ctx.rules.gap_report_s:
        return  # the rest of a burst whose first part was evaluated moments ago
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
    if silence_note is not None and silence_note(detail, since):
        return  # the silence alert was the outage's alert: cleared with this detail
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
        ctx.alerts.clear_episode(
            order, "signal_loss", target, ctx.now, "buffered fixes evaluated", late[-1].t
        )
    )


# --- approved crossings ----------------------------------------------------------------------
CORRIDOR_KINDS = frozenset({"exclusion", "proximity"})
WINDOW_KINDS = frozenset({"exclusion", "inclusion", "proximity"})


def corridor_key(order_id: str, corridor_id: str) -> str:
    """Key of a corridor polygon in the shared zone index."""
    return f"{order_id}/corridor/{corridor_id}"


def window_key(order_id: str, window_id: str) -> str:
    """Key of a time window's area in the shared zone index."""
    return f"{order_id}/window/{window_id}"


@mypyc_attr(native_class=False)  # stays a Python class in the compiled build, as it was
@dataclass(frozen=True, slots=True)
class Suppression:
    """Why an order's alerts are capped at ``info`` right now."""

    source: str  # "corridor" | "time_window"
    ident: str
    reason: str
    kinds: frozenset[str]

    def note(self, level: str) -> str:
        """The text recorded in the alert detail and history."""
        if self.source == "corridor":
            return f"suppressed: in corridor {self.ident} ({self.reason}; would be {level})"
        return f"suppressed: in time window {self.ident} ({self.reason}; would be {level})"


@mypyc_attr(native_class=False)  # stays a Python class in the compiled build, as it was
@dataclass(slots=True)
class CorridorVisit:
    """One subject's passage through one corridor: his recent points in it, whether he stands."""

    entered_t: float
    points: deque[tuple[float, float, float, float]]  # (t, x, y, acc), the last max_dwell_s and one
    stopped: bool = False

    def add(self, point: TrackPoint, max_dwell_s: float, stop_m: float) -> None:
        """Record a point; ``stopped`` when he has not moved for ``max_dwell_s`` (speed ~0)."""
        if self.points and point.t <= self.points[-1][0]:
            return  # out of order: the visit's state moves forward in device time only
        self.points.append((point.t, point.x, point.y, point.acc))
        horizon = point.t - max_dwell_s
        while len(self.points) > 1 and self.points[1][0] <= horizon:
            self.points.popleft()
        if self.points[0][0] > horizon:
            self.stopped = False  # not in the corridor for max_dwell_s yet: no evidence of a stop
            return
        self.stopped = all(
            hypot(point.x - x, point.y - y) <= stop_m + min(acc + point.acc, 100.0)
            for _, x, y, acc in self.points
        )


class ApprovedCrossings:
    """Corridor and time-window state per subject, and the cap it puts on alert levels.

    State is updated on the subject's accepted fixes (``update``) and read for
    any fix of the pair (``caps``).  A visit ends when a good fix is outside
    the corridor.  While every point of the last ``max_dwell_s`` lies within
    ``corridor_stop_radius_m`` (plus the accuracies) of the newest one he is
    standing still: no cap; the cap returns when he drives on, but an alert
    raised while he stood keeps its level (the cap never lowers).  Fixes less accurate than
    ``corridor_max_acc_m`` neither start, continue nor end a visit: they are
    evaluated uncapped.  Late fixes (older than the state) are evaluated
    uncapped too.  The cap never lowers an alert that is already above ``info``.
    """

    def __init__(self, index: ZoneIndex) -> None:
        self.index = index
        self.visits: dict[tuple[str, str, str], CorridorVisit] = {}
        self.status: dict[tuple[str, str], tuple[float, Suppression | None]] = {}
        self.noted: dict[str, int] = {}  # alert id -> highest suppressed level recorded
        self._shapes: dict[str, ZoneShape] = {}
        self._book: OrderBook | None = None

    # --- zone index -------------------------------------------------------------------------
    def sync(self, book: OrderBook) -> None:
        """Compile corridors and time-window areas into the zone index when the orders change."""
        if book is self._book:
            return
        wanted: dict[str, ZoneShape] = {}
        for order in book.orders.values():
            for c in order.corridors:
                wanted[corridor_key(order.id, c.corridor_id)] = c.shape
            for w in order.time_windows:
                if w.area is not None:
                    wanted[window_key(order.id, w.window_id)] = w.area
        for key in self._shapes.keys() - wanted.keys():
            if key in self.index:
                self.index.remove(key)
        changed = [
            (k, s) for k, s in wanted.items() if k not in self.index or self._shapes.get(k) != s
        ]
        if changed:
            self.index.upsert_many(changed)
        self._shapes = wanted
        self._book = book

    # --- state --------------------------------------------------------------------------------
    def update(
        self, ctx: RuleContext, subject: str, orders: list[Order], point: TrackPoint
    ) -> None:
        """On a subject's accepted fix: is he in an approved time window or moving through a corridor?"""
        if not ctx.rules.corridors_enabled:
            return
        for order in orders:
            if not order.corridors and not order.time_windows:
                continue  # nothing to be in (``caps`` never asks about it): most orders
            key = (subject, order.id)
            prev = self.status.get(key)
            if prev is not None and point.t < prev[0]:
                continue  # a late fix does not move the state
            sup = self._window(order, point) or self._corridor(ctx, subject, order, point)
            self.status[key] = (point.t, sup)

    def caps(self, ctx: RuleContext, orders: list[Order], t: float) -> dict[str, Suppression]:
        """Order id -> suppression in force at device time ``t`` (from the subject's last state)."""
        if not ctx.rules.corridors_enabled:
            return {}
        out = {}
        for order in orders:
            if not order.corridors and not order.time_windows:
                continue  # nothing can cap it (``_in_force`` would find None): most orders
            sup = self._in_force(ctx, order, t)
            if sup is not None:
                out[order.id] = sup
        return out

    def _in_force(self, ctx: RuleContext, order: Order, t: float) -> Suppression | None:
        st_t, sup = self.status.get((order.subject, order.id), (t, None))
        if sup is not None:
            if sup.source == "corridor":
                c = next((c for c in order.corridors if c.corridor_id == sup.ident), None)
                if c is not None and c.active_at(t) and abs(t - st_t) <= c.max_dwell_s:
                    return sup
            else:
                w = next((w for w in order.time_windows if w.window_id == sup.ident), None)
                if w is not None and w.active_at(t) and abs(t - st_t) <= ctx.rules.partner_stale_s:
                    return sup
        for w in order.time_windows:  # a window without an area holds by time alone
            if w.area is None and w.active_at(t):
                return Suppression("time_window", w.window_id, w.reason, WINDOW_KINDS)
        return None

    def _inside(self, key: str, point: TrackPoint) -> bool:
        slot = np.array([self.index.slot(key)], dtype=np.int64)
        sd = self.index.signed_distance(slot, np.array([point.x]), np.array([point.y]))
        return bool(sd[0] <= 0.0)

    def _window(self, order: Order, point: TrackPoint) -> Suppression | None:
        for w in order.time_windows:
            if not w.active_at(point.t):
                continue
            if w.area is not None and not self._inside(window_key(order.id, w.window_id), point):
                continue
            return Suppression("time_window", w.window_id, w.reason, WINDOW_KINDS)
        return None

    def _corridor(
        self, ctx: RuleContext, subject: str, order: Order, point: TrackPoint
    ) -> Suppression | None:
        rules = ctx.rules
        found = None
        for c in order.corridors:
            vkey = (subject, order.id, c.corridor_id)
            if not c.active_at(point.t):
                self.visits.pop(vkey, None)
                continue
            if point.acc > rules.corridor_max_acc_m:
                continue  # too coarse to say he is on the route, or that he left it
            if not self._inside(corridor_key(order.id, c.corridor_id), point):
                self.visits.pop(vkey, None)
                continue
            v = self.visits.get(vkey)
            if v is None:
                v = self.visits[vkey] = CorridorVisit(point.t, deque())
            v.add(point, c.max_dwell_s, rules.corridor_stop_radius_m)
            if not v.stopped and found is None:
                found = Suppression("corridor", c.corridor_id, "moving through", CORRIDOR_KINDS)
        return found

    # --- applying the cap -----------------------------------------------------------------------
    @contextmanager
    def capped(self, ctx: RuleContext, caps: dict[str, Suppression]) -> Iterator[None]:
        """Let the zone and proximity rules run with the alert book capping their raises.

        Also drops ``approaching_zone`` prompts while a ban-zone cap holds (no
        vibration at every ban zone along an approved motorway).  The engine enters it
        only when ``caps`` holds something: nearly every fix has none, and a context per
        fix cost more than the rules it wrapped often do.
        """
        book, first_msg = ctx.alerts, len(ctx.messages)
        outer = book.capping
        book.capping = CappedAlerts(book, ctx, caps, self.noted, outer)
        try:
            yield
        finally:
            book.capping = outer
            if any("exclusion" in s.kinds for s in caps.values()):
                ctx.messages[first_msg:] = [
                    m
                    for m in ctx.messages[first_msg:]
                    if not (
                        m.channel == "subject"
                        and m.payload.get("instruction") == "approaching_zone"
                    )
                ]


class CappedAlerts:
    """How the alert book raises under a suppression: rises above ``info`` are capped.

    Installed as the book's ``capping`` while a suppression holds, so the rules call the
    book as always.  A capped raise is recorded in the alert's detail and history note
    ("suppressed: in corridor X ..."); a suppressed rise of an alert already at ``info`` is
    recorded as an ``update`` change, so the centre sees every suppression.  A fall the rule
    decided (``allow_lower``) is never capped.  An ``outer`` cap (one installed before this
    one) still applies to what this one lets through.
    """

    def __init__(
        self,
        book: AlertBook,
        ctx: RuleContext,
        caps: dict[str, Suppression],
        noted: dict[str, int],
        outer: RaiseCap | None = None,
    ) -> None:
        self._book = book
        self._ctx = ctx
        self._caps = caps
        self._noted = noted
        self._outer = outer

    def _pass_on(self, kw: dict[str, Any]) -> AlertChange | None:
        if self._outer is not None:
            return self._outer.raise_or_update(**kw)
        return self._book.raise_or_update(**kw, past_cap=True)

    def raise_or_update(self, **kw: Any) -> AlertChange | None:
        """``AlertBook.raise_or_update`` with the level capped at ``info`` for suppressed kinds."""
        sup = self._caps.get(kw.get("order") or "")
        level = kw["level"]
        if sup is None or kw["kind"] not in sup.kinds or LEVEL_RANK[level] <= LEVEL_RANK["info"]:
            return self._pass_on(kw)
        key = (kw["order"], kw["kind"], kw["target"])
        current = self._book.open_for(*key)
        if (
            kw.get("allow_lower")
            and current is not None
            and LEVEL_RANK[level] < LEVEL_RANK[current.level]
        ):
            return self._pass_on(kw)  # a fall the rule decided is not a cap
        note = sup.note(level)
        detail = f"{kw.get('detail') or ''}; {note}".lstrip("; ")
        change = self._pass_on({**kw, "level": "info", "detail": detail})
        rank = LEVEL_RANK[level]
        if change is not None:
            self._noted[change.alert.alert_id] = rank
            return change
        alert = self._book.open_for(*key)
        if alert is None or alert.level != "info" or rank <= self._noted.get(alert.alert_id, -1):
            return None
        self._noted[alert.alert_id] = rank
        now = self._ctx.now
        noted = copy_alert(alert)
        noted.detail = detail
        noted.updated_at = now
        noted.history = (*alert.history, HistoryEntry(
            at=now, state=alert.state, level=alert.level, by="engine", note=note, action="update"
        ))
        self._book.alerts[alert.alert_id] = noted
        self._ctx.emit(AlertChange(noted, "update"))
        return None
