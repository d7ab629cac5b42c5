"""Fast path for native fixes: typed msgspec decoding that only ever accepts.

Nearly every fix on the wire is valid, so the decoder first asks msgspec to decode straight
into ``devices.wire.WireFix``, whose types and range constraints are checked in C.  This
path never rejects anything: on any doubt (a type or range error, an unusual time form, a
version other than 1, a topic mismatch, a time out of bounds) it returns None and the caller
runs the slow path in ``devices.validate``, which finds the precise reason and detail.

Invariant (tested with hypothesis in tests/devices/test_device_fuzz.py): whenever this path
returns fixes, the slow path returns the identical fixes.  Compiled in the compiled build
(engine.tools.native); the ``Struct`` it reads is not (``devices.wire``).
"""

from __future__ import annotations

from datetime import datetime

from msgspec.structs import astuple
from mypy_extensions import i64

from devices.model import Fix
from devices.validate import MAX_BURST
from devices.wire import DOUBT, WireFix, decode_many, decode_one

_US_LIMIT = 2.0**53  # microseconds since 1970 below this are exact doubles (until June 2255)


def _two(b: bytes, i: i64) -> i64:
    """The two ASCII digits at ``b[i:i+2]`` as a number, -1 when either is not a digit."""
    hi: i64 = b[i] - 48
    lo: i64 = b[i + 1] - 48
    if 0 <= hi <= 9 and 0 <= lo <= 9:
        return hi * 10 + lo
    return -1


def utc_seconds(text: str) -> float | None:
    """``datetime.fromisoformat(text).timestamp()`` for the contract's own forms
    ``YYYY-MM-DDTHH:MM:SSZ`` and ``...SS.fffZ`` / ``...SS.ffffffZ`` from 1970 to mid-2255,
    without building a ``datetime`` (~4,000 instructions per fix compiled); None for anything
    else, which the caller hands to ``datetime``.

    ``timestamp()`` of an aware datetime is its whole microseconds since the epoch divided
    by 10**6 (``timedelta.total_seconds``, correctly rounded).  Below 2**53 those
    microseconds, and every partial sum and product of whole numbers on the way to them, are
    exact doubles, so the float arithmetic here is exact and its one division gives the same
    double.  The fields are read as fixed-width integers (``i64``: plain machine arithmetic in
    the compiled build).  A field out of range (month 13, February 30th, second 60) is left to
    ``datetime`` too, which refuses it.
    """
    n: i64 = len(text)
    if n != 20 and n != 24 and n != 27:
        return None
    b = text.encode()
    if (
        len(b) != n or b[4] != 45 or b[7] != 45 or b[10] != 84 or b[13] != 58 or b[16] != 58
        or b[n - 1] != 90  # "-", "-", "T", ":", ":", "Z"
    ):
        return None
    c, y = _two(b, 0), _two(b, 2)
    month, day = _two(b, 5), _two(b, 8)
    hour, minute, second = _two(b, 11), _two(b, 14), _two(b, 17)
    if c < 19 or y < 0 or not 1 <= month <= 12 or not 1 <= day <= 31:
        return None
    if not (0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 59):
        return None
    year = c * 100 + y
    if year < 1970 or day > _days_in_month(year, month):
        return None
    us: i64 = 0
    if n > 20:
        if b[19] != 46:  # "."
            return None
        i: i64 = 20
        while i < n - 1:
            d: i64 = b[i] - 48
            if not 0 <= d <= 9:
                return None
            us = us * 10 + d
            i += 1
        if n == 24:
            us *= 1000
    total = (
        float(_days_from_civil(year, month, day)) * 86_400.0
        + float(hour * 3600 + minute * 60 + second)
    ) * 1e6 + float(us)
    if total >= _US_LIMIT:
        return None
    return total / 1e6


def _days_in_month(year: i64, month: i64) -> i64:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month == 4 or month == 6 or month == 9 or month == 11 else 31


def _days_from_civil(year: i64, month: i64, day: i64) -> i64:
    """Days from 1970-01-01 to a date (``year >= 1``): H. Hinnant's ``days_from_civil``, the
    inverse of ``devices.timeutil._civil_from_days``."""
    y = year - 1 if month <= 2 else year
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def _to_fix(
    w: WireFix, device: str, arrival: float, max_future_s: float, min_time: float
) -> Fix | None:
    # the fields in declaration order, read in one C call (each attribute read of the Struct
    # from compiled code was a generic look-up)
    v, dev, seq, t_raw, lat, lon, acc, spd, hdg, sats, src, batt, strap = astuple(w)
    if v != 1 or dev != device:
        return None
    t: float
    if type(t_raw) is int:
        t = t_raw / 1000.0
    else:
        fast = utc_seconds(t_raw)
        if fast is not None:
            t = fast
        else:
            dt = datetime.fromisoformat(t_raw)
            if dt.tzinfo is None:
                return None
            t = dt.timestamp()
    if not min_time <= t <= arrival + max_future_s:
        return None
    return Fix(device, seq, t, lat, lon, acc, arrival, spd, hdg, sats, src or "gnss", batt, strap)


def fast_fixes(
    payload: bytes | str, device: str, arrival: float, max_future_s: float, min_time: float
) -> list[Fix] | None:
    """All fixes of a valid fix payload (object or non-empty array), or None when in doubt."""
    try:
        # a typed comparison each (``in`` a tuple of both compared generically)
        burst = (payload[:1] == b"[") if isinstance(payload, bytes) else (payload[:1] == "[")
        if burst:
            wires: list[WireFix] = decode_many(payload)
            if not wires or len(wires) > MAX_BURST:
                return None
            fixes = []
            for w in wires:
                fix = _to_fix(w, device, arrival, max_future_s, min_time)
                if fix is None:
                    return None
                fixes.append(fix)
            return fixes
        fix = _to_fix(decode_one(payload), device, arrival, max_future_s, min_time)
    except DOUBT:
        return None
    return None if fix is None else [fix]
