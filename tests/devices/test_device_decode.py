"""Catalogue tests for devices.decode: every reason code, bursts, events, OwnTracks, dead letters."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devices.decode import Decoded, dead_letter_record, decode_message
from devices.model import EVENT_TYPES, DeviceEvent, Fix, RejectReason
from devices.timeutil import parse_time

ARRIVAL = parse_time("2026-11-23T10:15:03Z")
FIX_TOPIC = "em/dev/AM-1001/fix"
EVENT_TOPIC = "em/dev/AM-1001/event"
OT_MAP = {"anna/phone": "VP-3001"}

GOOD_FIX: dict[str, Any] = {
    "v": 1,
    "device": "AM-1001",
    "seq": 18233,
    "t": "2026-11-23T10:15:02.120Z",
    "lat": 51.92291,
    "lon": 4.47059,
    "acc": 8.0,
    "spd": 1.4,
    "hdg": 270.0,
    "sats": 9,
    "src": "gnss",
    "batt": 76,
    "strap": "ok",
}
GOOD_EVENT: dict[str, Any] = {
    "v": 1,
    "device": "AM-1001",
    "seq": 18234,
    "t": "2026-11-23T10:15:02Z",
    "type": "strap_open",
    "detail": {},
}
GOOD_OT: dict[str, Any] = {
    "_type": "location",
    "lat": 51.9,
    "lon": 4.4,
    "acc": 12,
    "tst": 1795428900,
    "vel": 18,
    "cog": 90,
    "batt": 55,
    "tid": "an",
}
_DROP = object()


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in changes.items():
        if v is _DROP:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def decode(topic: str, payload: bytes, **kw: Any) -> Decoded:
    kw.setdefault("owntracks_map", OT_MAP)
    return decode_message(topic, payload, ARRIVAL, **kw)


def only_rejection(d: Decoded) -> Any:
    assert d.fixes == [] and d.events == []
    assert len(d.rejections) == 1
    return d.rejections[0]


def test_contract_example_fix_decodes_to_all_fields() -> None:
    """The contract §2 example fix decodes with every field carried over."""
    d = decode(FIX_TOPIC, enc(GOOD_FIX))
    assert d.rejections == [] and d.events == []
    assert d.fixes == [
        Fix(
            device="AM-1001",
            seq=18233,
            t=parse_time("2026-11-23T10:15:02.120Z"),
            lat=51.92291,
            lon=4.47059,
            acc=8.0,
            arrival=ARRIVAL,
            spd=1.4,
            hdg=270.0,
            sats=9,
            src="gnss",
            batt=76,
            strap="ok",
        )
    ]


def test_minimal_fix_gets_defaults() -> None:
    """A fix with only the required fields gets src gnss and None for the optional fields."""
    minimal = {k: GOOD_FIX[k] for k in ("v", "device", "seq", "t", "lat", "lon", "acc")}
    (fix,) = decode(FIX_TOPIC, enc(minimal)).fixes
    assert (fix.src, fix.spd, fix.hdg, fix.sats, fix.batt, fix.strap) == (
        "gnss",
        None,
        None,
        None,
        None,
        None,
    )


def test_null_optional_fields_mean_unknown() -> None:
    """Optional fields sent as null are treated as absent, not rejected."""
    payload = with_(GOOD_FIX, spd=None, hdg=None, sats=None, src=None, batt=None, strap=None)
    (fix,) = decode(FIX_TOPIC, enc(payload)).fixes
    assert fix.src == "gnss" and fix.spd is None and fix.strap is None


def test_epoch_ms_and_rfc3339_give_equal_fixes() -> None:
    """The same instant as epoch milliseconds or RFC 3339 text decodes to an equal fix."""
    a = decode(FIX_TOPIC, enc(GOOD_FIX)).fixes
    b = decode(FIX_TOPIC, enc(with_(GOOD_FIX, t=1795428902120))).fixes
    c = decode(FIX_TOPIC, enc(with_(GOOD_FIX, t="2026-11-23T11:15:02.120+01:00"))).fixes
    assert a == b == c and len(a) == 1


def test_unknown_extra_fields_are_ignored() -> None:
    """Fields a newer firmware adds are ignored (forward compatible)."""
    d = decode(FIX_TOPIC, enc(with_(GOOD_FIX, alt=12.5, hdop=0.9, extra={"x": [1, 2]})))
    assert len(d.fixes) == 1 and d.rejections == []


def test_integral_float_batt_and_sats_are_accepted() -> None:
    """batt and sats written as 76.0 / 9.0 are accepted as integers."""
    (fix,) = decode(FIX_TOPIC, enc(with_(GOOD_FIX, batt=76.0, sats=9.0))).fixes
    assert fix.batt == 76 and isinstance(fix.batt, int) and fix.sats == 9


@pytest.mark.parametrize("field", ["lat", "lon", "hdg", "spd", "acc"])
def test_integers_are_accepted_for_float_fields(field: str) -> None:
    """A JSON integer is a valid number for float fields."""
    (fix,) = decode(FIX_TOPIC, enc(with_(GOOD_FIX, **{field: 3}))).fixes
    assert getattr(fix, field) == 3.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("lat", 90), ("lat", -90), ("lon", 180), ("lon", -180), ("hdg", 0), ("hdg", 360),
     ("spd", 0), ("batt", 0), ("batt", 100), ("sats", 0), ("seq", 0), ("acc", 0.001)],
)  # fmt: skip
def test_range_edges_are_accepted(field: str, value: Any) -> None:
    """Values on the closed edge of each range are valid."""
    d = decode(FIX_TOPIC, enc(with_(GOOD_FIX, **{field: value})))
    assert d.rejections == [] and len(d.fixes) == 1


R = RejectReason
FIX_CATALOGUE: list[tuple[str, dict[str, Any] | bytes, RejectReason, str]] = [
    ("not json", b'{"v": 1, "lat": ', R.BAD_JSON, "not valid JSON"),
    ("not utf-8", b'{"device": "\xff"}', R.BAD_JSON, "not valid JSON"),
    ("number too big for a double", b'{"lat": 1e400}', R.BAD_JSON, "not valid JSON"),
    ("string payload", b'"hello"', R.NOT_AN_OBJECT, "a JSON string"),
    ("number payload", b"3.5", R.NOT_AN_OBJECT, "a JSON number"),
    ("boolean payload", b"true", R.NOT_AN_OBJECT, "a JSON boolean"),
    ("null payload", b"null", R.NOT_AN_OBJECT, "null"),
    ("missing v", with_(GOOD_FIX, v=_DROP), R.MISSING_FIELD, "v is required"),
    ("missing device", with_(GOOD_FIX, device=_DROP), R.MISSING_FIELD, "device"),
    ("missing seq", with_(GOOD_FIX, seq=_DROP), R.MISSING_FIELD, "seq"),
    ("missing t", with_(GOOD_FIX, t=_DROP), R.MISSING_FIELD, "t is required"),
    ("missing lat", with_(GOOD_FIX, lat=_DROP), R.MISSING_FIELD, "lat"),
    ("missing lon", with_(GOOD_FIX, lon=_DROP), R.MISSING_FIELD, "lon"),
    ("missing acc", with_(GOOD_FIX, acc=_DROP), R.MISSING_FIELD, "acc"),
    ("lat text", with_(GOOD_FIX, lat="51.9"), R.BAD_TYPE, 'lat="51.9"'),
    ("lat null", with_(GOOD_FIX, lat=None), R.BAD_TYPE, "lat=null"),
    ("lat bool", with_(GOOD_FIX, lat=True), R.BAD_TYPE, "lat=true"),
    ("seq float", with_(GOOD_FIX, seq=1.5), R.BAD_TYPE, "seq=1.5"),
    ("seq integral float", with_(GOOD_FIX, seq=7.0), R.BAD_TYPE, "seq=7.0"),
    ("device number", with_(GOOD_FIX, device=1001), R.BAD_TYPE, "device=1001"),
    ("device empty", with_(GOOD_FIX, device=""), R.BAD_TYPE, 'device=""'),
    ("t list", with_(GOOD_FIX, t=[2026]), R.BAD_TYPE, "t=[2026]"),
    ("t bool", with_(GOOD_FIX, t=True), R.BAD_TYPE, "t=true"),
    ("spd text", with_(GOOD_FIX, spd="fast"), R.BAD_TYPE, 'spd="fast"'),
    ("batt fraction", with_(GOOD_FIX, batt=76.5), R.BAD_TYPE, "batt=76.5"),
    ("src number", with_(GOOD_FIX, src=1), R.BAD_TYPE, "src=1"),
    ("strap bool", with_(GOOD_FIX, strap=False), R.BAD_TYPE, "strap=false"),
    ("v 2", with_(GOOD_FIX, v=2), R.BAD_VERSION, "v=2"),
    ("v text", with_(GOOD_FIX, v="1"), R.BAD_VERSION, 'v="1"'),
    ("v true", with_(GOOD_FIX, v=True), R.BAD_VERSION, "v=true"),
    ("v float", with_(GOOD_FIX, v=1.0), R.BAD_VERSION, "v=1.0"),
    ("lat 97.2", with_(GOOD_FIX, lat=97.2), R.OUT_OF_RANGE, "lat=97.2 outside [-90, 90]"),
    ("lat -90.5", with_(GOOD_FIX, lat=-90.5), R.OUT_OF_RANGE, "lat=-90.5 outside [-90, 90]"),
    ("lon 180.1", with_(GOOD_FIX, lon=180.1), R.OUT_OF_RANGE, "lon=180.1 outside [-180, 180]"),
    ("acc 0", with_(GOOD_FIX, acc=0), R.OUT_OF_RANGE, "acc=0.0 must be finite and > 0"),
    ("acc negative", with_(GOOD_FIX, acc=-3), R.OUT_OF_RANGE, "acc=-3.0"),
    ("acc huge int", with_(GOOD_FIX, acc=10**400), R.OUT_OF_RANGE, "acc=1000"),
    ("batt 101", with_(GOOD_FIX, batt=101), R.OUT_OF_RANGE, "batt=101 outside [0, 100]"),
    ("batt -1", with_(GOOD_FIX, batt=-1), R.OUT_OF_RANGE, "batt=-1"),
    ("hdg 361", with_(GOOD_FIX, hdg=361), R.OUT_OF_RANGE, "hdg=361.0 outside [0, 360]"),
    ("hdg -1", with_(GOOD_FIX, hdg=-1), R.OUT_OF_RANGE, "hdg=-1.0"),
    ("spd negative", with_(GOOD_FIX, spd=-0.1), R.OUT_OF_RANGE, "spd=-0.1"),
    ("sats negative", with_(GOOD_FIX, sats=-2), R.OUT_OF_RANGE, "sats=-2"),
    ("seq negative", with_(GOOD_FIX, seq=-5), R.OUT_OF_RANGE, "seq=-5"),
    ("src unknown", with_(GOOD_FIX, src="glonass"), R.OUT_OF_RANGE, 'src="glonass"'),
    ("strap unknown", with_(GOOD_FIX, strap="loose"), R.OUT_OF_RANGE, 'strap="loose"'),
    ("t garbage", with_(GOOD_FIX, t="yesterday"), R.BAD_TIME, 't="yesterday"'),
    ("t naive", with_(GOOD_FIX, t="2026-11-23T10:15:02"), R.BAD_TIME, "without a UTC offset"),
    ("t seconds not ms", with_(GOOD_FIX, t=1795428902), R.BAD_TIME, "t=1970-01-21"),
    ("t huge ms", with_(GOOD_FIX, t=10**400), R.BAD_TIME, "t=1000"),
    ("t future", with_(GOOD_FIX, t="2026-11-23T10:25:03Z"), R.FUTURE_TIME, "600 s after arrival"),
    ("other device", with_(GOOD_FIX, device="AM-9999"), R.TOPIC_MISMATCH, '"AM-9999"'),
]


@pytest.mark.parametrize(
    ("payload", "reason", "needle"),
    [c[1:] for c in FIX_CATALOGUE],
    ids=[c[0] for c in FIX_CATALOGUE],
)
def test_bad_fix_is_rejected_with_reason_and_detail(
    payload: dict[str, Any] | bytes, reason: RejectReason, needle: str
) -> None:
    """Each bad fix payload yields one rejection with the expected reason and a detail naming it."""
    raw = payload if isinstance(payload, bytes) else enc(payload)
    r = only_rejection(decode(FIX_TOPIC, raw))
    assert r.reason is reason
    assert needle in r.detail
    assert r.topic == FIX_TOPIC and r.device == "AM-1001" and r.arrival == ARRIVAL
    assert r.payload == raw.decode("utf-8", errors="replace")


def test_future_limit_is_configurable() -> None:
    """max_future_s moves the future_time bound."""
    late = enc(with_(GOOD_FIX, t="2026-11-23T10:25:03Z"))
    assert decode(FIX_TOPIC, late, max_future_s=601).fixes
    r = only_rejection(
        decode(FIX_TOPIC, enc(with_(GOOD_FIX, t="2026-11-23T10:15:04Z")), max_future_s=0)
    )
    assert r.reason is R.FUTURE_TIME


@pytest.mark.parametrize(
    "topic",
    ["em/dev/AM-1001", "em/dev/AM-1001/fix/extra", "em/dev//fix", "em/dev/AM-1001/status",
     "other/dev/AM-1001/fix", "$share/g/em/dev/AM-1001/fix", "em/alerts/centre", "owntracks/anna",
     "owntracks//phone", ""],
)  # fmt: skip
def test_unknown_topic_is_rejected(topic: str) -> None:
    """A topic that is not a device topic is unknown_topic, whatever the payload."""
    r = only_rejection(decode(topic, enc(GOOD_FIX)))
    assert r.reason is R.UNKNOWN_TOPIC and repr(topic) in r.detail and r.device is None


def test_custom_prefix() -> None:
    """With prefix 'site1/em' only topics under that prefix decode."""
    assert decode("site1/em/dev/AM-1001/fix", enc(GOOD_FIX), prefix="site1/em").fixes
    assert only_rejection(decode(FIX_TOPIC, enc(GOOD_FIX), prefix="site1/em")).reason is (
        R.UNKNOWN_TOPIC
    )


def test_too_large_payload_is_rejected_and_truncated() -> None:
    """A payload above max_bytes is too_large and the dead letter keeps only its start."""
    big = enc(with_(GOOD_FIX, pad="x" * 5000))
    r = only_rejection(decode(FIX_TOPIC, big, max_bytes=4096))
    assert r.reason is R.TOO_LARGE
    assert f"{len(big)} bytes" in r.detail and "4096" in r.detail
    assert len(r.payload) == 1024 and big.decode().startswith(r.payload)


def test_burst_keeps_good_and_rejects_bad_elements_individually() -> None:
    """Each burst element is validated on its own; each bad one carries its own raw text."""
    good2 = with_(GOOD_FIX, seq=18234, t=1795428902500)
    payload = (
        b"[" + enc(GOOD_FIX) + b", 42, "
        b'{"v": 1, "device": "AM-1001", "seq": 3, "t": 1795428902000, "lat": 97.2, "lon": 4, "acc": 5}'
        b", " + enc(good2) + b", " + enc(with_(GOOD_FIX, device="AM-2")) + b"]"
    )
    d = decode(FIX_TOPIC, payload)
    assert [f.seq for f in d.fixes] == [18233, 18234]
    assert [r.reason for r in d.rejections] == [R.NOT_AN_OBJECT, R.OUT_OF_RANGE, R.TOPIC_MISMATCH]
    assert d.rejections[0].payload == "42" and d.rejections[0].detail.startswith("[1/5]")
    assert d.rejections[1].payload.startswith('{"v": 1, "device": "AM-1001", "seq": 3')
    assert "lat=97.2" in d.rejections[1].detail
    assert json.loads(d.rejections[2].payload)["device"] == "AM-2"


def test_all_good_burst_keeps_order() -> None:
    """A valid burst yields all fixes in payload order, with mixed time forms."""
    items = [with_(GOOD_FIX, seq=i, t=1795428800000 + i) for i in range(10)]
    items[3]["t"] = "2026-11-23T10:13:20.003Z"
    d = decode(FIX_TOPIC, enc(items))
    assert [f.seq for f in d.fixes] == list(range(10)) and d.rejections == []
    assert d.fixes[3].t == pytest.approx(1795428800.003)


def test_empty_burst_is_rejected() -> None:
    """An empty array is empty_burst."""
    assert only_rejection(decode(FIX_TOPIC, b" [ ] ")).reason is R.EMPTY_BURST


def test_nested_array_in_burst_is_not_an_object() -> None:
    """An array inside a burst is a bad element, not a nested burst."""
    d = decode(FIX_TOPIC, b"[[" + enc(GOOD_FIX) + b"]]")
    assert [r.reason for r in d.rejections] == [R.NOT_AN_OBJECT] and d.fixes == []


# --- events ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES - {"ble_seen"}))
def test_every_event_type_decodes(kind: str) -> None:
    """Every event type of contract §3 decodes to a DeviceEvent."""
    d = decode(EVENT_TOPIC, enc(with_(GOOD_EVENT, type=kind, detail={"note": 1})))
    assert d.events == [
        DeviceEvent(
            "AM-1001", 18234, parse_time("2026-11-23T10:15:02Z"), kind, ARRIVAL, {"note": 1}
        )
    ]


def test_ble_seen_with_peer_and_rssi_decodes() -> None:
    """ble_seen with detail.peer and detail.rssi is a valid event."""
    payload = with_(
        GOOD_EVENT, device="VD-2001", type="ble_seen", detail={"peer": "AM-1001", "rssi": -71}
    )
    (ev,) = decode("em/dev/VD-2001/event", enc(payload)).events
    assert ev.detail == {"peer": "AM-1001", "rssi": -71}


def test_event_without_detail_gets_empty_detail() -> None:
    """detail is optional and defaults to an empty object."""
    (ev,) = decode(EVENT_TOPIC, enc(with_(GOOD_EVENT, detail=_DROP))).events
    assert ev.detail == {}


def test_event_burst_keeps_good_events() -> None:
    """An array on the event topic is a burst like on the fix topic."""
    d = decode(
        EVENT_TOPIC, enc([GOOD_EVENT, with_(GOOD_EVENT, type="bogus"), with_(GOOD_EVENT, seq=9)])
    )
    assert [e.seq for e in d.events] == [18234, 9]
    assert [r.reason for r in d.rejections] == [R.UNKNOWN_EVENT]


EVENT_CATALOGUE: list[tuple[str, dict[str, Any], RejectReason, str]] = [
    ("unknown type", with_(GOOD_EVENT, type="strap_loose"), R.UNKNOWN_EVENT, 'type="strap_loose"'),
    ("missing type", with_(GOOD_EVENT, type=_DROP), R.MISSING_FIELD, "type is required"),
    ("type number", with_(GOOD_EVENT, type=3), R.BAD_TYPE, "type=3"),
    ("detail list", with_(GOOD_EVENT, detail=[1]), R.BAD_TYPE, "detail=[1]"),
    ("ble no peer", with_(GOOD_EVENT, type="ble_seen", detail={"rssi": -60}), R.MISSING_FIELD,
     "detail.peer"),
    ("ble no rssi", with_(GOOD_EVENT, type="ble_seen", detail={"peer": "AM-1"}), R.MISSING_FIELD,
     "detail.rssi"),
    ("ble no detail", with_(GOOD_EVENT, type="ble_seen", detail=_DROP), R.MISSING_FIELD,
     "detail.peer"),
    ("ble rssi text", with_(GOOD_EVENT, type="ble_seen", detail={"peer": "AM-1", "rssi": "-60"}),
     R.BAD_TYPE, 'detail.rssi="-60"'),
    ("v 3", with_(GOOD_EVENT, v=3), R.BAD_VERSION, "v=3"),
    ("other device", with_(GOOD_EVENT, device="X"), R.TOPIC_MISMATCH, 'device="X"'),
    ("bad time", with_(GOOD_EVENT, t="soon"), R.BAD_TIME, 't="soon"'),
    ("future", with_(GOOD_EVENT, t="2026-11-24T00:00:00Z"), R.FUTURE_TIME, "after arrival"),
    ("missing seq", with_(GOOD_EVENT, seq=_DROP), R.MISSING_FIELD, "seq is required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "reason", "needle"),
    [c[1:] for c in EVENT_CATALOGUE],
    ids=[c[0] for c in EVENT_CATALOGUE],
)
def test_bad_event_is_rejected_with_reason_and_detail(
    payload: dict[str, Any], reason: RejectReason, needle: str
) -> None:
    """Each bad event payload yields one rejection with the expected reason and detail."""
    r = only_rejection(decode(EVENT_TOPIC, enc(payload)))
    assert r.reason is reason and needle in r.detail and r.device == "AM-1001"


# --- OwnTracks ------------------------------------------------------------------------


def test_owntracks_location_maps_to_registered_device() -> None:
    """An OwnTracks location becomes a fix of the mapped device, vel km/h converted to m/s."""
    (fix,) = decode("owntracks/anna/phone", enc(GOOD_OT)).fixes
    assert fix.device == "VP-3001" and fix.t == 1795428900.0
    assert (fix.lat, fix.lon, fix.acc, fix.batt, fix.src) == (51.9, 4.4, 12.0, 55, "gnss")
    assert fix.spd == pytest.approx(5.0) and fix.hdg == 90.0
    assert fix.seq // 1000 == 1795428900


def test_owntracks_seq_identifies_fix() -> None:
    """A republished location has the same seq; another position in the same second differs."""
    a = decode("owntracks/anna/phone", enc(GOOD_OT)).fixes[0]
    b = decode("owntracks/anna/phone", enc(with_(GOOD_OT, tid="zz", vel=3))).fixes[0]
    c = decode("owntracks/anna/phone", enc(with_(GOOD_OT, lat=51.90001))).fixes[0]
    later = decode("owntracks/anna/phone", enc(with_(GOOD_OT, tst=1795428901))).fixes[0]
    assert a.seq == b.seq and a.seq != c.seq and later.seq > max(a.seq, c.seq)


def test_owntracks_negative_vel_and_cog_mean_unknown() -> None:
    """iOS's -1 for invalid speed and course becomes None instead of a rejection."""
    (fix,) = decode("owntracks/anna/phone", enc(with_(GOOD_OT, vel=-1, cog=-1))).fixes
    assert fix.spd is None and fix.hdg is None


