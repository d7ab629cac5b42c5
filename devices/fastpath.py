"""Fast path for native fixes: typed msgspec decoding that only ever accepts.

Nearly every fix on the wire is valid, so the decoder first asks msgspec to decode straight
into ``devices.wire.WireFix``, whose types and range constraints are checked in C.  This
path never rejects anything: on any doubt (a type or range error, an unusual time form, a
version other than 1, a topic mismatch, a time out of bounds) it returns None and the caller
runs the slow path in ``devices.validate``, which finds the precise reason and detail.

Invariant (tested with hypothesis in tests/devices/test_device_fuzz.py): whenever this path
returns fixes, the slow path returns the identical fixes.  Compiled in the compiled build
(engine.native); the ``Struct`` it reads is not (``devices.wire``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from devices.model import Fix
from devices.wire import DOUBT, WireFix, decode_many, decode_one


def _to_fix(
    w: WireFix, device: str, arrival: float, max_future_s: float, min_time: float
) -> Fix | None:
    if w.v != 1 or w.device != device:
        return None
    t_raw: Any = w.t
    if type(t_raw) is int:
        t = t_raw / 1000.0
    else:
        dt = datetime.fromisoformat(t_raw)
        if dt.tzinfo is None:
            return None
        t = dt.timestamp()
    if not min_time <= t <= arrival + max_future_s:
        return None
    return Fix(
        device, w.seq, t, w.lat, w.lon, w.acc, arrival, w.spd, w.hdg, w.sats, w.src or "gnss",
        w.batt, w.strap,
    )


def fast_fixes(
    payload: bytes | str, device: str, arrival: float, max_future_s: float, min_time: float
) -> list[Fix] | None:
    """All fixes of a valid fix payload (object or non-empty array), or None when in doubt."""
    try:
        if payload[:1] in (b"[", "["):
            wires: list[WireFix] = decode_many(payload)
            if not wires:
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
