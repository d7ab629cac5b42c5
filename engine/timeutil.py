"""Time parsing and formatting for the contract: RFC 3339 with ``Z`` or epoch milliseconds, always UTC."""

from __future__ import annotations

from datetime import UTC, datetime


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


def format_time(t: float) -> str:
    """RFC 3339 UTC with millisecond precision and ``Z``, as in the contract's examples.

    Every alert change formats four times and every message to a device one more, and
    most of them repeat (an alert's raise time in each of its changes, one ``now`` in all
    messages of one fix): the text is remembered per millisecond, which is all that the
    text depends on.  A time that cannot be formatted raises as before and is not stored.
    """
    ms = round(t, 3)
    text = _FORMATTED.get(ms)
    if text is None:
        text = _format_ms(ms)
        if len(_FORMATTED) >= _FORMATTED_LIMIT:
            _FORMATTED.clear()
        _FORMATTED[ms] = text
    return text


def _format_ms(ms: float) -> str:
    """``format_time`` without its memory, for a time already rounded to the millisecond."""
    dt = datetime.fromtimestamp(ms, tz=UTC)
    if dt.year < 1000:  # strftime's %Y does not pad these
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    # what strftime("%Y-%m-%dT%H:%M:%S.") gives, at a third of the cost (every alert change)
    return (
        f"{dt.year}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}."
        f"{dt.microsecond // 1000:03d}Z"
    )
