"""Issue 21: no device message may stop alerting; seq restarts are taken in and counted.

A seq of 2**63 once passed validation and made the state commit raise OverflowError in the
service's commit task (all alerting stopped); a device that rebooted and counted again from 1
was dropped as "duplicate", without a trace, until it passed its old maximum.  These run the
real pure path: ``Engine.handle`` -> ``state_delta`` -> ``MemoryStore.commit`` -> restore.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from msgspec.msgpack import decode, encode

from engine.core.effects import Effects
from engine.core.pipeline import Engine
from engine.core.state_codec import seq_memory_from, seq_memory_record
from engine.core.state_schema import SeqMemoryRecord
from engine.core.testing import T0, DeviceScript, Harness, circle, orders_doc
from engine.core.tracks import SeqMemory
from engine.runtime.store import MemoryStore

X0, Y0 = 92_000.0, 437_000.0
FIX_TOPIC = "em/dev/AM-1001/fix"
EVENT_TOPIC = "em/dev/AM-1001/event"
HUGE = 2**63


def zone_harness() -> Harness:
    """Subject AM-1001 with a 500 m exclusion zone around (X0, Y0)."""
    return Harness.build(orders_doc(exclusion=[{"id": "Z", "circle": circle(X0, Y0, 500)}]))


def commit(engine: Engine, store: MemoryStore, effects: Effects) -> None:
    """What the service's commit task does with one step, and a restore from what it stored."""
    for m in effects.messages:
        json.dumps(m.payload)
    delta = engine.state_delta()
    asyncio.run(store.commit(delta, effects.messages, [c.alert for c in effects.changes]))
    fresh = Engine(engine.book, engine.config)
    fresh.restore_parts(asyncio.run(store.load_state()))
    assert set(fresh.tracks) == set(engine.tracks)


def fix_doc(seq: int, t: float, **extra: Any) -> dict[str, Any]:
    script = DeviceScript("AM-1001", seq=seq - 1)
    return dict(json.loads(script.fix(t, X0, Y0)[1]), **extra)


def dead_reasons(effects: Effects) -> list[str]:
    return [m.payload["reason"] for m in effects.messages if m.channel == "deadletter"]


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (FIX_TOPIC, fix_doc(HUGE, T0)),
        (FIX_TOPIC, [fix_doc(HUGE, T0), fix_doc(HUGE + 1, T0 + 1)]),
        (EVENT_TOPIC, {"v": 1, "device": "AM-1001", "seq": HUGE, "t": int(T0 * 1000),
                       "type": "strap_open", "detail": {}}),
        (EVENT_TOPIC, [{"v": 1, "device": "AM-1001", "seq": HUGE, "t": int(T0 * 1000),
                        "type": "power_off"}]),
    ],
    ids=["fix", "burst", "event", "event-burst"],
)
def test_seq_beyond_64_bits_is_dead_lettered_and_alerting_goes_on(topic: str, payload: Any) -> None:
    """seq >= 2**63 in a fix, a burst or an event is out_of_range; state still commits; alerts follow."""
    h = zone_harness()
    store = MemoryStore()
    am = DeviceScript("AM-1001")
    commit(h.engine, store, h.send(am.fix(T0 - 60, X0 + 1_000, Y0), T0 - 59))
    step = h.send((topic, json.dumps(payload).encode()), T0 + 1)
    assert dead_reasons(step) and set(dead_reasons(step)) == {"out_of_range"}
    assert h.engine.stats.rejected["out_of_range"] == len(dead_reasons(step))
    commit(h.engine, store, step)
    step = h.send(am.fix(T0 + 10, X0, Y0), T0 + 11)
    assert [c.alert.kind for c in step.changes] == ["exclusion"]
    commit(h.engine, store, step)


