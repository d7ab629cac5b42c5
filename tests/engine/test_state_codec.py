"""Stored case state: explicit records with a schema version, read back into an engine that
decides exactly as the one that wrote them (engine.core.state_schema, engine.core.state_codec).

A sample store of every schema version is kept in tests/engine/state_samples/ with the
script that made it; ``python tests/engine/test_state_codec.py --write-sample`` writes the
current version's (only when the schema version changes, or on purpose: see
docs/state-schema.md).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))

from devices.model import Fix  # noqa: E402
from engine.core import state_codec as codec  # noqa: E402
from engine.core.alert_records import Alert, HistoryEntry  # noqa: E402
from engine.core.alerts import AlertBook  # noqa: E402
from engine.core.effects import Effects  # noqa: E402
from engine.core.orders_load import load_orders  # noqa: E402
from engine.core.pipeline import Engine  # noqa: E402
from engine.core.rules.crossings import CorridorVisit, Suppression  # noqa: E402
from engine.core.rules.device_events import BatteryTrend  # noqa: E402
from engine.core.rules.proximity import PairEpisode  # noqa: E402
from engine.core.rules.zones import ZoneEpisode  # noqa: E402
from engine.core.state_schema import (  # noqa: E402
    SCHEMA_VERSION,
    AlertRecord,
    PointRecord,
    StatePart,
    StateSchemaError,
    decode_part,
    encode_part,
)
from engine.core.testing import ORIGIN, T0, DeviceScript, circle, orders_doc  # noqa: E402
from engine.core.tracks import TRACK_POINTS, DeviceTrack, SeqMemory, TrackPoint  # noqa: E402
from engine.runtime.store import apply_delta  # noqa: E402

SAMPLES = Path(__file__).parent / "state_samples"
X0, Y0 = ORIGIN
POINT = TrackPoint(1_795_000_000.0, 93_000.5, 437_000.25, 8.0, "AM-1:7", "gnss")
FIX = Fix("AM-1", 7, 1_795_000_000.0, 51.9, 4.47, 8.0, 1_795_000_001.0, 1.5, 90.0, 9, "wifi", 80, "ok")


def _alert() -> Alert:
    return Alert(
        alert_id="A-0123456789abcdef", kind="proximity", level="alarm", state="acknowledged",
        order="O-1", subject="S-1", protected_person="P-1", zone=None,
        device_time=1795987800.25, raised_at=1795987800.5, deadline=1795988100.5,
        episode_start=1795987790.0, distance_m=312.5, certainty="likely", closing_speed_mps=1.25,
        time_to_contact_s=250.0, evidence=("AM-1:7", "VD-1:3"), late=False, detail="within 500 m",
        updated_at=1795987830.0, target="P-1", device=None, claimed_by="op-7",
        history=(
            HistoryEntry(1795987800.5, "open", "alarm", "engine", "within 500 m", "raised"),
            HistoryEntry(1795987830.0, "acknowledged", "alarm", "op-7", "calling him", "ack"),
        ),
    )  # fmt: skip


def _track() -> DeviceTrack:
    t = DeviceTrack("AM-1")
    for seq in (1, 2, 3, 7):
        t.admit(seq, T0 + seq)
    t.pending = [FIX]
    t.points = [TrackPoint(T0 + i, 1000.0 + i, 2000.0 - i, 8.0, f"AM-1:{i}", "gnss") for i in range(TRACK_POINTS)]
    t.suspect = [POINT]
    t.last_seq, t.unnumbered, t.newest_t, t.last_arrival = 7, 2, T0 + 68, T0 + 70
    t.first_pending_arrival, t.last_pending_arrival = T0 + 69, T0 + 70
    return t


#: one object of every stored class, every field away from its default
CATALOGUE: list[tuple[Any, Any, Any]] = [
    (POINT, codec.point_record, codec.point_from),
    (FIX, codec.fix_record, codec.fix_from),
    (_track(), codec.track_record, codec.track_from),
    (BatteryTrend(samples=deque([(1.0, 80.0), (2.0, 79.5)], maxlen=32), charging=True),
     codec.battery_record, codec.battery_from),
    (ZoneEpisode(
        possible_run=2, clear_run=1, candidate_start=1_795_000_000.0, outside_since=3.0,
        window=(1_794_990_000.0, 1_795_020_000.0), forewarned=True, pursuit=True,
        unconfirmed=POINT, last_outside=POINT, last_t=1_795_000_010.0, crossed=(1.0, 2.0),
    ), codec.zone_episode_record, codec.zone_episode_from),
    (PairEpisode(start=5.0, lower_since=6.0, lower_level="warning", clear_run=1, pursuit=True,
                 possible_run=1, last_t=7.0), codec.pair_episode_record, codec.pair_episode_from),
    (CorridorVisit(entered_t=1.0, points=deque([(1.0, 2.0, 3.0, 4.0), (5.0, 6.0, 7.0, 8.0)]), stopped=True),
     codec.visit_record, codec.visit_from),
    ((9.0, Suppression("corridor", "C-A", "moving through", frozenset({"exclusion", "proximity"}))),
     codec.status_record, codec.status_from),
    ((9.0, None), codec.status_record, codec.status_from),
    (_alert().history[1], codec.history_record, codec.history_from),
    (_alert(), codec.alert_record, codec.alert_from),
]  # fmt: skip


def _through_the_store(record: Any) -> Any:
    """A record encoded and decoded as the store's bytes carry it."""
    return msgspec.msgpack.decode(msgspec.msgpack.encode(record), type=type(record))


