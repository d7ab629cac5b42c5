"""Approved crossings: corridors and time windows cap alerts at info, recorded, never hidden."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from devices.timeutil import format_time
from engine.core.config import EngineConfig, RuleConfig
from engine.core.orders_load import load_orders
from engine.core.testing import (
    ORIGIN,
    T0,
    DeviceScript,
    Harness,
    circle,
    lonlat,
    orders_doc,
    square,
)
from engine.errors import OrdersError
from engine.evidence.orderdoc import order_document, zones_geojson

X0, Y0 = ORIGIN
ROAD_Y = Y0 + 500  # the motorway runs 500 m north of her home, through her 800 m ban zone
OFF = EngineConfig(rules=replace(RuleConfig(), corridors_enabled=False))


def corridor(**extra: Any) -> dict[str, Any]:
    line = [list(lonlat(X0 - 8000, ROAD_Y)), list(lonlat(X0 + 8000, ROAD_Y))]
    return {"id": "C-A16", "line": line, "width_m": 200, **extra}


def doc(
    *, corridors: list | None = None, windows: list | None = None, proximity: bool = False
) -> dict[str, Any]:
    d = orders_doc(
        exclusion=[{"id": "Z-home", "circle": circle(X0, Y0, 800), "protected_person": "P-1"}],
        proximity=[{"protected_person": "P-1", "alert_m": 600, "warn_m": 1200, "critical_m": 550}]
        if proximity
        else None,
    )
    d["orders"][0]["corridors"] = corridors if corridors is not None else [corridor()]
    d["orders"][0]["time_windows"] = windows or []
    return d


def drive(
    h: Harness,
    *,
    stop_at: float | None = None,
    stop_s: float = 0.0,
    exit_at: float | None = None,
    victim: bool = False,
    n: int = 40,
    acc: float = 8.0,
) -> float:
    """East along the motorway at 30 m/s, a fix every 15 s; optionally stop, or turn off south."""
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    t, x, y, stopped = T0, X0 - 6000.0, ROAD_Y, 0.0
    for i in range(n):
        if victim and i % 4 == 0:
            h.send(vd.fix(t - 3, X0, Y0, acc=10.0), t - 2)
        h.send(am.fix(t, x, y, acc=acc), t + 1)
        t += 15
        if stop_at is not None and x >= stop_at and stopped < stop_s:
            stopped += 15  # standing on the hard shoulder, a few metres of GPS noise
            x += 3.0 if i % 2 else -3.0
        elif exit_at is not None and x >= exit_at:
            y -= 20 * 15  # turned off the motorway towards her home
        else:
            x += 30 * 15
    return t


def excl(h: Harness) -> list:
    return [c for c in h.effects.changes if c.alert.kind == "exclusion"]


def test_without_a_corridor_the_motorway_through_her_ban_zone_alarms():
    """Baseline: driving through the zone on the motorway is an alarm, she is warned, he is prompted."""
    h = Harness.build(doc(corridors=[]))
    drive(h)
    assert "alarm" in {c.alert.level for c in excl(h)}
    assert h.messages("victim")


def test_moving_through_the_corridor_is_capped_at_info_and_recorded():
    """In the corridor the same drive gives one info alert, noted as suppressed, closed on leaving."""
    h = Harness.build(doc())
    drive(h)
    changes = excl(h)
    assert {c.alert.level for c in changes} == {"info"}
    assert (changes[0].change, changes[-1].change) == ("raised", "close")
    alert = changes[0].alert
    assert "suppressed: in corridor C-A16" in alert.detail
    assert "suppressed: in corridor C-A16" in alert.history[0].note
    assert h.messages("victim") == []
    assert h.messages("subject") == []  # no approaching_zone, no leave_area at info
    centre = [m for m in h.messages("centre") if m["kind"] == "exclusion"]
    assert centre and centre[0]["level"] == "info"  # the centre still sees it


def test_stopping_in_the_corridor_brings_the_alarm_back_after_max_dwell():
    """He stops on the hard shoulder inside her zone: after 120 s the alert rises to alarm."""
    h = Harness.build(doc())
    drive(h, stop_at=X0 - 300, stop_s=300)
    changes = excl(h)
    assert changes[0].alert.level == "info"
    rise = next(c for c in changes if c.alert.level == "alarm")
    assert rise.change == "level" and rise.alert.alert_id == changes[0].alert.alert_id
    assert 120 < rise.alert.device_time - changes[0].alert.device_time <= 120 + 3 * 15 + 60
    after = changes[changes.index(rise) :]
    assert {c.alert.level for c in after} == {"alarm"}  # driving on again never lowers it
    assert [m["level"] for m in h.messages("victim")][:1] == ["alarm"]


def test_a_short_traffic_stop_stays_capped():
    """Standing still for one minute (less than max_dwell_s) keeps the cap."""
    h = Harness.build(doc())
    drive(h, stop_at=X0 - 300, stop_s=60)
    assert {c.alert.level for c in excl(h)} == {"info"}


def test_leaving_the_corridor_inside_the_zone_alarms_at_once():
    """He turns off the motorway towards her home: the first fix off the corridor is an alarm."""
    h = Harness.build(doc())
    drive(h, exit_at=X0 - 200, n=30)
    changes = excl(h)
    assert changes[0].alert.level == "info"
    rise = next(c for c in changes if c.alert.level == "alarm")
    assert (
        rise.change == "level" and rise.alert.device_time <= changes[0].alert.device_time + 3 * 15
    )
    assert h.messages("victim")


def test_proximity_is_capped_too_and_each_suppressed_rise_is_recorded():
    """Passing 500 m from her at home: info throughout, raised 'would be alarm', updated 'would be critical'."""
    h = Harness.build(doc(proximity=True))
    drive(h, victim=True)
    prox = [c for c in h.effects.changes if c.alert.kind == "proximity"]
    assert {c.alert.level for c in prox} == {"info"}
    assert prox[0].change == "raised" and "would be alarm" in prox[0].alert.history[0].note
    notes = [c.alert.history[-1].note for c in prox if c.change == "update"]
    assert notes and all(n.startswith("suppressed: in corridor C-A16") for n in notes)
    assert "would be critical" in notes[-1]
    assert h.messages("victim") == []


def test_switching_corridors_off_restores_the_normal_levels():
    """corridors_enabled=False (the measurement baseline) ignores the order's corridors."""
    h = Harness.build(doc(), OFF)
    drive(h)
    assert "alarm" in {c.alert.level for c in excl(h)}


