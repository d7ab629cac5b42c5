"""The inverse of the decoder: records to contract payloads (contract §2 and §3).

The simulator and tests use these so what they publish is exactly what the
decoder accepts; ``decode_message(topic, encode(fix))`` gives the fix back
(with the receiver's ``arrival``).  Device time is written with millisecond
precision, as in the contract, so a time with sub-millisecond digits does not
survive the round trip.
"""

from __future__ import annotations

from typing import Any

from devices.model import DeviceEvent, Fix
from devices.timeutil import format_time


def _time(t: float, epoch_ms: bool) -> str | int:
    return round(t * 1000) if epoch_ms else format_time(t)


def fix_payload(fix: Fix, *, epoch_ms: bool = False) -> dict[str, Any]:
    """The native JSON object for a fix; optional fields that are None are left out."""
    out: dict[str, Any] = {
        "v": 1,
        "device": fix.device,
        "seq": fix.seq,
        "t": _time(fix.t, epoch_ms),
        "lat": fix.lat,
        "lon": fix.lon,
        "acc": fix.acc,
    }
    for name in ("spd", "hdg", "sats", "batt", "strap"):
        value = getattr(fix, name)
        if value is not None:
            out[name] = value
    if fix.src != "gnss":
        out["src"] = fix.src
    return out


def event_payload(event: DeviceEvent, *, epoch_ms: bool = False) -> dict[str, Any]:
    """The native JSON object for a device event."""
    return {
        "v": 1,
        "device": event.device,
        "seq": event.seq,
        "t": _time(event.t, epoch_ms),
        "type": event.type,
        "detail": dict(event.detail),
    }
