"""format_time's per-millisecond memory never changes the text it returns."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from devices import timeutil
from devices.timeutil import format_time, parse_time

# 0001-01-01 .. 9999-12-31, the range datetime can format
_TIMES = st.floats(min_value=-62_135_596_800.0, max_value=253_402_300_799.0, allow_nan=False)


def _datetime_text(t: float) -> str:
    """What datetime writes for ``t``, truncated to the millisecond."""
    dt = datetime.fromtimestamp(t, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _reference(t: float) -> str:
    """The text as format_time made it before it remembered anything."""
    return _datetime_text(round(t, 3))


@settings(max_examples=500)
@given(t=_TIMES)
@example(t=1_795_987_800.0005)  # half a millisecond: round() decides, once for both calls
@example(t=1_795_987_800.9996)  # rounds up into the next second
@example(t=-0.0004)
@example(t=-1.5)
@example(t=0.0)
def test_remembered_text_equals_the_computed_text(t: float) -> None:
    """The first (computed) and the second (remembered) text both equal the reference."""
    assert format_time(t) == _reference(t)
    assert format_time(t) == _reference(t)


@given(ts=st.lists(_TIMES, min_size=1, max_size=50))
def test_times_sharing_a_millisecond_share_the_text_of_that_millisecond(ts: list[float]) -> None:
    """Whatever was formatted before, each time gets its own millisecond's text."""
    for t in ts:
        assert format_time(t) == _reference(t)
        assert format_time(round(t, 3)) == _reference(t)


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory is emptied when full, and the texts stay right across the emptying."""
    monkeypatch.setattr(timeutil, "_FORMATTED", {})
    monkeypatch.setattr(timeutil, "_FORMATTED_LIMIT", 8)
    t0 = parse_time("2026-11-24T21:30:00Z")
    for i in range(30):
        t = t0 + i * 0.001
        assert format_time(t) == _reference(t)
        assert 1 <= len(timeutil._FORMATTED) <= 8
    assert format_time(t0) == "2026-11-24T21:30:00.000Z"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e20])
def test_a_time_that_cannot_be_formatted_raises_and_is_not_remembered(bad: float) -> None:
    """Unformattable times raise as datetime does, every time."""
    for _ in range(2):
        with pytest.raises((ValueError, OverflowError, OSError)):
            format_time(bad)
    assert bad not in timeutil._FORMATTED


@settings(max_examples=1000)
@given(t=st.floats(min_value=-1e5, max_value=253_402_300_799.0, allow_nan=False))
@example(t=951_782_400.0)  # 2000-02-29: a leap day of a 400-year
@example(t=4_107_542_400.0)  # 2100-03-01: 2100 is no leap year
@example(t=94_694_399.9999996)  # the fraction rounds up into the next second, day and year
@example(t=253_402_300_798.9999996)  # ... at the end of the arithmetic's range
@example(t=253_402_300_799.0)  # the first second left to datetime
@example(t=1_795_987_800.0000005)  # half a microsecond: rounded to even, as datetime does
@example(t=-0.0)
def test_the_arithmetic_text_equals_datetimes_for_any_float(t: float) -> None:
    """``_format_ms`` (integer arithmetic from 1970 to 9999) writes what ``datetime`` writes,
    for any float, not only those ``format_time`` rounded to the millisecond."""
    assert timeutil._format_ms(t) == _datetime_text(t)


@settings(max_examples=3000)
@given(
    t=st.floats(allow_nan=False)
    | st.floats(min_value=1.0, max_value=4.0e12)
    | st.integers(1, 4 * 10**15).map(lambda m: m / 1000.0)  # whole milliseconds
    | st.integers(1, 8 * 10**15).map(lambda h: h / 2000.0)  # half-way, or next to it
    | st.tuples(st.integers(1, 2**42), st.integers(1, 30)).map(lambda p: p[0] / 2 ** p[1])
)
@example(t=0.0625)  # an exact tie: 62.5 ms, to even
@example(t=1.0625)
@example(t=1.0005)  # not exactly half-way: the exact value decides
@example(t=1_795_987_800.0625)
@example(t=1_795_987_800.9995)
@example(t=1.0)
@example(t=3_999_999_999_999.9995)
@example(t=4.0e12)
@example(t=0.9999999999999999)
def test_round_ms_equals_round_to_three_digits(t: float) -> None:
    """The arithmetic rounding gives round(t, 3)'s double for any float."""
    assert timeutil.round_ms(t) == round(t, 3)
    assert math.copysign(1.0, timeutil.round_ms(t)) == math.copysign(1.0, round(t, 3))