@pytest.mark.parametrize("obj,to_record,from_record", CATALOGUE, ids=lambda x: type(x).__name__)
def test_every_stored_class_comes_back_equal_field_for_field(obj: Any, to_record: Any, from_record: Any) -> None:
    back = from_record(_through_the_store(to_record(obj)))
    assert type(back) is type(obj) and back == obj and repr(back) == repr(obj)


def test_a_restored_track_keeps_its_duplicate_memory_and_point_cap() -> None:
    back = codec.track_from(_through_the_store(codec.track_record(_track())))
    assert type(back.points) is list and len(back.points) == TRACK_POINTS
    assert back.seen == _track().seen and back.seen.runs() == [(1, 3), (7, 7)]
    assert back.is_duplicate(7) and not back.is_duplicate(8)


def test_a_restored_battery_trend_keeps_its_bound() -> None:
    trend = BatteryTrend()
    for i in range(40):
        trend.add(float(i), 100 - i)
    back = codec.battery_from(_through_the_store(codec.battery_record(trend)))
    assert back.samples.maxlen == 32 and back.samples == trend.samples
    back.add(41.0, 50)
    assert len(back.samples) == 32


def test_alerts_restored_from_stored_records_continue_their_episodes() -> None:
    """A book restored from stored alerts raises, updates and clears as the original."""
    book = AlertBook()
    kw = {"order": "O-1", "kind": "exclusion", "target": "Z-1", "subject": "S-1"}
    book.raise_or_update(**kw, level="warning", now=100.0, device_time=99.0, episode_start=99.0,
                         distance_m=40.0, evidence=("k1",))  # fmt: skip
    alerts = {k: codec.alert_from(_through_the_store(codec.alert_record(a))) for k, a in book.alerts.items()}
    twin = AlertBook(alerts=alerts, open_by_key=dict(book.open_by_key))
    for b in (book, twin):
        assert b.raise_or_update(**kw, level="warning", now=101.0, device_time=100.0,
                                 episode_start=99.0, evidence=("k2",)) is None  # fmt: skip
    rises = [
        b.raise_or_update(**kw, level="alarm", now=102.0, device_time=101.0, episode_start=99.0)
        for b in (book, twin)
    ]
    assert rises[0] == rises[1] and rises[0] is not None
    assert rises[0].alert.evidence == ("k1", "k2") and rises[0].alert.distance_m == 40.0
    ends = [b.clear_episode("O-1", "exclusion", "Z-1", 103.0, "left", 102.5) for b in (book, twin)]
    assert ends[0] == ends[1] and book.alerts == twin.alerts


# --- the schema guard ---------------------------------------------------------------------------
def _class_fields(cls: type) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(cls.__slots__)


