"""Device events and health: panic, tamper, battery, silence, Bluetooth contact, duplicates."""

from __future__ import annotations

from engine.core.orders_load import load_orders
from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc

X0, Y0 = ORIGIN
PROX = [{"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000}]


def test_panic_is_critical_at_once_and_confirmed_to_the_victim():
    """A panic press opens a critical alert in the same step, and her device hears it was received."""
    h = Harness.build(orders_doc(proximity=PROX))
    step = h.send(DeviceScript("VD-2001").event(T0, "panic"), T0 + 0.2)
    (change,) = step.changes
    assert (change.alert.kind, change.alert.level, change.alert.protected_person) == ("panic", "critical", "P-1")
    assert [m["message"] for m in h.messages("victim")] == ["Your alarm has been received by the monitoring centre."]


def test_strap_cut_is_critical_and_strap_open_alarm_in_one_alert():
    """Tamper events fold into one alert per device, rising to critical on a cut."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    h.send(am.event(T0, "strap_open"), T0 + 1)
    h.send(am.event(T0 + 5, "strap_open"), T0 + 6)
    h.send(am.event(T0 + 9, "strap_cut"), T0 + 10)
    assert [(lvl, st) for _, _, lvl, st in h.changes("tamper")] == [("alarm", "open"), ("critical", "open")]


def test_battery_that_will_die_during_curfew_is_an_alarm():
    """Low battery draining so it dies during tonight's curfew is an alarm, not just a warning."""
    h = Harness.build(orders_doc(inclusion=[{"id": "Z-home", "circle": circle(X0, Y0, 150), "schedule": [
        {"days": "mon-sun", "from": "22:00", "to": "06:00", "tz": "Europe/Amsterdam"}]}]))
    am = DeviceScript("AM-1001")
    t = T0  # 12:06 CET; at 4 %/h from 14 % it is dead around 15:30, long before a 22:00 curfew
    for i, pct in enumerate([14, 12, 10, 8]):
        h.send(am.fix(t + i * 1800, X0, Y0, batt=pct), t + i * 1800 + 1)
    assert [lvl for _, _, lvl, _ in h.changes("battery")] == ["warning"]
    # the same drain with a 14:00-18:00 curfew dies inside it: alarm
    h2 = Harness.build(orders_doc(inclusion=[{"id": "Z-home", "circle": circle(X0, Y0, 150), "schedule": [
        {"days": "mon-sun", "from": "14:00", "to": "18:00", "tz": "Europe/Amsterdam"}]}]))
    am2 = DeviceScript("AM-1001")
    for i, pct in enumerate([14, 12, 10, 8]):
        h2.send(am2.fix(t + i * 1800, X0, Y0, batt=pct), t + i * 1800 + 1)
    assert "alarm" in [lvl for _, _, lvl, _ in h2.changes("battery")]


def test_charger_connected_closes_battery_alert():
    """Plugging in ends the battery warning, which closes itself (info/warning auto-close)."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    h.send(am.event(T0, "low_battery", batt=10), T0 + 1)
    h.send(am.event(T0 + 60, "charger_connected"), T0 + 61)
    assert h.handling("battery") == [("warning", "open", "active"), ("warning", "closed", "cleared")]
    (closed,) = [a for a in h.engine.alerts.alerts.values() if a.kind == "battery"]
    assert closed.closed_by == "engine" and closed.cleared_at == T0 + 60


def test_healthy_battery_on_a_fix_closes_the_battery_alert_once():
    """A fix with the battery back above the healthy level ends the alert; later fixes change nothing."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0, Y0, batt=12), T0 + 1)
    h.send(am.fix(T0 + 60, X0, Y0, batt=80), T0 + 61)
    h.send(am.fix(T0 + 120, X0, Y0, batt=81), T0 + 121)
    assert [st for _, _, _, st in h.changes("battery")] == ["open", "closed"]
    (resolved,) = [a for a in h.engine.alerts.alerts.values() if a.kind == "battery"]
    assert resolved.history[-1].note == "battery at 80 %"


def test_a_battery_alert_under_an_order_of_a_new_book_is_closed_too():
    """The device rules look for a recovering battery's alert under the orders of the book in
    force (they remember where to look per book): an alert opened after the subject's order
    was replaced is still closed."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0, Y0, batt=80), T0 + 1)  # healthy: looked for under O-1
    renamed = orders_doc()
    renamed["orders"][0]["id"] = "O-2"
    h.engine.set_orders(load_orders(renamed))
    h.send(am.fix(T0 + 60, X0, Y0, batt=12), T0 + 61)
    h.send(am.fix(T0 + 120, X0, Y0, batt=80), T0 + 121)
    assert [(a.order, a.state) for a in h.engine.alerts.alerts.values() if a.kind == "battery"] == [
        ("O-2", "closed")
    ]


def test_silent_ankle_monitor_raises_signal_loss_and_a_new_fix_ends_it():
    """No message for longer than allowed: signal_loss alarm; the next fix clears its condition
    and the alarm stays in the queue for a person to close."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0, Y0), T0 + 1)
    h.tick(T0 + 100)
    assert h.changes("signal_loss") == []
    h.tick(T0 + 200)
    assert [(lvl, st) for _, _, lvl, st in h.changes("signal_loss")] == [("alarm", "open")]
    h.send(am.fix(T0 + 300, X0, Y0), T0 + 301)
    assert h.handling("signal_loss")[-1] == ("alarm", "open", "cleared")


def test_ble_contact_is_critical_proximity_even_without_gps():
    """The victim device hearing the paired ankle monitor is a critical, observed proximity alert."""
    h = Harness.build(orders_doc(proximity=PROX))
    h.send(DeviceScript("VD-2001").event(T0, "ble_seen", peer="AM-1001", rssi=-60), T0 + 1)
    (change,) = h.effects.changes
    assert (change.alert.kind, change.alert.level, change.alert.certainty) == ("proximity", "critical", "observed")
    assert "Bluetooth" in change.alert.detail


def test_duplicate_fixes_are_ignored():
    """The same (device, seq) twice is evaluated once."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}]))
    am = DeviceScript("AM-1001")
    msg = am.fix(T0, X0, Y0)
    h.send(msg, T0 + 1)
    h.send(msg, T0 + 2)  # the repeat must not count as the confirming second fix
    assert h.engine.stats.duplicates == 1
    assert [lvl for _, _, lvl, _ in h.changes("exclusion")] == ["warning"]
    h.send(am.fix(T0 + 10, X0, Y0), T0 + 11)
    assert [lvl for _, _, lvl, _ in h.changes("exclusion")] == ["warning", "alarm"]


def test_malformed_message_is_dead_lettered_and_the_next_one_processed():
    """Bad JSON goes to em/deadletter with its reason; the engine carries on."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}]))
    h.send(("em/dev/AM-1001/fix", b"{not json"), T0)
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0, Y0), T0 + 1)
    h.send(am.fix(T0 + 10, X0, Y0), T0 + 11)
    (dl,) = h.messages("deadletter")
    assert dl["reason"] == "bad_json" and dl["_topic"] == "em/deadletter"
    assert h.engine.stats.rejected["bad_json"] == 1
    assert [lvl for _, _, lvl, _ in h.changes("exclusion")] == ["warning", "alarm"]


def test_only_coarse_positions_for_half_an_hour_is_a_quiet_signal_and_gnss_ends_it():
    """No GNSS event, but 30 minutes of 800 m cell positions: an info signal; GNSS ends it.
    Wi-Fi positions of 150 m all night (a man asleep indoors) raise nothing."""
    h = Harness.build(orders_doc())
    am = DeviceScript("AM-1001")
    for i in range(40):
        h.send(am.fix(T0 + 60 * i, X0, Y0, acc=150.0, src="wifi"), T0 + 60 * i + 1)
    assert h.changes("signal_loss") == []
    for i in range(40, 72):
        h.send(am.fix(T0 + 60 * i, X0, Y0, acc=800.0, src="cell"), T0 + 60 * i + 1)
    (opened,) = [c for c in h.effects.changes if c.alert.kind == "signal_loss"]
    assert opened.alert.level == "info" and "only coarse cell positions" in opened.alert.detail
    h.send(am.fix(T0 + 4400, X0, Y0, acc=8.0), T0 + 4401)
    assert h.handling("signal_loss")[-1] == ("info", "closed", "cleared")