def test_a_corridor_outside_its_schedule_does_not_apply():
    """A school-run corridor mon-fri 07:00-09:00 does not cover a drive at noon."""
    sched = [{"days": "mon-fri", "from": "07:00", "to": "09:00", "tz": "Europe/Amsterdam"}]
    h = Harness.build(doc(corridors=[corridor(schedule=sched)]))
    drive(h)
    assert "alarm" in {c.alert.level for c in excl(h)}


def test_a_coarse_fix_in_the_corridor_is_not_capped():
    """A cell fix (300 m) 'on' the motorway does not show he is on it: normal levels."""
    h = Harness.build(doc())
    drive(h, acc=300.0)
    assert "alarm" in {c.alert.level for c in excl(h)}


def test_a_polygon_corridor_works_like_a_line():
    """A corridor given as a polygon (a bus route's strip) caps the same way."""
    strip = {
        "id": "C-bus",
        "polygon": [
            list(lonlat(X0 + dx, ROAD_Y + dy))
            for dx, dy in ((-8000, -100), (8000, -100), (8000, 100), (-8000, 100))
        ],
    }
    h = Harness.build(doc(corridors=[strip]))
    drive(h)
    assert {c.alert.level for c in excl(h)} == {"info"}
    assert "suppressed: in corridor C-bus" in excl(h)[0].alert.detail


COURT = (X0 + 3000, Y0 - 3000)


def court_doc(area: bool) -> dict[str, Any]:
    window = {
        "id": "W-hearing",
        "from": format_time(T0 - 600),
        "to": format_time(T0 + 3600),
        "reason": "court hearing",
    }
    if area:
        window["area"] = {"circle": circle(*COURT, 300)}
    d = orders_doc(proximity=[{"protected_person": "P-1", "alert_m": 600, "warn_m": 1200}])
    d["orders"][0]["time_windows"] = [window]
    return d


def meet(h: Harness, *, at: tuple[float, float], start: float, minutes: int = 10) -> None:
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    for i in range(minutes):
        t = start + 60 * i
        h.send(vd.fix(t, at[0] + 20, at[1], acc=10.0), t + 1)
        h.send(am.fix(t + 5, at[0] - 20, at[1], acc=8.0), t + 6)


@pytest.mark.parametrize("area", [True, False])
def test_both_at_a_court_hearing_is_info_only(area: bool):
    """In the hearing's time window (and its area, if given) 40 m apart is info, not critical."""
    h = Harness.build(court_doc(area))
    meet(h, at=COURT, start=T0)
    prox = [c for c in h.effects.changes if c.alert.kind == "proximity"]
    assert prox and {c.alert.level for c in prox} == {"info"}
    assert "suppressed: in time window W-hearing (court hearing" in prox[0].alert.detail
    assert h.messages("victim") == []