def coverage_problems(
    cls: type, record: type[msgspec.Struct], derived: frozenset[str], extra: frozenset[str]
) -> list[str]:
    """What a stored class and its record disagree on, each as a message that says what to do."""
    fields = _class_fields(cls) - derived
    stored = set(record.__struct_fields__) - extra
    problems = []
    if fields - stored:
        problems.append(
            f"{cls.__name__} has fields {sorted(fields - stored)} that {record.__name__} does not "
            f"store: add them at the end of {record.__name__} with a default "
            f"(engine/core/state_schema.py) and to its two functions in engine/core/state_codec.py, or "
            f"list them as derived in COVERAGE there"
        )
    if stored - fields:
        problems.append(
            f"{record.__name__} stores {sorted(stored - fields)} that {cls.__name__} no longer "
            f"has: a new SCHEMA_VERSION with an upgrade (engine/core/state_schema.py), or list them "
            f"in COVERAGE"
        )
    return problems


@pytest.mark.pure_python  # reads the classes' fields and the codec's source
@pytest.mark.parametrize("cls,record,derived,extra", codec.COVERAGE, ids=lambda x: getattr(x, "__name__", ""))
def test_every_field_of_a_stored_class_is_in_its_record(
    cls: type, record: type[msgspec.Struct], derived: frozenset[str], extra: frozenset[str]
) -> None:
    """A field added to a stored class must be added to its record (or listed as derived):
    otherwise a restart would silently forget it."""
    assert coverage_problems(cls, record, derived, extra) == []


def test_the_guard_names_a_field_added_without_its_record() -> None:
    """What another engineer sees who adds ``heading`` to track points and not to the schema."""

    @dataclasses.dataclass
    class GrownPoint:
        t: float
        x: float
        y: float
        acc: float
        key: str
        src: str
        heading: float = 0.0

    (problem,) = coverage_problems(GrownPoint, PointRecord, frozenset(), frozenset())
    assert "['heading']" in problem and "PointRecord" in problem and "state_schema.py" in problem


@pytest.mark.pure_python
@pytest.mark.parametrize("cls,record,derived,extra", codec.COVERAGE, ids=lambda x: getattr(x, "__name__", ""))
def test_both_conversions_name_every_stored_field(
    cls: type, record: type[msgspec.Struct], derived: frozenset[str], extra: frozenset[str]
) -> None:
    """The functions to and from a record read and set every one of its fields (records are made
    positionally, for speed: which value lands in which field is checked by the next test)."""
    to_record, from_record = codec.CONVERSIONS[cls]
    made, read = inspect.getsource(to_record), inspect.getsource(from_record)
    for name in set(record.__struct_fields__) - extra:
        assert f".{name}" in made, f"{to_record.__name__} misses {name}"
        assert f"{name}=" in read and f".{name}" in read, f"{from_record.__name__} misses {name}"


@pytest.mark.pure_python  # sets stand-in values no compiled class would take
@pytest.mark.parametrize("obj,to_record,from_record", CATALOGUE, ids=lambda x: type(x).__name__)
def test_each_value_copied_into_a_record_lands_in_the_field_of_its_name(
    obj: Any, to_record: Any, from_record: Any
) -> None:
    """Records are made with positional arguments (engine.core.state_codec: a third of the
    cost with keywords): every attribute a record copies as it is (None and booleans included)
    is given a value of its own, which must come out in the record's field of the same name.
    Converted fields (lists, nested records) have values of their own type: the round trip
    above checks them."""
    if isinstance(obj, tuple):  # ApprovedCrossings.status: (time, suppression), checked above
        return
    record = to_record(obj)
    copied = [
        n for n in type(record).__struct_fields__
        if hasattr(obj, n) and getattr(record, n) is getattr(obj, n)
    ]  # fmt: skip
    assert copied, type(obj).__name__
    stand_in = copy.copy(obj)
    for name in copied:
        setattr(stand_in, name, f"<{name}>")
    made = to_record(stand_in)
    assert {n: getattr(made, n) for n in copied} == {n: f"<{n}>" for n in copied}


def _steps_of_a_track() -> st.SearchStrategy[list[tuple[str, float]]]:
    """Appends in time order, late points, points dropped at the front, unchanged commits."""
    add = st.tuples(st.just("add"), st.sampled_from([0.0, 1.0, 2.5]))
    step = st.one_of(
        add, add, add,
        st.tuples(st.just("late"), st.floats(0.0, 0.999)),  # where among the points, as a fraction
        st.tuples(st.just("drop"), st.just(0.0)),
        st.tuples(st.just("commit"), st.just(0.0)),
    )  # fmt: skip
    return st.lists(step, min_size=1, max_size=200)


