"""Field-by-field validation of decoded JSON objects into ``Fix`` and ``DeviceEvent``.

Each check stops at the first problem with an ``InvalidPayload`` whose reason is
a ``RejectReason`` and whose detail names the field and the bad value
("lat=97.2 outside [-90, 90]"), because an operator reading the dead-letter
queue must see at once which device firmware sends what.

Rules shared by all payloads:

* a required field that is absent is ``missing_field``; present but ``null``
  or of the wrong JSON type is ``bad_type``;
* an optional field that is absent or ``null`` means "unknown" (None);
* booleans are never numbers (JSON ``true`` is not ``1``);
* ``seq`` must be a JSON integer; ``batt`` and ``sats`` also accept an
  integral float such as ``76.0`` (some firmware prints every number as float);
* unknown extra fields are ignored, so newer firmware can add fields.

This module is the decoder's hot path: plain functions on dicts, no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Final, cast

import msgspec

from devices.errors import InvalidPayload
from devices.model import EVENT_TYPES, DeviceEvent, Fix, FixSource, RejectReason, StrapState
from engine.timeutil import format_time, parse_time

MISSING: Final = object()
SOURCES: Final = frozenset({"gnss", "wifi", "cell"})
STRAPS: Final = frozenset({"ok", "open", "cut"})
# Fixes dated before 2000 are a firmware bug (typically epoch seconds sent as
# milliseconds, landing in January 1970), never a real position report.
MIN_TIME: Final = 946_684_800.0  # 2000-01-01T00:00:00Z
_SHOW_MAX: Final = 60

R = RejectReason


def show(value: Any) -> str:
    """A short JSON rendering of a value for a rejection detail."""
    if isinstance(value, float) and not math.isfinite(value):
        text = repr(value)
    else:
        try:
            text = msgspec.json.encode(value).decode()
        except (TypeError, ValueError, OverflowError):
            text = repr(value)
    if len(text) > _SHOW_MAX:
        text = text[: _SHOW_MAX - 1] + "…"
    return text


def _present(o: dict[str, Any], name: str, required: bool) -> Any:
    """The field's value, or ``MISSING`` when it is optional and absent or null.

    A required field that is absent is ``missing_field``; a required null falls through to
    the caller's type check and becomes ``bad_type``.
    """
    x = o.get(name, MISSING)
    if x is MISSING:
        if required:
            raise InvalidPayload(R.MISSING_FIELD, f"{name} is required")
        return MISSING
    if x is None and not required:
        return MISSING
    return x


def number(o: dict[str, Any], name: str, required: bool) -> float | None:
    """A JSON number as float; None when optional and absent or null."""
    x = _present(o, name, required)
    if x is MISSING:
        return None
    if isinstance(x, float):
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        try:
            return float(x)
        except OverflowError:
            raise InvalidPayload(R.OUT_OF_RANGE, f"{name}={show(x)} is too large") from None
    raise InvalidPayload(R.BAD_TYPE, f"{name}={show(x)} is not a number")


def integer(o: dict[str, Any], name: str, required: bool, integral_float: bool) -> int | None:
    """A JSON integer; with ``integral_float`` also a float with no fractional part."""
    x = _present(o, name, required)
    if x is MISSING:
        return None
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if integral_float and isinstance(x, float) and x.is_integer():
        return int(x)
    raise InvalidPayload(R.BAD_TYPE, f"{name}={show(x)} is not an integer")


def text(o: dict[str, Any], name: str, required: bool) -> str | None:
    """A non-empty JSON string; None when optional and absent or null."""
    x = _present(o, name, required)
    if x is MISSING:
        return None
    if not isinstance(x, str) or not x:
        raise InvalidPayload(R.BAD_TYPE, f"{name}={show(x)} is not a non-empty string")
    return x


def in_range(name: str, x: float, lo: float, hi: float) -> float:
    """``x`` if lo <= x <= hi (NaN and infinities fail), else out_of_range."""
    if not lo <= x <= hi:
        raise InvalidPayload(R.OUT_OF_RANGE, f"{name}={show(x)} outside [{lo:g}, {hi:g}]")
    return x


def positive(name: str, x: float) -> float:
    """``x`` if finite and > 0, else out_of_range."""
    if not 0.0 < x < math.inf:
        raise InvalidPayload(R.OUT_OF_RANGE, f"{name}={show(x)} must be finite and > 0")
    return x


def non_negative(name: str, x: float) -> float:
    """``x`` if finite and >= 0, else out_of_range."""
    if not 0.0 <= x < math.inf:
        raise InvalidPayload(R.OUT_OF_RANGE, f"{name}={show(x)} must be finite and >= 0")
    return x


def check_time(name: str, t: float, arrival: float, max_future_s: float, min_time: float) -> float:
    """``t`` if it is neither implausibly old nor too far after arrival (clock skew)."""
    if not math.isfinite(t) or t < min_time:
        raise InvalidPayload(
            R.BAD_TIME,
            f"{name}={when(t)} is before {when(min_time)} "
            "(epoch seconds sent where milliseconds are expected?)",
        )
    if t > arrival + max_future_s:
        raise InvalidPayload(
            R.FUTURE_TIME,
            f"{name}={when(t)} is {t - arrival:.0f} s after arrival "
            f"{when(arrival)} (limit {max_future_s:g} s)",
        )
    return t


def when(t: float) -> str:
    """RFC 3339 for a detail text, or the raw number when it is no representable date."""
    try:
        return format_time(t)
    except (ValueError, OverflowError, OSError):
        return show(t)


def device_time(o: dict[str, Any], arrival: float, max_future_s: float, min_time: float) -> float:
    """Field ``t``: RFC 3339 text or epoch milliseconds, checked against arrival."""
    x = o.get("t", MISSING)
    if x is MISSING:
        raise InvalidPayload(R.MISSING_FIELD, "t is required")
    if isinstance(x, bool) or not isinstance(x, str | int | float):
        raise InvalidPayload(R.BAD_TYPE, f"t={show(x)} is not RFC 3339 text or epoch milliseconds")
    try:
        t = parse_time(x)
    except (ValueError, OverflowError) as exc:
        raise InvalidPayload(R.BAD_TIME, f"t={show(x)}: {exc}") from None
    return check_time("t", t, arrival, max_future_s, min_time)


def header(o: dict[str, Any], topic_device: str) -> tuple[str, int]:
    """Checks common to fixes and events: version, device matches topic, seq."""
    v = o.get("v", MISSING)
    if v is MISSING:
        raise InvalidPayload(R.MISSING_FIELD, "v is required")
    if type(v) is not int or v != 1:
        raise InvalidPayload(R.BAD_VERSION, f"v={show(v)} is not a supported version (1)")
    device = cast(str, text(o, "device", True))
    if device != topic_device:
        raise InvalidPayload(
            R.TOPIC_MISMATCH, f"device={show(device)} but the topic is for {show(topic_device)}"
        )
    seq = cast(int, integer(o, "seq", True, False))
    if seq < 0:
        raise InvalidPayload(R.OUT_OF_RANGE, f"seq={seq} must be >= 0")
    return device, seq


def fix_from_object(
    o: dict[str, Any], topic_device: str, arrival: float, max_future_s: float, min_time: float
) -> Fix:
    """A validated ``Fix`` from one native fix object (contract §2)."""
    device, seq = header(o, topic_device)
    t = device_time(o, arrival, max_future_s, min_time)
    lat = in_range("lat", cast(float, number(o, "lat", True)), -90.0, 90.0)
    lon = in_range("lon", cast(float, number(o, "lon", True)), -180.0, 180.0)
    acc = positive("acc", cast(float, number(o, "acc", True)))
    spd = number(o, "spd", False)
    if spd is not None:
        non_negative("spd", spd)
    hdg = number(o, "hdg", False)
    if hdg is not None:
        in_range("hdg", hdg, 0.0, 360.0)
    sats = integer(o, "sats", False, True)
    if sats is not None and sats < 0:
        raise InvalidPayload(R.OUT_OF_RANGE, f"sats={sats} must be >= 0")
    src = text(o, "src", False) or "gnss"
    if src not in SOURCES:
        raise InvalidPayload(R.OUT_OF_RANGE, f"src={show(src)} is not one of cell, gnss, wifi")
    batt = integer(o, "batt", False, True)
    if batt is not None and not 0 <= batt <= 100:
        raise InvalidPayload(R.OUT_OF_RANGE, f"batt={batt} outside [0, 100]")
    strap = text(o, "strap", False)
    if strap is not None and strap not in STRAPS:
        raise InvalidPayload(R.OUT_OF_RANGE, f"strap={show(strap)} is not one of cut, ok, open")
    return Fix(
        device,
        seq,
        t,
        lat,
        lon,
        acc,
        arrival,
        spd,
        hdg,
        sats,
        cast(FixSource, src),
        batt,
        cast("StrapState | None", strap),
    )


def event_from_object(
    o: dict[str, Any], topic_device: str, arrival: float, max_future_s: float, min_time: float
) -> DeviceEvent:
    """A validated ``DeviceEvent`` from one native event object (contract §3).

    ``ble_seen`` needs ``detail.peer`` (device id text) and ``detail.rssi``
    (dBm number): a missing one is ``missing_field``, a wrong type ``bad_type``.
    """
    device, seq = header(o, topic_device)
    t = device_time(o, arrival, max_future_s, min_time)
    kind = cast(str, text(o, "type", True))
    if kind not in EVENT_TYPES:
        raise InvalidPayload(R.UNKNOWN_EVENT, f"type={show(kind)} is not a known event type")
    detail = o.get("detail")
    if detail is None:
        detail = {}
    elif not isinstance(detail, dict):
        raise InvalidPayload(R.BAD_TYPE, f"detail={show(detail)} is not an object")
    if kind == "ble_seen":
        try:
            text(detail, "peer", True)
            number(detail, "rssi", True)
        except InvalidPayload as exc:
            raise InvalidPayload(exc.reason, f"ble_seen detail.{exc.detail}") from None
    return DeviceEvent(device, seq, t, kind, arrival, detail)