@pytest.mark.parametrize("kind", ["transition", "lwt", "card", "waypoint", "status"])
def test_owntracks_non_location_is_ignored(kind: str) -> None:
    """Non-location OwnTracks messages yield nothing, not even a rejection."""
    d = decode("owntracks/anna/phone", enc({"_type": kind, "tst": 1795428900}))
    assert d == Decoded([], [], [])


def test_owntracks_subtopics_are_ignored() -> None:
    """OwnTracks sub-topics (event, info, cmd) never carry a location and are ignored."""
    assert decode("owntracks/anna/phone/event", b"garbage") == Decoded([], [], [])


def test_owntracks_unknown_device() -> None:
    """A location from a user/device not in the map is unknown_device."""
    r = only_rejection(decode("owntracks/bob/phone", enc(GOOD_OT)))
    assert r.reason is R.UNKNOWN_DEVICE and "'bob/phone'" in r.detail and r.device is None
    r = only_rejection(decode("owntracks/anna/phone", enc(GOOD_OT), owntracks_map=None))
    assert r.reason is R.UNKNOWN_DEVICE


OT_CATALOGUE: list[tuple[str, bytes, RejectReason, str]] = [
    ("bad json", b"{", R.BAD_JSON, "JSON"),
    ("array", enc([GOOD_OT]), R.NOT_AN_OBJECT, "a JSON array"),
    ("no _type", enc(with_(GOOD_OT, _type=_DROP)), R.MISSING_FIELD, "_type"),
    ("_type number", enc(with_(GOOD_OT, _type=5)), R.BAD_TYPE, "_type=5"),
    ("no acc", enc(with_(GOOD_OT, acc=_DROP)), R.MISSING_FIELD, "acc"),
    ("no tst", enc(with_(GOOD_OT, tst=_DROP)), R.MISSING_FIELD, "tst"),
    ("tst text", enc(with_(GOOD_OT, tst="now")), R.BAD_TYPE, 'tst="now"'),
    ("tst in ms", enc(with_(GOOD_OT, tst=1795428900000)), R.FUTURE_TIME, "tst="),
    ("tst zero", enc(with_(GOOD_OT, tst=0)), R.BAD_TIME, "tst=1970-01-01"),
    ("lat range", enc(with_(GOOD_OT, lat=91)), R.OUT_OF_RANGE, "lat=91.0"),
    ("acc zero", enc(with_(GOOD_OT, acc=0)), R.OUT_OF_RANGE, "acc=0.0"),
    ("cog 400", enc(with_(GOOD_OT, cog=400)), R.OUT_OF_RANGE, "cog=400.0"),
    ("batt 120", enc(with_(GOOD_OT, batt=120)), R.OUT_OF_RANGE, "batt=120"),
]


