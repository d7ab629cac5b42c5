"""Tests for devices.health: out-of-order state, events, silence detection, battery runtime."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.health import HealthSnapshot, HealthTracker
from devices.model import DeviceEvent, Fix
from devices.registry import DeviceInfo

T0 = 1795428000.0


def fix(
    t: float,
    arrival: float | None = None,
    *,
    batt: int | None = None,
    strap: Any = None,
    src: Any = "gnss",
    acc: float = 8.0,
) -> Fix:
    return Fix("AM-1", int(t), t, 51.9, 4.4, acc, t + 1 if arrival is None else arrival,
               src=src, batt=batt, strap=strap)  # fmt: skip


def event(t: float, kind: str, arrival: float | None = None, device: str = "AM-1") -> DeviceEvent:
    return DeviceEvent(device, int(t), t, kind, t + 1 if arrival is None else arrival)


class Reg:
    """A minimal registry: what silent_devices needs."""

    def __init__(self, *infos: DeviceInfo) -> None:
        self.infos = infos

    def devices(self) -> tuple[DeviceInfo, ...]:
        return self.infos


def test_unknown_device_snapshot_is_all_unknown() -> None:
    """A device never observed has an empty snapshot."""
    assert HealthTracker().snapshot("X") == HealthSnapshot(
        "X", None, None, None, None, None, None, False, False, False
    )


def test_latest_fix_sets_state() -> None:
    """The newest fix's battery, strap, source and accuracy are the device's state."""
    h = HealthTracker()
    assert h.observe_fix(fix(T0, batt=80, strap="ok", src="gnss", acc=5.0))
    assert h.observe_fix(fix(T0 + 60, batt=79, strap="ok", src="wifi", acc=40.0))
    s = h.snapshot("AM-1")
    assert (s.last_fix_t, s.last_seen_arrival, s.batt, s.strap, s.src, s.acc) == (
        T0 + 60, T0 + 61, 79, "ok", "wifi", 40.0,
    )  # fmt: skip


def test_older_fix_does_not_overwrite_newer_state() -> None:
    """A late-arriving older fix updates last_seen_arrival but not the device-time state."""
    h = HealthTracker()
    h.observe_fix(fix(T0 + 60, batt=70, strap="open", src="cell", acc=300.0))
    assert not h.observe_fix(fix(T0, arrival=T0 + 500, batt=90, strap="ok", src="gnss", acc=3.0))
    s = h.snapshot("AM-1")
    assert (s.last_fix_t, s.batt, s.strap, s.src, s.acc) == (T0 + 60, 70, "open", "cell", 300.0)
    assert s.last_seen_arrival == T0 + 500


def test_missing_optional_fields_keep_earlier_values() -> None:
    """A newer fix without batt or strap keeps the last known ones."""
    h = HealthTracker()
    h.observe_fix(fix(T0, batt=55, strap="ok"))
    h.observe_fix(fix(T0 + 60))
    s = h.snapshot("AM-1")
    assert s.batt == 55 and s.strap == "ok" and s.last_fix_t == T0 + 60


def test_state_is_independent_of_arrival_order() -> None:
    """Any arrival order of the same reports gives the same snapshot (except arrival time)."""
    reports: list[Fix | DeviceEvent] = [
        fix(T0, batt=90, strap="ok"),
        event(T0 + 10, "gnss_lost"),
        fix(T0 + 20, batt=89, src="cell"),
        event(T0 + 30, "strap_open"),
        event(T0 + 40, "charger_connected"),
        fix(T0 + 50, batt=88, src="wifi"),
        event(T0 + 60, "gnss_restored"),
        event(T0 + 70, "power_off"),
    ]
    expected = None
    rng = random.Random(7)
    for _ in range(30):
        order = reports[:]
        rng.shuffle(order)
        h = HealthTracker()
        for r in order:
            h.observe_fix(r) if isinstance(r, Fix) else h.observe_event(r)
        snap = h.snapshot("AM-1")
        if expected is None:
            expected = snap
        assert snap == expected
    assert expected is not None
    assert (expected.batt, expected.strap, expected.src) == (88, "open", "wifi")
    assert expected.charging and expected.powered_off and not expected.gnss_lost


@pytest.mark.parametrize(
    ("events", "field", "value"),
    [
        (["gnss_lost"], "gnss_lost", True),
        (["gnss_lost", "gnss_restored"], "gnss_lost", False),
        (["charger_connected"], "charging", True),
        (["charger_connected", "charger_disconnected"], "charging", False),
        (["power_off"], "powered_off", True),
        (["strap_open"], "strap", "open"),
        (["strap_cut"], "strap", "cut"),
        (["strap_open", "strap_cut"], "strap", "cut"),
    ],
)
def test_events_set_health_flags(events: list[str], field: str, value: Any) -> None:
    """Health events set the matching flag; the latest in device time wins."""
    h = HealthTracker()
    for i, kind in enumerate(events):
        h.observe_event(event(T0 + i, kind))
    assert getattr(h.snapshot("AM-1"), field) == value


def test_older_event_does_not_undo_newer_one() -> None:
    """A gnss_restored older than the last gnss_lost does not clear it."""
    h = HealthTracker()
    h.observe_event(event(T0 + 10, "gnss_lost"))
    h.observe_event(event(T0, "gnss_restored", arrival=T0 + 100))
    assert h.snapshot("AM-1").gnss_lost


def test_newer_report_after_power_off_means_powered_on() -> None:
    """A fix or event newer than power_off clears powered_off; an older one does not."""
    h = HealthTracker()
    h.observe_event(event(T0, "power_off"))
    h.observe_fix(fix(T0 - 5, arrival=T0 + 20))
    assert h.snapshot("AM-1").powered_off
    h.observe_fix(fix(T0 + 5))
    assert not h.snapshot("AM-1").powered_off


def test_gnss_fix_after_gnss_lost_clears_it_but_cell_fix_does_not() -> None:
    """Only a newer GNSS fix proves GNSS is back."""
    h = HealthTracker()
    h.observe_event(event(T0, "gnss_lost"))
    h.observe_fix(fix(T0 + 5, src="cell"))
    assert h.snapshot("AM-1").gnss_lost
    h.observe_fix(fix(T0 + 10, src="gnss"))
    assert not h.snapshot("AM-1").gnss_lost


def test_fix_strap_state_after_event() -> None:
    """A newer fix reporting strap ok after strap_open restores it; an older one does not."""
    h = HealthTracker()
    h.observe_event(event(T0, "strap_open"))
    h.observe_fix(fix(T0 - 1, strap="ok", arrival=T0 + 5))
    assert h.snapshot("AM-1").strap == "open"
    h.observe_fix(fix(T0 + 1, strap="ok"))
    assert h.snapshot("AM-1").strap == "ok"


# --- silence --------------------------------------------------------------------------

REG = Reg(
    DeviceInfo("AM-1", "ankle_monitor", "S-1", 60.0),  # silent after 180 s
    DeviceInfo("VD-1", "victim_device", "P-1", 30.0, 300.0),
    DeviceInfo("VD-2", "victim_device", "P-1", 30.0),  # never heard: silent after 90 s
)


def test_silence_is_measured_from_last_arrival() -> None:
    """A device is silent once now - last arrival exceeds its silence limit."""
    h = HealthTracker()
    h.observe_fix(fix(T0, arrival=T0 + 2))
    h.observe_event(event(T0 + 50, "low_battery", device="VD-1", arrival=T0 + 50))
    assert h.silent_devices(T0 + 182, REG) == []
    assert h.silent_devices(T0 + 183, REG) == [("AM-1", 181.0)]
    assert h.silent_devices(T0 + 400, REG) == [("AM-1", 398.0), ("VD-1", 350.0)]


def test_late_burst_counts_as_heard() -> None:
    """Old fixes arriving now (a buffered burst) end silence: silence is on the arrival clock."""
    h = HealthTracker()
    h.observe_fix(fix(T0, arrival=T0))
    h.observe_fix(fix(T0 + 10, arrival=T0 + 1000))
    assert h.silent_devices(T0 + 1100, REG) == []


def test_never_heard_devices_count_from_start() -> None:
    """With started_at, a registered device never heard is silent after its limit; without, not."""
    assert HealthTracker().silent_devices(T0 + 10_000, REG) == []
    h = HealthTracker(started_at=T0)
    assert h.silent_devices(T0 + 90, REG) == []
    assert h.silent_devices(T0 + 200, REG) == [("AM-1", 200.0), ("VD-2", 200.0)]


# --- battery --------------------------------------------------------------------------


def test_battery_runtime_from_linear_drain() -> None:
    """A steady 1 % per 10 min drain, last at 74 %, leaves 74 x 600 s."""
    h = HealthTracker()
    for i in range(7):  # 80, 79, ..., 74 over one hour
        h.observe_fix(fix(T0 + 600 * i, batt=80 - i))
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600)
    assert h.battery_runtime_s("AM-1") == pytest.approx(74 * 600)


def test_battery_runtime_out_of_order_is_same() -> None:
    """Readings delivered in any order give the same estimate."""
    readings = [(T0 + 300 * i, 90 - i // 2) for i in range(12)]
    results = set()
    for seed in range(5):
        rng = random.Random(seed)
        order = readings[:]
        rng.shuffle(order)
        h = HealthTracker()
        for t, b in order:
            h.observe_fix(fix(t, batt=b))
        results.add(round(h.battery_runtime_s("AM-1") or -1, 6))
    assert len(results) == 1 and results.pop() > 0


@pytest.mark.parametrize(
    "readings",
    [
        [],
        [(0, 80)],
        [(0, 80), (600, 79)],  # too few readings
        [(0, 80), (100, 79), (200, 78)],  # span too short
        [(0, 80), (600, 80), (1200, 80)],  # not draining
        [(0, 70), (600, 71), (1200, 72)],  # rising
    ],
)
def test_battery_runtime_unknown(readings: list[tuple[float, int]]) -> None:
    """Too little data or no drain gives None rather than a guess."""
    h = HealthTracker()
    for t, b in readings:
        h.observe_fix(fix(T0 + t, batt=b))
    assert h.battery_runtime_s("AM-1") is None


def test_charging_suspends_and_resets_battery_estimate() -> None:
    """While charging there is no runtime; after unplugging, only the new discharge counts."""
    h = HealthTracker()
    for i in range(6):
        h.observe_fix(fix(T0 + 600 * i, batt=60 - 5 * i))  # fast drain before charging
    assert h.battery_runtime_s("AM-1") is not None
    h.observe_event(event(T0 + 3600, "charger_connected"))
    assert h.battery_runtime_s("AM-1") is None
    h.observe_event(event(T0 + 7200, "charger_disconnected"))
    for i in range(4):
        h.observe_fix(fix(T0 + 7300 + 600 * i, batt=100 - i))  # slow drain after
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600)
    h.observe_fix(fix(T0 + 100, batt=59, arrival=T0 + 9000))  # late reading from before: ignored
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600)


def test_unreported_charge_starts_new_discharge() -> None:
    """A battery rise without charger events drops the readings before the rise."""
    h = HealthTracker()
    for i in range(4):
        h.observe_fix(fix(T0 + 600 * i, batt=30 - 10 * i))
    for i in range(4):
        h.observe_fix(fix(T0 + 3000 + 600 * i, batt=90 - i))
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600)


def test_battery_window_forgets_old_readings() -> None:
    """Only the last three hours of readings are fitted, so a faster drain shows quickly."""
    h = HealthTracker()
    for i in range(10):  # 10 h of slow drain, 1 %/h
        h.observe_fix(fix(T0 + 3600 * i, batt=99 - i))
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 3600)
    for i in range(1, 25):  # then 4 h at 1 %/10 min, continuing from 90 %
        h.observe_fix(fix(T0 + 9 * 3600 + 600 * i, batt=90 - i))
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600)


@settings(max_examples=100, deadline=None)
@given(
    batts=st.lists(st.integers(0, 100), min_size=0, max_size=40),
    gaps=st.lists(st.floats(1, 3600), min_size=40, max_size=40),
    seed=st.integers(0, 1000),
)
def test_battery_estimate_is_sane_for_any_readings(
    batts: list[int], gaps: list[float], seed: int
) -> None:
    """For any readings in any order the estimate is None or a finite non-negative duration."""
    h = HealthTracker()
    t = T0
    reports = []
    for b, g in zip(batts, gaps, strict=False):
        t += g
        reports.append(fix(t, batt=b))
    random.Random(seed).shuffle(reports)
    for r in reports:
        h.observe_fix(r)
    runtime = h.battery_runtime_s("AM-1")
    assert runtime is None or 0 <= runtime < float("inf")


def test_high_fix_rate_keeps_one_reading_per_minute() -> None:
    """In pursuit mode (a fix every 15 s) readings are thinned to one a minute and still fit."""
    h = HealthTracker()
    for i in range(4 * 60 * 2):  # two hours at 15 s, 1 % per 10 min
        h.observe_fix(fix(T0 + 15 * i, batt=100 - (15 * i) // 600))
    assert h.battery_drain_per_s("AM-1") == pytest.approx(1 / 600, rel=0.03)
    assert len(h._state["AM-1"].batt_samples) == 120
