"""Issue 21: junk on every device channel, through the real pure service path, never stops alerting.

Each example sends a few hostile messages (huge integers, deep nesting, invalid UTF-8, NaN and
Infinity text, huge strings, wrong shapes, arrays of mixed junk) on the fix, burst, event and
OwnTracks topics, then one good fix of another device, through what the service does:
``Engine.prepare`` + ``Engine.handle`` -> ``tick``/``flush`` -> ``Engine.state_delta`` ->
``MemoryStore.commit`` -> every outgoing message through ``json.dumps`` -> a restore from the
store.  Nothing may raise; every rejection becomes a dead letter with a device-caused reason;
the good fix is still evaluated.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devices.decode import decode_message
from devices.model import RejectReason
from engine.core.effects import Effects
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, circle, orders_doc
from engine.runtime.store import MemoryStore

X0, Y0 = ORIGIN
NOW = T0 + 30.0
TOPICS = [
    "em/dev/AM-1001/fix",
    "em/dev/AM-1001/event",
    "owntracks/anna/phone",
    "owntracks/anna/phone/event",
    "em/dev/AM-1001/other",
]
DEVICE_REASONS = {r.value for r in RejectReason} - {RejectReason.INTERNAL_ERROR.value}


def _book() -> OrderBook:
    doc = orders_doc(
        exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}],
        proximity=[{"protected_person": "P-1", "alert_m": 1000}],
    )
    doc["protected_persons"][0]["devices"].append("VD-2002")  # her phone; the good fix is VD-2001's
    doc["owntracks"] = {"anna/phone": "VD-2002"}
    return load_orders(doc)


BOOK = _book()
GOOD_FIX: dict[str, Any] = json.loads(DeviceScript("AM-1001", seq=41).fix(T0, X0, Y0)[1])
GOOD_EVENT: dict[str, Any] = json.loads(DeviceScript("AM-1001", seq=42).event(T0, "strap_open")[1])
GOOD_OT: dict[str, Any] = {
    "_type": "location", "lat": GOOD_FIX["lat"], "lon": GOOD_FIX["lon"], "tst": int(T0),
    "acc": 12, "vel": 4, "cog": 90, "batt": 60,
}  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400, -(10**30)])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["", "x" * 5_000, "\u202e", "\x00", "NaN", "Infinity"]),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=8), kids, max_size=6),
    max_leaves=25,
)
RAW_TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 400, "9223372036854775808",
    "18446744073709551616", '"\\ud800"', '"' + "y" * 100_000 + '"', "[" * 3000 + "]" * 3000,
    '{"a":' * 2000 + "1" + "}" * 2000, "[" * 100_000,
]  # fmt: skip


def _template(draw: st.DrawFn) -> dict[str, Any]:
    return dict(draw(st.sampled_from([GOOD_FIX, GOOD_EVENT, GOOD_OT])))


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, Any]:
    """A good fix, event or OwnTracks location with a few fields replaced or dropped."""
    obj = _template(draw)
    names = [*obj, "detail", "extra"]
    for name in draw(st.lists(st.sampled_from(names), max_size=3)):
        if draw(st.booleans()):
            obj[name] = draw(json_values)
        else:
            obj.pop(name, None)
    return obj


@st.composite
def raw_token_payload(draw: st.DrawFn) -> bytes:
    """A good object with one field's value replaced by raw text JSON cannot hold or that is extreme."""
    obj = _template(draw)
    name = draw(st.sampled_from([*obj, "detail"]))
    obj[name] = "@@TOKEN@@"
    text = json.dumps(obj).replace('"@@TOKEN@@"', draw(st.sampled_from(RAW_TOKENS)))
    return text.encode()


