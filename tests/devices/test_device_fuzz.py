"""Property tests: decode_message never raises, the fast path agrees with the slow one, round trips."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devices.decode import Decoded, decode_message
from devices.encode import event_payload, fix_payload
from devices.fastpath import fast_fixes, utc_seconds
from devices.model import EVENT_TYPES, DeviceEvent, Fix, RejectReason
from devices.validate import MAX_ACC_M, MAX_SPD_MPS, MIN_TIME, fix_from_object

ARRIVAL = 1795428903.0
TOPICS = [
    "em/dev/AM-1001/fix",
    "em/dev/AM-1001/event",
    "owntracks/anna/phone",
    "owntracks/bob/phone",
    "em/dev/AM-1001/other",
]
OT_MAP = {"anna/phone": "AM-1001"}
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_result(d: Decoded, topic: str) -> None:
    assert isinstance(d, Decoded)
    for r in d.rejections:
        assert r.reason in RejectReason and r.reason is not RejectReason.INTERNAL_ERROR, r
        assert r.topic == topic and r.detail and r.arrival == ARRIVAL
    for f in d.fixes:
        assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180 and 0 < f.acc < math.inf
        assert MIN_TIME <= f.t <= ARRIVAL + 300 and f.seq >= 0
    for e in d.events:
        assert e.type in EVENT_TYPES


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=6)
    ),
    max_leaves=20,
)

# Values that sit on or near the edges of what each field accepts.
EDGES: list[Any] = [
    None, True, False, 0, 1, -1, 0.0, -0.0, 1.0, 2, 7.0, 7.5, 90, 90.0000001, -90, 180, -180.5,
    360, 360.1, 100, 101, 10**20, 10**400, -(2**64), 1e308, "", "gnss", "wifi", "cell", "ok",
    "open", "cut", "AM-1001", "AM-1002", "1", [], {}, [1], {"a": 1},
    "2026-11-23T10:15:02Z", "2026-11-23T10:15:02", "2026-11-23T10:15:02+01:00",
    "2026-11-23T10:15:02.999999z", " 2026-11-23T10:15:02Z", "2026-11-23", 1795428902120,
    1795428902120.5, 1795428902, 1795429203000, 1795429204000, 946684800000, 946684799999,
]  # fmt: skip
DROP = object()
edgy = st.sampled_from(EDGES)
GOOD: dict[str, Any] = {
    "v": 1, "device": "AM-1001", "seq": 5, "t": 1795428902120, "lat": 51.9, "lon": 4.4,
    "acc": 8.0, "spd": 1.0, "hdg": 10.0, "sats": 7, "src": "wifi", "batt": 50, "strap": "ok",
}  # fmt: skip
FIELDS = [*GOOD, "extra"]


@st.composite
def near_valid_fix(draw: st.DrawFn) -> dict[str, Any]:
    """A valid fix with a few fields replaced by edge values or dropped."""
    obj = dict(GOOD)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            obj[name] = draw(edgy | json_values)
        else:
            obj.pop(name, None)
    return obj


@FUZZ
@given(topic=st.sampled_from(TOPICS), payload=st.binary(max_size=300))
@example(topic=TOPICS[0], payload=b"[" * 5000)
@example(topic=TOPICS[0], payload=b"\xff\xfe")
@example(topic=TOPICS[0], payload=b"")
@example(topic=TOPICS[2], payload=b'{"_type":"location","lat":1e999}')
def test_arbitrary_bytes_never_raise(topic: str, payload: bytes) -> None:
    """Any bytes on any topic give a Decoded with only device-caused rejection reasons."""
    check_result(decode_message(topic, payload, ARRIVAL, owntracks_map=OT_MAP), topic)


@FUZZ
@given(topic=st.sampled_from(TOPICS), value=json_values | st.lists(json_values, max_size=4))
def test_arbitrary_json_never_raises(topic: str, value: Any) -> None:
    """Any JSON value (object, array, scalar) on any topic never raises."""
    payload = json.dumps(value).encode()
    check_result(decode_message(topic, payload, ARRIVAL, owntracks_map=OT_MAP), topic)


def assert_paths_agree(obj: dict[str, Any]) -> None:
    payload = json.dumps(obj).encode()
    fast = fast_fixes(payload, "AM-1001", ARRIVAL, 300.0, MIN_TIME)
    d = decode_message("em/dev/AM-1001/fix", payload, ARRIVAL)
    check_result(d, "em/dev/AM-1001/fix")
    if fast is not None:
        slow = fix_from_object(msgspec.json.decode(payload), "AM-1001", ARRIVAL, 300.0, MIN_TIME)
        assert fast == [slow]
        assert d.fixes == fast
    burst = decode_message("em/dev/AM-1001/fix", json.dumps([GOOD, obj, GOOD]).encode(), ARRIVAL)
    assert len(burst.fixes) == 2 + len(d.fixes)
    assert [r.reason for r in burst.rejections] == [r.reason for r in d.rejections]


@pytest.mark.parametrize("field", FIELDS)
def test_fast_path_agrees_on_every_edge_value(field: str) -> None:
    """For every field set to every edge value, or dropped, both paths agree."""
    accepted = 0
    for value in [*EDGES, DROP]:
        obj = {k: v for k, v in GOOD.items() if k != field}
        if value is not DROP:
            obj[field] = value
        assert_paths_agree(obj)
        accepted += (
            fast_fixes(json.dumps(obj).encode(), "AM-1001", ARRIVAL, 300.0, MIN_TIME) is not None
        )
    assert accepted >= 1  # the fast path is really taken for this field


@FUZZ
@given(obj=near_valid_fix())
@example(obj={**GOOD, "lat": 10**400})
@example(obj={**GOOD, "t": "2026-11-23T10:15:02.999999z"})
@example(obj={**GOOD, "batt": 50.0})
def test_fast_path_agrees_with_slow_path(obj: dict[str, Any]) -> None:
    """Whenever the msgspec fast path accepts a fix, the precise slow path gives the same fix."""
    assert_paths_agree(obj)


def _timestamp_or_none(text: str) -> float | None:
    """What ``datetime`` makes of a time text: the timestamp, None when it refuses or is naive."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


