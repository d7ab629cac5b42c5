"""The exact orientation predicate equals rational arithmetic, also for nearly collinear points."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from geo.kernels import orient, orient_exact, segments_touch

# Projected-metre magnitudes: no coordinate (difference) is so small that products underflow.
coords = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False).map(
    lambda v: 0.0 if abs(v) < 1e-6 else v
)


def orient_rational(ax: float, ay: float, bx: float, by: float, cx: float, cy: float) -> int:
    f = Fraction
    det = (f(bx) - f(ax)) * (f(cy) - f(ay)) - (f(by) - f(ay)) * (f(cx) - f(ax))
    return (det > 0) - (det < 0)


@settings(max_examples=300, deadline=None)
@given(coords, coords, coords, coords, st.floats(0.0, 1.0), st.integers(-3, 3))
@example(0.0, 0.0, 1.0, 1.0, 0.5, 0)
@example(100_000.1, 400_000.3, 100_700.7, 400_300.9, 1 / 3, 1)
def test_orient_equals_rational_sign_near_the_line(ax, ay, bx, by, t, ulps) -> None:
    """A point interpolated on a line and nudged by a few ulps gets the exact sign."""
    cx = ax + t * (bx - ax)
    cy = ay + t * (by - ay)
    for _ in range(abs(ulps) if abs(cx) >= 1e-6 else 0):
        cx = float(np.nextafter(cx, np.inf if ulps > 0 else -np.inf))
    expected = orient_rational(ax, ay, bx, by, cx, cy)
    assert orient(ax, ay, bx, by, cx, cy) == expected
    assert orient_exact(ax, ay, bx, by, cx, cy) == expected


@settings(max_examples=200, deadline=None)
@given(coords, coords, coords, coords, coords, coords)
def test_orient_equals_rational_sign_anywhere(ax, ay, bx, by, cx, cy) -> None:
    """The filtered predicate equals exact rational arithmetic on arbitrary points."""
    assert orient(ax, ay, bx, by, cx, cy) == orient_rational(ax, ay, bx, by, cx, cy)


def test_segments_touch_catalogue() -> None:
    """Crossing, touching at an end, collinear overlap and disjoint collinear segments."""
    assert segments_touch(0, 0, 2, 2, 0, 2, 2, 0)
    assert segments_touch(0, 0, 1, 1, 1, 1, 2, 0)
    assert segments_touch(0, 0, 2, 0, 1, 0, 3, 0)
    assert not segments_touch(0, 0, 1, 0, 2, 0, 3, 0)
    assert not segments_touch(0, 0, 1, 1, 0, 1, 0.4, 0.6)
