"""Coverage-guided fuzzing (atheris, libFuzzer) of every device channel through the pure engine.

Run by tests/engine/test_device_atheris.py for a bounded number of runs; by hand for longer:
``python tests/engine/atheris_device_channels.py -runs=200000 CORPUS_DIR``.  Each input picks a
topic (fix, event, OwnTracks, a victim's fix) and a way to build the payload (raw bytes, bytes
spliced into a valid payload, raw text or a value at the edge of a limit put in place of one
field's value), then goes through
``Engine.handle`` -> ``json.dumps`` of every outgoing message -> ``Engine.state_delta`` -> the
in-memory store's ``apply_delta``.  Any exception is a crash; so is a rejection that is not a
dead letter with a device-caused reason.  The devices package is instrumented for coverage.
"""

from __future__ import annotations

import json
import sys
from typing import Any, ClassVar

import atheris

with atheris.instrument_imports(include=["devices"]):
    from devices.decode import decode_message
    from devices.model import RejectReason

from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, circle, orders_doc
from engine.runtime.store import apply_delta

X0, Y0 = ORIGIN
NOW = T0 + 30.0
TOPICS = ("em/dev/AM-1001/fix", "em/dev/AM-1001/event", "owntracks/anna/phone", "em/dev/VD-2001/fix")
RENEW_EVERY = 500  # inputs per engine: state stays small, and a fresh engine is fuzzed too
DEVICE_REASONS = {r.value for r in RejectReason} - {RejectReason.INTERNAL_ERROR.value}
# values at and beyond the limits (devices.validate), put in place of a field by mode 3
EDGE_TOKENS = (
    "9223372036854775807", "9223372036854775808", "18446744073709551616", "-1", "0", "1e999",
    "-1e308", "1e308", "100000.0001", "1000.5", "NaN", "Infinity", '"\\ud800"', "[" * 2000,
    '"' + "x" * 2000 + '"', "{" + ",".join(f'"k{i}":[[[[[{i}]]]]]' for i in range(200)) + "}",
)  # fmt: skip


def _book() -> OrderBook:
    doc = orders_doc(
        exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}],
        proximity=[{"protected_person": "P-1", "alert_m": 1000}],
    )
    doc["owntracks"] = {"anna/phone": "VD-2001"}
    return load_orders(doc)


BOOK = _book()
GOOD: tuple[dict[str, Any], ...] = (
    json.loads(DeviceScript("AM-1001", seq=41).fix(T0, X0, Y0)[1]),
    json.loads(DeviceScript("AM-1001", seq=42).event(T0, "ble_seen", peer="AM-1001", rssi=-60)[1]),
    {"_type": "location", "lat": 51.92, "lon": 4.47, "tst": int(T0), "acc": 12, "vel": 4},
)


class _State:
    """The engine under fuzz and its stored state, renewed every ``RENEW_EVERY`` inputs."""

    engine: ClassVar[Engine] = Engine(BOOK)
    store: ClassVar[dict[str, bytes]] = {}
    runs: ClassVar[int] = 0


def payload_from(fdp: Any) -> tuple[str, bytes]:
    """A topic and a payload built from the fuzzer's bytes."""
    topic = TOPICS[fdp.ConsumeIntInRange(0, len(TOPICS) - 1)]
    mode = fdp.ConsumeIntInRange(0, 3)
    good = dict(GOOD[fdp.ConsumeIntInRange(0, len(GOOD) - 1)])
    if mode == 0:
        return topic, fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == 1:
        base = json.dumps(good).encode()
        at = fdp.ConsumeIntInRange(0, len(base))
        return topic, base[:at] + fdp.ConsumeBytes(fdp.remaining_bytes()) + base[at:]
    names = [*good, "detail", "extra"]
    good[names[fdp.ConsumeIntInRange(0, len(names) - 1)]] = "@@TOKEN@@"
    if mode == 3:
        token = EDGE_TOKENS[fdp.ConsumeIntInRange(0, len(EDGE_TOKENS) - 1)]
    else:
        token = fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    return topic, json.dumps(good).replace('"@@TOKEN@@"', token).encode("utf-8", "replace")


def test_one_input(data: bytes) -> None:
    """One fuzzer input through the engine; raises on any breach."""
    fdp = atheris.FuzzedDataProvider(data)
    topic, payload = payload_from(fdp)
    if _State.runs % RENEW_EVERY == 0:
        _State.engine, _State.store = Engine(BOOK), {}
    _State.runs += 1
    engine = _State.engine
    effects = engine.handle(topic, payload, NOW)
    effects.extend(engine.tick(NOW + 1))
    expected = decode_message(topic, payload, NOW, owntracks_map=BOOK.owntracks).rejections
    dead = [m.payload for m in effects.messages if m.channel == "deadletter"]
    if [d["reason"] for d in dead] != [r.reason.value for r in expected]:
        raise AssertionError(f"dead letters {dead!r} for rejections {expected!r}")
    if not all(d["reason"] in DEVICE_REASONS for d in dead):
        raise AssertionError(f"not a device-caused reason: {dead!r}")
    for m in effects.messages:
        json.dumps(m.payload, allow_nan=False)
    apply_delta(_State.store, engine.state_delta())


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
