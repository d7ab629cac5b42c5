"""Dynamic proximity: the protected area moves with the victim (contact ban between two devices).

Either device's fix triggers an evaluation at that fix's device time; the
partner's position is interpolated from its recent track (or extrapolated for
a bounded time with growing uncertainty).  Levels: ``warn_m`` → warning (centre
only), ``alert_m`` or a fast approach → alarm (victim warned), ``critical_m``
or contact imminent → critical.  A rise is immediate; a fall needs a clear separation
(every threshold widened by both accuracy radii plus ``level_hysteresis_m``) held for a
dwell, and the episode ends only beyond ``warn_m`` plus a margin, so noise does not flap.
When the victim's device is stale while the offender is near her last known
place, a ``device_silent`` alert says so: silence is never reported as safety.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from math import hypot

from engine.core.alert_records import ALARM_RANK, LEVEL_RANK, Level
from engine.core.messages import set_interval
from engine.core.orders import Order, ProximityRule
from engine.core.rules.context import RuleContext
from engine.core.rules.crossings import closest_approach, path_margin, segment_usable, stays_beyond
from engine.core.tracks import DeviceTrack, TrackPoint
from geo.certainty import within_certainty
from geo.proximity import assess_pair


@dataclass(slots=True, init=False)
class PairEpisode:
    """Debounce state of one (order, subject, protected person) pair (a written ``__init__``:
    engine.tools.native)."""

    start: float | None
    lower_since: float | None
    lower_level: Level | None
    clear_run: int
    pursuit: bool
    possible_run: int
    last_t: float
    unsure_run: int  # consecutive readings that would raise to alarm or above, not "observed"

    def __init__(
        self, start: float | None = None, lower_since: float | None = None,
        lower_level: Level | None = None, clear_run: int = 0, pursuit: bool = False,
        possible_run: int = 0, last_t: float = -math.inf, unsure_run: int = 0,
    ) -> None:
        self.start = start
        self.lower_since = lower_since
        self.lower_level = lower_level
        self.clear_run = clear_run
        self.pursuit = pursuit
        self.possible_run = possible_run
        self.last_t = last_t
        self.unsure_run = unsure_run


@dataclass(slots=True, init=False)
class PairReading:
    """The measured state of a pair at one device time (a written ``__init__``: engine.tools.native)."""

    distance_m: float
    closing_speed_mps: float
    time_to_contact_s: float
    slack_m: float
    evidence: tuple[str, ...]
    stale_s: float
    cpa_m: float = math.inf  # predicted closest distance on the current headings
    t_cpa_s: float = math.inf  # ... and when (from now)
    cpa_err_m: float = 0.0  # how far off cpa_m may be: the heading's error over the distance

    def __init__(
        self, distance_m: float, closing_speed_mps: float, time_to_contact_s: float,
        slack_m: float, evidence: tuple[str, ...], stale_s: float, cpa_m: float = math.inf,
        t_cpa_s: float = math.inf, cpa_err_m: float = 0.0,
    ) -> None:
        self.distance_m = distance_m
        self.closing_speed_mps = closing_speed_mps
        self.time_to_contact_s = time_to_contact_s
        self.slack_m = slack_m
        self.evidence = evidence
        self.stale_s = stale_s
        self.cpa_m = cpa_m
        self.t_cpa_s = t_cpa_s
        self.cpa_err_m = cpa_err_m


#: a pair heading within alert_m that will be there this soon at its closing speed is an alarm now
ALERT_LEAD_S = 120.0
#: a track moving less than its accuracy radius this long is standing still (Wi-Fi noise)
STILL_WINDOW_S = 120.0


def _moving(v: tuple[float, float], acc_m: float) -> tuple[float, float]:
    """The velocity, or none when over ``STILL_WINDOW_S`` it would not leave twice the accuracy
    radius (two noisy fixes a minute apart):
    indoors, Wi-Fi noise of 30-60 m made a woman at home walk at 0.5 m/s, which turned a pass
    at 1.1x alert_m into a heading within it."""
    vx, vy = v
    if hypot(vx, vy) * STILL_WINDOW_S <= 2.0 * acc_m:
        return 0.0, 0.0
    return vx, vy


def grade(rule: ProximityRule, r: PairReading, fast_ttc_s: float) -> tuple[Level | None, str | None]:
    """Level and certainty for a reading; uncertainty can only lower the level it earns."""
    d = r.distance_m
    # A fast approach counts only when the current headings bring them within the alert
    # distance soon (closest point of approach), not for every car passing at speed.
    # The predicted closest approach is uncertain by both accuracy radii and by the heading's
    # error, which grows with distance: a pass at 1.1x alert_m is not "heading in".
    heading_in = r.cpa_m + r.cpa_err_m <= rule.alert_m
    level: Level | None
    if d <= rule.critical_m or (
        d <= rule.alert_m and r.cpa_m <= rule.critical_m and r.t_cpa_s <= rule.critical_ttc_s
    ):
        level, threshold = "critical", (rule.critical_m if d <= rule.critical_m else rule.alert_m)
    elif (
        d <= rule.alert_m
        or (d <= rule.warn_m and heading_in and r.t_cpa_s <= fast_ttc_s)
        # a walker is within alert_m within a minute or two: warn her now, not after
        or (heading_in and (d - rule.alert_m) <= r.closing_speed_mps * ALERT_LEAD_S)
        # a car with a fix every 30 s crosses warn_m and alert_m between two fixes: warn when
        # its heading brings it within alert_m soon, wherever it is now
        or (heading_in and r.t_cpa_s <= rule.critical_ttc_s)
    ):
        level, threshold = "alarm", (rule.alert_m if d <= rule.alert_m else rule.warn_m)
    elif d <= rule.warn_m:
        level, threshold = "warning", rule.warn_m
    else:
        level, threshold = None, rule.warn_m
    if level is None:
        # possibly within the alert distance given both accuracy radii: tell the centre only
        if within_certainty(d, rule.alert_m, r.slack_m, 0.0) == "possible":
            return "warning", "possible"
        return None, None
    # a level earned by the predicted closest approach, not the distance now, is a forecast
    return level, within_certainty(d, threshold, r.slack_m, 0.0) or "possible"


def hold_level(rule: ProximityRule, r: PairReading, fast_ttc_s: float, margin_m: float) -> Level | None:
    """The level a reading still holds with every distance threshold ``margin_m`` wider.

    ``grade`` on the distance and the predicted closest approach each ``margin_m`` nearer:
    an alert keeps its level while this is at least that level (the fall's hysteresis).
    """
    near = PairReading(
        r.distance_m - margin_m, r.closing_speed_mps, r.time_to_contact_s, r.slack_m, r.evidence,
        r.stale_s, r.cpa_m - margin_m, r.t_cpa_s, r.cpa_err_m,
    )
    return grade(rule, near, fast_ttc_s)[0]


@dataclass(slots=True, init=False)
class PairEntry:
    """One proximity rule of one order as every fix needs it, worked out once per order: its
    episode key, its alert target and the alert book's keys of its episodes (a written
    ``__init__``: engine.tools.native); the per-fix evaluation formatted and built them each time."""

    order: Order
    rule: ProximityRule
    key: tuple[str, str, str]  # (order id, subject, protected person): episodes
    target: str  # ``{subject}~{protected person}``
    proximity_key: tuple[str | None, str, str | None]  # AlertBook.open_by_key's keys
    silent_key: tuple[str | None, str, str | None]

    def __init__(self, order: Order, rule: ProximityRule) -> None:
        self.order = order
        self.rule = rule
        self.key = (order.id, order.subject, rule.protected_person)
        self.target = f"{order.subject}~{rule.protected_person}"
        self.proximity_key = (order.id, "proximity", self.target)
        self.silent_key = (order.id, "device_silent", self.target)


class ProximityRules:
    """Evaluates every (order, protected person) pair touched by a fix."""

    def __init__(self) -> None:
        self.episodes: dict[tuple[str, str, str], PairEpisode] = {}
        self._pairs: dict[str, tuple[Order, tuple[PairEntry, ...]]] = {}
        # the offender device's random pursuit periods: device -> (newest device time, on)
        self.cover_state: dict[str, tuple[float, bool]] = {}
        # subject -> (slot start, slot end, period start, period end): one hash per slot, not per fix
        self._cover_slots: dict[str, tuple[float, float, float, float]] = {}

    def forget_pairs(self) -> None:
        """A new order book: entries of orders it no longer has are not kept alive."""
        self._pairs = {}

    def pairs(self, order: Order) -> tuple[PairEntry, ...]:
        """The order's proximity rules as entries, in order (kept while the order is the same
        object under its id)."""
        found = self._pairs.get(order.id)
        if found is not None and found[0] is order:
            return found[1]
        made = tuple(PairEntry(order, rule) for rule in order.proximity)
        self._pairs[order.id] = (order, made)
        return made

    def reading(
        self, a: DeviceTrack, b: DeviceTrack, t: float, max_extrap_s: float,
        coarse_m: float = math.inf,
    ) -> PairReading | None:
        """Distance, closing speed and time to contact of two tracks at device time ``t``."""
        if not a.points or not b.points:
            return None
        ax, ay, a_extra, a_stale = a.position_at(t, max_extrap_s)
        bx, by, b_extra, b_stale = b.position_at(t, max_extrap_s)
        a_near, b_near = a.nearest(t), b.nearest(t)
        avx, avy = _moving(a.velocity(min(t, a.newest_t)), a_near.acc)
        bvx, bvy = _moving(b.velocity(min(t, b.newest_t)), b_near.acc)
        d, cs, ttc = assess_pair(ax, ay, avx, avy, bx, by, bvx, bvy)
        cpa, t_cpa = closest_point_of_approach(bx - ax, by - ay, bvx - avx, bvy - avy)
        # the heading's error: the radii of the moving tracks over the distance travelled in the
        # velocity window, carried over the distance between them (a walker's heading is far
        # less sure than a car's; a track standing still adds none)
        v_rel = hypot(bvx - avx, bvy - avy)
        acc = (a_near.acc if avx or avy else 0.0) + (b_near.acc if bvx or bvy else 0.0)
        cpa_err = d * min(1.0, acc / (STILL_WINDOW_S * v_rel)) if v_rel > 0 else 0.0
        if max(a_near.acc, b_near.acc) > coarse_m:
            cpa_err = math.inf  # a cell fix (a kilometre) cannot say where either is heading
        # positionally, in field order: keyword passing cost more than the arithmetic above
        return PairReading(
            d, cs, ttc, a_near.acc + a_extra + b_near.acc + b_extra, (a_near.key, b_near.key),
            max(a_stale, b_stale), cpa, t_cpa, cpa_err,
        )

    def evaluate(
        self,
        ctx: RuleContext,
        pair: PairEntry,
        subject_track: DeviceTrack,
        victim_track: DeviceTrack,
        t: float,
        late: bool,
    ) -> None:
        """Grade the pair at device time ``t`` and move its alert (and device_silent) accordingly."""
        rules = ctx.rules
        order, rule = pair.order, pair.rule
        self.cover(ctx, order.subject, subject_track.device, t)
        ep = self.episodes.get(pair.key)
        if ep is None:  # not setdefault(key, PairEpisode()): that builds one per fix
            ep = self.episodes[pair.key] = PairEpisode()
        if t < ep.last_t:
            late = True
        ep.last_t = max(ep.last_t, t)
        victim_stale = t - victim_track.newest_t
        if victim_stale > rules.partner_stale_s:
            self._silent_victim(ctx, pair, subject_track, victim_track, t, victim_stale)
            return
        target = pair.target
        if ctx.alerts.open_for_key(pair.silent_key) is not None:
            self._end_silence(ctx, pair, "victim device reporting again", t)
        r = self.reading(
            subject_track, victim_track, t, rules.partner_max_extrapolation_s, rules.coarse_fix_m
        )
        if r is None:
            return
        level, certainty = grade(rule, r, rules.fast_approach_ttc_s)
        current = ctx.alerts.open_for_key(pair.proximity_key)
        if current is None and level is None:  # the common case: apart, nothing open
            ep.start, ep.possible_run, ep.unsure_run = None, 0, 0
            return
        cur_rank = LEVEL_RANK[current.level] if current is not None else -1
        if (
            level is not None and certainty != "observed" and LEVEL_RANK[level] >= ALARM_RANK
            and LEVEL_RANK[level] > cur_rank and r.distance_m <= rule.alert_m
            and r.slack_m > rules.confirm_slack_m
        ):
            # a rise to alarm by the distance now that is not certain given both radii (he is
            # near alert_m, or critical_m), on fixes coarser than GNSS, waits for a second
            # reading: one noisy Wi-Fi fix of a pass at 1.1x alert_m put him inside it (a
            # forecast's doubt is in cpa_err_m; a car's one GNSS fix inside is enough)
            ep.unsure_run += 1
            coarse = r.slack_m > 2 * rules.coarse_fix_m  # a cell fix: it cannot decide an alarm
            if coarse or ep.unsure_run < rules.confirm_fixes:
                level = current.level if current is not None and cur_rank >= 1 else "warning"
        else:
            ep.unsure_run = 0
        ttc = r.time_to_contact_s if math.isfinite(r.time_to_contact_s) else None
        if current is None:
            assert level is not None  # returned above
            if certainty == "possible" and level == "warning":
                # "cannot rule out" from one coarse fix is noise; two in a row are worth a look
                ep.possible_run += 1
                if ep.possible_run < ctx.rules.confirm_fixes:
                    return
            ep.possible_run = 0
            ep.start = t
            ep.lower_since, ep.lower_level, ep.clear_run = None, None, 0
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id, kind="proximity", target=target, level=level, now=ctx.now,
                    device_time=t, episode_start=t, subject=order.subject,
                    protected_person=rule.protected_person, distance_m=r.distance_m,
                    certainty=certainty, closing_speed_mps=r.closing_speed_mps,
                    time_to_contact_s=ttc, evidence=r.evidence, late=late,
                    detail=_detail(r, level), device=subject_track.device,
                )
            )
            self._pursuit(ctx, ep, level, subject_track, victim_track)
            return
        new_rank = LEVEL_RANK[level] if level else -1
        if new_rank >= cur_rank:
            ep.lower_since, ep.lower_level, ep.clear_run = None, None, 0
            # at the same level the book keeps the alert's detail: it is written only for a
            # rise, or for a cap that notes it (CappedAlerts)
            needs_detail = new_rank > cur_rank or ctx.alerts.capping is not None
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id, kind="proximity", target=target, level=level or current.level,
                    now=ctx.now, device_time=t, episode_start=ep.start or t,
                    subject=order.subject, protected_person=rule.protected_person,
                    distance_m=r.distance_m, certainty=certainty,
                    closing_speed_mps=r.closing_speed_mps, time_to_contact_s=ttc,
                    evidence=r.evidence, late=late,
                    detail=_detail(r, level or current.level) if needs_detail else "",
                    device=subject_track.device,
                )
            )
            self._pursuit(ctx, ep, level, subject_track, victim_track)
            return
        # Lower than the alert's level.  A Schmitt trigger: the level the reading still holds
        # with every distance threshold widened by a margin of both accuracy radii (plus a
        # floor); the alert falls only when that held level has stayed lower for a dwell, and
        # then only to the highest level held during the dwell.  A fall is a real separation,
        # so a rise soon after is rare (a level reversal, simulator/score.py).
        hold = hold_level(rule, r, rules.fast_approach_ttc_s, rules.level_hysteresis_m + r.slack_m)
        hold_rank = LEVEL_RANK[hold] if hold else -1
        if hold_rank >= cur_rank:
            ep.lower_since, ep.lower_level, ep.clear_run = None, None, 0
            return
        if ep.lower_since is None:
            ep.lower_since, ep.lower_level = t, hold
        elif hold_rank > (LEVEL_RANK[ep.lower_level] if ep.lower_level else -1):
            ep.lower_level = hold
        beyond = r.distance_m > rule.warn_m * (1 + rules.proximity_hysteresis_frac)
        if hold is None and ep.lower_level is None and beyond:
            ep.clear_run += 1
            if ep.clear_run >= rules.clear_needed and t - ep.lower_since >= rules.level_fall_dwell_s:
                ctx.emit(
                    ctx.alerts.clear_episode(
                        order.id, "proximity", target, ctx.now,
                        f"apart again: {r.distance_m:.0f} m", t,
                    )
                )
                ep.start, ep.lower_since, ep.lower_level, ep.clear_run = None, None, None, 0
                self._pursuit(ctx, ep, None, subject_track, victim_track)
            return
        ep.clear_run = 0
        fall_to = ep.lower_level or hold
        if fall_to is not None and t - ep.lower_since >= rules.level_fall_dwell_s:
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id, kind="proximity", target=target, level=fall_to, now=ctx.now,
                    device_time=t, episode_start=ep.start or t, subject=order.subject,
                    protected_person=rule.protected_person, distance_m=r.distance_m,
                    certainty=certainty, closing_speed_mps=r.closing_speed_mps,
                    time_to_contact_s=ttc, evidence=r.evidence, late=late,
                    detail=_detail(r, fall_to), device=subject_track.device, allow_lower=True,
                )
            )
            ep.lower_since, ep.lower_level = None, None
            self._pursuit(ctx, ep, fall_to, subject_track, victim_track)

    def evaluate_segment(
        self,
        ctx: RuleContext,
        pair: PairEntry,
        subject_track: DeviceTrack,
        victim_track: DeviceTrack,
        mover: DeviceTrack,
        p0: TrackPoint,
        p1: TrackPoint,
        late: bool,
    ) -> None:
        """Sparse fixes: did the pair come within ``alert_m`` between ``mover``'s last two fixes?

        The closest approach of the two interpolated tracks over the segment's
        interval; raises or rises the pair's alert only above the level it has
        (the fix-time reading already ran), never lowers it.
        """
        rules = ctx.rules
        if not segment_usable(p0, p1, rules):
            return
        order, rule = pair.order, pair.rule
        partner = victim_track if mover is subject_track else subject_track
        if p1.t - victim_track.newest_t > rules.partner_stale_s or not partner.points:
            return  # a stale victim device is the device_silent rule's case
        max_extrap = rules.partner_max_extrapolation_s
        if stays_beyond(p0, p1, partner, max_extrap, rule.alert_m):
            return  # nothing below happens unless the path comes within alert_m: most are far
        ap = closest_approach(p0, p1, partner, max_extrap)
        if ap is None:
            return
        near = partner.nearest(ap.t)
        margin = path_margin(p0, p1) + near.acc + ap.partner_extra_m
        d = ap.distance_m
        level: Level
        if d <= rule.critical_m - margin:
            level, certainty = "critical", "likely"
        elif d <= rule.alert_m - margin:
            level, certainty = "alarm", "likely"
        elif d <= rule.alert_m:
            level, certainty = "warning", "possible"
        else:
            return
        target = pair.target
        current = ctx.alerts.open_for_key(pair.proximity_key)
        if current is not None and LEVEL_RANK[current.level] >= LEVEL_RANK[level]:
            return
        ep = self.episodes.setdefault(pair.key, PairEpisode())
        if current is None:
            ep.start = ap.t
        ep.lower_since, ep.lower_level, ep.clear_run = None, None, 0
        keys = (p0.key, p1.key, near.key)
        ctx.emit(
            ctx.alerts.raise_or_update(
                order=order.id, kind="proximity", target=target, level=level, now=ctx.now,
                device_time=p1.t, episode_start=ep.start if ep.start is not None else ap.t,
                subject=order.subject, protected_person=rule.protected_person,
                distance_m=d, certainty=certainty, evidence=keys, late=late,
                device=subject_track.device,
                detail=(
                    f"{level}: path came within {d:.0f} m between fixes (closest approach "
                    f"{p1.t - ap.t:.0f} s before {p1.key} on the straight line from {p0.key})"
                ),
            )
        )
        self._pursuit(ctx, ep, level, subject_track, victim_track)

    def _silent_victim(
        self,
        ctx: RuleContext,
        pair: PairEntry,
        subject_track: DeviceTrack,
        victim_track: DeviceTrack,
        t: float,
        stale_s: float,
    ) -> None:
        """The victim's device is stale: compare the offender with her last known place."""
        me, her = subject_track.latest(), victim_track.latest()
        if me is None or her is None:
            return
        order, rule = pair.order, pair.rule
        d = hypot(me.x - her.x, me.y - her.y)
        target = pair.target
        if d <= rule.warn_m:
            level: Level = "critical" if d <= rule.alert_m else "alarm"
            ctx.emit(
                ctx.alerts.raise_or_update(
                    order=order.id, kind="device_silent", target=target, level=level, now=ctx.now,
                    device_time=t, episode_start=victim_track.newest_t,
                    subject=order.subject, protected_person=rule.protected_person,
                    distance_m=d, certainty="possible", evidence=(me.key, her.key),
                    device=victim_track.device,
                    detail=(
                        f"victim device silent for {stale_s / 60:.0f} min while the subject is "
                        f"{d:.0f} m from her last known position"
                    ),
                )
            )
        elif d > rule.warn_m * (1 + ctx.rules.proximity_hysteresis_frac):
            self._end_silence(ctx, pair, f"subject {d:.0f} m from her last known position", t)

    def _end_silence(self, ctx: RuleContext, pair: PairEntry, note: str, t: float) -> None:
        ctx.emit(
            ctx.alerts.clear_episode(pair.order.id, "device_silent", pair.target, ctx.now, note, t)
        )

    def _pursuit(
        self,
        ctx: RuleContext,
        ep: PairEpisode,
        level: Level | None,
        subject_track: DeviceTrack,
        victim_track: DeviceTrack,
    ) -> None:
        """Pursuit mode on her device: it reports faster while the pair is at risk, normal after.

        Never on his: a faster fix rate commanded when she comes near would tell him she is near
        (issue 25).  His device's pursuit periods come at random (``cover``) and from zones.
        """
        rules = ctx.rules
        want = level is not None and LEVEL_RANK[level] >= LEVEL_RANK[rules.pursuit_level]
        if want == ep.pursuit:
            return
        ep.pursuit = want
        interval = rules.pursuit_interval_s if want else rules.normal_interval_s
        ctx.messages.append(set_interval(ctx.prefix, victim_track.device, interval, None, ctx.now))

    def cover(self, ctx: RuleContext, subject: str, device: str, t: float) -> None:
        """The offender's device's random pursuit periods (``cover_window``): on at the start of
        one, back to normal at its end, in device time; a late fix changes nothing."""
        rules = ctx.rules
        if rules.pursuit_cover_p <= 0 or rules.pursuit_cover_slot_s <= 0:
            return
        state = self.cover_state.get(device)
        if state is not None and t < state[0]:
            return
        slot = self._cover_slots.get(subject)
        if slot is None or not slot[0] <= t < slot[1]:
            size = rules.pursuit_cover_slot_s
            lo = math.floor(t / size) * size
            start, end = cover_window(subject, t, size, rules.pursuit_cover_p, rules.pursuit_cover_s)
            slot = self._cover_slots[subject] = (lo, lo + size, start, end)
        start, end = slot[2], slot[3]
        on = start <= t < end
        was = state[1] if state is not None else False
        self.cover_state[device] = (t, on)
        if on != was:
            interval = rules.pursuit_interval_s if on else rules.normal_interval_s
            until = end if on else None
            ctx.messages.append(set_interval(ctx.prefix, device, interval, until, ctx.now))


