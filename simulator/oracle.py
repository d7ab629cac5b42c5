"""Ground truth for a simulated world: the episodes an ideal engine would report.

Computed only from the noise-free person paths (never from device data, so
a victim's device left at home does not move her), the orders and the
scripted device episodes:

* proximity: true distance between subject and protected person < ``alert_m``
  of the order's proximity rule;
* exclusion: the subject truly inside an exclusion zone (while the zone's
  schedule, if any, is active);
* inclusion: the subject truly outside an inclusion zone while its schedule is
  active (a curfew);
* tamper, battery, panic, signal_loss: from the events that scripted them; a
  device that sends nothing (battery dead, offline) for ``silent_min_s`` or
  more is a ``signal_loss`` episode, as the engine reports it (issue 5: the
  engine's ``device_silent`` is the narrower case of a silent victim device
  while the offender is near her last known place).

Everything is clipped to the scenario span and the order's validity.
Schedule windows are enumerated with the engine's ``ScheduleWindow`` (the same
wall-clock and daylight-saving reading of an order); all geometry is
independent of the engine's kernels.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from engine.core.orders import Order, ProximityRule, ZoneRule
from simulator.orders_doc import ZoneGeom
from simulator.paths import Path
from simulator.truth import (
    Episode,
    Interval,
    closest_in,
    complement,
    densified,
    distance_pieces,
    intersect_intervals,
    merge_intervals,
    polygon_inside,
    sort_episodes,
)
from simulator.world import World


def compute_truth(world: World) -> list[Episode]:
    """All true episodes of the world, merged and sorted."""
    sc = world.sc
    episodes: list[Episode] = []
    for oid in sorted(world.book.orders):
        order = world.book.orders[oid]
        t0, t1 = max(sc.start, order.valid_from), min(sc.end, order.valid_until)
        if t1 <= t0:
            continue
        subject = world.paths[order.subject]
        for rule in order.proximity:
            episodes += [
                _mark_unwarnable(world, order, rule.protected_person, ep)
                for ep in proximity_episodes(
                    order,
                    rule,
                    subject,
                    world.paths[rule.protected_person],
                    t0,
                    t1,
                    sc.merge_gap_s,
                    sc.contact_m,
                )
            ]
        for zone in world.zones:
            if zone.order == oid:
                episodes += zone_episodes(order, zone, subject, t0, t1, sc.merge_gap_s)
    for ep in world.scripted:
        start, end = max(ep.start, sc.start), min(ep.end, sc.end)
        if end >= start and start <= sc.end:
            episodes.append(replace(ep, start=start, end=end))
    return sort_episodes(episodes)


def _mark_unwarnable(world: World, order: Order, person: str, ep: Episode) -> Episode:
    """The episode with ``excluded`` set when no engine could warn her before it started.

    ``device_left``: her device was not with her at the start (it reported somewhere else);
    ``offline``: his device was offline at the start (its fixes came later, in a burst);
    ``corridor``: he came within ``alert_m`` on a corridor the order approves (the engine caps
    such a pass at info by design; an overstay is an alarm later, not a warning before).
    """
    book = world.book
    victim = book.protected_persons[person].devices
    if any(s <= ep.start <= e for d in victim for s, e in world.scripts[d].left):
        return replace(ep, excluded="device_left")
    mine = book.subjects[order.subject].devices
    if any(s <= ep.start <= e for d in mine for s, e, _, _ in world.scripts[d].offline):
        return replace(ep, excluded="offline")
    path = world.paths[order.subject]
    x = float(np.interp(ep.start, path.t, path.x))
    y = float(np.interp(ep.start, path.t, path.y))
    for corridor in order.corridors:
        if corridor.active_at(ep.start):
            shape = world.sc.projector.project_geometry(corridor.shape.geometry)
            if shapely.intersects_xy(shape, x, y):
                return replace(ep, excluded="corridor")
    return ep


def proximity_episodes(
    order: Order,
    rule: ProximityRule,
    subject: Path,
    victim: Path,
    t0: float,
    t1: float,
    merge_gap_s: float = 0.0,
    contact_m: tuple[float, ...] = (),
) -> list[Episode]:
    """Episodes with true distance < ``rule.alert_m`` between the two paths within [t0, t1]."""
    args = (subject.t, subject.x, subject.y, victim.t, victim.x, victim.y)
    pieces = distance_pieces(*args, rule.alert_m, t0, t1)
    contacts = {
        f"{c:g}": distance_pieces(*args, c, t0, t1).inside for c in contact_m if c < rule.alert_m
    }
    out = []
    for start, end in merge_intervals(pieces.inside, merge_gap_s):
        dmin, tmin = closest_in(pieces, start, end)
        first = {}
        for key, iv in contacts.items():
            hits = [max(s, start) for s, e in iv if e > start and s < end]
            if hits:
                first[key] = hits[0]
        out.append(
            Episode(
                "proximity",
                start,
                end,
                order=order.id,
                subject=order.subject,
                protected_person=rule.protected_person,
                min_distance_m=dmin,
                closest_at=tmin,
                contact_at=first,
            )
        )
    return out


def zone_episodes(
    order: Order, zone: ZoneGeom, subject: Path, t0: float, t1: float, merge_gap_s: float = 0.0
) -> list[Episode]:
    """Exclusion (inside) or inclusion (outside while scheduled) episodes of one zone."""
    inside = inside_intervals(zone, subject, t0, t1)
    active = schedule_intervals(zone.rule, t0, t1)
    bad = inside if zone.kind == "exclusion" else complement(inside, t0, t1)
    out = []
    for start, end in merge_intervals(
        intersect_intervals(merge_intervals(bad, 0.0), active), merge_gap_s
    ):
        out.append(
            Episode(
                zone.kind,
                start,
                end,
                order=order.id,
                subject=order.subject,
                zone=zone.zone,
                min_distance_m=_worst_signed_distance(zone, subject, start, end),
            )
        )
    return out


def inside_intervals(zone: ZoneGeom, path: Path, t0: float, t1: float) -> list[Interval]:
    """Exact intervals in [t0, t1] with the path inside the zone (boundary counts as inside)."""
    if zone.circle is not None:
        cx, cy, r = zone.circle
        centre = Path.constant(cx, cy, min(t0, path.start) - 1.0, max(t1, path.end) + 1.0)
        pieces = distance_pieces(path.t, path.x, path.y, centre.t, centre.x, centre.y, r, t0, t1)
        return pieces.inside
    return polygon_inside(path.t, path.x, path.y, zone.polygon, t0, t1)


def schedule_intervals(rule: ZoneRule, t0: float, t1: float) -> list[Interval]:
    """Where the zone is active within [t0, t1] (all of it without a schedule)."""
    if not rule.schedule:
        return [(t0, t1)]
    out: list[Interval] = []
    for window in rule.schedule:
        t = t0
        while t < t1:
            cur = window.window_containing(t)
            if cur is not None:
                out.append((max(cur[0], t0), min(cur[1], t1)))
                t = cur[1]
                continue
            nxt = window.next_start_after(t)
            if nxt is None or nxt >= t1:
                break
            t = nxt
    return merge_intervals(out, 0.0)


def _worst_signed_distance(zone: ZoneGeom, path: Path, start: float, end: float) -> float:
    """Signed boundary distance at the worst point; negative = into the violation."""
    x, y = densified(path.t, path.x, path.y, start, end)
    if zone.circle is not None:
        cx, cy, r = zone.circle
        signed = np.hypot(x - cx, y - cy) - r
    else:
        pts = shapely.points(x, y)
        inside = shapely.intersects(zone.polygon, pts)
        signed = np.where(
            inside,
            -shapely.distance(zone.polygon.boundary, pts),
            shapely.distance(zone.polygon, pts),
        )
    return float(signed.min()) if zone.kind == "exclusion" else float(-signed.max())
