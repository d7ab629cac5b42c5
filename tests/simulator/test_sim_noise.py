"""GPS noise model: the reported 68 % radius is the noise actually applied."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from simulator.noise import (
    ACC_TO_SIGMA,
    CELL,
    GNSS_OPEN,
    MIXTURES,
    WIFI,
    AccuracyModel,
    draw_errors,
    multipath_offset,
    sigma_for_acc,
)


def test_sigma_constant_is_the_rayleigh_68_percent_radius():
    """acc = 1.5096 sigma, i.e. P(|err| <= acc) = 0.68 for a 2-D gaussian."""
    assert ACC_TO_SIGMA == pytest.approx(1.5096, abs=1e-4)
    assert 1 - math.exp(-(ACC_TO_SIGMA**2) / 2) == pytest.approx(0.68, abs=1e-12)
    assert sigma_for_acc(15.096) == pytest.approx(10.0, rel=1e-3)


@pytest.mark.parametrize("tau_s", [0.0, 30.0, 300.0])
def test_about_68_percent_of_errors_fall_within_the_reported_radius(tau_s):
    """Over many fixes with mixed radii, 68 % of errors are within acc (independent or correlated)."""
    rng = np.random.default_rng(7)
    n = 200_000 if tau_s == 0 else 60_000
    acc = np.exp(rng.uniform(np.log(3), np.log(2000), n))
    dt = np.full(n, 60.0)
    ex, ey = draw_errors(np.random.default_rng(11), acc, dt, tau_s)
    inside = np.mean(np.hypot(ex, ey) <= acc)
    # binomial standard error 0.001 (independent); the AR(1) process is still nearly independent at 60 s
    assert inside == pytest.approx(0.68, abs=0.006)


def test_correlated_errors_keep_the_marginal_spread_but_drift_slowly():
    """With tau much longer than the fix interval consecutive errors are strongly correlated."""
    n = 50_000
    acc = np.full(n, 10.0)
    ex, _ = draw_errors(np.random.default_rng(3), acc, np.full(n, 1.0), tau_s=60.0)
    assert np.std(ex) == pytest.approx(10.0 / ACC_TO_SIGMA, rel=0.08)
    lag1 = np.corrcoef(ex[:-1], ex[1:])[0, 1]
    assert lag1 == pytest.approx(math.exp(-1 / 60), abs=0.01)


@given(seed=st.integers(0, 2**32 - 1), env=st.sampled_from(sorted(MIXTURES)))
@example(seed=0, env="indoor")
@settings(max_examples=200, deadline=None)
def test_accuracy_draws_stay_inside_their_source_band(seed, env):
    """Every drawn radius lies in the band of the source reported with it; sats only on GNSS."""
    model = AccuracyModel(np.random.default_rng(seed))
    for _ in range(20):
        src, acc, sats = model.draw(env)
        bands = [b for b, _ in MIXTURES[env] if b.source == src]
        assert bands, f"{src} is not a source of {env}"
        assert any(b.low_m - 0.05 <= acc <= b.high_m + 0.05 for b in bands)
        assert (sats is not None) == (src == "gnss")


def test_indoor_fallback_radii_are_large():
    """Wi-Fi and cell fallback report 100-2000 m, GNSS in the open a few metres."""
    assert (WIFI.low_m, CELL.high_m) == (100.0, 2000.0)
    assert GNSS_OPEN.high_m <= 12.0


def test_unknown_environment_is_refused():
    """A typo in an environment name fails loudly."""
    with pytest.raises(ValueError, match="unknown positioning environment"):
        AccuracyModel(np.random.default_rng(0)).draw("underwater")


@given(bearing=st.floats(0, 360), jump=st.floats(50, 2000))
@settings(max_examples=200)
def test_scripted_multipath_jump_has_the_asked_length_and_bearing(bearing, jump):
    """With no spread the jump is exactly jump_m on the bearing (east = sin, north = cos)."""
    dx, dy = multipath_offset(np.random.default_rng(0), jump, bearing, spread=0.0)
    assert math.hypot(dx, dy) == pytest.approx(jump, rel=1e-9)
    assert dx == pytest.approx(jump * math.sin(math.radians(bearing)), abs=1e-6)
    assert dy == pytest.approx(jump * math.cos(math.radians(bearing)), abs=1e-6)
