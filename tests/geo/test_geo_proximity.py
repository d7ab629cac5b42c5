"""Proximity kernel equals the plain numpy formulas; track prediction follows its documented model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geo.errors import GeoError
from geo.proximity import assess_pair, assess_pairs, predict_on_samples, predict_position


def _metric(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats in [lo, hi] with sub-micro magnitudes snapped to 0 (metres and m/s, not 1e-308)."""
    return st.floats(lo, hi).map(lambda v: 0.0 if abs(v) < 1e-6 else v)


@st.composite
def pair_batches(draw):
    """n pairs: positions within 100 km, velocities within 60 m/s (as 8 column arrays)."""
    n = draw(st.integers(1, 40))
    pos = draw(arrays(np.float64, (4, n), elements=_metric(-1e5, 1e5)))
    vel = draw(arrays(np.float64, (4, n), elements=_metric(-60.0, 60.0)))
    return pos[0], pos[1], vel[0], vel[1], pos[2], pos[3], vel[2], vel[3]


@settings(max_examples=150, deadline=None)
@given(pair_batches())
def test_assess_pairs_equals_numpy_formulas(batch) -> None:
    """distance = |b - a|, closing = -(r . dv)/|r|, ttc = d/closing if closing > 0.05 else inf."""
    ax, ay, avx, avy, bx, by, bvx, bvy = (np.ascontiguousarray(a) for a in batch)
    d, closing, ttc = assess_pairs(ax, ay, avx, avy, bx, by, bvx, bvy)
    rx, ry = bx - ax, by - ay
    ref_d = np.hypot(rx, ry)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ref_c = np.where(ref_d > 0, -(rx * (bvx - avx) + ry * (bvy - avy)) / ref_d, 0.0)
        ref_t = np.where(ref_d == 0, 0.0, np.where(ref_c > 0.05, ref_d / ref_c, np.inf))
    np.testing.assert_allclose(d, ref_d, rtol=1e-15)
    np.testing.assert_allclose(closing, ref_c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ttc, ref_t, rtol=1e-12)
    p = assess_pairs(ax, ay, avx, avy, bx, by, bvx, bvy, parallel=True)
    for a, b in zip(p, (d, closing, ttc), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((0, 0, 1, 0), (100, 0, -1, 0), (100.0, 2.0, 50.0)),
        ((0, 0, 1, 0), (100, 0, 1, 0), (100.0, 0.0, math.inf)),
        ((0, 0, 0, 0), (0, 100, 1, 0), (100.0, 0.0, math.inf)),
        ((0, 0, 0, 0), (0, 100, 0, 0.04), (100.0, -0.04, math.inf)),
        ((0, 0, 0, 0), (0, 100, 0, -0.04), (100.0, 0.04, math.inf)),
        ((5, 5, 3, 3), (5, 5, 0, 0), (0.0, 0.0, 0.0)),
    ],
    ids=["head-on", "same-velocity", "tangential", "slow-receding", "below-threshold", "contact"],
)
def test_assess_pairs_catalogue(a, b, expected) -> None:
    """Head-on approach, parallel motion, tangential motion, tiny speeds and contact."""
    arrs = [np.array([float(v)]) for v in (*a, *b)]
    d, c, t = assess_pairs(*arrs)
    assert (d[0], c[0], t[0]) == pytest.approx(expected)


@settings(max_examples=150, deadline=None)
@given(pair_batches())
def test_assess_pair_gives_the_kernels_numbers_bit_for_bit(batch) -> None:
    """The scalar assess_pair (Python arithmetic, for the engine's per-fix path) equals the kernel."""
    d, closing, ttc = assess_pairs(*(np.ascontiguousarray(a) for a in batch))
    for i in range(len(d)):
        one = assess_pair(*(float(a[i]) for a in batch))
        assert one == (float(d[i]), float(closing[i]), float(ttc[i]))


def test_assess_pairs_writes_into_out() -> None:
    """Caller-given output arrays are filled and returned."""
    out = (np.empty(1), np.empty(1), np.empty(1))
    res = assess_pairs(*[np.array([v]) for v in (0.0, 0, 0, 0, 3, 4, 0, 0)], out=out)
    assert all(r is o for r, o in zip(res, out, strict=True)) and out[0][0] == 5.0


