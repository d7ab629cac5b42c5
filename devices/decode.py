"""One received MQTT message in, validated fixes/events and rejections out.

``decode_message`` is the single entry point the service, replay and the
simulator share.  It never raises: every problem a device can cause becomes a
``Rejection`` (dead-lettered and counted by the engine), and even a bug in the
decoder itself becomes an ``internal_error`` rejection, because one bad message
must never stop the engine or other devices (contract §2).

Payload forms accepted:

* ``{prefix}/dev/{id}/fix``: one fix object, or a JSON array of fix objects (a
  burst a device buffered while offline).  Each burst element is validated on
  its own: good ones are kept, each bad one gets its own rejection carrying
  the element's exact raw text.  An empty array is ``empty_burst``.
* ``{prefix}/dev/{id}/event``: one event object, or an array of them (the same
  burst rule, so a tamper event buffered offline is not lost).
* ``owntracks/{user}/{device}``: see ``devices.owntracks``.

Parsing uses msgspec into plain Python objects, then hand-written checks
(``devices.validate``) so each failure has a precise reason and detail.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from devices.errors import InvalidPayload
from devices.fastpath import fast_fixes
from devices.model import DeviceEvent, Fix, Rejection, RejectReason
from devices.owntracks import location_to_fix, owntracks_type
from devices.topics import TopicRef, TopicScheme
from devices.validate import (
    MAX_BURST,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    MAX_TOPIC_CHARS,
    MIN_TIME,
    event_from_object,
    fix_from_object,
    when,
)

log = logging.getLogger(__name__)

R = RejectReason
TOO_LARGE_KEEP = 1024  # characters of an oversized payload kept in its dead-letter record
_DECODE_ERRORS = (msgspec.MsgspecError, ValueError)
_decode_json = msgspec.json.decode


@dataclass(slots=True, init=False)
class Decoded:
    """Everything one MQTT message yielded; all three lists may be empty (e.g. OwnTracks ``lwt``).

    A written ``__init__`` (made per message: engine.tools.native).
    """

    fixes: list[Fix]
    events: list[DeviceEvent]
    rejections: list[Rejection]

    def __init__(self, fixes: list[Fix], events: list[DeviceEvent], rejections: list[Rejection]) -> None:
        self.fixes = fixes
        self.events = events
        self.rejections = rejections


#: parsed topics: topic -> (the prefix it was parsed under, what it says); emptied when full
_TOPICS: dict[str, tuple[str, TopicRef | None]] = {}
_TOPICS_LIMIT = 1 << 16


def _parse_topic(prefix: str, topic: str) -> TopicRef | None:
    """Topics repeat for every message of a device, so their parse is remembered (a dict by
    topic: ``functools.lru_cache`` built and hashed a key tuple in Python's C wrapper, ~1,100
    instructions a message compiled)."""
    known = _TOPICS.get(topic)
    if known is not None and known[0] == prefix:
        return known[1]
    ref = TopicScheme(prefix).parse(topic)
    if len(_TOPICS) >= _TOPICS_LIMIT:
        _TOPICS.clear()
    _TOPICS[topic] = (prefix, ref)
    return ref


def _text(payload: bytes | str) -> str:
    if isinstance(payload, str):
        return payload
    return bytes(payload).decode("utf-8", errors="replace")


def decode_message(
    topic: str,
    payload: bytes | str,
    arrival: float,
    *,
    prefix: str = "em",
    owntracks_map: Mapping[str, str] | None = None,
    max_future_s: float = 300.0,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    min_time: float = MIN_TIME,
) -> Decoded:
    """Decode and validate one received message; never raises.

    ``arrival`` (epoch seconds) is stamped on every record and bounds device
    time: a fix more than ``max_future_s`` after arrival is ``future_time``;
    one before ``min_time`` (default 2000-01-01) is ``bad_time``.
    ``owntracks_map`` maps ``"user/device"`` to a registered device id.
    A payload above ``max_bytes`` (default 256 KiB), a topic above 256 characters or a device
    id above 64 is ``too_large``; JSON nested beyond the decoder's limit (~1,000 levels) is
    ``too_deep``; a burst above 4,096 elements is ``too_large`` as a whole.
    """
    try:
        return _decode(
            topic, payload, arrival, prefix, owntracks_map, max_future_s, max_bytes, min_time
        )
    except Exception as exc:  # a decoder bug must not stop the engine: dead-letter it
        log.exception("decoder error on topic %r", topic)
        return Decoded(
            [],
            [],
            [
                Rejection(
                    R.INTERNAL_ERROR,
                    f"decoder error: {type(exc).__name__}: {exc}",
                    str(topic),
                    _safe_text(payload),
                    arrival,
                )
            ],
        )


def _own_seq(doc: Any, device: str) -> int | None:
    """The seq of a rejected object that names the topic's device, else None.

    Only a seq in range (``devices.validate.MAX_SEQ``): it moves the device's sequence.
    """
    if type(doc) is dict and doc.get("device") == device and type(doc.get("seq")) is int:
        seq = int(doc["seq"])
        if 0 <= seq <= MAX_SEQ:
            return seq
    return None


def _safe_text(payload: object) -> str:
    try:
        return _text(payload)  # type: ignore[arg-type]
    except Exception:
        return repr(payload)[:TOO_LARGE_KEEP]


def _reject(
    reason: RejectReason,
    detail: str,
    topic: str,
    payload: bytes | str,
    arrival: float,
    device: str | None,
    seq: int | None = None,
) -> Decoded:
    return Decoded([], [], [Rejection(reason, detail, topic, _text(payload), arrival, device, seq)])


def _decode(
    topic: str,
    payload: bytes | str,
    arrival: float,
    prefix: str,
    owntracks_map: Mapping[str, str] | None,
    max_future_s: float,
    max_bytes: int,
    min_time: float,
) -> Decoded:
    if len(topic) > MAX_TOPIC_CHARS:  # never parsed, cached, nor kept whole
        return _reject(
            R.TOO_LARGE,
            f"topic is {len(topic)} characters, limit {MAX_TOPIC_CHARS}",
            topic[:MAX_TOPIC_CHARS] + "…",
            payload[:TOO_LARGE_KEEP],
            arrival,
            None,
        )
    ref = _parse_topic(prefix, topic)
    if ref is None:
        return _reject(
            R.UNKNOWN_TOPIC, f"topic {topic!r} is not a device topic", topic, payload, arrival, None
        )
    if ref.kind == "owntracks_other":
        return Decoded([], [], [])
    device = ref.device
    if device is not None and len(device) > MAX_ID_CHARS:
        detail = f"device id in the topic is {len(device)} characters, limit {MAX_ID_CHARS}"
        return _reject(R.TOO_LARGE, detail, topic, payload[:TOO_LARGE_KEEP], arrival, None)
    if len(payload) > max_bytes:
        kept = _text(payload[:TOO_LARGE_KEEP])
        detail = f"payload is {len(payload)} bytes, limit {max_bytes} (first {len(kept)} kept)"
        return Decoded([], [], [Rejection(R.TOO_LARGE, detail, topic, kept, arrival, device)])
    if ref.kind == "fix" and device is not None:
        fast = fast_fixes(payload, device, arrival, max_future_s, min_time)
        if fast is not None:
            return Decoded(fast, [], [])
    try:
        doc = _decode_json(payload)
    except RecursionError:
        # msgspec counts its own depth and stops at ~1,000 levels: a clean refusal
        detail = "JSON nested deeper than the decoder's limit (about 1,000 levels)"
        return _reject(R.TOO_DEEP, detail, topic, payload, arrival, device)
    except _DECODE_ERRORS as exc:
        return _reject(R.BAD_JSON, f"not valid JSON: {exc}", topic, payload, arrival, device)

    if ref.kind == "owntracks":
        return _owntracks(
            doc,
            ref.owntracks_key or "",
            topic,
            payload,
            arrival,
            owntracks_map,
            max_future_s,
            min_time,
        )

    if device is None:  # unreachable: native topics always name a device
        raise AssertionError(f"native topic {topic!r} without a device")
    if type(doc) is dict:
        try:
            if ref.kind == "fix":
                fix = fix_from_object(doc, device, arrival, max_future_s, min_time)
                return Decoded([fix], [], [])
            event = event_from_object(doc, device, arrival, max_future_s, min_time)
            return Decoded([], [event], [])
        except InvalidPayload as exc:
            return _reject(
                exc.reason, exc.detail, topic, payload, arrival, device, _own_seq(doc, device)
            )
    if type(doc) is list:
        return _burst(
            doc, ref.kind == "fix", device, topic, payload, arrival, max_future_s, min_time
        )
    return _reject(
        R.NOT_AN_OBJECT,
        f"payload is a JSON {json_kind(doc)}, expected an object or an array of objects",
        topic,
        payload,
        arrival,
        device,
    )


def json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for rejection details."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _burst(
    items: list[Any],
    is_fix: bool,
    device: str,
    topic: str,
    payload: bytes | str,
    arrival: float,
    max_future_s: float,
    min_time: float,
) -> Decoded:
    if not items:
        return _reject(R.EMPTY_BURST, "payload is an empty array", topic, payload, arrival, device)
    if len(items) > MAX_BURST:  # a dead letter per element would multiply the message
        detail = f"burst of {len(items)} elements, limit {MAX_BURST}"
        return _reject(R.TOO_LARGE, detail, topic, payload, arrival, device)
    fixes: list[Fix] = []
    events: list[DeviceEvent] = []
    rejections: list[Rejection] = []
    raws: list[msgspec.Raw] | None = None
    n = len(items)
    for i, item in enumerate(items):
        try:
            if type(item) is not dict:
                raise InvalidPayload(
                    R.NOT_AN_OBJECT,
                    f"burst element is a JSON {json_kind(item)}, expected an object",
                )
            if is_fix:
                fixes.append(fix_from_object(item, device, arrival, max_future_s, min_time))
            else:
                events.append(event_from_object(item, device, arrival, max_future_s, min_time))
        except InvalidPayload as exc:
            if raws is None:  # exact element text, only computed when something is rejected
                raws = msgspec.json.decode(payload, type=list[msgspec.Raw])
            rejections.append(
                Rejection(
                    exc.reason,
                    f"[{i}/{n}] {exc.detail}",
                    topic,
                    bytes(raws[i]).decode("utf-8", errors="replace"),
                    arrival,
                    device,
                    _own_seq(item, device),
                )
            )
    return Decoded(fixes, events, rejections)


def _owntracks(
    doc: Any,
    key: str,
    topic: str,
    payload: bytes | str,
    arrival: float,
    owntracks_map: Mapping[str, str] | None,
    max_future_s: float,
    min_time: float,
) -> Decoded:
    if type(doc) is not dict:
        return _reject(
            R.NOT_AN_OBJECT,
            f"OwnTracks payload is a JSON {json_kind(doc)}, expected an object",
            topic,
            payload,
            arrival,
            None,
        )
    device = owntracks_map.get(key) if owntracks_map is not None else None
    try:
        if owntracks_type(doc) != "location":
            return Decoded([], [], [])
        if device is None:
            raise InvalidPayload(R.UNKNOWN_DEVICE, f"OwnTracks {key!r} is not in the registry")
        fix = location_to_fix(doc, device, arrival, max_future_s, min_time)
    except InvalidPayload as exc:
        return _reject(exc.reason, exc.detail, topic, payload, arrival, device)
    return Decoded([fix], [], [])


def dead_letter_record(r: Rejection) -> dict[str, Any]:
    """The JSON-able record the engine publishes on ``{prefix}/deadletter`` for a rejection."""
    return {
        "v": 1,
        "reason": r.reason.value,
        "detail": r.detail,
        "topic": r.topic,
        "device": r.device,
        "arrival": when(r.arrival),
        "payload": r.payload,
    }
