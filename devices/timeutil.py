"""Time parsing and formatting for the contract: RFC 3339 with ``Z`` or epoch milliseconds, always UTC."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Final


def parse_time(value: object) -> float:
    """Epoch seconds from an RFC 3339 string or integer epoch milliseconds.

    Raises ValueError with a readable reason; booleans and naive local times are refused
    because a fix in the wrong time zone would be evaluated against the wrong curfew.
    """
    if isinstance(value, bool):
        raise ValueError("time must be RFC 3339 text or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        return value / 1000.0
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("time is not a finite number")
        return value / 1000.0
    if not isinstance(value, str):
        raise ValueError("time must be RFC 3339 text or epoch milliseconds")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an RFC 3339 time: {value!r}") from exc
    if dt.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {value!r}")
    return dt.timestamp()


#: formatted times by their millisecond value (``round(t, 3)``); cleared when it reaches
#: ``_FORMATTED_LIMIT`` entries, so it holds only the recent past the engine still formats
_FORMATTED: dict[float, str] = {}
_FORMATTED_LIMIT = 4096
_2D: Final = tuple(f"{i:02d}" for i in range(100))
_3D: Final = tuple(f"{i:03d}" for i in range(1000))
_FAST_END: Final = 253_402_300_799.0  # 9999-12-31T23:59:59: a second short of year 10000


def format_time(t: float) -> str:
    """RFC 3339 UTC with millisecond precision and ``Z``, as in the contract's examples.

    Every alert change formats four times and every message to a device one more, and
    most of them repeat (an alert's raise time in each of its changes, one ``now`` in all
    messages of one fix): the text is remembered per millisecond, which is all that the
    text depends on.  A time that cannot be formatted raises as before and is not stored.
    """
    ms = round_ms(t)
    text = _FORMATTED.get(ms)
    if text is None:
        text = _format_ms(ms)
        if len(_FORMATTED) >= _FORMATTED_LIMIT:
            _FORMATTED.clear()
        _FORMATTED[ms] = text
    return text


_SPLIT: Final = 134_217_729.0  # 2**27 + 1: Veltkamp's split of a double into two 26-bit halves
_FAST_ROUND_END: Final = 4.0e12  # t * 1000 below 2**52: whole milliseconds are exact doubles


def round_ms(t: float) -> float:
    """``round(t, 3)``, exactly, without its decimal conversion (~5,700 instructions compiled).

    ``round`` rounds the exact value of ``t`` to the millisecond, half to even, and returns
    the double nearest to that decimal.  For ``1 <= t < 4e12``: ``y = t * 1000`` is the
    rounded product and ``err`` its exact error (Dekker's two-product: ``t`` split in halves
    whose products with 1000 are exact), so ``y + err`` is ``t`` in milliseconds exactly.
    ``y`` is a multiple of its ulp, which divides 0.5, and ``|err|`` is at most half an ulp:
    only when ``y`` lies exactly half-way between two integers can ``err`` decide the side,
    and only when ``err`` is 0 too is it a tie.  The whole milliseconds ``m`` are an exact
    double, and ``m / 1000`` is the double nearest to the decimal.  Other times go to
    ``round`` (tests/engine/test_timeutil.py holds both equal for any float).
    """
    if not 1.0 <= t < _FAST_ROUND_END:
        return round(t, 3)
    y = t * 1000.0
    c = _SPLIT * t
    hi = c - (c - t)
    err = (hi * 1000.0 - y) + (t - hi) * 1000.0
    m = math.floor(y)
    frac = y - m
    if frac > 0.5 or (frac == 0.5 and (err > 0.0 or (err == 0.0 and m % 2 == 1))):
        m += 1
    return m / 1000.0


def _format_ms(ms: float) -> str:
    """``format_time`` without its memory, for a time already rounded to the millisecond.

    From 1970 to 9999, integer arithmetic and digit tables: every new millisecond of an alert
    change came here, and ``datetime`` with six ``:02d`` formats cost ~30,000 instructions of
    the compiled build each.  The steps are ``datetime.fromtimestamp``'s (whole seconds, the
    fraction rounded half to even to the microsecond, carried into the next second at
    1,000,000), so the text is the same (tests/engine/test_timeutil.py); other times, and
    times that cannot be formatted, go to ``datetime``.
    """
    if 0.0 <= ms < _FAST_END:
        sec = math.floor(ms)
        us = round((ms - sec) * 1e6)
        if us >= 1_000_000:
            us -= 1_000_000
            sec += 1
        days, rem = divmod(sec, 86_400)
        year, month, day = _civil_from_days(days)
        return (
            f"{year}-{_2D[month]}-{_2D[day]}T{_2D[rem // 3600]}:{_2D[rem // 60 % 60]}:"
            f"{_2D[rem % 60]}.{_3D[us // 1000]}Z"
        )
    dt = datetime.fromtimestamp(ms, tz=UTC)
    if dt.year < 1000:  # strftime's %Y does not pad these
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return (
        f"{dt.year}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
        f"{dt.microsecond // 1000:03d}Z"
    )


def _civil_from_days(days: int) -> tuple[int, int, int]:
    """(year, month, day) of ``days`` after 1970-01-01 (``days >= 0``) in the proleptic
    Gregorian calendar: H. Hinnant's ``civil_from_days`` (chrono-Compatible Low-Level Date
    Algorithms), as ``datetime`` counts."""
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097  # day of the 400-year era, 0..146096
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)  # day of the year from March 1st
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return year, month, day
