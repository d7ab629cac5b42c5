"""Exclusion and inclusion zone rules: certainty, hysteresis, curfews across DST."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc, square

X0, Y0 = ORIGIN


def ban() -> Harness:
    return Harness.build(orders_doc(exclusion=[{"id": "Z-ban", "polygon": square(X0, Y0, 200)}]))


def test_entering_and_leaving_a_ban_zone_raises_one_alarm_then_clears_it():
    """A subject walking through a banned square gets one alarm, a leave_area prompt, and a
    cleared condition; the alarm stays open for the centre."""
    h, am = ban(), DeviceScript("AM-1001")
    for i, x in enumerate(range(-600, 601, 50)):
        h.send(am.fix(T0 + 10 * i, X0 + x, Y0), T0 + 10 * i + 1)
    changes = h.changes("exclusion")
    assert h.handling("exclusion") == [
        ("warning", "open", "active"), ("alarm", "open", "active"), ("alarm", "open", "cleared")]
    assert len({c[0] for c in changes}) == 1
    prompts = h.messages("subject")
    assert any(p["instruction"] == "leave_area" for p in prompts)
    assert any(p["instruction"] == "approaching_zone" for p in prompts)


def test_fix_dancing_on_the_boundary_does_not_flap():
    """Fixes alternating a few metres either side of the edge give at most one alert and no resolve."""
    h, am = ban(), DeviceScript("AM-1001")
    for i in range(40):
        dx = 205 if i % 2 else 195  # the edge is at +200 m
        h.send(am.fix(T0 + 10 * i, X0 + dx, Y0, acc=10.0), T0 + 10 * i + 1)
    changes = h.changes("exclusion")
    assert "cleared" not in [cond for _, _, cond in h.handling("exclusion")]
    assert len({aid for aid, *_ in changes}) == 1


def test_a_single_possible_fix_is_not_enough_but_two_are():
    """Inside only within the accuracy radius: one fix is noise, two consecutive ones open an alarm."""
    h, am = ban(), DeviceScript("AM-1001")
    h.send(am.fix(T0, X0 + 230, Y0, acc=50.0), T0 + 1)
    assert [lvl for _, _, lvl, _ in h.changes("exclusion")] == ["warning"]  # centre only
    assert h.messages("subject") == [] or all(m["instruction"] != "leave_area" for m in h.messages("subject"))
    h.send(am.fix(T0 + 10, X0 + 230, Y0, acc=50.0), T0 + 11)
    change = h.effects.changes[-1]
    assert change.alert.certainty == "possible" and change.alert.level == "alarm"


def test_one_fix_deep_inside_is_not_yet_an_alarm_but_starts_pursuit():
    """A single sure-looking fix inside asks for faster fixes; the second one inside alarms."""
    h, am = ban(), DeviceScript("AM-1001")
    h.send(am.fix(T0, X0 - 1000, Y0), T0 + 1)
    h.send(am.fix(T0 + 60, X0, Y0, acc=5.0), T0 + 61)  # 1 km in a minute: a plausible car
    assert [(lvl, st) for _, _, lvl, st in h.changes("exclusion")] == [("warning", "open")]
    assert [m["interval_s"] for m in h.messages("device")] == [15]
    assert all(m["instruction"] != "leave_area" for m in h.messages("subject"))
    h.send(am.fix(T0 + 75, X0 + 10, Y0, acc=5.0), T0 + 76)
    assert [(lvl, st) for _, _, lvl, st in h.changes("exclusion")] == [("warning", "open"), ("alarm", "open")]
    assert any(m["instruction"] == "leave_area" for m in h.messages("subject"))


def test_a_lone_multipath_fix_with_sparse_fixes_is_never_an_alarm():
    """One fix 500 m off into the zone between fixes a minute apart: a centre warning, closed as
    unconfirmed by the next fix; no alarm, no prompt to the offender."""
    h, am = ban(), DeviceScript("AM-1001")
    for i in range(3):
        h.send(am.fix(T0 + 60 * i, X0 - 600, Y0), T0 + 60 * i + 1)
    h.send(am.fix(T0 + 180, X0, Y0, acc=8.0), T0 + 181)
    for i in range(4, 7):
        h.send(am.fix(T0 + 60 * i, X0 - 600, Y0), T0 + 60 * i + 1)
    assert [(lvl, st) for _, _, lvl, st in h.changes("exclusion")] == [("warning", "open"), ("warning", "closed")]
    assert "not confirmed" in h.engine.alerts.alerts[h.changes("exclusion")[0][0]].history[-1].note
    assert [m["interval_s"] for m in h.messages("device")] == [15, 60]
    assert all(m["instruction"] != "leave_area" for m in h.messages("subject"))


def test_multipath_jump_into_a_zone_is_ignored():
    """A single 500 m jump into a ban zone between consistent fixes raises nothing."""
    h, am = ban(), DeviceScript("AM-1001")
    for i in range(5):
        h.send(am.fix(T0 + 5 * i, X0 - 500 - i, Y0), T0 + 5 * i + 1)
    h.send(am.fix(T0 + 25, X0, Y0), T0 + 26)  # 500 m in 5 s = 100 m/s
    h.send(am.fix(T0 + 30, X0 - 506, Y0), T0 + 31)
    assert h.changes("exclusion") == []
    assert h.engine.stats.jumps == 1


def test_circle_zone_alarm_carries_certainty_observed_when_deep_inside():
    """Deep inside a circular ban zone with a good fix is 'observed'."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z-c", "circle": circle(X0, Y0, 500)}]))
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0 + 100, Y0, acc=5.0), T0 + 1)
    h.send(am.fix(T0 + 10, X0 + 100, Y0, acc=5.0), T0 + 11)
    change = h.effects.changes[-1]
    assert change.alert.level == "alarm"
    assert change.alert.certainty == "observed"
    assert change.alert.distance_m is not None and change.alert.distance_m < -300


