"""Ground truth on hand-built cases: exact crossings, closest approach, zones, schedules, files."""

from __future__ import annotations

import math
from datetime import UTC, datetime, time

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, Polygon

from devices.timeutil import parse_time
from engine.core.orders import Order, ProximityRule, ScheduleWindow, ZoneRule
from geo.zones import parse_zone
from simulator.errors import TraceError
from simulator.oracle import inside_intervals, proximity_episodes, schedule_intervals, zone_episodes
from simulator.orders_doc import ZoneGeom
from simulator.paths import Path
from simulator.truth import (
    Episode,
    complement,
    distance_pieces,
    intersect_intervals,
    merge_intervals,
    polygon_inside,
    read_truth,
    write_truth,
)

ORDER = Order("O-1", "S-1", "gedragsaanwijzing", 0.0, 1e12)


def line(x0: float, x1: float, t1: float, y: float = 0.0) -> Path:
    return Path(np.array([0.0, t1]), np.array([x0, x1]), np.array([y, y]))


def rule(alert_m: float = 1000.0) -> ProximityRule:
    return ProximityRule("P-1", alert_m, 3 * alert_m, alert_m / 4, 120.0)


def test_straight_line_approach_has_the_known_closest_distance_time_and_crossings():
    """Offender at 10 m/s along the x axis, victim 300 m off it: closest 300 m at t=500, inside 500 +- 95.39 s."""
    subject = line(-5000.0, 5000.0, 1000.0)
    victim = Path.constant(0.0, 300.0, 0.0, 1000.0)
    (ep,) = proximity_episodes(ORDER, rule(), subject, victim, 0.0, 1000.0, contact_m=(100.0,))
    half = math.sqrt(1000.0**2 - 300.0**2) / 10.0
    assert ep.start == pytest.approx(500.0 - half, abs=1e-6)
    assert ep.end == pytest.approx(500.0 + half, abs=1e-6)
    assert ep.min_distance_m == pytest.approx(300.0, abs=1e-6)
    assert ep.closest_at == pytest.approx(500.0, abs=1e-6)
    assert ep.contact_at == {}  # never within 100 m
    assert (ep.kind, ep.order, ep.subject, ep.protected_person) == (
        "proximity",
        "O-1",
        "S-1",
        "P-1",
    )


def test_contact_time_is_the_first_crossing_of_the_contact_distance():
    """Passing 50 m from the victim, the 100 m contact starts sqrt(100^2-50^2)/10 s before closest."""
    subject = line(-5000.0, 5000.0, 1000.0)
    victim = Path.constant(0.0, 50.0, 0.0, 1000.0)
    (ep,) = proximity_episodes(
        ORDER, rule(), subject, victim, 0.0, 1000.0, contact_m=(100.0, 2000.0)
    )
    assert ep.contact_at["100"] == pytest.approx(500.0 - math.sqrt(100**2 - 50**2) / 10, abs=1e-6)
    assert "2000" not in ep.contact_at  # only distances below alert_m are contacts


def test_both_moving_head_on():
    """Two walkers 2,000 m apart closing at 2 x 1.4 m/s come within 1,000 m after 1000/2.8 s."""
    a = line(0.0, 1400.0, 1000.0)
    b = line(2000.0, 600.0, 1000.0)
    (ep,) = proximity_episodes(ORDER, rule(), a, b, 0.0, 1000.0)
    assert ep.start == pytest.approx(1000.0 / 2.8, abs=1e-6)
    assert ep.end == pytest.approx(1000.0)  # still close at the end of the window: clipped
    assert ep.min_distance_m == pytest.approx(0.0, abs=1e-6)


def test_episodes_less_than_the_merge_gap_apart_are_one():
    """Dipping under alert_m twice 65 s apart is one encounter with merge_gap 70 s, two with 60 s."""
    t = np.array([0.0, 100.0, 130.0, 230.0])
    x = np.array([2000.0, 900.0, 1100.0, 900.0])
    subject = Path(t, x, np.zeros(4))
    victim = Path.constant(0.0, 0.0, 0.0, 230.0)
    two = proximity_episodes(ORDER, rule(), subject, victim, 0.0, 230.0, merge_gap_s=60.0)
    assert [(round(e.start, 6), round(e.end, 6)) for e in two] == [
        (round(1000 / 11, 6), 115.0),
        (180.0, 230.0),
    ]
    (merged,) = proximity_episodes(ORDER, rule(), subject, victim, 0.0, 230.0, merge_gap_s=70.0)
    assert merged.min_distance_m == pytest.approx(900.0)


track = st.lists(st.tuples(st.floats(-3000, 3000), st.floats(-3000, 3000)), min_size=2, max_size=8)