@st.composite
def broken_utf8(draw: st.DrawFn) -> bytes:
    """A good payload with invalid UTF-8 spliced in somewhere."""
    good = json.dumps(_template(draw)).encode()
    at = draw(st.integers(0, len(good)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80\x80"]))
    return good[:at] + junk + good[at:]


payloads = st.one_of(
    st.binary(max_size=200),
    near_valid().map(lambda o: json.dumps(o).encode()),
    st.lists(near_valid() | json_values, max_size=6).map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_token_payload(),
    broken_utf8(),
    st.integers(0, 5_000).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([b"", b"[]", b"{}", b"null", b"[" * 100_000, b"1" * 300_000]),
)
messages = st.lists(st.tuples(st.sampled_from(TOPICS), payloads), min_size=1, max_size=4)


def run_service_path(batch: list[tuple[str, bytes]]) -> tuple[Engine, Effects]:
    """What the service does with one micro-batch, then one good fix, then a commit and a restore."""
    engine = Engine(BOOK)
    good = DeviceScript("VD-2001", seq=7).fix(T0 + 20, X0 + 2_000, Y0)
    arrivals = [(topic, payload, NOW) for topic, payload in [*batch, good]]
    engine.prepare(arrivals)
    effects = Effects()
    for topic, payload, now in arrivals:
        step = engine.handle(topic, payload, now)
        expected = decode_message(topic, payload, now, owntracks_map=BOOK.owntracks).rejections
        dead = [m.payload for m in step.messages if m.channel == "deadletter"]
        assert len(dead) == len(expected), (topic, payload[:200], dead, expected)
        for record, rejection in zip(dead, expected, strict=True):
            assert record["reason"] == rejection.reason.value
            assert record["reason"] in DEVICE_REASONS and record["detail"], record
        effects.extend(step)
    effects.extend(engine.tick(NOW + 1))
    effects.extend(engine.flush(NOW + 2))
    for m in effects.messages:
        json.dumps(m.payload, allow_nan=False)
    store = MemoryStore()
    delta = engine.state_delta()
    asyncio.run(store.commit(delta, effects.messages, [c.alert for c in effects.changes]))
    restored = Engine(BOOK)
    restored.restore_parts(asyncio.run(store.load_state()))
    assert set(restored.tracks) == set(engine.tracks)
    victim = engine.tracks["VD-2001"]
    assert victim.points and victim.points[-1].key == "VD-2001:8"  # the good fix was evaluated
    return engine, effects


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=messages)
@example(batch=[("em/dev/AM-1001/fix", json.dumps({**GOOD_FIX, "seq": 2**63}).encode())])
@example(batch=[("em/dev/AM-1001/fix", json.dumps([GOOD_FIX, {**GOOD_FIX, "seq": 2**64}]).encode())])
@example(batch=[("em/dev/AM-1001/event", json.dumps({**GOOD_EVENT, "seq": 2**63}).encode())])
@example(batch=[("em/dev/AM-1001/event", json.dumps({**GOOD_EVENT, "detail": {"a": [[[[[[1]]]]]]}}).encode())])
@example(batch=[("em/dev/AM-1001/fix", b"[" * 100_000)])
@example(batch=[("em/dev/AM-1001/fix", b'{"v":1,"device":"AM-1001","seq":1,"lat":NaN}')])
@example(batch=[("owntracks/anna/phone", json.dumps({**GOOD_OT, "vel": 10**400}).encode())])
@example(batch=[("owntracks/anna/phone", json.dumps({**GOOD_OT, "tst": 2**70}).encode())])
@example(batch=[("em/dev/" + "A" * 70_000 + "/fix", json.dumps(GOOD_FIX).encode())])
def test_junk_on_every_channel_never_stops_the_engine(batch: list[tuple[str, bytes]]) -> None:
    """Hostile messages are dead-lettered with a reason; state commits; the good fix is evaluated."""
    run_service_path(batch)


def test_good_messages_still_alert_on_every_channel() -> None:
    """The same path with valid messages raises what they should (the fuzz's control)."""
    batch = [
        ("em/dev/AM-1001/fix", json.dumps(GOOD_FIX).encode()),
        ("em/dev/AM-1001/event", json.dumps(GOOD_EVENT).encode()),
        ("owntracks/anna/phone", json.dumps(GOOD_OT).encode()),
    ]
    engine, effects = run_service_path(batch)
    kinds = {c.alert.kind for c in effects.changes}
    assert {"exclusion", "tamper", "proximity"} <= kinds, kinds
    assert not [m for m in effects.messages if m.channel == "deadletter"]
    assert engine.stats.rejected == {}
