"""Dynamic proximity: graded levels in one alert, two-tier victim warning, silence, privacy."""

from __future__ import annotations

import json

from engine.core.config import EngineConfig, RuleConfig
from engine.core.rules.proximity import cover_window
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, orders_doc

X0, Y0 = ORIGIN
PROX = [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000, "critical_m": 200}]


def approach(h: Harness, *, speed: float = 1.4, start: float = 5000, stop_at: float = 100,
             victim_every: int = 6) -> tuple[DeviceScript, DeviceScript, float]:
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    t, x, i = T0, X0 - start, 0
    while x < X0 - stop_at:
        h.send(am.fix(t, x, Y0), t + 0.5)
        if i % victim_every == 0:
            h.send(vd.fix(t + 1, X0, Y0, acc=10.0), t + 1.5)
        t += 10
        x += speed * 10
        i += 1
    return am, vd, t


def test_walking_approach_rises_warning_alarm_critical_in_one_alert():
    """A walking approach moves one alert from warning to alarm to critical; the id never changes."""
    h = Harness.build(orders_doc(proximity=PROX))
    approach(h)
    changes = h.changes("proximity")
    assert [lvl for _, _, lvl, _ in changes] == ["warning", "alarm", "critical"]
    assert len({c[0] for c in changes}) == 1


def test_victim_is_warned_at_alarm_not_at_warning():
    """Two-tier response: the centre alone hears the warning; the victim hears alarm and critical."""
    h = Harness.build(orders_doc(proximity=PROX))
    approach(h)
    victim = h.messages("victim")
    assert [m["level"] for m in victim] == ["alarm", "critical"]
    assert all(m["_topic"] == "em/alerts/victim/VD-2001" for m in victim)
    assert victim[0]["near"] == "within 2 km"  # warned before he is within 1 km (ALERT_LEAD_S)


def test_offender_channel_never_carries_victim_position_distance_or_bearing():
    """With ``offender_prompt: auto`` the ankle monitor is told to contact the centre; everything
    sent on em/cmd/subject/... holds only v, t, instruction and level."""
    doc = orders_doc(proximity=PROX)
    doc["orders"][0]["offender_prompt"] = "auto"
    h = Harness.build(doc)
    approach(h)
    prompts = h.messages("subject")
    assert [p["level"] for p in prompts] == ["alarm", "critical"], "one prompt per rise"
    for p in prompts:
        assert set(p) == {"v", "t", "instruction", "level", "_topic"}
        text = json.dumps(p)
        for word in ("lat", "lon", "distance", "bearing", "near", "P-1", "VD-2001"):
            assert word not in text


def test_fast_approach_is_an_alarm_before_alert_distance():
    """A car closing at 14 m/s inside warn_m is an alarm (contact within minutes), before alert_m."""
    h = Harness.build(orders_doc(proximity=PROX))
    approach(h, speed=14.0, start=6000, stop_at=1500, victim_every=1)
    levels = [lvl for _, _, lvl, _ in h.changes("proximity")]
    assert "alarm" in levels
    first_alarm = next(c for c in h.effects.changes if c.alert.level == "alarm")
    assert first_alarm.alert.distance_m is not None and first_alarm.alert.distance_m > 1000
    assert first_alarm.alert.time_to_contact_s is not None


def test_moving_away_clears_after_dwell_without_flapping():
    """After the approach he leaves: the level falls only after dwell and the condition clears
    once; the alarm stays in the centre's queue."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd, t = approach(h, stop_at=800)
    x = X0 - 800
    for i in range(400):
        x -= 14
        h.send(am.fix(t, x, Y0), t + 0.5)
        if i % 3 == 0:
            h.send(vd.fix(t + 1, X0, Y0, acc=10.0), t + 1.5)
        t += 10
    conditions = [cond for _, _, cond in h.handling("proximity")]
    assert conditions.count("cleared") == 1 and conditions[-1] == "cleared"
    assert h.handling("proximity")[-1][1] == "open"
    assert len({c[0] for c in h.changes("proximity")}) == 1


def test_silent_victim_device_while_offender_approaches_is_reported():
    """Her device stops reporting; he comes near her last known place: device_silent, not safety."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    h.send(vd.fix(T0, X0, Y0), T0 + 1)
    t = T0 + 600  # her last fix is 10 minutes old from here on
    for x in range(8000, 2000, -500):
        h.send(am.fix(t, X0 - x, Y0), t + 1)
        t += 60
    silent = [c for c in h.effects.changes if c.alert.kind == "device_silent"]
    assert silent and silent[0].alert.certainty == "possible"
    assert silent[0].alert.level in ("alarm", "critical")
    assert h.changes("proximity") == []


def test_poor_accuracy_only_possible_gives_a_centre_warning_not_a_victim_alarm():
    """Cell fixes (1500 m accuracy) 2 km away, twice: possibly within alert_m, a centre warning only."""
    h = Harness.build(orders_doc(proximity=[{"protected_person": "P-1", "alert_m": 1000, "warn_m": 1500}]))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    h.send(vd.fix(T0, X0, Y0, acc=10.0), T0 + 1)
    h.send(am.fix(T0 + 5, X0 - 2000, Y0, acc=1500.0, src="cell"), T0 + 6)
    assert h.effects.changes == []  # one coarse fix that cannot rule it out is not yet worth a look
    h.send(am.fix(T0 + 65, X0 - 2000, Y0, acc=1500.0, src="cell"), T0 + 66)
    (change,) = h.effects.changes
    assert change.alert.level == "warning" and change.alert.certainty == "possible"
    assert h.messages("victim") == []


