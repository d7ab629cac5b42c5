"""Incremental persistence: an engine restored from per-case parts continues exactly like the original.

The service stores only the cases a batch changed (``Engine.state_delta``).  If a change
were missed (a case not marked dirty, a key not in its case's part), a restarted engine
would decide differently from one that never stopped: raise an alert twice, or forget
one.  So these tests run simulator scenarios through one engine, apply every delta to a
store as the service does, and at several points start a second engine from the store
and check that it holds the same state and emits the same messages from there on.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pytest

from engine.core.effects import Effects
from engine.core.pipeline import Engine
from engine.core.state_schema import decode_part
from engine.runtime.replay import read_trace
from engine.runtime.store import apply_delta
from geo.projection import Projector
from simulator.generate import generate
from simulator.orders_doc import load_book
from simulator.scenario import load_scenario

SCENARIOS = Path(__file__).parents[2] / "simulator" / "scenarios"
TICK_S = 0.2
SECTIONS = {
    "tracks": lambda e: e.tracks,
    "battery": lambda e: e.device_rules.battery,
    "non_gnss": lambda e: e.device_rules.non_gnss_since,
    "silent": lambda e: dict.fromkeys(e.silent),
    "zones": lambda e: e.zones.episodes,
    "proximity": lambda e: e.proximity.episodes,
    "visits": lambda e: e.crossings.visits,
    "status": lambda e: e.crossings.status,
    "alerts": lambda e: e.alerts.alerts,
    "open_by_key": lambda e: e.alerts.open_by_key,
    "victim_rank": lambda e: e.notifier.victim_rank,
    "noted": lambda e: e.crossings.noted,
}


@cache
def stream(name: str, tmp: Path) -> tuple[dict[str, Any], list[tuple[float, str, bytes]]]:
    g = generate(load_scenario(SCENARIOS / f"{name}.json"))
    trace = tmp / f"{name}.jsonl"
    trace.write_text("".join(m.line() + "\n" for m in g.messages))
    return g.orders, list(read_trace(trace))


def steps(messages: list[tuple[float, str, bytes]]) -> list[tuple[str, float, str, bytes]]:
    """Messages with the service's ticks in between, as one deterministic script."""
    out: list[tuple[str, float, str, bytes]] = []
    clock = messages[0][0]
    for arrival, topic, payload in messages:
        while clock + TICK_S <= arrival:
            clock += TICK_S
            out.append(("tick", clock, "", b""))
        out.append(("msg", arrival, topic, payload))
    end = messages[-1][0] + 120.0
    out.append(("tick", end, "", b""))
    return out


def run(engine: Engine, step: tuple[str, float, str, bytes]) -> Effects:
    kind, now, topic, payload = step
    return engine.tick(now) if kind == "tick" else engine.handle(topic, payload, now)


def feed(engine: Engine, stored: dict[str, bytes], messages: list[tuple[float, str, bytes]]) -> None:
    """Messages through the engine, every delta applied to ``stored`` as the service commits."""
    for arrival, topic, payload in messages:
        engine.handle(topic, payload, arrival)
        apply_delta(stored, engine.state_delta())


def restored_from(orders: dict[str, Any], stored: dict[str, bytes]) -> Engine:
    """A fresh engine continuing from the stored parts, as after a restart."""
    engine = Engine(load_book(orders))
    engine.restore_parts(stored.values())
    return engine


def view(engine: Engine) -> dict[str, dict[Any, str]]:
    """Every section of the decision state, each value as its ``repr``: every field, with its
    type (``0`` is not ``0.0``, a tuple not a list, a deque shows its bound)."""
    return {name: {k: repr(v) for k, v in get(engine).items()} for name, get in SECTIONS.items()}


def wire(effects: Effects) -> list[tuple[str, str, str]]:
    return [(m.channel, m.topic, repr(sorted(m.payload.items()))) for m in effects.messages]


