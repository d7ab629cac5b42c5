"""True paths: interpolation, splicing, travel at mode speeds, pursuit and street-grid routes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator.errors import ScenarioError
from simulator.paths import MODES, Path, PathBuilder, SpeedProcess, grid_route, mode_spec


def fixed(v: float) -> SpeedProcess:
    return SpeedProcess(mode_spec("walking", v), np.random.default_rng(0))


def test_path_interpolates_linearly_and_clamps_outside_its_span():
    """Position halfway between two vertices is halfway; before/after the span it holds."""
    p = Path(np.array([0.0, 10.0]), np.array([0.0, 100.0]), np.array([0.0, 0.0]))
    assert p.at(5.0) == (50.0, 0.0)
    assert p.at(-3.0) == (0.0, 0.0)
    assert p.at(99.0) == (100.0, 0.0)
    vx, vy = p.velocity_many(np.array([5.0, 20.0]))
    assert list(vx) == [10.0, 0.0] and list(vy) == [0.0, 0.0]


def test_path_refuses_non_increasing_times():
    """Vertex times must strictly increase."""
    with pytest.raises(ValueError):
        Path(np.array([0.0, 0.0]), np.zeros(2), np.zeros(2))


def test_splice_replaces_a_window_and_rejoins():
    """A detour from t=10 to t=30 replaces the base there; the base continues afterwards."""
    base = Path(np.array([0.0, 100.0]), np.array([0.0, 100.0]), np.zeros(2))
    detour = Path(
        np.array([10.0, 20.0, 30.0]), np.array([10.0, 10.0, 30.0]), np.array([0.0, 50.0, 0.0])
    )
    out = base.splice(detour)
    assert out.at(20.0) == (10.0, 50.0)
    assert out.at(60.0) == (60.0, 0.0)
    assert out.at(5.0) == (5.0, 0.0)


def test_splice_that_ends_elsewhere_holds_its_last_position():
    """An override that does not rejoin leaves the person where it ended."""
    base = Path.constant(0.0, 0.0, 0.0, 100.0)
    away = Path(np.array([10.0, 20.0]), np.array([0.0, 50.0]), np.zeros(2))
    out = base.splice(away)
    assert out.at(90.0) == (50.0, 0.0)


def test_move_to_at_fixed_speed_takes_distance_over_speed():
    """1,400 m at 1.4 m/s takes 1,000 s."""
    b = PathBuilder(0.0, 0.0, 0.0)
    b.move_to(1400.0, 0.0, fixed(1.4))
    assert b.t == pytest.approx(1000.0)
    assert b.pos == (1400.0, 0.0)


@pytest.mark.parametrize(("mode", "mean"), [("walking", 1.4), ("cycling", 4.5), ("driving", 11.0)])
def test_mode_speeds_average_to_their_nominal_value(mode, mean):
    """Moving speed averages 1.4 / 4.5 / 11 m/s; bikes and cars also stop at lights."""
    rng = np.random.default_rng(5)
    b = PathBuilder(0.0, 0.0, 0.0)
    b.move_to(200_000.0, 0.0, SpeedProcess(MODES[mode], rng))
    p = b.build()
    v = np.hypot(np.diff(p.x), np.diff(p.y)) / np.diff(p.t)
    moving = v > 0
    assert np.average(v[moving], weights=np.diff(p.t)[moving]) == pytest.approx(mean, rel=0.05)
    assert (not moving.all()) == (MODES[mode].stop_p > 0)
    assert v.max() <= MODES[mode].high_mps + 1e-9


def test_unknown_mode_and_bad_speed_are_scenario_errors():
    """A typo in a travel mode names the known ones."""
    with pytest.raises(ScenarioError, match="walking"):
        mode_spec("flying")
    with pytest.raises(ScenarioError):
        mode_spec("walking", 0.0)


@given(closest=st.floats(1.0, 900.0), speed=st.floats(0.5, 20.0))
@example(closest=50.0, speed=14.0)
@settings(max_examples=200, deadline=None)
def test_pursuit_of_a_standing_target_stops_at_exactly_the_closest_distance(closest, speed):
    """The last step is shortened so the final gap is closest_m, never less."""
    b = PathBuilder(0.0, 0.0, 0.0)
    reached = b.pursue(lambda t: (3000.0, 400.0), fixed(speed), closest, t_max=10_000.0)
    assert reached
    p = b.build()
    d = np.hypot(p.x - 3000.0, p.y - 400.0)
    assert d[-1] == pytest.approx(closest, abs=1e-6)
    assert d.min() >= closest - 1e-6


def test_pursuit_catches_a_walker_and_follow_keeps_the_distance():
    """A cyclist catches a walker heading away and then stays 40 m behind her."""
    walker = lambda t: (1000.0 + 1.4 * t, 0.0)  # noqa: E731
    b = PathBuilder(0.0, 0.0, 0.0)
    assert b.pursue(walker, fixed(4.5), 40.0, t_max=5000.0)
    caught = b.t
    assert caught == pytest.approx((1000.0 - 40.0) / (4.5 - 1.4), abs=2.0)
    b.follow(walker, 40.0, caught + 300.0, fixed(4.5))
    x, y = b.pos
    assert math.hypot(walker(b.t)[0] - x, y) == pytest.approx(40.0, abs=1.5)


def test_pursuit_gives_up_at_t_max():
    """A target that is never reached returns False at t_max."""
    b = PathBuilder(0.0, 0.0, 0.0)
    assert not b.pursue(lambda t: (10.0 + 5.0 * t, 0.0), fixed(1.0), 1.0, t_max=100.0)
    assert b.t == pytest.approx(100.0)


@given(
    ax=st.floats(-5000, 5000),
    ay=st.floats(-5000, 5000),
    bx=st.floats(-5000, 5000),
    by=st.floats(-5000, 5000),
    seed=st.integers(0, 1000),
)
@settings(max_examples=200)
def test_grid_route_ends_at_the_destination_and_is_no_shorter_than_straight(ax, ay, bx, by, seed):
    """Every route ends at b; its length is between the straight line and 1.5x of it (L-shapes)."""
    pts = [(ax, ay), *grid_route((ax, ay), (bx, by), np.random.default_rng(seed))]
    assert pts[-1] == (bx, by)
    length = sum(math.dist(p, q) for p, q in itertools.pairwise(pts))
    straight = math.dist((ax, ay), (bx, by))
    assert straight - 1e-6 <= length <= math.sqrt(2) * straight + 1e-6
