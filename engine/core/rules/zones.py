"""Exclusion zones (locatieverbod) and inclusion zones with schedules (locatiegebod, curfew).

Decisions weigh the fix's accuracy (geo.certainty): an exclusion alarm needs
``confirm_fixes`` consecutive fixes inside at any certainty (the alert carries
the certainty), a curfew breach needs fixes that really place him outside, and
leaving needs ``clear_needed`` fixes outside by the accuracy radius plus a
hysteresis margin, so a fix dancing on the boundary or one multipath jump
neither floods the centre nor opens and closes alerts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from math import hypot

import numpy as np

from devices.model import Fix
from engine.core.alert_records import Level
from engine.core.messages import set_interval, subject_prompt
from engine.core.orders import Order, ZoneRule
from engine.core.rules.context import RuleContext
from engine.core.rules.crossings import path_margin, segment_usable, segments_in_zones
from engine.core.tracks import TrackPoint
from geo.certainty import inside_certainty, outside_certainty
from geo.index import ZoneIndex, path_may_touch


def zone_key(order_id: str, zone_id: str) -> str:
    """Key of a zone in the shared zone index."""
    return f"{order_id}/{zone_id}"


@dataclass(slots=True, init=False)
class ZoneEpisode:
    """Debounce state of one (order, zone) for one subject (a written ``__init__``: engine.tools.native)."""

    possible_run: int
    clear_run: int
    candidate_start: float | None
    outside_since: float | None
    window: tuple[float, float] | None
    forewarned: bool
    pursuit: bool
    unconfirmed: TrackPoint | None  # a lone fix inside waiting for the next one
    last_outside: TrackPoint | None  # the last fix outside the zone
    last_t: float
    crossed: tuple[float, float] | None  # device-time span of the last path crossing raised

    def __init__(
        self, possible_run: int = 0, clear_run: int = 0, candidate_start: float | None = None,
        outside_since: float | None = None, window: tuple[float, float] | None = None,
        forewarned: bool = False, pursuit: bool = False, unconfirmed: TrackPoint | None = None,
        last_outside: TrackPoint | None = None, last_t: float = -math.inf,
        crossed: tuple[float, float] | None = None,
    ) -> None:
        self.possible_run = possible_run
        self.clear_run = clear_run
        self.candidate_start = candidate_start
        self.outside_since = outside_since
        self.window = window
        self.forewarned = forewarned
        self.pursuit = pursuit
        self.unconfirmed = unconfirmed
        self.last_outside = last_outside
        self.last_t = last_t
        self.crossed = crossed


@dataclass(slots=True, init=False)
class ZoneEntry:
    """One zone of one order as every fix needs it, worked out once per order book: its slot
    in the zone index, its episode key and its alert target (a written ``__init__``:
    engine.tools.native).  The per-fix evaluation formatted the index key and the target, and
    built the key, for every zone of every fix."""

    order: Order
    zone: ZoneRule
    exclusion: bool
    slot: int
    key: tuple[str, str, str]  # (subject, order id, zone id): episodes and measurements
    target: str  # the alert target, ``{subject}@{zone id}``
    # the last two points ``evaluate`` measured against the zone for the order's subject and
    # their signed distances (newest first): the path check between consecutive fixes asks
    # about exactly those two again.  A cache, not state, kept here rather than in a dict of
    # tuples: a new tuple per zone and fix outlived the fix (engine.runtime.heap)
    last: TrackPoint | None
    last_d: float
    prev: TrackPoint | None
    prev_d: float

    def __init__(self, order: Order, zone: ZoneRule, slot: int) -> None:
        self.order = order
        self.zone = zone
        self.exclusion = zone.kind == "exclusion"
        self.slot = slot
        self.key = (order.subject, order.id, zone.zone_id)
        self.target = f"{order.subject}@{zone.zone_id}"
        self.last = None
        self.last_d = math.nan
        self.prev = None
        self.prev_d = math.nan


class ZoneRules:
    """Evaluates every active zone of a subject's valid orders for one fix."""

    def __init__(self, index: ZoneIndex) -> None:
        self.index = index
        self.episodes: dict[tuple[str, str, str], ZoneEpisode] = {}
        # ZoneEntry's last two measurements, for (subject, order, zone) of a subject other than
        # the order's own (never from the engine, whose orders are the subject's); a cache, not
        # state: ``forget_measurements`` when zones may have changed shape
        self._measured: dict[tuple[str, str, str], tuple[TrackPoint, float, TrackPoint | None, float]] = {}
        # order id -> (the order, its zones as entries, with their measurements); for the
        # index's slots_version
        self._entries: dict[str, tuple[Order, tuple[ZoneEntry, ...]]] = {}
        self._entries_version = -1

    def forget_measurements(self) -> None:
        """Zones were added, changed or removed (a new order book): measure afresh."""
        self._measured = {}
        self._entries = {}

    def entries(self, order: Order) -> tuple[ZoneEntry, ...]:
        """The order's zones, exclusion zones first (``Order.zones``), as entries.

        Kept per order id while the order is the same object and no key of the zone index
        has changed its slot (``ZoneIndex.slots_version``).
        """
        if self.index.slots_version != self._entries_version:
            self._entries = {}
            self._entries_version = self.index.slots_version
        found = self._entries.get(order.id)
        if found is not None and found[0] is order:
            return found[1]
        index = self.index
        made = tuple(
            ZoneEntry(order, z, index.slot(zone_key(order.id, z.zone_id))) for z in order.zones
        )
        self._entries[order.id] = (order, made)
        return made

    @staticmethod
    def _names(subject: str, e: ZoneEntry) -> tuple[tuple[str, str, str], str]:
        """The episode key and alert target of the zone for ``subject``: the entry's own, made
        for the order's subject, unless the caller evaluates the order for another subject."""
        if subject == e.key[0]:
            return e.key, e.target
        return (subject, e.order.id, e.zone.zone_id), f"{subject}@{e.zone.zone_id}"

    def _distance(self, e: ZoneEntry, key: tuple[str, str, str], p: TrackPoint) -> float:
        """The signed distance of ``p`` to the zone, from ``evaluate``'s last two measurements
        when ``p`` is one of them (the same number: the index is a pure function of them).
        ``key``: the entry's own, or another subject's (see ``_measured``)."""
        if key[0] == e.key[0]:
            if e.last is p:
                return e.last_d
            if e.prev is p:
                return e.prev_d
        else:
            m = self._measured.get(key)
            if m is not None:
                if m[0] is p:
                    return m[1]
                if m[2] is p:
                    return m[3]
        return self.index.signed_distance_at(e.slot, p.x, p.y)

    def _measure(self, e: ZoneEntry, key: tuple[str, str, str], p: TrackPoint, dist: float) -> None:
        """Remember ``dist`` as the newest measurement of the zone (see ``_distance``)."""
        if key[0] == e.key[0]:
            e.prev, e.prev_d = e.last, e.last_d
            e.last, e.last_d = p, dist
            return
        before = self._measured.get(key)
        self._measured[key] = (p, dist, None, math.nan) if before is None else (p, dist, before[0], before[1])

    def evaluate(
        self,
        ctx: RuleContext,
        subject: str,
        device: str,
        orders: list[Order],
        fix: Fix,
        point: TrackPoint,
        late: bool,
    ) -> None:
        """Evaluate all zones of ``orders`` active at the fix's device time."""
        # (zone, the schedule window holding the fix); an inclusion zone's window is looked up
        # once here and handed on, not again by _inclusion (it is active exactly when it has no
        # schedule or a window holds the fix).  Inactive zones are settled first.
        active: list[tuple[ZoneEntry, tuple[float, float] | None]] = []
        for order in orders:
            for e in self.entries(order):
                if e.exclusion:
                    active.append((e, None))
                    continue
                window = _window_at(e.zone, fix.t)
                if window is not None or not e.zone.schedule:
                    active.append((e, window))
                else:
                    self._inactive(ctx, subject, e, fix)
        # a fix meets a few zones: one distance on plain numbers each, no arrays
        index, x, y = self.index, point.x, point.y
        for e, window in active:
            order, zone = e.order, e.zone
            key, target = self._names(subject, e)
            dist = index.signed_distance_at(e.slot, x, y)
            self._measure(e, key, point, dist)
            ep = self.episodes.get(key)
            if ep is None:  # not setdefault(key, ZoneEpisode()): that builds one per zone and fix
                ep = self.episodes[key] = ZoneEpisode()
            older = fix.t < ep.last_t
            if older:
                late = True  # older than what this episode has seen: evidence, marked late
            ep.last_t = max(ep.last_t, fix.t)
            if e.exclusion:
                self._exclusion(ctx, subject, device, order, zone, target, ep, fix, point, dist, late, older)
            else:
                self._inclusion(ctx, subject, order, zone, target, ep, fix, point.key, dist, late, window)

    def evaluate_segment(
        self,
        ctx: RuleContext,
        subject: str,
        device: str,
        orders: list[Order],
        fix: Fix,
        p0: TrackPoint,
        p1: TrackPoint,
        late: bool,
    ) -> None:
        """Sparse fixes: did the straight path from the previous accepted fix cross a ban zone?

        Only when neither fix is inside at its best estimate (then the fix rule
        decides) and no alert for the zone is open; see ``engine.core.rules.crossings``.
        """
        if not segment_usable(p0, p1, ctx.rules):
            return
        # Only zones both ends are outside of can give a finding below, and only those a path
        # this long can reach (path_may_touch): segments_in_zones answers each zone on its own,
        # and most paths are nowhere near a zone.
        length = hypot(p1.x - p0.x, p1.y - p0.y)
        near: list[tuple[ZoneEntry, tuple[str, str, str], str]] = []
        for order in orders:
            for e in self.entries(order):
                if not e.exclusion:
                    continue
                key, target = self._names(subject, e)
                d0, d1 = self._distance(e, key, p0), self._distance(e, key, p1)
                if d0 > 0.0 and d1 > 0.0 and path_may_touch(d0, d1, length):
                    near.append((e, key, target))
        if not near:
            return
        slots = np.array([e.slot for e, _, _ in near], dtype=np.int64)
        hits = segments_in_zones(self.index, slots, p0, p1)
        margin = path_margin(p0, p1)
        for (e, key, target), hit in zip(near, hits, strict=True):
            if hit is None:
                continue
            order, zone = e.order, e.zone
            if ctx.alerts.open_for(order.id, "exclusion", target) is not None:
                continue
            ep = self.episodes.setdefault(key, ZoneEpisode())
            if ep.crossed is not None and ep.crossed[0] < p1.t and p0.t < ep.crossed[1]:
                continue  # a late fix split a segment already reported
            likely = hit.depth_m > margin
            ep.crossed = (p0.t, p1.t)
            _raise_exclusion(
                ctx, order, zone, subject, device, late,
                level="alarm" if likely else "warning",
                device_time=fix.t,
                episode_start=hit.entry_t,
                distance_m=-hit.depth_m,
                certainty="likely" if likely else "possible",
                evidence=(p0.key, p1.key),
                detail=(
                    f"path crossed zone between fixes: the straight line from {p0.key} to "
                    f"{p1.key} ({p1.t - p0.t:.0f} s apart) runs {hit.depth_m:.0f} m inside "
                    f"{zone.zone_id}; both fixes outside"
                ),
            )

    def _exclusion(
        self,
        ctx: RuleContext,
        subject: str,
        device: str,
        order: Order,
        zone: ZoneRule,
        target: str,
        ep: ZoneEpisode,
        fix: Fix,
        point: TrackPoint,
        dist: float,
        late: bool,
        older: bool = False,
    ) -> None:
        """``older``: the fix is older than one this zone already saw (it missed even the late
        upload's window, engine.core.tracks): inside, it is evidence of the episode (or reveals a
        past one); outside, it cannot end an episode or reset a run: "left" is decided only
        from fixes in device-time order."""
        rules = ctx.rules
        certainty = inside_certainty(dist, fix.acc)
        current = ctx.alerts.open_for(order.id, "exclusion", target)
        is_open = current is not None
        if older and certainty is not None and current is None:
            done = ctx.alerts.newest_for(order.id, "exclusion", target)
            if done is not None and done.cleared_at is not None and (
                done.episode_start <= fix.t <= done.cleared_at
            ):
                return  # inside an episode already judged in order: evidence only
        if certainty is not None:
            ep.clear_run = 0
            if ep.candidate_start is None:
                ep.candidate_start = fix.t
            ep.possible_run += 1  # consecutive fixes inside at any certainty
            # One fix is not enough for an alarm, however sure it looks: an urban multipath fix
            # jumps hundreds of metres with a small reported accuracy, and with a fix a minute
            # that is no implausible speed.  The centre sees it at once as a warning, the
            # device is asked for its next fix now (pursuit), and that fix decides.
            confirmed = ep.possible_run >= rules.confirm_fixes
            if not confirmed:
                ep.unconfirmed = point
                self._pursuit(ctx, device, ep, True)
            level: Level = "alarm" if confirmed else "warning"
            detail = ""
            if ctx.alerts.writes_detail(order.id, "exclusion", target, level):
                inside_m = max(0.0, -dist)
                what = "inside" if confirmed else "one fix inside (awaiting the next fix)"
                detail = f"{what} exclusion zone {zone.zone_id} ({inside_m:.0f} m from the edge, accuracy {fix.acc:.0f} m)"
            _raise_exclusion(
                ctx, order, zone, subject, device, late,
                level=level,
                device_time=fix.t,
                episode_start=ep.candidate_start,
                distance_m=dist,
                certainty=certainty,
                evidence=(point.key,),
                detail=detail,
            )
            return
        if older:
            return
        lone, ep.unconfirmed = ep.unconfirmed, None
        before, ep.last_outside = ep.last_outside, point
        if ep.possible_run and lone is not None and current is not None and current.level == "warning":
            if before is not None and self._passed_through(order, zone, before, lone, point):
                _raise_exclusion(
                    ctx, order, zone, subject, device, late,
                    level="alarm",
                    device_time=lone.t,
                    episode_start=current.episode_start,
                    distance_m=None,
                    certainty="likely",
                    evidence=(before.key, lone.key, point.key),
                    detail=f"passed through exclusion zone {zone.zone_id}: one fix inside on a straight drive through",
                )
            else:
                ctx.emit(
                    ctx.alerts.clear_episode(
                        order.id, "exclusion", target, ctx.now,
                        "not confirmed: the next fix is outside and off any straight path through the zone (multipath or a brief edge entry)",
                        fix.t,
                    )
                )
                is_open = False
                ep.candidate_start = None
                # this span is decided: the sparse-path rule must not reopen it from the same fixes
                ep.crossed = (lone.t, point.t)
        ep.possible_run = 0
        clearly_out = dist > fix.acc + rules.zone_hysteresis_m
        if not is_open:
            self._pursuit(ctx, device, ep, False)
        if is_open:
            if clearly_out:
                ep.clear_run += 1
                if ep.clear_run >= rules.clear_needed:
                    ctx.emit(
                        ctx.alerts.clear_episode(
                            order.id, "exclusion", target, ctx.now, f"left zone {zone.zone_id}",
                            fix.t,
                        )
                    )
                    ep.clear_run = 0
                    ep.candidate_start = None
                    self._pursuit(ctx, device, ep, False)
            return
        ep.candidate_start = None
        self._forewarn(ctx, device, zone, ep, dist, fix)

    def _passed_through(
        self, order: Order, zone: ZoneRule, a: TrackPoint, b: TrackPoint, c: TrackPoint
    ) -> bool:
        """A lone fix inside (b) between fixes outside (a, c): a drive-through or multipath?

        A pass continues: the straight path a→c crosses the zone and b lies near it (within
        its accuracy plus a tenth of the path).  A multipath jump goes out and back: a→c
        misses the zone, or b lies far off the path.
        """
        slot = np.array([self.index.slot(zone_key(order.id, zone.zone_id))], dtype=np.int64)
        hit = self.index.crossing(
            slot, np.array([a.x]), np.array([a.y]), np.array([c.x]), np.array([c.y])
        )
        if not bool(hit[0]):
            return False
        dx, dy = c.x - a.x, c.y - a.y
        length = float(np.hypot(dx, dy))
        if length <= 0.0:
            return False
        off_path = abs(dx * (b.y - a.y) - dy * (b.x - a.x)) / length
        return off_path <= b.acc + 0.1 * length

    def _pursuit(self, ctx: RuleContext, device: str, ep: ZoneEpisode, on: bool) -> None:
        """Raise the ankle monitor's fix rate while a zone entry awaits confirmation or lasts."""
        if ep.pursuit == on:
            return
        ep.pursuit = on
        interval = ctx.rules.pursuit_interval_s if on else ctx.rules.normal_interval_s
        ctx.messages.append(set_interval(ctx.prefix, device, interval, None, ctx.now))

    def _forewarn(
        self, ctx: RuleContext, device: str, zone: ZoneRule, ep: ZoneEpisode, dist: float, fix: Fix
    ) -> None:
        """Tell the ankle monitor before the wearer enters a static ban zone (not a victim's area)."""
        if zone.protects is not None:
            return  # never hint at where a protected person's places are
        if dist <= ctx.rules.forewarn_m and not ep.forewarned:
            ep.forewarned = True
            ctx.messages.append(subject_prompt(ctx.prefix, device, "approaching_zone", "warning", ctx.now))
        elif dist > 2 * ctx.rules.forewarn_m:
            ep.forewarned = False

    def _inclusion(
        self,
        ctx: RuleContext,
        subject: str,
        order: Order,
        zone: ZoneRule,
        target: str,
        ep: ZoneEpisode,
        fix: Fix,
        key: str,
        dist: float,
        late: bool,
        window: tuple[float, float] | None,
    ) -> None:
        """``window``: the schedule window holding the fix (``_window_at``), None without one;
        ``key``: the fix's evidence key."""
        rules = ctx.rules
        if window != ep.window:
            ep.window = window
            ep.outside_since = None
            ep.possible_run = 0
            ep.clear_run = 0
            first_in_window = True
        else:
            first_in_window = False
        out_c = outside_certainty(dist, fix.acc)
        in_c = inside_certainty(dist, fix.acc)
        # A Wi-Fi or cell fix at home lands outside a small home zone most of the time: only
        # a fix outside even at its accuracy radius, or a precise fix outside, shows he left.
        is_out = out_c == "observed" or (out_c == "likely" and fix.acc <= rules.curfew_precise_acc_m)
        if is_out:
            ep.clear_run = 0
            if ep.outside_since is None:
                # not home when the curfew started, or left during it
                ep.outside_since = window[0] if first_in_window and window else fix.t
            away = fix.t - ep.outside_since
            if away >= rules.curfew_grace_s:
                detail = ""
                if ctx.alerts.writes_detail(order.id, "inclusion", target, "alarm"):
                    started = window is not None and ep.outside_since == window[0]
                    what = "not home at start of curfew" if started else "left during curfew"
                    detail = f"{what}: outside {zone.zone_id} for {away / 60:.0f} min ({dist:.0f} m from the edge)"
                ctx.emit(
                    ctx.alerts.raise_or_update(
                        order=order.id,
                        kind="inclusion",
                        target=target,
                        level="alarm",
                        now=ctx.now,
                        device_time=fix.t,
                        episode_start=ep.outside_since,
                        subject=subject,
                        zone=zone.zone_id,
                        distance_m=dist,
                        certainty=out_c,
                        evidence=(key,),
                        late=late,
                        device=fix.device,
                        detail=detail,
                    )
                )
            return
        if in_c not in ("observed", "likely"):
            # ambiguous: shows him neither out nor home; an absence must be shown fix after fix
            if ctx.alerts.open_for(order.id, "inclusion", target) is None:
                ep.outside_since = None
            return
        if in_c in ("observed", "likely"):
            ep.outside_since = None
            if ctx.alerts.open_for(order.id, "inclusion", target) is not None:
                ep.clear_run += 1
                if ep.clear_run >= rules.clear_needed:
                    ctx.emit(
                        ctx.alerts.clear_episode(
                            order.id, "inclusion", target, ctx.now, f"back inside {zone.zone_id}",
                            fix.t,
                        )
                    )
                    ep.clear_run = 0

    def _inactive(self, ctx: RuleContext, subject: str, e: ZoneEntry, fix: Fix) -> None:
        """Outside its schedule an inclusion zone's open episode ends (the curfew is over)."""
        order = e.order
        key, target = self._names(subject, e)
        if ctx.alerts.open_for(order.id, "inclusion", target) is not None:
            ctx.emit(
                ctx.alerts.clear_episode(
                    order.id, "inclusion", target, ctx.now, "curfew window ended", fix.t
                )
            )
        ep = self.episodes.get(key)
        if ep is not None:
            ep.window = None
            ep.outside_since = None


def _raise_exclusion(
    ctx: RuleContext,
    order: Order,
    zone: ZoneRule,
    subject: str,
    device: str,
    late: bool,
    *,
    level: Level,
    device_time: float,
    episode_start: float,
    distance_m: float | None,
    certainty: str,
    evidence: tuple[str, ...],
    detail: str,
) -> None:
    """Open or raise the exclusion alert of (subject, zone): the one place its fields are filled."""
    ctx.emit(
        ctx.alerts.raise_or_update(
            order=order.id,
            kind="exclusion",
            target=f"{subject}@{zone.zone_id}",
            level=level,
            now=ctx.now,
            device_time=device_time,
            episode_start=episode_start,
            subject=subject,
            protected_person=zone.protects,
            zone=zone.zone_id,
            distance_m=distance_m,
            certainty=certainty,
            evidence=evidence,
            late=late,
            device=device,
            detail=detail,
        )
    )


def _window_at(zone: ZoneRule, t: float) -> tuple[float, float] | None:
    for w in zone.schedule:
        win = w.window_containing(t)
        if win is not None:
            return win
    return None