@pytest.mark.parametrize(
    "name",
    ["approach", "tamper_battery", "curfew", "motorway_corridor", "victim_device_home", "late_burst"],
)
def test_an_engine_restored_from_case_parts_continues_exactly_like_the_original(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    orders, messages = stream(name, tmp_path_factory.getbasetemp())
    script = steps(messages)
    original = Engine(load_book(orders))
    stored: dict[str, bytes] = {}
    cut_points = {len(script) // 5, len(script) // 2, 4 * len(script) // 5}
    raised = 0
    for i, step in enumerate(script):
        effects = run(original, step)
        raised += len(effects.changes)
        apply_delta(stored, original.state_delta())
        if i not in cut_points:
            continue
        restored = restored_from(orders, stored)
        assert view(restored) == view(original), f"state differs after step {i}"
        for later in script[i + 1 : i + 400]:
            assert wire(run(restored, later)) == wire(run(original, later)), f"diverged after {later}"
        # the original has moved on: keep the store in step with it before the next cut
        apply_delta(stored, original.state_delta())
    assert raised > 0, "the scenario must exercise the alert lifecycle"


def test_a_delta_holds_only_the_cases_the_batch_touched(tmp_path_factory: pytest.TempPathFactory) -> None:
    orders, messages = stream("urban_noise_day", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders))
    first = engine.state_delta()
    assert first.replace_all  # a fresh engine replaces whatever a store held
    arrival, topic, payload = messages[0]
    engine.handle(topic, payload, arrival)
    delta = engine.state_delta()
    assert not delta.replace_all
    device = topic.split("/")[2]
    assert engine.cases is not None
    assert set(delta.parts) == {engine.cases.device_case(device)}
    assert engine.state_delta().parts == {}


def test_a_refused_delta_is_offered_again(tmp_path_factory: pytest.TempPathFactory) -> None:
    orders, messages = stream("approach", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders))
    engine.state_delta()
    for arrival, topic, payload in messages[:5]:
        engine.handle(topic, payload, arrival)
    refused = engine.state_delta()
    assert refused.parts
    engine.state_not_stored(refused)
    again = engine.state_delta()
    assert set(again.parts) == set(refused.parts)


def test_parts_stored_as_pickles_before_the_schema_are_left_out_and_their_cases_start_afresh(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A store from before the state schema holds pickles (a v2 whole snapshot or v3 case
    parts): they are never unpickled, each is reported, and the rest of the store restores."""
    orders, messages = stream("approach", tmp_path_factory.getbasetemp())
    original = Engine(load_book(orders))
    stored: dict[str, bytes] = {}
    feed(original, stored, messages[: len(messages) // 2])
    old_forms = [
        b"\x80\x04\x95" + bytes(8) + b"}\x94(\x8c\x01v\x94K\x02u.",  # protocol 4, {"v": 2}
        b"\x80\x05\x95" + bytes(8) + b"}\x94(\x8c\x01v\x94K\x03u.",  # protocol 5, {"v": 3}
    ]
    restored = Engine(load_book(orders))
    problems = restored.restore_parts([old_forms[0], *stored.values(), old_forms[1]])
    assert len(problems) == 2
    assert problems[0].startswith("part 0 (") and "pickled part from before state schema v1" in problems[0]
    assert problems[1].startswith(f"part {len(stored) + 1} (")
    assert view(restored) == view(original)
    assert not restored.state_delta().replace_all  # unreadable parts stay until their case commits


def test_an_alert_changed_by_time_alone_puts_its_case_in_the_delta(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Escalation past the deadline happens in a tick, with no message from the case's devices."""
    orders, messages = stream("approach", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders), default_silent_after_s=1e9)  # no device falls silent meanwhile
    pending: list[Any] = []
    for step in steps(messages):
        run(engine, step)
        pending = [a for a in engine.alerts.alerts.values() if a.state == "open"]
        if pending:
            break
    assert pending, "the scenario raises an alert"
    alert = min(pending, key=lambda a: a.deadline)
    engine.flush(step[1])  # nothing left in the reorder buffers: the tick below touches no device
    engine.state_delta()
    effects = engine.tick(alert.deadline + 1.0)
    assert [c.alert.alert_id for c in effects.changes] == [alert.alert_id]
    assert engine.cases is not None
    assert engine.cases.alert_case(alert) in engine.state_delta().parts


def test_orders_that_regroup_cases_store_again_exactly_the_cases_that_changed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    orders, messages = stream("approach", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders))
    stored: dict[str, bytes] = {}
    feed(engine, stored, messages[:300])
    engine.set_orders(load_book(orders))  # the same orders again: same cases
    assert engine.state_delta().parts == {}
    fewer = dict(orders, orders=[])  # every order ended: the victim is no longer in his case
    engine.set_orders(load_book(fewer))
    delta = engine.state_delta()
    assert not delta.replace_all and delta.parts
    apply_delta(stored, delta)
    assert view(restored_from(fewer, stored)) == view(engine)
    engine.set_orders(load_book(orders))  # and back: the victim joins his case again
    apply_delta(stored, engine.state_delta())
    feed(engine, stored, messages[300:500])
    assert view(restored_from(orders, stored)) == view(engine)