_CONTRACT_TIMES = st.builds(
    lambda dt, digits: dt.strftime("%Y-%m-%dT%H:%M:%S") + (
        "" if digits == 0 else "." + f"{dt.microsecond:06d}"[:digits]
    ) + "Z",
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2255, 6, 1)),
    st.sampled_from([0, 3, 6]),
)


@settings(max_examples=1000)
@given(text=_CONTRACT_TIMES)
@example(text="2000-02-29T12:00:00Z")  # a leap day of a 400-year
@example(text="1970-01-01T00:00:00.000Z")
@example(text="2255-05-31T23:59:59.999999Z")
def test_the_contract_time_forms_are_read_without_datetime(text: str) -> None:
    """The contract's own forms are read by the arithmetic, to datetime's timestamp."""
    assert utc_seconds(text) == _timestamp_or_none(text) is not None


@settings(max_examples=2000)
@given(
    text=_CONTRACT_TIMES.flatmap(
        lambda t: st.tuples(st.integers(0, len(t) - 1), st.sampled_from("0159:-.TZzx é+ ")).map(
            lambda p: t[: p[0]] + p[1] + t[p[0] + 1 :]
        )
    )
    | st.text(alphabet="0123456789-:.TZz+ ", min_size=18, max_size=28)
)
@example(text="2026-02-29T10:00:00Z")  # no such day
@example(text="2100-02-29T10:00:00Z")  # 2100 is no leap year
@example(text="2026-13-01T10:00:00Z")
@example(text="2026-04-31T10:00:00Z")
@example(text="2026-01-01T24:00:00Z")
@example(text="2026-01-01T10:00:60Z")
@example(text="2026-01-01T10:00:00.12Z")
@example(text="2026-01-01T10:00:00.1234567Z")
@example(text="2026-01-01T10:00:00+00:00")
@example(text="2026-01-01 10:00:00Z")
@example(text="1969-12-31T23:59:59Z")
@example(text="2256-01-01T00:00:00Z")
def test_any_other_time_text_is_left_to_datetime_or_read_alike(text: str) -> None:
    """Near misses and odd texts: the arithmetic gives datetime's answer or none at all."""
    got = utc_seconds(text)
    assert got is None or got == _timestamp_or_none(text)


