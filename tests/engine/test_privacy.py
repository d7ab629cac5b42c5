"""Victim privacy over whole simulated days: what reaches the offender's devices and the logs.

The offender's channel (``em/cmd/subject/…`` and ``em/cmd/device/…`` of his ankle monitor)
must never carry the victim's position, distance, bearing or zone geometry around her, and
the victim's channel never the offender's coordinates.  Logs at INFO never print a victim
coordinate.  Checked on every message of three standard scenarios, not on hand-picked ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from engine.core.orders_load import load_orders
from engine.runtime.replay import read_trace, replay_messages
from simulator.generate import simulate

SCENARIOS = Path(__file__).resolve().parents[2] / "simulator" / "scenarios"
OFFENDER_KEYS = {"v", "t", "instruction", "level", "interval_s", "until"}
VICTIM_KEYS = {"v", "alert_id", "level", "message", "advice", "t", "near", "status"}


@pytest.fixture(scope="module", params=["approach", "passby", "sparse_driving"])
def day(request, tmp_path_factory):
    """A simulated day replayed with every outgoing message, plus the victims' positions."""
    tmp = tmp_path_factory.mktemp(request.param)
    trace, truth, orders = tmp / "trace.jsonl", tmp / "truth.jsonl", tmp / "orders.json"
    simulate(SCENARIOS / f"{request.param}.json", trace, truth, orders)
    book = load_orders(orders)
    messages = list(read_trace(trace))
    victim_devices = {d for p in book.protected_persons.values() for d in p.devices}
    victim_points = set()
    for _, topic, payload in messages:
        device = topic.split("/")[2] if topic.startswith("em/dev/") else None
        if device in victim_devices and topic.endswith("/fix"):
            doc = json.loads(payload)
            for fix in doc if isinstance(doc, list) else [doc]:
                victim_points.add((round(fix["lat"], 3), round(fix["lon"], 3)))
    out = replay_messages(messages, book, include_messages=True)
    return book, out, victim_points, messages


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_offender_devices_hear_nothing_about_the_victim(day):
    """Every prompt and command to an ankle monitor has only the allowed fields and no victim data."""
    book, out, victim_points, _ = day
    subject_devices = {d for s in book.subjects.values() for d in s.devices}
    sent = [m for m in out if m.get("_channel") in ("subject", "device")
            and m["_topic"].rsplit("/", 1)[1] in subject_devices]
    assert sent, "the scenario must send the offender something for this to mean anything"
    victim_words = {p.id for p in book.protected_persons.values()} | {
        d for p in book.protected_persons.values() for d in p.devices}
    for m in sent:
        body = {k: v for k, v in m.items() if not k.startswith("_")}
        assert set(body) <= OFFENDER_KEYS, body
        text = json.dumps(body)
        assert not any(w in text for w in victim_words), body
        for n in _numbers(body):
            assert not any(abs(n - lat) < 0.01 or abs(n - lon) < 0.01 for lat, lon in victim_points), body


def test_victim_devices_never_get_the_offenders_coordinates(day):
    """Victim warnings carry a coarse band at most: no coordinates, no exact distance."""
    _, out, _, _ = day
    warnings = [m for m in out if m.get("_channel") == "victim"]
    for m in warnings:
        body = {k: v for k, v in m.items() if not k.startswith("_")}
        assert set(body) <= VICTIM_KEYS, body
        assert all(n in (1.0,) for n in _numbers(body)), body  # only the version number


def test_logs_at_info_never_print_victim_coordinates(day, caplog):
    """Replaying the day with INFO logging on prints no victim latitude or longitude."""
    book, _, victim_points, messages = day
    # a malformed victim fix too, so the rejection path (dead letter with the raw payload) runs
    device = next(iter(book.protected_persons.values())).devices[0]
    lat, lon = next(iter(victim_points))
    bad = json.dumps({"v": 1, "device": device, "seq": -1, "lat": lat, "lon": lon, "acc": 0}).encode()
    with caplog.at_level(logging.INFO):
        replay_messages([*messages, (messages[-1][0] + 1, f"em/dev/{device}/fix", bad)], book)
    text = caplog.text
    for lat, lon in victim_points:
        assert f"{lat:.3f}" not in text and f"{lon:.3f}" not in text


async def test_a_victims_old_positions_also_leave_the_state_store_without_new_messages() -> None:
    """Retention is kept in Redis too: the forgetting itself is committed, not only the next fix."""
    from engine.core.state_schema import decode_part
    from engine.core.testing import T0
    from engine.runtime.store import MemoryStore
    from tests.engine.api_support import make_world

    w = make_world()
    store = w.service.store = MemoryStore()
    w.clock.now = T0
    w.send(w.victim.fix(T0, 0.0, 0.0))
    await w.service._commit()

    def stored_points() -> int:
        tracks = [decode_part(p).tracks for p in store.state.values()]
        return sum(len(t["VD-2001"].points) for t in tracks if "VD-2001" in t)

    assert stored_points() == 1
    later = T0 + w.engine.config.rules.victim_retention_s + 60
    w.clock.now = later
    w.service.apply(w.engine.tick(later))  # what the service's ticker does, with no message since
    assert w.engine.state_changed
    await w.service._commit()
    assert stored_points() == 0


def test_an_operators_prompt_is_the_same_message_however_near_she_is() -> None:
    """``prompt`` on a proximity alert at warning (about 3 km), alarm and critical (200 m): every
    message to his ankle monitor has only the contract's fields and is the same but for ``t``,
    so it carries nothing of her distance, level or position (issue 25 item 3)."""
    from engine.core.testing import ORIGIN, T0, DeviceScript, Harness, orders_doc

    x0, y0 = ORIGIN
    h = Harness.build(orders_doc(proximity=[
        {"protected_person": "P-1", "alert_m": 1000, "warn_m": 3000, "critical_m": 200}]))
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    prompted: dict[str, dict[str, object]] = {}
    t, x, i = T0, x0 - 5000, 0
    while x < x0 - 100:
        h.send(am.fix(t, x, y0), t + 0.5)
        if i % 6 == 0:
            h.send(vd.fix(t + 1, x0, y0, acc=10.0), t + 1.5)
        alert = next((a for a in h.engine.alerts.alerts.values() if a.kind == "proximity"), None)
        if alert is not None and alert.level not in prompted:
            effects = h.engine.act(alert.alert_id, "prompt", "op-1", "", t + 2)
            (msg,) = [m for m in effects.messages if m.channel == "subject"]
            assert msg.topic == "em/cmd/subject/AM-1001"
            prompted[alert.level] = msg.payload
        t, x, i = t + 10, x + 14.0, i + 1
    assert set(prompted) == {"warning", "alarm", "critical"}
    bodies = [{k: v for k, v in p.items() if k != "t"} for p in prompted.values()]
    assert all(set(p) <= OFFENDER_KEYS for p in prompted.values())
    assert bodies == [{"v": 1, "instruction": "contact_centre", "level": "warning"}] * 3
    text = json.dumps(list(prompted.values()))
    assert not any(w in text for w in ("P-1", "VD-2001", "distance", "near", "lat", "lon"))