def test_resolved_alerts_are_stored_once_on_their_own_and_leave_the_case_part(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    orders, messages = stream("tamper_battery", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders))
    stored: dict[str, bytes] = {}
    writes: dict[str, int] = {}
    for step in steps(messages):
        run(engine, step)
        delta = engine.state_delta()
        for key, part in delta.parts.items():
            writes[key] = writes.get(key, 0) + (part is not None)
        apply_delta(stored, delta)
    resolved = {a.alert_id for a in engine.alerts.alerts.values() if not a.is_open}
    assert resolved, "the scenario resolves alerts"
    assert {k[2:] for k in stored if k.startswith("A:")} == resolved
    for key, blob in stored.items():
        part = decode_part(blob)
        assert part.case == key
        if not key.startswith("A:"):
            assert all(a.state != "closed" for a in part.alerts.values()), key
    assert {writes[f"A:{a}"] for a in resolved} == {1}  # written when resolved, never again


def test_a_new_order_for_new_people_only_adds_cases(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Enrolling another offender must not rewrite every stored case (seconds at national scale)."""
    import copy

    orders, messages = stream("approach", tmp_path_factory.getbasetemp())
    engine = Engine(load_book(orders))
    stored: dict[str, bytes] = {}
    feed(engine, stored, messages[:200])
    more = copy.deepcopy(orders)
    more["subjects"].append({**orders["subjects"][0], "id": "S-9", "devices": ["AM-9009"]})
    more["protected_persons"].append({"id": "P-9", "devices": ["VD-9009"]})
    order = copy.deepcopy(orders["orders"][0])
    order.update(id="O-9", subject="S-9", proximity=[{**order["proximity"][0], "protected_person": "P-9"}])
    for zone in order["exclusion_zones"]:
        zone.update(id=zone["id"] + "-9", protected_person="P-9")
    more["orders"].append(order)
    engine.set_orders(load_book(more))
    assert not engine.state_delta().replace_all
    feed(engine, stored, messages[200:400])
    assert view(restored_from(more, stored)) == view(engine)


class _CountingProjector(Projector):
    """Counts the points projected one at a time."""

    __slots__ = ("points",)

    def __init__(self, crs: str) -> None:
        super().__init__(crs)
        self.points = 0

    def forward(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        if isinstance(lon, float):
            self.points += 1
        return super().forward(lon, lat)


@pytest.mark.parametrize("name", ["approach", "late_burst", "urban_noise_day"])
def test_messages_prepared_in_batches_are_decided_exactly_like_one_by_one(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``Engine.prepare`` (the service decodes a micro-batch ahead and projects its fixes in one
    call) changes no decision, message or stored state: the same script with and without it."""
    orders, messages = stream(name, tmp_path_factory.mktemp(name))
    script = steps(messages)
    plain, prepared = Engine(load_book(orders)), Engine(load_book(orders))
    plain.projector = _CountingProjector(plain.projector.crs)
    prepared.projector = _CountingProjector(prepared.projector.crs)
    out_plain, out_prepared = [], []
    ahead = 0  # messages of the script already prepared
    for i, step in enumerate(script):
        if step[0] == "msg" and i >= ahead:
            # the next 64 messages, as the service takes a micro-batch (ticks run in between
            # here too: a prepared message may be handled after a tick, or wait in a buffer)
            batch = [s for s in script[i:] if s[0] == "msg"][:64]
            prepared.prepare([(topic, payload, now) for _, now, topic, payload in batch])
            ahead = script.index(batch[-1], i) + 1
        out_plain += wire(run(plain, step))
        out_prepared += wire(run(prepared, step))
    assert out_prepared == out_plain and len(out_plain) > 0
    assert view(prepared) == view(plain)
    # and the prepared engine did take its positions from the batch projections
    assert plain.projector.points > 10 * max(1, prepared.projector.points)


def test_prepared_projections_of_fixes_never_handled_are_dropped_at_a_bound(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Projections ``prepare`` keeps for fixes still waiting (a reorder buffer) must not pile up
    for fixes that are never evaluated: past ``POSITIONS_KEPT`` they are forgotten together,
    and a fix handled after that is projected on its own, to the same decisions."""
    from engine.core import prepared

    orders, messages = stream("approach", tmp_path_factory.mktemp("approach"))
    engine = Engine(load_book(orders))
    batch = [(topic, payload, now) for now, topic, payload in messages[:64]]
    n_fixes = sum(len(engine._decode(t, p, a).fixes) for t, p, a in batch)
    assert n_fixes > 1
    most = 0
    for _ in range(2 * prepared.POSITIONS_KEPT // n_fixes + 2):
        engine.prepare([(t, bytes(p), a) for t, p, a in batch])  # new objects: never handled
        most = max(most, len(engine._ahead.positions))
    assert prepared.POSITIONS_KEPT <= most < prepared.POSITIONS_KEPT + n_fixes
    plain = Engine(load_book(orders))
    for now, topic, payload in messages[:200]:
        assert wire(engine.handle(topic, payload, now)) == wire(plain.handle(topic, payload, now))