@pytest.mark.parametrize(
    ("payload", "reason", "needle"),
    [c[1:] for c in OT_CATALOGUE],
    ids=[c[0] for c in OT_CATALOGUE],
)
def test_bad_owntracks_is_rejected(payload: bytes, reason: RejectReason, needle: str) -> None:
    """Each bad OwnTracks payload yields one rejection with the expected reason and detail."""
    r = only_rejection(decode("owntracks/anna/phone", payload))
    assert r.reason is reason and needle in r.detail


def test_every_reason_code_is_covered_by_a_catalogue() -> None:
    """The catalogues above exercise every RejectReason a device can cause."""
    seen = {c[2] for c in FIX_CATALOGUE} | {c[2] for c in EVENT_CATALOGUE}
    seen |= {c[2] for c in OT_CATALOGUE}
    seen |= {R.UNKNOWN_TOPIC, R.UNKNOWN_DEVICE, R.TOO_LARGE, R.EMPTY_BURST, R.TOO_DEEP}  # dedicated
    assert seen == set(RejectReason) - {R.INTERNAL_ERROR}


# --- never raises, dead letters -------------------------------------------------------


def test_decoder_bug_becomes_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected exception inside the decoder is returned as an internal_error rejection."""
    import devices.fastpath as mod

    def boom(*_: Any) -> None:
        raise KeyError("bug")

    # the typed decoder the fast path calls (a Python module's function: patchable in both builds)
    monkeypatch.setattr(mod, "decode_one", boom)
    r = only_rejection(decode(FIX_TOPIC, enc(GOOD_FIX)))
    assert r.reason is R.INTERNAL_ERROR and "KeyError" in r.detail and r.topic == FIX_TOPIC


def test_deeply_nested_json_is_too_deep() -> None:
    """Pathologically deep nesting is rejected as too_deep, not a RecursionError."""
    r = only_rejection(decode(FIX_TOPIC, b"[" * 100_000))
    assert r.reason is R.TOO_DEEP


def test_str_payload_is_accepted() -> None:
    """A payload given as text decodes like its UTF-8 bytes."""
    assert decode(FIX_TOPIC, json.dumps(GOOD_FIX)) == decode(FIX_TOPIC, enc(GOOD_FIX))  # type: ignore[arg-type]


def test_dead_letter_record_is_json_with_all_fields() -> None:
    """dead_letter_record gives a JSON-able dict with reason, detail, topic, payload, arrival, device."""
    r = only_rejection(decode(FIX_TOPIC, enc(with_(GOOD_FIX, lat=97.2))))
    rec = dead_letter_record(r)
    assert json.loads(json.dumps(rec)) == rec
    assert rec == {
        "v": 1,
        "reason": "out_of_range",
        "detail": "lat=97.2 outside [-90, 90]",
        "topic": FIX_TOPIC,
        "device": "AM-1001",
        "arrival": "2026-11-23T10:15:03.000Z",
        "payload": enc(with_(GOOD_FIX, lat=97.2)).decode(),
    }
