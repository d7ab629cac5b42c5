"""Silence is a signal: what happened during an outage is alerted late, and the gap is reported."""

from __future__ import annotations

import json

from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, circle, orders_doc

X0, Y0 = ORIGIN
OUTAGE_S = 1800.0


def test_violation_entirely_inside_a_30_minute_outage_is_alerted_late_with_the_gap():
    """He enters and leaves a ban zone while the broker is down; the burst brings a late alarm
    (cleared, since he left; open for the centre) and one reception-gap record for his device with gap_s."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 300)}]))
    am = DeviceScript("AM-1001")
    for i in range(5):  # live, well outside the zone
        t = T0 + 60 * i
        h.send(am.fix(t, X0 - 2000, Y0), t + 1)
    last_live = T0 + 240
    assert h.effects.changes == []
    # outage: the ankle monitor buffers a fix a minute; he walks through the zone and out again
    burst = []
    for k in range(1, 31):
        t = last_live + 60 * k
        x = X0 - 2000 + 130 * k  # through the zone between minutes 13 and 18
        burst.append(json.loads(am.fix(t, x, Y0)[1]))
    back = last_live + OUTAGE_S + 30
    h.send(("em/dev/AM-1001/fix", json.dumps(burst).encode()), back)

    gap = [c for c in h.effects.changes if c.alert.kind == "signal_loss"]
    assert [(c.change, c.alert.level) for c in gap] == [("raised", "info"), ("close", "info")]
    record = gap[0].alert
    assert record.target == "AM-1001/gap" and record.late
    assert (
        f"gap_s {back - last_live:.0f}" in record.detail and "29 buffered fixes" in record.detail
    )  # the newest one is not late
    assert record.episode_start == last_live

    excl = [c for c in h.effects.changes if c.alert.kind == "exclusion"]
    assert [c.change for c in excl] == ["raised", "level", "clear"]
    assert excl[-1].alert.state == "open" and excl[-1].alert.cleared_at is not None
    alarm = excl[1].alert
    assert alarm.late and alarm.level == "alarm" and excl[0].alert.level == "warning"
    assert last_live < alarm.device_time < last_live + OUTAGE_S  # it happened inside the outage
    assert h.engine.stats.late == 29
    assert h.effects.changes.index(gap[0]) < h.effects.changes.index(excl[0])  # gap reported first


def test_short_delays_are_not_reported_as_gaps():
    """A burst two minutes late is evaluated (and marked late) without a gap record."""
    h = Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 300)}]))
    am = DeviceScript("AM-1001")
    h.send(am.fix(T0, X0 - 2000, Y0), T0 + 1)
    burst = [json.loads(am.fix(T0 + 30 * k, X0 - 2000 + 10 * k, Y0)[1]) for k in range(1, 5)]
    h.send(("em/dev/AM-1001/fix", json.dumps(burst).encode()), T0 + 240)
    assert h.changes("signal_loss") == []
    assert h.engine.stats.late >= 1