@settings(max_examples=80, deadline=None)
@given(steps=_steps_of_a_track())
def test_reused_point_records_and_battery_rows_give_the_same_bytes(steps: list[tuple[str, float]]) -> None:
    """``RecordCache`` reuses what the last part converted; the bytes are those of converting
    everything again, however the track and battery trend changed in between."""
    cache = codec.RecordCache()
    track, trend = DeviceTrack("AM-1"), BatteryTrend()
    t = T0
    lead = [("add", 1.0)] * (codec.REUSE_FROM + 4)  # long enough to be reused from the start
    for i, (kind, value) in enumerate(lead + steps):
        if kind == "add":
            t += value  # 0.0 too: points of one time
            track._insert(TrackPoint(t, 10.0 * i, -0.0 if i % 7 else 0.0, 8.0, f"AM-1:{i}", "gnss"))
            trend.add(t + 0.5 * i, 90 - i / 3 if i % 3 else 90 - i // 3)
        elif kind == "late" and track.points:
            before = track.points[int(value * len(track.points))].t
            track._insert(TrackPoint(before + 0.25, 5.0 * i, 1.0, 9.0, f"AM-1:{i}", "wifi"))
        elif kind == "drop" and track.points:
            del track.points[0]  # as Engine.forget_old_victim_positions does
        reused = msgspec.msgpack.encode(codec.track_record(track, cache))
        assert reused == msgspec.msgpack.encode(codec.track_record(track))
        rows = msgspec.msgpack.encode(codec.battery_record(trend, cache, "AM-1"))
        assert rows == msgspec.msgpack.encode(codec.battery_record(trend))
    assert len(track.points) < codec.REUSE_FROM or cache.points("AM-1", track.points) is cache.points(
        "AM-1", track.points
    )


def test_records_only_ever_grow_at_the_end() -> None:
    """Records are lists of values in field order: a field inserted or moved would misread every
    part stored before it.  The field order of each version is kept beside its sample."""
    for path in sorted(SAMPLES.glob("v*.fields.json")):
        pinned: dict[str, list[str]] = json.loads(path.read_text())
        for name, fields in pinned.items():
            now = list(getattr(__import__("engine.core.state_schema", fromlist=[name]), name).__struct_fields__)
            assert now[: len(fields)] == fields, (
                f"{name} changed its stored field order since {path.stem}: only append fields "
                f"(with defaults), or make a new SCHEMA_VERSION with an upgrade"
            )


# --- versions -----------------------------------------------------------------------------------
def test_a_part_from_an_older_version_is_upgraded_through_the_chain() -> None:
    """``decode_part`` runs the upgrades from the part's version to the current one (shown with a
    made-up version 0 whose parts had no ``noted`` section and named a victim rank by level)."""
    current = StatePart(v=SCHEMA_VERSION, case="A:A-1", alerts={"A-1": codec.alert_record(_alert())},
                        victim_rank={"A-1": 2}, noted={"A-1": 0})  # fmt: skip
    doc = msgspec.msgpack.decode(encode_part(current))
    old = [0, *doc[1:12], {"A-1": "alarm"}]  # version 0: up to victim_rank, a level name

    def v0_to_v1(part: list[Any]) -> list[Any]:
        ranks = {"info": 0, "warning": 1, "alarm": 2, "critical": 3}
        return [*part[:12], {k: ranks[v] for k, v in part[12].items()}, {"A-1": 0}]

    blob = msgspec.msgpack.encode(old)
    with pytest.raises(StateSchemaError, match="version 0"):
        decode_part(blob)
    assert decode_part(blob, upgrades={0: v0_to_v1}) == current


def test_the_plain_form_upgrades_work_on_reads_back_as_the_same_part() -> None:
    """Every part of the current sample, decoded untyped (as an upgrade sees it: tuples for
    list keys, lists for records) and checked against the records, is the part decoded typed:
    an upgrade that only edits what changed loses nothing else."""
    sample = msgspec.msgpack.decode((SAMPLES / f"v{SCHEMA_VERSION}.msgpack").read_bytes())
    for blob in sample["parts"].values():
        plain = msgspec.msgpack.decode(blob)
        assert msgspec.convert(plain, StatePart) == decode_part(blob)


def test_a_part_from_a_newer_engine_or_not_of_this_format_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(StateSchemaError, match=f"version {SCHEMA_VERSION + 1}"):
        decode_part(encode_part(StatePart(v=SCHEMA_VERSION + 1, case="C")))
    for not_a_part in (b"\xc1", b"(dp0\n.", msgspec.msgpack.encode({"v": 1})):
        with pytest.raises(StateSchemaError, match="not a state part"):
            decode_part(not_a_part)
    with pytest.raises(msgspec.ValidationError):  # an alert in a state the engine does not have
        bad = msgspec.to_builtins(codec.alert_record(_alert()))
        bad[3] = "resolved"
        decode_part(msgspec.msgpack.encode([SCHEMA_VERSION, "C", {}, {}, {}, [], {}, {}, {}, {}, {"A": bad}]))


def test_a_pickle_in_the_store_is_never_unpickled(tmp_path: Path) -> None:
    """Whoever can write to the store cannot make the engine run code: a pickle whose loading
    would write a file is refused before anything reads it."""
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
            return (marker.write_text, ("unpickled",))

    for protocol in (2, 3, 4, 5):
        with pytest.raises(StateSchemaError, match="pickled part from before state schema v1"):
            decode_part(pickle.dumps({"v": 3, "x": Payload()}, protocol=protocol))
    engine = Engine(load_orders(orders_doc()))
    problems = engine.restore_parts([pickle.dumps(Payload(), protocol=5)])
    assert len(problems) == 1 and not marker.exists()


# --- a representative scenario ------------------------------------------------------------------
def sample_scenario() -> tuple[dict[str, Any], list[list[Any]], int]:
    """Orders, a script of steps and where the sample is cut: a subject approaches the victim's
    home (proximity warning then alarm, the exclusion zone round her home), leaves, comes back;
    strap opened, battery low and draining, her panic button; operators claim, acknowledge,
    note and close.  Steps: ``["msg", now, topic, payload]``, ``["tick", now]``,
    ``["act", now, alert kind, action, by, note, outcome]``."""
    doc = orders_doc(
        exclusion=[{"id": "Z-home", "circle": circle(X0 + 2_000, Y0, 400)}],
        proximity=[{"protected_person": "P-1", "alert_m": 700, "warn_m": 1_800}],
    )
    am, vd = DeviceScript("AM-1001"), DeviceScript("VD-2001")
    steps: list[list[Any]] = []
    clock = T0

    def msg(message: tuple[str, bytes], t: float) -> None:
        steps.append(["msg", t + 0.4, message[0], message[1].decode()])

    def act(kind: str, action: str, note: str = "", outcome: str = "") -> None:
        steps.append(["act", clock + 0.5, kind, action, "op-1", note, outcome])

    batt = 60
    for i in range(120):
        clock = T0 + 30 * i
        # out to the victim's home and back twice: from 3 km west of it to 100 m from it
        leg = i % 60
        x = X0 - 1_000 + (100 * leg if leg < 30 else 100 * (60 - leg))
        extra = {"batt": batt} if i % 4 == 0 else {}
        msg(am.fix(clock, x, Y0 + 20, **extra), clock)
        if i % 2 == 0:
            msg(vd.fix(clock + 3, X0 + 2_000, Y0 + (i % 5)), clock + 3)
        if i % 4 == 0 and i > 40:
            batt -= 2
        if i == 20:
            msg(am.event(clock + 5, "strap_open"), clock + 5)
        if i == 22:
            act("tamper", "ack", "calling him")
        if i == 24:
            act("tamper", "close", "strap fastened again", "device_issue")
        if i == 32:
            act("proximity", "claim")
            act("exclusion", "ack", "police informed")
        if i == 40:
            act("proximity", "note", "he says he is leaving")
        if i == 70:
            msg(vd.event(clock + 7, "panic"), clock + 7)
        if i == 90:
            msg(am.event(clock + 9, "low_battery", batt=batt), clock + 9)
        for k in range(1, 3):
            steps.append(["tick", clock + 10 * k])
    return doc, steps, 75 * 4


def run_step(engine: Engine, step: list[Any]) -> Effects:
    kind, now = step[0], step[1]
    if kind == "tick":
        return engine.tick(now)
    if kind == "msg":
        return engine.handle(step[2], step[3].encode(), now)
    _, _, alert_kind, action, by, note, outcome = step
    found = sorted(a.alert_id for a in engine.alerts.alerts.values() if a.kind == alert_kind and a.is_open)
    if not found:
        return Effects()
    return engine.act(found[0], action, by, note, now, outcome=outcome)


def outputs(effects: Effects) -> list[str]:
    """Everything a step produced, as text: every message and every alert change, every field."""
    return [repr((m.channel, m.topic, sorted(m.payload.items()))) for m in effects.messages] + [
        repr(c) for c in effects.changes
    ]


def view(engine: Engine) -> dict[str, dict[Any, str]]:
    """The decision state section by section, each value as its ``repr`` (every field, typed)."""
    sections: dict[str, Any] = {
        "tracks": engine.tracks, "battery": engine.device_rules.battery,
        "non_gnss": engine.device_rules.non_gnss_since, "silent": dict.fromkeys(engine.silent),
        "zones": engine.zones.episodes, "proximity": engine.proximity.episodes,
        "visits": engine.crossings.visits, "status": engine.crossings.status,
        "alerts": engine.alerts.alerts, "open_by_key": engine.alerts.open_by_key,
        "victim_rank": engine.notifier.victim_rank, "noted": engine.crossings.noted,
    }  # fmt: skip
    return {name: {k: repr(v) for k, v in sorted(d.items(), key=repr)} for name, d in sections.items()}


def run_prefix(doc: dict[str, Any], steps: list[list[Any]], cut: int) -> tuple[Engine, dict[str, bytes]]:
    """An engine after ``steps[:cut]``, every delta applied to a store as the service commits."""
    engine = Engine(load_orders(doc))
    stored: dict[str, bytes] = {}
    for step in steps[:cut]:
        run_step(engine, step)
        apply_delta(stored, engine.state_delta())
    return engine, stored


def restored(doc: dict[str, Any], parts: list[bytes]) -> Engine:
    engine = Engine(load_orders(doc))
    assert engine.restore_parts(parts) == []
    return engine


def assert_continues_alike(a: Engine, b: Engine, steps: list[list[Any]]) -> int:
    n = 0
    for step in steps:
        out_a, out_b = outputs(run_step(a, step)), outputs(run_step(b, step))
        assert out_a == out_b, f"diverged at {step[:2]}"
        n += len(out_a)
    assert view(a) == view(b)
    return n


def write_sample() -> Path:
    """Store the sample of the current schema version (its script with it)."""
    doc, steps, cut = sample_scenario()
    _, stored = run_prefix(doc, steps, cut)
    path = SAMPLES / f"v{SCHEMA_VERSION}.msgpack"
    SAMPLES.mkdir(exist_ok=True)
    path.write_bytes(msgspec.msgpack.encode(
        {"version": SCHEMA_VERSION, "orders": doc, "steps": steps, "cut": cut, "parts": stored}
    ))
    import engine.core.state_schema as schema

    records = {
        name: list(obj.__struct_fields__) for name, obj in sorted(vars(schema).items())
        if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj.__module__ == schema.__name__
        and not name.startswith("_")
    }  # fmt: skip
    (SAMPLES / f"v{SCHEMA_VERSION}.fields.json").write_text(json.dumps(records, indent=1) + "\n")
    return path


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("v*.msgpack")), ids=lambda p: p.stem)
def test_a_stored_sample_of_every_version_restores_an_engine_that_decides_alike(path: Path) -> None:
    """The sample's parts restore into an engine with the state of the one that wrote them, and
    both go on to the end of the scenario with the same messages and alert changes."""
    sample = msgspec.msgpack.decode(path.read_bytes())
    doc, steps, cut, parts = sample["orders"], sample["steps"], sample["cut"], sample["parts"]
    original, _ = run_prefix(doc, steps, cut)
    from_sample = restored(doc, list(parts.values()))
    kinds = {(r.kind, r.state != "closed") for p in map(decode_part, parts.values()) for r in p.alerts.values()}
    assert {("exclusion", True), ("proximity", True), ("tamper", False)} <= kinds, kinds
    assert max(len(a.history) for a in from_sample.alerts.alerts.values()) >= 4
    assert view(from_sample) == view(original), (
        f"the engine restored from {path.name} holds other state than one that ran its script "
        "now: a field added to a record has a default that is wrong for parts stored before it "
        "(then: a new SCHEMA_VERSION with an upgrade), or the rules now decide differently on "
        "the script (then the current version's sample is written again: docs/state-schema.md)"
    )
    assert assert_continues_alike(original, from_sample, steps[cut:]) > 0


