"""Warning her early, pursuit on zone entries, forewarning limits, Bluetooth contact.

The victim is warned earlier when the time to contact is short, at a configurable level; pursuit
mode also starts on a zone entry; the forewarning of an approaching zone is never given for a
zone around her (it would tell him where she is) and only once per approach; a Bluetooth contact
is critical whatever GPS says about their distance.
"""

from __future__ import annotations

from dataclasses import replace

from engine.core.config import EngineConfig, RuleConfig
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc

X0, Y0 = ORIGIN
PROX = [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000, "critical_m": 200}]


def car_approach(h: Harness, stop_at: float) -> None:
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    t, x = T0, X0 - 6000.0
    while x < X0 - stop_at:
        h.send(vd.fix(t - 1, X0, Y0, acc=10.0), t - 0.5)
        h.send(am.fix(t, x, Y0), t + 0.5)
        t += 10
        x += 14 * 10


def test_victim_is_warned_before_alert_distance_when_contact_is_imminent():
    """A car closing fast inside warn_m: the victim is warned while he is still beyond alert_m."""
    h = Harness.build(orders_doc(proximity=PROX))
    car_approach(h, stop_at=1500)
    warned = h.messages("victim")
    assert warned and warned[0]["level"] == "alarm"
    first_alarm = next(c.alert for c in h.effects.changes if c.alert.level == "alarm")
    assert first_alarm.distance_m is not None and first_alarm.distance_m > 1000


def test_victim_warning_level_is_configurable():
    """With victim_warn_level='warning' she hears the first warning too."""
    cfg = EngineConfig(rules=replace(RuleConfig(), victim_warn_level="warning"))
    h = Harness.build(orders_doc(proximity=PROX), cfg)
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    h.send(vd.fix(T0, X0, Y0, acc=10.0), T0 + 1)
    h.send(am.fix(T0 + 5, X0 - 2500, Y0), T0 + 6)
    assert [m["level"] for m in h.messages("victim")] == ["warning"]


def test_pursuit_mode_starts_on_a_zone_entry_too():
    """Entering a ban zone commands the ankle monitor to report every 15 s."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 300)}]))
    am = DeviceScript("AM-1001")
    for i in range(6):
        t = T0 + 30 * i
        h.send(am.fix(t, X0 - 600 + 120 * i, Y0), t + 1)
    cmds = [(m["_topic"].rsplit("/", 1)[1], m["interval_s"]) for m in h.messages("device")]
    assert ("AM-1001", 15) in cmds


def test_no_approaching_zone_hint_for_a_zone_around_the_victim():
    """Near a ban zone that protects her home he gets no forewarning: it would reveal where she lives."""
    zone = {"id": "Z-home", "circle": circle(X0, Y0, 300), "protected_person": "P-1"}
    h = Harness.build(orders_doc(exclusion=[zone]))
    am = DeviceScript("AM-1001")
    for i in range(8):
        t = T0 + 20 * i
        h.send(am.fix(t, X0 - 700 + 50 * i, Y0), t + 1)  # from 400 m to 50 m outside the edge
    assert [p for p in h.messages("subject") if p["instruction"] == "approaching_zone"] == []


def test_forewarning_is_given_once_per_approach():
    """Lingering near a static ban zone gives one approaching_zone prompt, not one per fix."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z-station", "circle": circle(X0, Y0, 300)}]))
    am = DeviceScript("AM-1001")
    for i in range(10):
        t = T0 + 20 * i
        h.send(am.fix(t, X0 - 400 - (5 if i % 2 else 0), Y0), t + 1)  # 100 m from the edge
    hints = [p for p in h.messages("subject") if p["instruction"] == "approaching_zone"]
    assert len(hints) == 1 and set(hints[0]) == {"v", "t", "instruction", "level", "_topic"}


def test_bluetooth_contact_is_critical_while_gps_says_they_are_far_apart():
    """GPS puts him 4 km away (stale or spoofed); her device hears his monitor: critical, observed."""
    h = Harness.build(orders_doc(proximity=PROX))
    h.send(DeviceScript("VD-2001").fix(T0, X0, Y0), T0 + 1)
    h.send(DeviceScript("AM-1001").fix(T0 + 2, X0 - 4000, Y0), T0 + 3)
    assert h.changes("proximity") == []
    h.send(
        DeviceScript("VD-2001", seq=100).event(T0 + 10, "ble_seen", peer="AM-1001", rssi=-70),
        T0 + 11,
    )
    (change,) = [c for c in h.effects.changes if c.alert.kind == "proximity"]
    assert (change.alert.level, change.alert.certainty) == ("critical", "observed")
    assert change.alert.device == "VD-2001" and "Bluetooth" in change.alert.detail
    assert [m["level"] for m in h.messages("victim")] == ["critical"]
