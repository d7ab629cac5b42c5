"""The engine's speed-ups (issue 10) give the answers of the plain computations they replace."""

from __future__ import annotations

import random
from datetime import time

import pytest

from engine.config import EngineConfig, RuleConfig
from engine.orders import ScheduleWindow, load_orders
from engine.pipeline import Effects, Engine
from engine.rules.context import RuleContext
from engine.rules.expiry import check_expiry
from engine.testing import ORIGIN, T0, DeviceScript, circle, orders_doc
from engine.timeutil import parse_time
from engine.tracks import DeviceTrack

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
        self.alerts._deadline_floor = None
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
    """RuleContext.emit and AlertBook._replace_alert build these by hand: a new field must be
    added there too (this fails first)."""
    from dataclasses import fields

    from engine.alerts import _ALERT_FIELDS, Alert, AlertChange

    assert [f.name for f in fields(AlertChange)] == ["alert", "change", "previous_level", "arrival"]
    assert _ALERT_FIELDS == tuple(f.name for f in fields(Alert))
    assert not hasattr(Alert, "__post_init__") and not hasattr(AlertChange, "__post_init__")