def test_outside_the_hearing_area_the_window_does_not_apply():
    """Meeting her 5 km from the court during the hearing's window is the normal critical alert."""
    h = Harness.build(court_doc(area=True))
    meet(h, at=(X0 - 2000, Y0 + 2000), start=T0)
    assert "critical" in {c.alert.level for c in h.effects.changes if c.alert.kind == "proximity"}


def test_after_the_window_the_normal_levels_return():
    """Still together after the window closes: the info alert rises to critical."""
    h = Harness.build(court_doc(area=False))
    meet(h, at=COURT, start=T0 + 3000, minutes=20)
    levels = [c.alert.level for c in h.effects.changes if c.alert.kind == "proximity"]
    assert levels[0] == "info" and "critical" in levels


def test_a_path_crossing_between_fixes_in_a_corridor_is_capped_too():
    """The sparse-fix path through a small zone on the corridor is info, like a fix would be."""
    d = orders_doc(exclusion=[{"id": "Z-school", "polygon": square(X0, ROAD_Y, 60)}])
    d["orders"][0]["corridors"] = [corridor()]
    h = Harness.build(d)
    am = DeviceScript("AM-1001")
    for i in range(8):
        t = T0 + 30 * i
        h.send(am.fix(t, X0 - 210 - 420 * 4 + 420 * i, ROAD_Y, spd=14.0), t + 1)
    (raised, *_) = excl(h)
    assert raised.alert.level == "info" and raised.alert.certainty == "likely"
    assert (
        "path crossed zone between fixes" in raised.alert.detail
        and "suppressed" in raised.alert.detail
    )


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"corridors": [{"id": "C", "line": [[4.4, 51.9], [4.5, 51.9]]}]}, "width_m"),
        ({"corridors": [{"id": "C", "line": [[4.4, 51.9]], "width_m": 100}]}, "at least two"),
        ({"corridors": [{"id": "C", "line": [[4.4, 51.9], [4.5, 51.9]], "width_m": 0}]}, "width_m"),
        (
            {
                "corridors": [
                    {
                        "id": "C",
                        "line": [[4.4, 51.9], [4.5, 51.9]],
                        "width_m": 90,
                        "max_dwell_s": -1,
                    }
                ]
            },
            "max_dwell_s",
        ),
        ({"corridors": [{"id": "C"}]}, "give a 'line'"),
        ({"corridors": [corridor(), corridor()]}, "duplicate corridor"),
        (
            {
                "time_windows": [
                    {
                        "id": "W",
                        "from": "2026-11-18T12:00:00Z",
                        "to": "2026-11-18T11:00:00Z",
                        "reason": "court",
                    }
                ]
            },
            "after 'from'",
        ),
        (
            {
                "time_windows": [
                    {"id": "W", "from": "2026-11-18T10:00:00Z", "to": "2026-11-18T11:00:00Z"}
                ]
            },
            "reason",
        ),
        (
            {
                "time_windows": [
                    {
                        "id": "W",
                        "from": "2026-11-01T10:00:00Z",
                        "to": "2026-11-18T11:00:00Z",
                        "reason": "court",
                    }
                ]
            },
            "7 days",
        ),
    ],
)
def test_bad_corridors_and_windows_fail_at_load_naming_the_problem(patch: dict, message: str):
    """A misconfigured corridor or window is refused when the orders are loaded."""
    d = orders_doc()
    d["orders"][0].update(patch)
    with pytest.raises(OrdersError, match=message):
        load_orders(d)


def test_corridor_is_buffered_to_its_width_and_exported_with_the_order():
    """A 200 m corridor is 200 m wide in metres; the order document and GeoJSON carry it."""
    book = load_orders(doc())
    order = book.orders["O-1"]
    h = Harness.build(doc())
    h.engine.crossings.sync(h.engine.book)
    minx, miny, maxx, maxy = h.engine.index.bounds("O-1/corridor/C-A16")
    assert maxy - miny == pytest.approx(200, abs=1) and maxx - minx == pytest.approx(16_200, abs=5)
    document = order_document(order)
    assert (
        document["corridors"][0]["width_m"] == 200
        and document["corridors"][0]["max_dwell_s"] == 120
    )
    roles = [f["properties"]["role"] for f in zones_geojson(document)["features"]]
    assert roles == ["exclusion", "corridor"]