def cover_window(subject: str, t: float, slot_s: float, p: float, length_s: float) -> tuple[float, float]:
    """The random pursuit period of ``subject`` in the slot holding device time ``t``.

    ``(start, end)`` in device time; an empty ``(inf, inf)`` when the slot has none.  Drawn
    from a hash of subject and slot number: the same on every worker and in every replay,
    and unrelated to anything about a protected person.
    """
    k = math.floor(t / slot_s)
    digest = hashlib.sha256(f"{subject}|{k}".encode()).digest()
    u_on = int.from_bytes(digest[:8], "big") / 2.0**64
    if u_on >= p:
        return math.inf, math.inf
    u_at = int.from_bytes(digest[8:16], "big") / 2.0**64
    length = min(length_s, slot_s)
    start = k * slot_s + u_at * (slot_s - length)
    return start, start + length


def closest_point_of_approach(rx: float, ry: float, vx: float, vy: float) -> tuple[float, float]:
    """(distance, time) of closest approach for relative position r and relative velocity v.

    Moving apart or not moving relative to each other: the closest point is now.
    """
    v2 = vx * vx + vy * vy
    if v2 < 1e-6:
        return hypot(rx, ry), math.inf
    t = -(rx * vx + ry * vy) / v2
    if t <= 0:
        return hypot(rx, ry), 0.0
    return hypot(rx + vx * t, ry + vy * t), t


def _detail(r: PairReading, level: str) -> str:
    ttc = (
        f", contact in ~{r.time_to_contact_s / 60:.1f} min"
        if math.isfinite(r.time_to_contact_s)
        else ""
    )
    return f"{level}: {r.distance_m:.0f} m apart, closing at {r.closing_speed_mps:.1f} m/s{ttc}"
