"""Typed records for what devices send, after decoding and validation.

Times are float seconds since the Unix epoch, UTC. ``t`` is the device's own
time of the fix (decisions are made in device time); ``arrival`` is when the
engine received the message (used for lag metrics and "late" marking only).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from mypy_extensions import mypyc_attr

FixSource = Literal["gnss", "wifi", "cell"]
StrapState = Literal["ok", "open", "cut"]

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "strap_open",
        "strap_cut",
        "case_open",
        "low_battery",
        "charger_connected",
        "charger_disconnected",
        "panic",
        "power_off",
        "gnss_lost",
        "gnss_restored",
        "ble_seen",
    }
)


class RejectReason(enum.StrEnum):
    """Why a message was not evaluated; each value is a metric label and a dead-letter reason."""

    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    BAD_VERSION = "bad_version"
    OUT_OF_RANGE = "out_of_range"
    BAD_TIME = "bad_time"
    FUTURE_TIME = "future_time"
    TOPIC_MISMATCH = "topic_mismatch"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_DEVICE = "unknown_device"
    UNKNOWN_EVENT = "unknown_event"
    EMPTY_BURST = "empty_burst"
    TOO_LARGE = "too_large"  # payload bytes, burst elements, detail items or a string's length
    TOO_DEEP = "too_deep"  # JSON nested deeper than the decoder or ``detail`` allows
    INTERNAL_ERROR = "internal_error"  # a decoder bug, caught so it cannot stop the engine


@dataclass(slots=True, init=False, unsafe_hash=True)
class Fix:
    """One position report from a device (contract §2), validated; never changed once made.

    A written ``__init__`` and not ``frozen`` (made for every fix: engine.tools.native), so in the
    compiled build a native class.  Fixes waiting in a reorder buffer are stored with their
    case as ``engine.core.state_schema.FixRecord``.
    """

    device: str
    seq: int
    t: float
    lat: float
    lon: float
    acc: float
    arrival: float
    spd: float | None
    hdg: float | None
    sats: int | None
    src: FixSource
    batt: int | None
    strap: StrapState | None

    def __init__(
        self, device: str, seq: int, t: float, lat: float, lon: float, acc: float,
        arrival: float, spd: float | None = None, hdg: float | None = None,
        sats: int | None = None, src: FixSource = "gnss", batt: int | None = None,
        strap: StrapState | None = None,
    ) -> None:
        self.device = device
        self.seq = seq
        self.t = t
        self.lat = lat
        self.lon = lon
        self.acc = acc
        self.arrival = arrival
        self.spd = spd
        self.hdg = hdg
        self.sats = sats
        self.src = src
        self.batt = batt
        self.strap = strap

    @property
    def key(self) -> str:
        """Evidence reference ``device:seq`` as used in alert evidence lists."""
        return f"{self.device}:{self.seq}"


@mypyc_attr(native_class=False)  # stays a Python class in the compiled build, as it was
@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One device event (contract §3), validated."""

    device: str
    seq: int
    t: float
    type: str
    arrival: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Evidence reference ``device:seq``."""
        return f"{self.device}:{self.seq}"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Rejection:
    """A message (or one element of a burst) that failed validation.

    ``payload`` keeps the raw text so the dead-letter record loses nothing.  Never changed
    once made (a written ``__init__``, not ``frozen``: engine.tools.native).
    """

    reason: RejectReason
    detail: str
    topic: str
    payload: str
    arrival: float
    device: str | None = None
    # the rejected message's own seq when it names the topic's device with an integer seq:
    # it still took its place in the device's sequence, so later fixes need not wait for it
    seq: int | None = None

    def __init__(
        self, reason: RejectReason, detail: str, topic: str, payload: str, arrival: float,
        device: str | None = None, seq: int | None = None,
    ) -> None:
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.payload = payload
        self.arrival = arrival
        self.device = device
        self.seq = seq