def test_a_restart_at_seq_1_is_evaluated_and_counted() -> None:
    """A device counting again from 1 after a reboot is evaluated at once and counted once."""
    h = zone_harness()
    store = MemoryStore()
    am = DeviceScript("AM-1001")
    for k in range(20):
        commit(h.engine, store, h.send(am.fix(T0 + 10 * k, X0 + 5_000, Y0), T0 + 10 * k + 1))
    rebooted = DeviceScript("AM-1001")  # seq 1 again, later device time, inside the zone
    step = h.engine.handle(*rebooted.fix(T0 + 600, X0, Y0), T0 + 601)  # no flush: not held
    assert [c.alert.kind for c in step.changes] == ["exclusion"]
    assert h.engine.stats.seq_restarts == 1 and h.engine.stats.duplicates == 0
    commit(h.engine, store, step)
    step = h.engine.handle(*rebooted.fix(T0 + 610, X0, Y0), T0 + 611)
    assert [c.alert.level for c in step.changes] == ["alarm"]  # seq 2 in sequence, at once
    assert h.engine.stats.seq_restarts == 1
    commit(h.engine, store, step)


def test_a_tamper_event_after_a_reboot_is_not_lost() -> None:
    """An event whose seq the device used before its reboot raises its alert."""
    h = zone_harness()
    am = DeviceScript("AM-1001")
    for k in range(5):
        h.send(am.fix(T0 + 10 * k, X0 + 5_000, Y0), T0 + 10 * k + 1)
    step = h.send(DeviceScript("AM-1001").event(T0 + 300, "strap_cut"), T0 + 301)
    assert [c.alert.kind for c in step.changes] == ["tamper"]
    assert h.engine.stats.seq_restarts == 1


def test_a_true_duplicate_is_still_ignored() -> None:
    """The same (seq, t) again is a duplicate, even long after: not a restart."""
    h = zone_harness()
    am = DeviceScript("AM-1001")
    first = am.fix(T0, X0, Y0)
    h.send(first, T0 + 1)
    for k in range(3):
        h.send(am.fix(T0 + 10 + k, X0 + 5_000, Y0), T0 + 11 + k)
    h.send(first, T0 + 900)
    assert (h.engine.stats.duplicates, h.engine.stats.seq_restarts) == (1, 0)


def test_a_late_low_seq_is_evaluated_not_dropped() -> None:
    """A lower seq never seen, older than the newest fix, is a late fix: evaluated, marked late."""
    h = zone_harness()
    h.send(DeviceScript("AM-1001", seq=9).fix(T0 + 100, X0 + 5_000, Y0), T0 + 101)
    step = h.send(DeviceScript("AM-1001", seq=4).fix(T0 + 50, X0, Y0), T0 + 102)
    assert [c.alert.kind for c in step.changes] == ["exclusion"] and step.changes[0].alert.late
    assert (h.engine.stats.duplicates, h.engine.stats.seq_restarts, h.engine.stats.late) == (0, 0, 1)


def test_a_restart_releases_the_old_numbering_waiting_in_the_buffer() -> None:
    """Fixes of the old numbering held for a gap are evaluated with the restart, not later."""
    h = zone_harness()
    e = h.engine
    e.handle(*DeviceScript("AM-1001", seq=0).fix(T0, X0 + 5_000, Y0), T0 + 1)
    e.flush(T0 + 1)
    e.handle(*DeviceScript("AM-1001", seq=5).fix(T0 + 10, X0 + 5_000, Y0), T0 + 11)  # gap 2..5
    assert e.tracks["AM-1001"].pending
    e.handle(*DeviceScript("AM-1001", seq=0).fix(T0 + 60, X0, Y0), T0 + 61)
    assert not e.tracks["AM-1001"].pending and e.stats.seq_restarts == 1


def test_seq_memory_past_63_bits_is_stored_and_restored() -> None:
    """Even a seq of 2**63 (refused by the decoder) cannot make a commit fail: MessagePack
    stores unsigned 64-bit integers."""
    memory = SeqMemory(16)
    memory.add(5)
    memory.add(HUGE)
    copy = seq_memory_from(decode(encode(seq_memory_record(memory)), type=SeqMemoryRecord))
    assert copy == memory and HUGE in copy and 5 in copy