TT = np.array([0.0, 10.0, 20.0])
XX = np.array([0.0, 10.0, 30.0])
YY = np.array([0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (5.0, (5.0, 0.0, 0.0, 0.0)),  # interpolation
        (20.0, (30.0, 0.0, 0.0, 0.0)),  # on the last fix
        (25.0, (40.0, 0.0, 10.0, 5.0)),  # dead reckoning at 2 m/s for 5 s
        (50.0, (50.0, 0.0, 20.0, 30.0)),  # beyond the 10 s limit: held, uncertainty 2 m/s * 10 s
        (-4.0, (-4.0, 0.0, 6.0, 4.0)),  # before the first fix: 1 m/s, floor 1.5 m/s * 4 s
    ],
    ids=["interpolate", "last-fix", "extrapolate", "held-at-limit", "before-track"],
)
def test_predict_position_model(t: float, expected) -> None:
    """Interpolate inside the track; extrapolate with the end velocity up to the limit, then hold."""
    assert predict_position(TT, XX, YY, t, 10.0) == pytest.approx(expected)


def test_predict_single_fix_grows_uncertainty_at_walking_pace() -> None:
    """With one fix the partner is held in place and uncertainty grows at min_speed_mps."""
    assert predict_position(np.array([0.0]), np.array([1.0]), np.array([2.0]), 8.0, 60.0) == (
        1.0,
        2.0,
        12.0,
        8.0,
    )
    assert (
        predict_position(
            np.array([0.0]), np.array([1.0]), np.array([2.0]), 8.0, 60.0, min_speed_mps=0.0
        )[2]
        == 0.0
    )


def test_predict_rejects_bad_tracks() -> None:
    """Empty, unsorted or mismatched tracks raise GeoError."""
    with pytest.raises(GeoError):
        predict_position(np.array([]), np.array([]), np.array([]), 0.0, 10.0)
    with pytest.raises(GeoError, match="ascending"):
        predict_position(np.array([1.0, 0.0]), np.zeros(2), np.zeros(2), 0.0, 10.0)
    with pytest.raises(GeoError):
        predict_position(np.array([0.0, 1.0]), np.zeros(3), np.zeros(2), 0.0, 10.0)


class _Sample:
    __slots__ = ("t", "x", "y")

    def __init__(self, t: float, x: float, y: float) -> None:
        self.t, self.x, self.y = t, x, y


@st.composite
def tracks_and_times(draw):
    """An ascending track of 1-12 samples (repeated times included) and times around and on it."""
    n = draw(st.integers(1, 12))
    steps = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 7.25, 30.0, 61.0]), min_size=n, max_size=n))
    t0 = draw(st.sampled_from([0.0, 1.7640e9]))
    tt = np.array(t0 + np.cumsum(steps), dtype=np.float64)
    xy = draw(arrays(np.float64, (2, n), elements=_metric(-1e5, 1e5)))
    on = [float(v) for v in tt]
    off = draw(st.lists(_metric(-200.0, 1000.0), min_size=1, max_size=8))
    return tt, xy[0], xy[1], on + [t0 + v for v in off]


@settings(max_examples=200, deadline=None)
@given(tracks_and_times(), st.sampled_from([0.0, 10.0, 60.0]))
def test_predict_on_samples_equals_predict_position(track, max_extrap) -> None:
    """The two-sample entry gives predict_position's numbers exactly, on and between samples."""
    tt, xx, yy, times = track
    samples = [_Sample(float(t), float(x), float(y)) for t, x, y in zip(tt, xx, yy, strict=True)]
    for t in times:
        assert predict_on_samples(samples, t, max_extrap) == predict_position(tt, xx, yy, t, max_extrap)


def test_predict_on_samples_rejects_negative_extrapolation() -> None:
    """A negative extrapolation limit is refused as by predict_position."""
    with pytest.raises(GeoError):
        predict_on_samples([_Sample(0.0, 0.0, 0.0)], 1.0, -1.0)