@given(a=track, b=track, threshold=st.floats(50, 2500))
@example(a=[(0.0, 0.0), (0.0, 0.0)], b=[(10.0, 0.0), (10.0, 0.0)], threshold=100.0)
@example(  # closest distance 0 found without cancellation in the quadratic
    a=[(1001.0, 0.0), (0.0, 0.0)],
    b=[(0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (1001.0, 0.0)],
    threshold=50.0,
)
@settings(max_examples=200, deadline=None)
def test_distance_intervals_agree_with_brute_force_sampling(a, b, threshold):
    """At sampled times, 'inside an interval' equals 'distance < threshold' (away from crossings)."""
    ta = np.linspace(0, 1000, len(a))
    tb = np.linspace(0, 1000, len(b))
    xa, ya = np.array(a).T
    xb, yb = np.array(b).T
    pieces = distance_pieces(ta, xa, ya, tb, xb, yb, threshold, 0.0, 1000.0)
    ts = np.linspace(0, 1000, 2001)
    d = np.hypot(
        np.interp(ts, ta, xa) - np.interp(ts, tb, xb), np.interp(ts, ta, ya) - np.interp(ts, tb, yb)
    )
    inside = np.array([any(s <= t <= e for s, e in pieces.inside) for t in ts])
    clear = np.abs(d - threshold) > 1e-3 * threshold
    assert np.array_equal(inside[clear], (d < threshold)[clear])
    assert pieces.dmin.min() <= d.min() + 1e-6


SQUARE = Polygon([(0, 0), (100, 0), (100, 100), (0, 100)])


def test_polygon_crossing_times_are_exact():
    """Crossing a 100 m square at 1 m/s from x=-50 is inside for t in [50, 150]."""
    p = line(-50.0, 150.0, 200.0, y=50.0)
    assert polygon_inside(p.t, p.x, p.y, SQUARE, 0.0, 200.0) == [
        (pytest.approx(50.0), pytest.approx(150.0))
    ]


def test_polygon_boundary_counts_as_inside_and_a_corner_touch_is_not_an_episode():
    """Standing on an edge is inside; grazing a corner has no duration."""
    on_edge = Path.constant(0.0, 50.0, 0.0, 60.0)
    assert polygon_inside(on_edge.t, on_edge.x, on_edge.y, SQUARE, 0.0, 60.0) == [(0.0, 60.0)]
    graze = Path(np.array([0.0, 100.0]), np.array([-50.0, 50.0]), np.array([50.0, -50.0]))
    assert polygon_inside(graze.t, graze.x, graze.y, SQUARE, 0.0, 100.0) == []


@given(pts=st.lists(st.tuples(st.floats(-200, 300), st.floats(-200, 300)), min_size=2, max_size=6))
@settings(max_examples=200, deadline=None)
def test_polygon_intervals_agree_with_shapely_at_sampled_times(pts):
    """Inside-interval membership equals shapely's intersects() at sampled times off the boundary."""
    t = np.linspace(0, 600, len(pts))
    x, y = np.array(pts).T
    ivs = polygon_inside(t, x, y, SQUARE, 0.0, 600.0)
    for ts in np.linspace(0, 600, 301):
        px, py = np.interp(ts, t, x), np.interp(ts, t, y)
        if SQUARE.boundary.distance(Point(px, py)) < 1e-6:
            continue
        assert any(s - 1e-9 <= ts <= e + 1e-9 for s, e in ivs) == SQUARE.intersects(Point(px, py))


def circle_zone(kind: str = "exclusion", schedule: tuple[ScheduleWindow, ...] = ()) -> ZoneGeom:
    shape = parse_zone({"circle": {"lat": 51.92, "lon": 4.48, "radius_m": 500}}, "Z")
    return ZoneGeom(
        "O-1",
        ZoneRule("Z", kind, shape, schedule),
        Point(0, 0).buffer(500, quad_segs=64),
        (0.0, 0.0, 500.0),
    )


def test_circle_zone_is_exact_and_agrees_with_its_polygon_outline():
    """Driving straight through a 500 m circle: inside while |x| <= 500, exactly."""
    zone = circle_zone()
    p = line(-1000.0, 1000.0, 200.0, y=0.0)
    (iv,) = inside_intervals(zone, p, 0.0, 200.0)
    assert iv == (pytest.approx(50.0), pytest.approx(150.0))
    (approx,) = polygon_inside(p.t, p.x, p.y, zone.polygon, 0.0, 200.0)
    assert approx == (pytest.approx(50.0, abs=1e-3), pytest.approx(150.0, abs=1e-3))


def test_exclusion_episode_reports_depth_as_negative_signed_distance():
    """Going 400 m into a 500 m circle gives min_distance_m = -400."""
    p = Path(np.array([0.0, 100.0, 200.0]), np.array([-1000.0, -100.0, -1000.0]), np.zeros(3))
    (ep,) = zone_episodes(ORDER, circle_zone(), p, 0.0, 200.0)
    assert ep.kind == "exclusion" and ep.zone == "Z"
    assert ep.min_distance_m == pytest.approx(-400.0, abs=0.5)


CURFEW = ScheduleWindow(frozenset(range(7)), time(22, 0), time(6, 0), "Europe/Amsterdam")


def test_inclusion_episode_is_outside_while_the_curfew_is_active():
    """Out from 21:00 to 23:30 local with a 22:00-06:00 curfew: violation 22:00-23:30."""
    t0 = parse_time("2026-11-23T20:00:00Z")  # 21:00 CET
    t1 = parse_time("2026-11-23T22:30:00Z")  # 23:30 CET
    p = Path(
        np.array([t0 - 60, t0, t1, t1 + 60, t1 + 7200]),
        np.array([0.0, 2000.0, 2000.0, 0.0, 0.0]),
        np.zeros(5),
    )
    (ep,) = zone_episodes(ORDER, circle_zone("inclusion", (CURFEW,)), p, t0 - 60, t1 + 7200)
    assert ep.kind == "inclusion"
    assert ep.start == pytest.approx(parse_time("2026-11-23T21:00:00Z"))
    assert ep.end > t1 and ep.end < t1 + 60
    assert ep.min_distance_m == pytest.approx(-1500.0, abs=0.5)


def test_curfew_window_follows_the_daylight_saving_change():
    """The night of 24-25 Oct 2026 the clocks go back: 22:00 CEST to 06:00 CET lasts 9 hours."""
    t0 = parse_time("2026-10-24T12:00:00Z")
    (win,) = schedule_intervals(
        ZoneRule("Z", "inclusion", circle_zone().rule.shape, (CURFEW,)), t0, t0 + 86400
    )
    assert datetime.fromtimestamp(win[0], UTC).hour == 20
    assert win[1] - win[0] == 9 * 3600


def test_zone_without_schedule_is_always_active():
    """No schedule: the whole window."""
    assert schedule_intervals(circle_zone().rule, 5.0, 50.0) == [(5.0, 50.0)]


@pytest.mark.parametrize(
    ("intervals", "gap", "merged"),
    [
        ([(0, 1), (2, 3)], 0.0, [(0, 1), (2, 3)]),
        ([(0, 1), (2, 3)], 1.5, [(0, 3)]),
        ([(2, 3), (0, 1), (0.5, 2.5)], 0.0, [(0, 3)]),
        ([], 5.0, []),
    ],
)
def test_merge_intervals(intervals, gap, merged):
    """Sorted union joining gaps shorter than 'gap'."""
    assert merge_intervals(intervals, gap) == merged


def test_intersect_and_complement():
    """Interval algebra used for schedules and inclusion zones."""
    assert intersect_intervals([(0, 5), (8, 12)], [(3, 9), (11, 20)]) == [(3, 5), (8, 9), (11, 12)]
    assert complement([(2, 3), (5, 6)], 0, 10) == [(0, 2), (3, 5), (6, 10)]
    assert complement([], 0, 1) == [(0, 1)]
    assert complement([(0, 10)], 0, 10) == []


def test_truth_file_round_trip_keeps_contract_fields_and_extensions(tmp_path):
    """Write then read gives the same episodes; zone lines carry 'zone', proximity 'protected_person'."""
    eps = [
        Episode(
            "proximity",
            100.0,
            200.5,
            "O-1",
            "S-1",
            "P-1",
            min_distance_m=42.04,
            closest_at=150.0,
            contact_at={"100": 140.0},
        ),
        Episode("exclusion", 50.0, 60.0, "O-1", "S-1", zone="Z-1", min_distance_m=-12.3),
        Episode("tamper", 10.0, 20.0, subject="S-1", device="AM-1"),
    ]
    path = tmp_path / "truth.jsonl"
    write_truth(eps, path)
    lines = path.read_text().splitlines()
    assert [line.split('"kind": "')[1].split('"')[0] for line in lines] == [
        "tamper",
        "exclusion",
        "proximity",
    ]
    assert '"zone": "Z-1"' in lines[1] and "protected_person" not in lines[1]
    back = {e.kind: e for e in read_truth(path)}
    assert back["proximity"].min_distance_m == 42.0
    assert back["proximity"].contact_at == {"100": 140.0}
    assert back["exclusion"].zone == "Z-1"
    assert back["tamper"].device == "AM-1" and back["tamper"].min_distance_m is None


def test_bad_truth_line_names_the_line(tmp_path):
    """A malformed truth line is a TraceError with file and line number."""
    path = tmp_path / "truth.jsonl"
    path.write_text(
        '{"kind": "proximity", "start": "2026-11-23T10:00:00Z", "end": "2026-11-23T10:05:00Z"}\n{"kind": 1}\n'
    )
    with pytest.raises(TraceError, match=r"truth.jsonl:2"):
        read_truth(path)