def test_by_default_an_operator_prompts_the_offender_not_the_engine():
    """``offender_prompt`` defaults to operator: the approach sends his ankle monitor no prompt."""
    h = Harness.build(orders_doc(proximity=PROX))
    approach(h)
    assert "critical" in [lvl for _, _, lvl, _ in h.changes("proximity")]
    assert h.messages("subject") == []


def test_pursuit_mode_raises_her_fix_rate_and_returns_to_normal():
    """At warning her device is told to report every 15 s, after resolution back to 60 s; his
    device is never told anything because of her (random periods only, none in this hour)."""
    config = EngineConfig(rules=RuleConfig(pursuit_cover_p=0.0))
    h = Harness.build(orders_doc(proximity=PROX), config=config)
    am, vd, t = approach(h, stop_at=2500)
    x = X0 - 2500
    for i in range(300):
        x -= 14
        h.send(am.fix(t, x, Y0), t + 0.5)
        if i % 3 == 0:
            h.send(vd.fix(t + 1, X0, Y0), t + 1.5)
        t += 10
    cmds = [(m["_topic"].rsplit("/", 1)[1], m["interval_s"]) for m in h.messages("device")]
    assert cmds == [("VD-2001", 15), ("VD-2001", 60)]


def test_an_order_may_warn_the_victim_from_warning_up():
    """Two-tier is the default; an order with victim_warn_level 'warning' warns her earlier."""
    doc = orders_doc(proximity=PROX)
    doc["orders"][0]["victim_warn_level"] = "warning"
    h = Harness.build(doc)
    approach(h)
    assert [m["level"] for m in h.messages("victim")] == ["warning", "alarm", "critical"]


def hover(h: Harness, am: DeviceScript, vd: DeviceScript, t: float, dists: list[float],
          acc: float = 10.0, every_s: float = 20.0) -> float:
    """He stands at each distance in turn for one fix; she is indoors (``acc`` both ways)."""
    for i, d in enumerate(dists):
        h.send(am.fix(t, X0 - d, Y0, acc=acc, src="wifi"), t + 0.5)
        if i % 2 == 0:
            h.send(vd.fix(t + 1, X0, Y0, acc=acc, src="wifi"), t + 1.5)
        t += every_s
    return t


def test_noise_around_alert_m_does_not_flap_the_level():
    """Wi-Fi fixes (50 m) of a man standing near alert_m wander up to 140 m past it for minutes
    at a time: the alert rises to alarm once and stays there (the fall's hysteresis: 50 m plus
    both radii), one history line per level change."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd, t = approach(h, stop_at=1000)
    wander = [950, 1080, 1120, 1060, 1140, 1090, 1110, 1070, 1130, 980] * 3
    hover(h, am, vd, t, wander, acc=50.0)
    levels = [lvl for _, _, lvl, _ in h.changes("proximity")]
    assert levels == ["warning", "alarm"]
    (alert,) = h.engine.alerts.alerts.values()
    assert [e.action for e in alert.history] == ["raised", "level"]
    assert [m["level"] for m in h.messages("victim")] == ["alarm"]


def test_a_level_falls_after_clear_separation_and_dwell_and_she_hears_it():
    """He backs off to 1,600 m (well past alert_m and both radii) and stays: after the dwell the
    alert falls to warning, once; she hears the lower level only then, and alarm again when he
    comes back."""
    h = Harness.build(orders_doc(proximity=PROX))
    am, vd, t = approach(h, stop_at=900)
    t = hover(h, am, vd, t, [900] * 8)
    t = hover(h, am, vd, t, [1600] * 5)  # 100 s: shorter than the dwell
    assert [lvl for _, _, lvl, _ in h.changes("proximity")] == ["warning", "alarm"]
    t = hover(h, am, vd, t, [1600] * 6)
    assert [lvl for _, _, lvl, _ in h.changes("proximity")] == ["warning", "alarm", "warning"]
    hover(h, am, vd, t, [900] * 3)
    assert [lvl for _, _, lvl, _ in h.changes("proximity")][-1] == "alarm"
    assert [m["level"] for m in h.messages("victim")] == ["alarm", "alarm"]


def test_the_offenders_random_pursuit_periods_are_seeded_by_subject_and_hour():
    """cover_window: about the configured share of hours have one period, the same every call,
    inside its hour; his device hears set_interval with an ``until`` at its start."""
    hours = [cover_window("S-1", T0 + k * 3600 + 1, 3600.0, 0.5, 900.0) for k in range(400)]
    assert hours == [cover_window("S-1", T0 + k * 3600 + 1, 3600.0, 0.5, 900.0) for k in range(400)]
    with_period = [(s, e) for s, e in hours if s != float("inf")]
    assert 0.4 < len(with_period) / len(hours) < 0.6
    assert all(e - s == 900.0 and (s // 3600) == ((e - 1) // 3600) for s, e in with_period)
    assert hours != [cover_window("S-2", T0 + k * 3600 + 1, 3600.0, 0.5, 900.0) for k in range(400)]