def test_the_sample_covers_every_section() -> None:
    """The sample is representative: every section of a part is filled somewhere but the
    corridor ones (the hypothesis test below runs a corridor scenario)."""
    sample = msgspec.msgpack.decode((SAMPLES / f"v{SCHEMA_VERSION}.msgpack").read_bytes())
    parts = [decode_part(p) for p in sample["parts"].values()]
    empty = {
        name for name in StatePart.__struct_fields__[2:]
        if not any(getattr(p, name) for p in parts)
    }  # fmt: skip
    assert empty <= {"visits", "status", "noted", "non_gnss", "silent"}, empty


# --- round trips after random prefixes ----------------------------------------------------------
_SCENARIO = sample_scenario()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, len(_SCENARIO[1]) - 1), whole=st.booleans())
def test_an_engine_restored_after_any_prefix_continues_identically(cut: int, whole: bool) -> None:
    """restore(commit(state)) decides as the state it was made from, whatever the prefix; the
    store is either kept up to date delta by delta (as the service does) or written whole."""
    doc, steps, _ = _SCENARIO
    original, stored = run_prefix(doc, steps, cut)
    if whole:
        original._whole_state = True
        stored = {}
        apply_delta(stored, original.state_delta())
    twin = restored(doc, list(stored.values()))
    assert view(twin) == view(original)
    assert_continues_alike(original, twin, steps[cut : cut + 150])