def _utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def curfew() -> Harness:
    return Harness.build(orders_doc(
        inclusion=[{"id": "Z-home", "circle": circle(X0, Y0, 150),
                    "schedule": [{"days": "mon-sun", "from": "22:00", "to": "06:00", "tz": "Europe/Amsterdam"}]}],
        valid_from=_utc(2026, 10, 1, 0), valid_until=_utc(2027, 6, 1, 0)))


def test_not_home_at_start_of_curfew_raises_after_grace():
    """Outside the home zone at 22:00 local: an inclusion alarm once the grace period has passed."""
    h, am = curfew(), DeviceScript("AM-1001")
    start = _utc(2026, 11, 20, 21)  # 22:00 CET
    h.send(am.fix(start + 60, X0 + 2000, Y0), start + 61)
    assert h.changes("inclusion") == []
    h.send(am.fix(start + 400, X0 + 2000, Y0), start + 401)
    (change,) = h.effects.changes
    assert change.alert.kind == "inclusion" and "not home" in change.alert.detail
    assert change.alert.episode_start == start


def test_leaving_during_curfew_and_coming_back_clears():
    """Home at 22:30, out at 23:00 for an hour, back: one alarm, cleared on return, still open."""
    h, am = curfew(), DeviceScript("AM-1001")
    base = _utc(2026, 11, 20, 21, 30)
    t = base
    for _ in range(3):
        h.send(am.fix(t, X0, Y0), t + 1)
        t += 60
    for _ in range(10):
        h.send(am.fix(t, X0 + 1500, Y0), t + 1)
        t += 60
    for _ in range(3):
        h.send(am.fix(t, X0 + 10, Y0), t + 1)
        t += 60
    assert h.handling("inclusion") == [("alarm", "open", "active"), ("alarm", "open", "cleared")]
    assert "left during curfew" in h.effects.changes[0].alert.detail


def test_curfew_window_follows_the_autumn_dst_change():
    """On the night CEST ends (2026-10-25) the 22:00-06:00 window is nine hours long in UTC."""
    h, am = curfew(), DeviceScript("AM-1001")
    # 05:30 CET on 25 Oct = 04:30Z: inside the window; 06:10 CET = 05:10Z: outside it.
    h.send(am.fix(_utc(2026, 10, 25, 4, 20), X0 + 3000, Y0), _utc(2026, 10, 25, 4, 21))
    h.send(am.fix(_utc(2026, 10, 25, 4, 30), X0 + 3000, Y0), _utc(2026, 10, 25, 4, 31))
    raised = h.changes("inclusion")
    assert raised and raised[0][3] == "open"
    assert h.effects.changes[0].alert.episode_start == _utc(2026, 10, 24, 20)  # 22:00 CEST
    h.send(am.fix(_utc(2026, 10, 25, 5, 10), X0 + 3000, Y0), _utc(2026, 10, 25, 5, 11))
    assert h.handling("inclusion")[-1] == ("alarm", "open", "cleared")


def test_curfew_window_follows_the_spring_dst_change():
    """On 2027-03-28 (CET to CEST) 05:30 local is 03:30Z and still in the window, 06:10 is not."""
    h, am = curfew(), DeviceScript("AM-1001")
    h.send(am.fix(_utc(2027, 3, 28, 3, 30), X0 + 3000, Y0), _utc(2027, 3, 28, 3, 31))
    assert h.changes("inclusion")[0][3] == "open"
    h.send(am.fix(_utc(2027, 3, 28, 4, 10), X0 + 3000, Y0), _utc(2027, 3, 28, 4, 11))
    assert h.handling("inclusion")[-1] == ("alarm", "open", "cleared")


def test_orders_not_valid_at_device_time_are_not_evaluated():
    """A fix before the order's validity raises nothing even deep in a ban zone."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}],
                                 valid_from=T0 + 3600))
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0, Y0), T0 + 1)
    assert h.changes("exclusion") == []