@FUZZ
@given(objs=st.lists(near_valid_fix(), max_size=4))
def test_near_valid_fixes_on_event_and_owntracks_topics_never_raise(
    objs: list[dict[str, Any]],
) -> None:
    """Fix-shaped payloads on other topics are decoded or rejected, never raised."""
    for topic in TOPICS:
        for payload in (objs, *objs):
            check_result(
                decode_message(topic, json.dumps(payload).encode(), ARRIVAL, owntracks_map=OT_MAP),
                topic,
            )


finite = st.floats(allow_nan=False, allow_infinity=False)
fixes = st.builds(
    Fix,
    device=st.text(
        st.characters(blacklist_characters="/+#", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=12,
    ),
    seq=st.integers(0, 2**63 - 1),
    t=st.integers(int(MIN_TIME * 1000), int(ARRIVAL * 1000) + 300_000).map(lambda ms: ms / 1000),
    lat=st.floats(-90, 90),
    lon=st.floats(-180, 180),
    acc=st.floats(0, MAX_ACC_M).filter(lambda a: a > 0),
    arrival=st.just(ARRIVAL),
    spd=st.none() | st.floats(0, MAX_SPD_MPS),
    hdg=st.none() | st.floats(0, 360),
    sats=st.none() | st.integers(0, 64),
    src=st.sampled_from(["gnss", "wifi", "cell"]),
    batt=st.none() | st.integers(0, 100),
    strap=st.none() | st.sampled_from(["ok", "open", "cut"]),
)


@FUZZ
@given(fix=fixes, epoch_ms=st.booleans(), as_burst=st.booleans())
@example(
    fix=Fix("A", 0, MIN_TIME, -90.0, 180.0, 5e-324, ARRIVAL, 0.0, 360.0, 0, "cell", 0, "cut"),
    epoch_ms=False,
    as_burst=False,
)
def test_valid_fix_round_trips(fix: Fix, epoch_ms: bool, as_burst: bool) -> None:
    """A valid fix encoded as a contract payload decodes back equal."""
    body = fix_payload(fix, epoch_ms=epoch_ms)
    payload = json.dumps([body, body] if as_burst else body).encode()
    d = decode_message(f"em/dev/{fix.device}/fix", payload, ARRIVAL)
    assert d.rejections == []
    assert d.fixes == ([fix, fix] if as_burst else [fix])


@FUZZ
@given(
    device=st.sampled_from(["VD-2001", "AM-1"]),
    seq=st.integers(0, 10**12),
    ms=st.integers(int(MIN_TIME * 1000), int(ARRIVAL * 1000)),
    kind=st.sampled_from(sorted(EVENT_TYPES)),
    epoch_ms=st.booleans(),
)
def test_valid_event_round_trips(device: str, seq: int, ms: int, kind: str, epoch_ms: bool) -> None:
    """A valid event encoded as a contract payload decodes back equal."""
    detail: dict[str, Any] = {"peer": "AM-1001", "rssi": -70.5} if kind == "ble_seen" else {}
    ev = DeviceEvent(device, seq, ms / 1000, kind, ARRIVAL, detail)
    payload = json.dumps(event_payload(ev, epoch_ms=epoch_ms)).encode()
    assert decode_message(f"em/dev/{device}/event", payload, ARRIVAL).events == [ev]
