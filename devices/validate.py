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
from devices.timeutil import format_time, parse_time

MISSING: Final = object()
SOURCES: Final = frozenset({"gnss", "wifi", "cell"})
STRAPS: Final = frozenset({"ok", "open", "cut"})
# Fixes dated before 2000 are a firmware bug (typically epoch seconds sent as
# milliseconds, landing in January 1970), never a real position report.
MIN_TIME: Final = 946_684_800.0  # 2000-01-01T00:00:00Z
_SHOW_MAX: Final = 60

# Limits on everything a device sends (issue 21).  Every number has a range and every string
# and container a size, so that no value a device can send reaches state, pickling or JSON
# encoding deeper in the engine and fails there (a seq of 2**63 passed validation, then made
# the state commit raise OverflowError: all alerting stopped).  Each is far above what real
# firmware sends; docs/contract-extensions.md lists them with their reject reasons.
MAX_SEQ: Final = 2**63 - 1  # seq is stored as a signed 64-bit integer (engine.core.tracks.SeqMemory)
MAX_PAYLOAD_BYTES: Final = 262_144  # one message; a burst of ~1,500 fixes (a day at 1/min)
MAX_BURST: Final = 4096  # elements of one burst (array) message
MAX_TOPIC_CHARS: Final = 256  # a received topic (its parse is cached per topic: decode.py)
MAX_ID_CHARS: Final = 64  # a device id named by a topic
MAX_TIME_TEXT: Final = 64  # an RFC 3339 ``t`` text
MAX_ACC_M: Final = 100_000.0  # accuracy radius; a cell-only position is a few km
MAX_SPD_MPS: Final = 1_000.0  # speed, native ``spd`` (an airliner flies at ~250 m/s)
MAX_VEL_KMH: Final = 3_600.0  # speed, OwnTracks ``vel`` (the same 1,000 m/s)
MAX_SATS: Final = 1_000  # satellites used
RSSI_RANGE: Final = (-200.0, 50.0)  # ble_seen ``detail.rssi``, dBm
DETAIL_MAX_DEPTH: Final = 5  # an event ``detail``: the object itself is depth 1
DETAIL_MAX_ITEMS: Final = 128  # keys and list elements in the whole ``detail`` tree
DETAIL_MAX_TEXT: Final = 1024  # characters of any key or string in ``detail``
_INT64_MIN: Final = -(2**63)

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


def accuracy(name: str, x: float) -> float:
    """An accuracy radius: ``x`` if 0 < x <= ``MAX_ACC_M``, else out_of_range."""
    positive(name, x)
    if x > MAX_ACC_M:
        raise InvalidPayload(R.OUT_OF_RANGE, f"{name}={show(x)} above {MAX_ACC_M:g} m")
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
    if isinstance(x, str) and len(x) > MAX_TIME_TEXT:
        raise InvalidPayload(
            R.BAD_TIME, f"t={show(x)} is {len(x)} characters, limit {MAX_TIME_TEXT}"
        )
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
    if not 0 <= seq <= MAX_SEQ:
        raise InvalidPayload(R.OUT_OF_RANGE, f"seq={show(seq)} outside [0, 2**63-1]")
    return device, seq


def fix_from_object(
    o: dict[str, Any], topic_device: str, arrival: float, max_future_s: float, min_time: float
) -> Fix:
    """A validated ``Fix`` from one native fix object (contract §2)."""
    device, seq = header(o, topic_device)
    t = device_time(o, arrival, max_future_s, min_time)
    lat = in_range("lat", cast(float, number(o, "lat", True)), -90.0, 90.0)
    lon = in_range("lon", cast(float, number(o, "lon", True)), -180.0, 180.0)
    acc = accuracy("acc", cast(float, number(o, "acc", True)))
    spd = number(o, "spd", False)
    if spd is not None:
        in_range("spd", spd, 0.0, MAX_SPD_MPS)
    hdg = number(o, "hdg", False)
    if hdg is not None:
        in_range("hdg", hdg, 0.0, 360.0)
    sats = integer(o, "sats", False, True)
    if sats is not None and not 0 <= sats <= MAX_SATS:
        raise InvalidPayload(R.OUT_OF_RANGE, f"sats={show(sats)} outside [0, {MAX_SATS}]")
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
    else:
        bounded_detail(detail)
    if kind == "ble_seen":
        try:
            text(detail, "peer", True)
            in_range("rssi", cast(float, number(detail, "rssi", True)), *RSSI_RANGE)
        except InvalidPayload as exc:
            raise InvalidPayload(exc.reason, f"ble_seen detail.{exc.detail}") from None
    return DeviceEvent(device, seq, t, kind, arrival, detail)


def bounded_detail(detail: dict[str, Any]) -> None:
    """Refuse an event ``detail`` beyond its limits; a walk with a stack, never recursion.

    The detail is kept with the event and copied into alerts, notifications and the
    evidence log, so it is bounded like every other field: at most ``DETAIL_MAX_DEPTH``
    levels (``too_deep``), ``DETAIL_MAX_ITEMS`` keys and elements in all (``too_large``),
    ``DETAIL_MAX_TEXT`` characters per key or string (``too_large``), and integers that fit
    64 bits (``out_of_range``: a JSON encoder or a signed 64-bit field deeper in refuses
    more).  JSON decoding gives no other kinds of value and no NaN or infinity.
    """
    items = 0
    stack: list[tuple[str, Any, int]] = [("detail", detail, 1)]
    while stack:
        path, value, depth = stack.pop()
        if isinstance(value, dict):
            children: list[tuple[str, Any]] = []
            for key, child in value.items():
                if len(key) > DETAIL_MAX_TEXT:
                    raise InvalidPayload(
                        R.TOO_LARGE,
                        f"{path} has a key of {len(key)} characters, limit {DETAIL_MAX_TEXT}",
                    )
                children.append((f"{path}.{key[:20]}", child))
        elif isinstance(value, list):
            children = [(f"{path}[{i}]", child) for i, child in enumerate(value)]
        else:
            _bounded_scalar(path, value)
            continue
        items += len(children)
        if items > DETAIL_MAX_ITEMS:
            raise InvalidPayload(
                R.TOO_LARGE, f"detail has more than {DETAIL_MAX_ITEMS} keys and elements"
            )
        for child_path, child in children:
            if isinstance(child, dict | list):
                if depth + 1 > DETAIL_MAX_DEPTH:
                    raise InvalidPayload(
                        R.TOO_DEEP, f"{child_path} is nested deeper than {DETAIL_MAX_DEPTH} levels"
                    )
                stack.append((child_path, child, depth + 1))
            else:
                _bounded_scalar(child_path, child)


def _bounded_scalar(path: str, value: Any) -> None:
    if isinstance(value, str):
        if len(value) > DETAIL_MAX_TEXT:
            raise InvalidPayload(
                R.TOO_LARGE, f"{path} is {len(value)} characters, limit {DETAIL_MAX_TEXT}"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidPayload(R.OUT_OF_RANGE, f"{path}={show(value)} is not finite")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _INT64_MIN <= value <= MAX_SEQ:
            raise InvalidPayload(R.OUT_OF_RANGE, f"{path}={show(value)} outside 64 bits")
