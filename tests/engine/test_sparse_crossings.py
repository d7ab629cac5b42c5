"""Crossings between sparse fixes: a path through a zone or past the victim with no fix inside."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.core.config import EngineConfig, RuleConfig
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, orders_doc, square

X0, Y0 = ORIGIN
STEP_S, SPEED = 30.0, 14.0  # a car in town with a fix every 30 s: 420 m between fixes
OFF = EngineConfig(rules=replace(RuleConfig(), sparse_crossing_enabled=False))


def school(protects: bool = False, half: float = 60.0) -> dict:
    zone = {"id": "Z-school", "polygon": square(X0, Y0, half)}
    if protects:
        zone["protected_person"] = "P-1"
    return orders_doc(exclusion=[zone])


def drive(
    h: Harness,
    *,
    y: float,
    first_x: float,
    n: int = 10,
    step_s: float = STEP_S,
    speed: float = SPEED,
    acc: float = 8.0,
) -> list[float]:
    """Drive east along ``y`` from ``first_x``; returns the x of every fix."""
    am, xs = DeviceScript("AM-1001"), []
    for i in range(n):
        t, x = T0 + step_s * i, first_x + speed * step_s * i
        h.send(am.fix(t, x, y, acc=acc, spd=speed), t + 1)
        xs.append(x)
    return xs


def through_middle(h: Harness) -> list[float]:
    # fixes at X0 - 210 and X0 + 210 straddle the 120 m wide zone: none is inside it
    return drive(h, y=Y0, first_x=X0 - 210 - 420 * 4)


def test_driving_through_a_small_zone_between_fixes_is_a_likely_alarm():
    """No fix lands in the 120 m school zone, but the straight path runs 60 m inside it: alarm."""
    h = Harness.build(school())
    xs = through_middle(h)
    assert not any(abs(x - X0) <= 60 for x in xs)
    changes = [c for c in h.effects.changes if c.alert.kind == "exclusion"]
    raised = changes[0].alert
    assert (changes[0].change, raised.level, raised.certainty) == ("raised", "alarm", "likely")
    assert raised.detail.startswith("path crossed zone between fixes")
    assert raised.distance_m == pytest.approx(-60, abs=3)
    assert T0 + 4 * STEP_S < raised.episode_start < T0 + 5 * STEP_S  # interpolated entry
    assert raised.evidence == ("AM-1001:5", "AM-1001:6")
    assert [c.change for c in changes] == ["raised", "clear"]  # he was out again at once


def test_without_sparse_crossing_the_same_drive_goes_unnoticed():
    """The fix-only engine (feature switched off) misses the crossing entirely."""
    h = Harness.build(school(), OFF)
    through_middle(h)
    assert h.changes("exclusion") == []


def test_a_graze_is_only_a_possible_warning_for_the_centre():
    """A path clipping 5 m of the zone's edge: centre warning, 'possible', no victim warning."""
    h = Harness.build(school(protects=True))
    drive(h, y=Y0 + 55, first_x=X0 - 210 - 420 * 4)
    (change, *_) = [c for c in h.effects.changes if c.alert.kind == "exclusion"]
    assert (change.alert.level, change.alert.certainty) == ("warning", "possible")
    assert h.messages("victim") == []


def test_a_path_that_misses_the_zone_raises_nothing():
    """Passing 20 m beside the zone, straight, raises nothing."""
    h = Harness.build(school())
    drive(h, y=Y0 + 80, first_x=X0 - 210 - 420 * 4)
    assert h.changes("exclusion") == []


def test_a_fix_inside_is_decided_by_the_fix_rule_not_raised_twice():
    """When a fix lands inside, one alert is raised (by that fix), not a second one for the path."""
    h = Harness.build(school(half=150))
    drive(h, y=Y0, first_x=X0 - 420 * 4)  # a fix lands at X0
    changes = [c for c in h.effects.changes if c.alert.kind == "exclusion"]
    assert len({c.alert.alert_id for c in changes}) == 1
    assert [c.change for c in changes].count("raised") == 1
    # the lone fix inside opens a warning, the next one continuing the drive confirms it
    assert [(c.change, c.alert.level) for c in changes][:2] == [
        ("raised", "warning"),
        ("level", "alarm"),
    ]
    assert changes[1].alert.detail.startswith("passed through exclusion zone")


def test_a_multipath_jump_across_the_zone_is_not_a_path():
    """A single implausible fix on the far side of the zone is rejected before any path is drawn."""
    h = Harness.build(school())
    am = DeviceScript("AM-1001")
    for i in range(5):
        t = T0 + 10 * i
        h.send(am.fix(t, X0 - 400 + 1.4 * 10 * i, Y0), t + 1)
    h.send(am.fix(T0 + 50, X0 + 600, Y0), T0 + 51)  # 1 km in 10 s
    h.send(am.fix(T0 + 60, X0 - 330, Y0), T0 + 61)
    assert h.engine.stats.jumps == 1
    assert h.changes("exclusion") == []


