"""Issue 21: every limit of every device channel, on both sides of its edge, with its reason.

The table in docs/contract-extensions.md ("Device input limits") is this catalogue.  A value
at the limit is accepted (by the fast path too, for native fixes); one beyond it is a single
rejection with the reason and a detail naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.decode import decode_message
from devices.fastpath import fast_fixes
from devices.model import RejectReason
from devices.timeutil import parse_time
from devices.validate import (
    DETAIL_MAX_DEPTH,
    DETAIL_MAX_ITEMS,
    DETAIL_MAX_TEXT,
    MAX_ACC_M,
    MAX_BURST,
    MAX_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    MAX_SATS,
    MAX_SEQ,
    MAX_SPD_MPS,
    MAX_TIME_TEXT,
    MAX_TOPIC_CHARS,
    MAX_VEL_KMH,
    MIN_TIME,
)

R = RejectReason
ARRIVAL = parse_time("2026-11-23T10:15:03Z")
FIX_TOPIC = "em/dev/AM-1001/fix"
EVENT_TOPIC = "em/dev/AM-1001/event"
OT_TOPIC = "owntracks/anna/phone"
FIX: dict[str, Any] = {
    "v": 1, "device": "AM-1001", "seq": 7, "t": "2026-11-23T10:15:02.120Z", "lat": 51.9,
    "lon": 4.4, "acc": 8.0, "spd": 1.0, "hdg": 10.0, "sats": 7, "batt": 50,
}  # fmt: skip
EVENT: dict[str, Any] = {"v": 1, "device": "AM-1001", "seq": 8, "t": "2026-11-23T10:15:02Z",
                         "type": "low_battery", "detail": {}}  # fmt: skip
BLE: dict[str, Any] = dict(EVENT, type="ble_seen", detail={"peer": "AM-1", "rssi": -60})
OT: dict[str, Any] = {"_type": "location", "lat": 51.9, "lon": 4.4, "tst": int(ARRIVAL) - 1, "acc": 9}


def decode(topic: str, payload: bytes) -> Any:
    return decode_message(topic, payload, ARRIVAL, owntracks_map={"anna/phone": "VD-2001"})


def nested(depth: int) -> dict[str, Any]:
    """A detail object ``depth`` levels deep (the object itself is level 1)."""
    value: Any = 1
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


INSIDE: list[tuple[str, str, Any]] = [
    ("seq max", FIX_TOPIC, dict(FIX, seq=MAX_SEQ)),
    ("acc max", FIX_TOPIC, dict(FIX, acc=MAX_ACC_M)),
    ("spd max", FIX_TOPIC, dict(FIX, spd=MAX_SPD_MPS)),
    ("sats max", FIX_TOPIC, dict(FIX, sats=MAX_SATS)),
    ("t text max", FIX_TOPIC, dict(FIX, t="2026-11-23T10:15:02." + "1" * (MAX_TIME_TEXT - 21) + "Z")),
    ("event seq max", EVENT_TOPIC, dict(EVENT, seq=MAX_SEQ)),
    ("detail depth max", EVENT_TOPIC, dict(EVENT, detail=nested(DETAIL_MAX_DEPTH))),
    ("detail items max", EVENT_TOPIC, dict(EVENT, detail={str(i): i for i in range(DETAIL_MAX_ITEMS)})),
    ("detail text max", EVENT_TOPIC, dict(EVENT, detail={"k" * DETAIL_MAX_TEXT: "v" * DETAIL_MAX_TEXT})),
    ("detail int64", EVENT_TOPIC, dict(EVENT, detail={"a": -(2**63), "b": MAX_SEQ})),
    ("rssi edges", EVENT_TOPIC, [dict(BLE, detail={"peer": "AM-1", "rssi": r}) for r in (-200, 50)]),
    ("ot acc max", OT_TOPIC, dict(OT, acc=MAX_ACC_M)),
    ("ot vel max", OT_TOPIC, dict(OT, vel=MAX_VEL_KMH)),
]

OUTSIDE: list[tuple[str, str, Any, RejectReason, str]] = [
    ("seq 2**63", FIX_TOPIC, dict(FIX, seq=MAX_SEQ + 1), R.OUT_OF_RANGE, "seq=9223372036854775808"),
    ("seq 2**64", FIX_TOPIC, dict(FIX, seq=2**64), R.OUT_OF_RANGE, "seq="),
    ("seq 10**400", FIX_TOPIC, dict(FIX, seq=10**400), R.OUT_OF_RANGE, "seq="),
    ("acc", FIX_TOPIC, dict(FIX, acc=MAX_ACC_M * 1.0001), R.OUT_OF_RANGE, "acc="),
    ("acc 1e308", FIX_TOPIC, dict(FIX, acc=1e308), R.OUT_OF_RANGE, "acc="),
    ("spd", FIX_TOPIC, dict(FIX, spd=MAX_SPD_MPS + 0.5), R.OUT_OF_RANGE, "spd="),
    ("sats", FIX_TOPIC, dict(FIX, sats=MAX_SATS + 1), R.OUT_OF_RANGE, "sats="),
    ("sats 10**400", FIX_TOPIC, dict(FIX, sats=10**400), R.OUT_OF_RANGE, "sats="),
    ("t text", FIX_TOPIC, dict(FIX, t="2026-11-23T10:15:02." + "1" * 100 + "Z"), R.BAD_TIME, "characters"),
    ("event seq", EVENT_TOPIC, dict(EVENT, seq=MAX_SEQ + 1), R.OUT_OF_RANGE, "seq="),
    ("detail depth", EVENT_TOPIC, dict(EVENT, detail=nested(DETAIL_MAX_DEPTH + 1)), R.TOO_DEEP, "detail.a"),
    ("detail items", EVENT_TOPIC, dict(EVENT, detail={str(i): i for i in range(DETAIL_MAX_ITEMS + 1)}),
     R.TOO_LARGE, "keys and elements"),
    ("detail list items", EVENT_TOPIC, dict(EVENT, detail={"a": list(range(DETAIL_MAX_ITEMS))}),
     R.TOO_LARGE, "keys and elements"),
    ("detail text", EVENT_TOPIC, dict(EVENT, detail={"a": ["v" * (DETAIL_MAX_TEXT + 1)]}), R.TOO_LARGE,
     "detail.a[0] is 1025 characters"),
    ("detail key", EVENT_TOPIC, dict(EVENT, detail={"k" * (DETAIL_MAX_TEXT + 1): 1}), R.TOO_LARGE, "key"),
    ("detail int", EVENT_TOPIC, dict(EVENT, detail={"a": 2**63}), R.OUT_OF_RANGE, "detail.a="),
    ("rssi", EVENT_TOPIC, dict(BLE, detail={"peer": "AM-1", "rssi": -201}), R.OUT_OF_RANGE,
     "ble_seen detail.rssi=-201.0"),
    ("ot acc", OT_TOPIC, dict(OT, acc=MAX_ACC_M + 1), R.OUT_OF_RANGE, "acc="),
    ("ot vel", OT_TOPIC, dict(OT, vel=MAX_VEL_KMH + 1), R.OUT_OF_RANGE, "vel="),
    ("ot vel 10**400", OT_TOPIC, dict(OT, vel=10**400), R.OUT_OF_RANGE, "vel="),
    ("ot tst 2**70", OT_TOPIC, dict(OT, tst=2**70), R.FUTURE_TIME, "tst="),
]  # fmt: skip


@pytest.mark.parametrize(("topic", "obj"), [c[1:] for c in INSIDE], ids=[c[0] for c in INSIDE])
def test_a_value_at_the_limit_is_accepted(topic: str, obj: Any) -> None:
    """At the limit nothing is rejected; a native fix also takes the fast path."""
    payload = json.dumps(obj).encode()
    d = decode(topic, payload)
    assert d.rejections == [] and len(d.fixes) + len(d.events) >= 1
    if topic == FIX_TOPIC:
        assert fast_fixes(payload, "AM-1001", ARRIVAL, 300.0, MIN_TIME) == d.fixes


@pytest.mark.parametrize(
    ("topic", "obj", "reason", "needle"), [c[1:] for c in OUTSIDE], ids=[c[0] for c in OUTSIDE]
)
def test_a_value_beyond_the_limit_is_one_rejection(
    topic: str, obj: Any, reason: RejectReason, needle: str
) -> None:
    """Beyond the limit: one rejection, its reason, a detail naming the field; the fast path defers."""
    payload = json.dumps(obj).encode()
    d = decode(topic, payload)
    assert d.fixes == [] and d.events == []
    [r] = d.rejections
    assert r.reason is reason and needle in r.detail, r.detail
    if topic == FIX_TOPIC:
        assert fast_fixes(payload, "AM-1001", ARRIVAL, 300.0, MIN_TIME) is None


def test_a_rejected_fix_with_a_seq_beyond_64_bits_takes_no_place_in_the_sequence() -> None:
    """Only an in-range seq of a rejected message is kept (it moves the device's sequence)."""
    bad = decode(FIX_TOPIC, json.dumps(dict(FIX, seq=2**63, lat=99)).encode()).rejections[0]
    assert bad.seq is None
    bad = decode(FIX_TOPIC, json.dumps(dict(FIX, seq=12, lat=99)).encode()).rejections[0]
    assert bad.seq == 12


def test_a_burst_beyond_the_element_limit_is_one_rejection() -> None:
    """Above MAX_BURST elements the whole burst is one too_large dead letter, not thousands.

    Valid fixes reach the byte limit first (~70 bytes each at the least); the element limit
    is for arrays of tiny junk, each element of which would be a dead letter of its own.
    """
    assert len(decode(FIX_TOPIC, json.dumps([1] * MAX_BURST).encode()).rejections) == MAX_BURST
    d = decode(FIX_TOPIC, json.dumps([1] * (MAX_BURST + 1)).encode())
    [r] = d.rejections
    assert r.reason is R.TOO_LARGE and f"limit {MAX_BURST}" in r.detail and d.fixes == []
    burst = [dict(FIX, seq=i) for i in range(MAX_BURST)]
    payload = json.dumps(burst).encode()
    d = decode_message(FIX_TOPIC, payload, ARRIVAL, max_bytes=len(payload))
    assert len(d.fixes) == MAX_BURST and d.rejections == []
    assert fast_fixes(payload, "AM-1001", ARRIVAL, 300.0, MIN_TIME) == d.fixes
    payload = json.dumps([*burst, FIX]).encode()
    d = decode_message(FIX_TOPIC, payload, ARRIVAL, max_bytes=len(payload))
    assert d.rejections[0].reason is R.TOO_LARGE and d.fixes == []
    assert fast_fixes(payload, "AM-1001", ARRIVAL, 300.0, MIN_TIME) is None


def test_payload_topic_and_device_id_limits() -> None:
    """Bytes, topic length and device-id length are too_large; a long topic is kept truncated."""
    [r] = decode(FIX_TOPIC, b" " * (MAX_PAYLOAD_BYTES + 1)).rejections
    assert r.reason is R.TOO_LARGE and "bytes" in r.detail
    assert decode(FIX_TOPIC, json.dumps(FIX).encode() + b" " * 1000).fixes  # under the limit
    long_topic = "em/dev/" + "x" * MAX_TOPIC_CHARS + "/fix"
    [r] = decode(long_topic, json.dumps(FIX).encode()).rejections
    assert r.reason is R.TOO_LARGE and len(r.topic) == MAX_TOPIC_CHARS + 1 and r.device is None
    device = "A" * (MAX_ID_CHARS + 1)
    [r] = decode(f"em/dev/{device}/fix", json.dumps(dict(FIX, device=device)).encode()).rejections
    assert r.reason is R.TOO_LARGE and "device id" in r.detail and r.device is None
    device = "A" * MAX_ID_CHARS
    assert decode(f"em/dev/{device}/fix", json.dumps(dict(FIX, device=device)).encode()).fixes


@pytest.mark.parametrize(
    "payload",
    [b"[" * 100_000, b'{"a":' * 5_000, b"[" * 2_000 + b"]" * 2_000],
    ids=["100k [", "5k objects", "2k closed"],
)
@pytest.mark.parametrize("topic", [FIX_TOPIC, EVENT_TOPIC, OT_TOPIC])
def test_deep_nesting_is_too_deep_on_every_channel(topic: str, payload: bytes) -> None:
    """JSON nested beyond the decoder's limit is too_deep on every channel, never RecursionError."""
    [r] = decode(topic, payload).rejections
    assert r.reason is R.TOO_DEEP


@pytest.mark.parametrize(
    "payload",
    [b'{"v":1,"device":"\xff"}', b'["\xed\xa0\x80"]', b'{"x":"\\ud800"}', b'{"lat":NaN}',
     b'{"lat":Infinity}', b'{"lat":1e999}'],
    ids=["invalid utf-8", "utf-8 surrogate", "lone surrogate escape", "NaN", "Infinity", "1e999"],
)  # fmt: skip
@pytest.mark.parametrize("topic", [FIX_TOPIC, EVENT_TOPIC, OT_TOPIC])
def test_text_json_cannot_hold_is_bad_json(topic: str, payload: bytes) -> None:
    """Invalid UTF-8, lone surrogates and non-finite numbers are bad_json on every channel."""
    [r] = decode(topic, payload).rejections
    assert r.reason is R.BAD_JSON
    json.dumps(r.payload)  # the dead letter keeps a text every encoder takes
    r.payload.encode("utf-8")