def _corridor_steps() -> tuple[dict[str, Any], list[list[Any]]]:
    from engine.runtime.replay import read_trace
    from simulator.generate import generate
    from simulator.scenario import load_scenario

    g = generate(load_scenario(ROOT / "simulator" / "scenarios" / "motorway_corridor.json"))
    steps: list[list[Any]] = []
    lines = "".join(m.line() + "\n" for m in g.messages)
    clock = None
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "t.jsonl"
        trace.write_text(lines)
        for arrival, topic, payload in read_trace(trace):
            while clock is not None and clock + 30 <= arrival:
                clock += 30
                steps.append(["tick", clock])
            clock = arrival if clock is None else clock
            steps.append(["msg", arrival, topic, bytes(payload).decode()])
    return g.orders, steps


@pytest.fixture(scope="module")
def corridor() -> tuple[dict[str, Any], list[list[Any]]]:
    return _corridor_steps()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.05, 0.95))
def test_corridor_state_round_trips_after_any_prefix(
    corridor: tuple[dict[str, Any], list[list[Any]]], fraction: float
) -> None:
    """The approved-corridor sections (visits, status, noted) too: a motorway scenario."""
    orders, steps = corridor
    cut = int(fraction * len(steps))
    original = Engine(load_orders(orders))
    stored: dict[str, bytes] = {}
    for step in steps[:cut]:
        run_step(original, step)
        apply_delta(stored, original.state_delta())
    twin = Engine(load_orders(orders))
    assert twin.restore_parts(list(stored.values())) == []
    assert view(twin) == view(original)
    assert_continues_alike(original, twin, steps[cut : cut + 300])


def test_a_stored_alert_is_an_array_of_values_not_names() -> None:
    """Records carry values only (names are in the schema): an alert's field names never appear."""
    blob = msgspec.msgpack.encode(codec.alert_record(_alert()))
    assert b"alert_id" not in blob and b"closing_speed_mps" not in blob
    assert msgspec.msgpack.decode(blob, type=AlertRecord) == codec.alert_record(_alert())


def test_seq_memory_is_stored_as_runs() -> None:
    memory = SeqMemory(8)
    for seq in (1, 2, 3, 10, 11, 4):
        memory.add(seq)
    assert memory.runs() == [(1, 3), (10, 11), (4, 4)]
    assert SeqMemory.from_runs(8, memory.runs()) == memory


if __name__ == "__main__" and "--write-sample" in sys.argv:
    print(write_sample())