def test_no_path_is_assumed_across_a_long_gap():
    """Fixes ten minutes apart on both sides of the zone: not interpolated, nothing raised."""
    h = Harness.build(school())
    drive(h, y=Y0, first_x=X0 - 300, n=2, step_s=600, speed=1.0)
    assert h.changes("exclusion") == []


def motorway(h: Harness, *, lateral: float, victim_every_s: float = 60.0) -> None:
    """Victim at home ``lateral`` m north of a motorway; he passes at 30 m/s, a fix a minute."""
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    for i in range(8):
        t = T0 + 60 * i
        if (i * 60) % victim_every_s == 0:
            h.send(vd.fix(t - 5, X0, Y0 + lateral, acc=10.0), t - 4)
        h.send(am.fix(t, X0 - 900 - 1800 * 3 + 1800 * i, Y0, acc=8.0, spd=30.0), t + 1)


PASS_BY = [{"protected_person": "P-1", "alert_m": 500, "warn_m": 500}]


def alarms(h: Harness) -> list:
    return [
        c.alert
        for c in h.effects.changes
        if c.alert.kind == "proximity" and c.alert.level in ("alarm", "critical")
    ]


def test_passing_the_victim_between_fixes_is_an_alarm_and_she_is_warned():
    """Fixes 920 m from her, the path 200 m: one proximity alarm, and she is warned before he
    passes (the heading forecasts the pass; the path between fixes confirms it)."""
    h = Harness.build(orders_doc(proximity=PASS_BY))
    motorway(h, lateral=200)
    first = alarms(h)[0]
    assert len({a.alert_id for a in alarms(h)}) == 1
    assert first.level == "alarm" and first.certainty in ("possible", "likely")
    assert [m["level"] for m in h.messages("victim")][:1] == ["alarm"]
    # warned ahead of the pass: while he was still kilometres away, not after the fixes around it
    assert first.distance_m is not None and first.distance_m > 2000


def test_without_sparse_crossing_the_heading_forecast_still_warns_her():
    """With the path-between-fixes feature off, the forecast from the heading still gives the
    alarm ahead of the pass; no alert claims a path crossing it did not compute."""
    h = Harness.build(orders_doc(proximity=PASS_BY), OFF)
    motorway(h, lateral=200)
    assert alarms(h) and [m["level"] for m in h.messages("victim")][:1] == ["alarm"]
    assert all("between fixes" not in c.alert.detail for c in h.effects.changes)


def test_passing_just_outside_alert_distance_is_no_alarm():
    """Closest approach 600 m with alert_m 500: no alarm and no victim warning."""
    h = Harness.build(orders_doc(proximity=PASS_BY))
    motorway(h, lateral=600)
    assert alarms(h) == [] and h.messages("victim") == []


@settings(max_examples=60, deadline=None)
@given(
    offset=st.floats(0, 420, allow_nan=False),
    y=st.floats(-200, 200, allow_nan=False),
    half=st.floats(20, 300, allow_nan=False),
)
@example(offset=210, y=0, half=60)
@example(offset=0, y=0, half=60)
@example(offset=210, y=59.9, half=60)
def test_one_pass_through_a_zone_opens_at_most_one_alert(offset: float, y: float, half: float):
    """Any straight drive through a square zone opens at most one alert, and one whenever it
    passes deeper than the path margin (accuracy + 10 % of the 420 m between fixes)."""
    h = Harness.build(school(half=half))
    drive(h, y=Y0 + y, first_x=X0 - 420 * 4 - offset)
    excl = [c for c in h.effects.changes if c.alert.kind == "exclusion"]
    raised = [c for c in excl if c.change == "raised"]
    assert len(raised) <= 1
    assert len({c.alert.alert_id for c in excl}) <= 1
    depth = half - abs(y)
    if depth > 8 + 42 + 1:
        # a fix inside opens a warning at once; the drive-through confirms it as an alarm
        assert len(raised) == 1 and "alarm" in {c.alert.level for c in excl}


def test_a_zone_moved_by_new_orders_is_measured_afresh_for_the_path_between_fixes():
    """The path check reuses the distances the fix rule just measured (engine.core.rules.zones keeps
    the last two per zone); new orders that move a zone under the same id must not leave the
    old shape's distances in use: the drive below crosses the zone only where it is now."""
    from engine.core.orders_load import load_orders

    far = orders_doc(exclusion=[{"id": "Z-school", "polygon": square(X0 + 5000, Y0, 60.0)}])
    h = Harness.build(far)
    am = DeviceScript("AM-1001")
    for i, x in enumerate((X0 - 630, X0 - 210)):  # both fixes measured against the far zone
        h.send(am.fix(T0 + STEP_S * i, x, Y0, acc=8.0, spd=SPEED), T0 + STEP_S * i + 1)
    assert h.changes("exclusion") == []
    h.engine.set_orders(load_orders(school()))  # the same zone id, now on the road ahead
    h.send(am.fix(T0 + 2 * STEP_S, X0 + 210, Y0, acc=8.0, spd=SPEED), T0 + 2 * STEP_S + 1)
    raised = [c.alert for c in h.effects.changes if c.alert.kind == "exclusion"]
    assert raised and raised[0].detail.startswith("path crossed zone between fixes")
