"""The engine's speed-ups (issue 10) give the answers of the plain computations they replace."""

from __future__ import annotations

import math
import random
from datetime import time
from itertools import pairwise

import numpy as np
import pytest

from devices.timeutil import parse_time
from engine.core.config import EngineConfig, RuleConfig
from engine.core.effects import Effects
from engine.core.orders import ScheduleWindow
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.rules.context import RuleContext
from engine.core.rules.crossings import Approach, closest_approach, stays_beyond
from engine.core.rules.expiry import check_expiry
from engine.core.testing import ORIGIN, T0, DeviceScript, circle, orders_doc
from engine.core.tracks import DeviceTrack, TrackPoint
from geo.proximity import predict_position_unchecked

WINDOWS = [
    (range(7), time(22, 0), time(6, 0)),
    (range(7), time(0, 0), time(0, 0)),  # a whole day
    (range(5), time(8, 30), time(17, 0)),
    ((5, 6), time(2, 30), time(3, 0)),  # inside the spring-forward gap
    ((6,), time(3, 0), time(2, 30)),  # 23.5 h, across the gap
    ((0, 3), time(1, 59), time(2, 1)),
    ((2,), time(23, 59), time(0, 1)),
]
TZS = ["Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "UTC"]
# days around the 2026 DST changes in these zones
STARTS = ["2026-03-27T00:00:00Z", "2026-10-23T00:00:00Z", "2026-04-03T00:00:00Z",
          "2026-10-02T00:00:00Z", "2026-03-06T00:00:00Z", "2026-10-30T00:00:00Z"]


@pytest.mark.parametrize("tz", TZS)
def test_window_memo_matches_the_computation(tz: str) -> None:
    rng = random.Random(tz)
    for days, start, end in WINDOWS:
        for origin in STARTS:
            w = ScheduleWindow(frozenset(days), start, end, tz)
            t = parse_time(origin)
            for _ in range(1500):
                # mostly forward in small steps (a device's fixes), sometimes a jump back or ahead
                r = rng.random()
                t += rng.uniform(-86_400, 86_400) if r < 0.05 else rng.uniform(-60, 600)
                if r > 0.97:
                    t = float(int(t) // 1800 * 1800)  # exactly on a half hour: window edges
                assert w.window_containing(t) == w._window_containing(t), (days, start, end, tz, t)


def test_equal_windows_share_a_memo_and_still_match_the_computation() -> None:
    """Equal windows (one per order) answer from one shared memo; interleaved devices at
    different times get the computed answer each time."""
    rng = random.Random(5)
    for days, start, end in WINDOWS:
        windows = [ScheduleWindow(frozenset(days), start, end, "Europe/Amsterdam") for _ in range(4)]
        assert windows[0]._shared is windows[3]._shared
        clocks = [parse_time(rng.choice(STARTS)) for _ in windows]
        for _ in range(2000):
            i = rng.randrange(len(windows))
            r = rng.random()
            clocks[i] += rng.uniform(-86_400, 86_400) if r < 0.05 else rng.uniform(-60, 900)
            t = clocks[i]
            assert windows[i].window_containing(t) == windows[i]._window_containing(t), (days, t)


class _PlainExpiry:
    def check(self, ctx: RuleContext) -> None:
        check_expiry(ctx)


class _Plain(Engine):
    """The engine with every tick-time shortcut replaced by the full pass it stands for."""

    def _newly_silent(self, now: float) -> list[DeviceTrack]:
        return [
            t for t in sorted(self.tracks.values(), key=lambda t: t.device)
            if t.last_arrival > float("-inf")
            and now - t.last_arrival > self.silent_after_s.get(t.device, self.default_silent_after_s)
            and t.device not in self.silent
        ]

    def tick(self, now: float) -> Effects:
        self.expiry = _PlainExpiry()  # type: ignore[assignment]
        self.alerts.drop_indexes()
        self._victim_floor = None
        return super().tick(now)


def _run(cls: type[Engine], restore_at: int | None = None) -> tuple[list[Effects], int]:
    doc = orders_doc(
        exclusion=[{"id": "Z-1", "circle": circle(ORIGIN[0] + 3000, ORIGIN[1], 500)}],
        proximity=[{"protected_person": "P-1", "alert_m": 500, "warn_m": 1500}],
        valid_until=T0 + 3 * 86400 + 900,  # an expiry warning at once, an alarm 900 s on
    )
    engine = cls(load_orders(doc), EngineConfig(rules=RuleConfig(victim_retention_s=1200.0)))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    out = []
    for k in range(60):
        now = T0 + 37.0 * k
        if k == restore_at:  # continue in a new engine from a snapshot (a restart)
            parts = [p for p in engine.state_delta().parts.values() if p is not None]
            engine = cls(load_orders(doc), EngineConfig(rules=RuleConfig(victim_retention_s=1200.0)))
            engine.restore_parts(parts)
        if k % 7 != 3 and not 20 <= k < 30:  # the subject's device is quiet now and then
            x = ORIGIN[0] + 100.0 * k
            out.append(engine.handle(*am.fix(now - 1, x, ORIGIN[1]), now))
        if k < 5 or k > 40:  # the victim's device is off for a long time
            out.append(engine.handle(*vd.fix(now - 1, ORIGIN[0] + 2500, ORIGIN[1] + 300), now))
        out.append(engine.tick(now + 20))
    out.append(engine.tick(T0 + 4 * 86400))  # the order has lapsed with alerts open
    dropped = sum(len(t.points) for t in engine.tracks.values())
    return out, dropped


@pytest.mark.pure_python  # subclasses Engine and swaps its ExpiryWatch for a stand-in
@pytest.mark.parametrize("restore_at", [None, 8, 25, 45])
def test_tick_shortcuts_match_the_full_passes(restore_at: int | None) -> None:
    """Silence, return, expiry, escalation and victim-point retention: same effects, same state,
    also across a snapshot and restore."""
    fast, plain = _run(Engine, restore_at), _run(_Plain, restore_at)
    assert fast == plain
    assert fast == _run(Engine)  # a restore changes nothing either
    kinds = {c.alert.kind for e in fast[0] for c in e.changes}
    assert {"order_expiry", "signal_loss"} <= kinds


def test_fast_copies_know_every_field() -> None:
    """RuleContext.emit and copy_alert build these by hand: a new field must be added there too
    (this fails first)."""
    from dataclasses import astuple, fields

    from engine.core.alert_records import Alert, AlertChange, HistoryEntry, copy_alert

    assert [f.name for f in fields(AlertChange)] == ["alert", "change", "previous_level", "arrival"]
    # every field set to a value no other field and no default has
    values = {
        "alert_id": "A-1", "kind": "proximity", "level": "alarm", "state": "escalated",
        "order": "O-1", "subject": "S-1", "protected_person": "P-1", "zone": "Z-1",
        "device_time": 1.0, "raised_at": 2.0, "deadline": 3.0, "episode_start": 4.0,
        "distance_m": 5.0, "certainty": "likely", "closing_speed_mps": 6.0,
        "time_to_contact_s": 7.0, "evidence": ("k1",), "late": True, "detail": "d",
        "updated_at": 8.0, "target": "S-1~P-1", "device": "AM-1",
        "history": (HistoryEntry(2.0, "open", "alarm", "engine", "d"),),
        "condition": "cleared", "cleared_at": 9.0, "claimed_by": "op-1", "escalated_to": "police",
        "outcome": "false_alarm", "closed_by": "op-2",
    }
    assert sorted(values) == sorted(f.name for f in fields(Alert))
    alert = Alert(**values)  # type: ignore[arg-type]
    copy = copy_alert(alert)
    assert copy is not alert and copy == alert and astuple(copy) == astuple(alert)
    assert not hasattr(Alert, "__post_init__") and not hasattr(AlertChange, "__post_init__")


def _random_track(rng: random.Random, n: int) -> DeviceTrack:
    """A track of n points in ascending time, with repeated times and equal gaps (ties)."""
    track = DeviceTrack("d")
    t = 1.764e9 + rng.choice([0.0, 0.25])
    for i in range(n):
        t += rng.choice([0.0, 0.0, 1.0, 5.0, 5.0, 30.0, 0.125])
        x, y = rng.uniform(-5e3, 5e3), rng.uniform(-5e3, 5e3)
        track.points.append(TrackPoint(t, x, y, rng.choice([5.0, 30.0]), f"k{i}", "gnss"))
    return track


def _plain_predict(track: DeviceTrack, t: float, max_extrap_s: float) -> tuple[float, ...]:
    pts = list(track.points)
    return predict_position_unchecked(
        np.array([p.t for p in pts]), np.array([p.x for p in pts]), np.array([p.y for p in pts]),
        t, max_extrap_s,
    )


def test_track_lookups_match_the_full_scans() -> None:
    """nearest() and position_at() give min() over all points and the array kernel's answer."""
    rng = random.Random(10)
    for _ in range(300):
        track = _random_track(rng, rng.randint(1, 40))
        pts = list(track.points)
        times = [p.t for p in pts] + [pts[0].t + rng.uniform(-100, 400) for _ in range(10)]
        times += [(a.t + b.t) / 2 for a, b in pairwise(pts)]  # equidistant
        for t in times:
            assert track.nearest(t) is min(pts, key=lambda p: abs(p.t - t))
            for max_extrap in (0.0, 60.0):
                assert track.position_at(t, max_extrap) == _plain_predict(track, t, max_extrap)


def test_closest_approach_matches_the_array_version() -> None:
    """closest_approach over a deque gives the result of the whole-track arrays it replaced."""
    rng = random.Random(11)
    for _ in range(300):
        partner = _random_track(rng, rng.randint(1, 40))
        pts = list(partner.points)
        t0 = rng.choice(pts).t + rng.uniform(-60, 30)
        p0 = TrackPoint(t0, rng.uniform(-5e3, 5e3), rng.uniform(-5e3, 5e3), 10.0, "a", "gnss")
        p1 = TrackPoint(t0 + rng.choice([1.0, 5.0, 30.0, 90.0]), rng.uniform(-5e3, 5e3),
                        rng.uniform(-5e3, 5e3), 10.0, "b", "gnss")
        got = closest_approach(p0, p1, partner, 60.0)
        ts = [p0.t, *(p.t for p in pts if p0.t < p.t < p1.t), p1.t]
        rx, ry, extra = [], [], 0.0
        for t in ts:
            frac = (t - p0.t) / (p1.t - p0.t)
            x, y, unc, _ = _plain_predict(partner, t, 60.0)
            rx.append((p0.x + frac * (p1.x - p0.x)) - x)
            ry.append((p0.y + frac * (p1.y - p0.y)) - y)
            extra = max(extra, unc)
        best_d, best_t = math.inf, p1.t
        for j in range(len(ts) - 1):
            dx, dy = rx[j + 1] - rx[j], ry[j + 1] - ry[j]
            dd = dx * dx + dy * dy
            s = 0.0 if dd == 0.0 else min(1.0, max(0.0, -(rx[j] * dx + ry[j] * dy) / dd))
            d = math.hypot(rx[j] + s * dx, ry[j] + s * dy)
            if d < best_d:
                best_d, best_t = d, ts[j] + s * (ts[j + 1] - ts[j])
        assert got == Approach(best_d, best_t, extra)


def test_travel_bound_is_at_least_how_far_the_predicted_position_moves() -> None:
    """travel_bound(t0, t1) >= the length of position_at's path sampled densely in [t0, t1],
    also when t0 or t1 is the time of points (where position_at jumps between points of the
    same time: the ends' jumps count, closest_approach samples both ends)."""
    rng = random.Random(12)
    for i in range(1200):
        track = _random_track(rng, rng.randint(1, 30))
        pts = list(track.points)
        if i % 3 == 0:
            t0 = rng.choice(pts).t + rng.uniform(-200, 100)
            t1 = t0 + rng.choice([0.0, 1.0, 7.0, 30.0, 180.0, 600.0])
        else:  # ends on points' times
            t0 = rng.choice(pts).t if i % 3 == 1 else rng.choice(pts).t - rng.choice([0.0, 3.0])
            t1 = max(t0, rng.choice(pts).t)
        for max_extrap in (0.0, 60.0, 120.0):
            times = sorted({t0, t1, *(t0 + (t1 - t0) * k / 50 for k in range(51)),
                            *(p.t for p in pts if t0 <= p.t <= t1)})
            pos = [track.position_at(t, max_extrap)[:2] for t in times]
            path = sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in pairwise(pos))
            assert path <= track.travel_bound(t0, t1, max_extrap) * (1 + 1e-9) + 1e-6


def test_the_path_check_skips_only_paths_that_stay_beyond_alert_m() -> None:
    """The proximity path check returns early when its bound shows the closest approach is
    beyond alert_m; whenever it does, closest_approach indeed finds the pair farther apart."""
    rng = random.Random(13)
    skipped = 0
    for i in range(6000):
        partner = _random_track(rng, rng.randint(1, 12))
        pts = list(partner.points)
        if i % 2:  # the segment's ends at partner points' times (ties, and jumps between them)
            t0 = rng.choice(pts).t
            t1 = rng.choice([p.t for p in pts if p.t > t0] or [t0 + 5.0])
        else:
            t0 = rng.choice(pts).t + rng.uniform(-60, 30)
            t1 = t0 + rng.choice([1.0, 5.0, 30.0, 90.0])
        p0 = TrackPoint(t0, rng.uniform(-5e3, 5e3), rng.uniform(-5e3, 5e3), 10.0, "a", "gnss")
        p1 = TrackPoint(t1, p0.x + rng.uniform(-800, 800), p0.y + rng.uniform(-800, 800), 10.0,
                        "b", "gnss")
        d = closest_approach(p0, p1, partner, 60.0)
        assert d is not None
        for alert_m in (d.distance_m, d.distance_m * (1 - 1e-12), 50.0, 500.0, 2000.0):
            if stays_beyond(p0, p1, partner, 60.0, alert_m):
                skipped += 1
                assert d.distance_m > alert_m
    assert skipped > 2000  # the bound does decide most of these
