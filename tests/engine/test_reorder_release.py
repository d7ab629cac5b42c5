"""When a fix is evaluated: at once if nothing can be missing before it, else after the reorder hold.

The reorder buffer exists for late, shuffled and duplicated uploads.  Holding every fix for
``reorder_quiet_s`` (0.5 s) also delayed every live alert by at least that much; a fix that
continues its device's sequence numbers without a gap, arriving live, cannot be overtaken by
anything older, so it is evaluated in the same step.  Gaps and late uploads still wait.
"""

from __future__ import annotations

from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, orders_doc, square

BAN = (ORIGIN[0] + 2000.0, ORIGIN[1])


def engine() -> Engine:
    return Engine(load_orders(orders_doc(exclusion=[{"id": "Z-ban", "polygon": square(*BAN, 200.0)}])))


def in_service() -> tuple[Engine, DeviceScript]:
    """An engine that has evaluated AM-1001's first fix (seq 1), so it knows the sequence."""
    e, dev = engine(), DeviceScript("AM-1001")
    e.handle(*dev.fix(T0, *ORIGIN), T0 + 0.2)
    e.tick(T0 + 1)
    return e, dev


def evaluated(e: Engine) -> int:
    return e.stats.evaluated


def test_a_live_fix_in_sequence_is_evaluated_in_the_same_step() -> None:
    e, dev = engine(), DeviceScript("AM-1001")
    e.handle(*dev.fix(T0, *ORIGIN), T0 + 1)  # the first fix: nothing known to follow yet
    assert evaluated(e) == 0
    e.tick(T0 + 2)
    assert evaluated(e) == 1
    for i in range(1, 4):
        e.handle(*dev.fix(T0 + 10 * i, *ORIGIN), T0 + 10 * i + 0.3)
        assert evaluated(e) == 1 + i  # no wait for the quiet period


def test_an_alarm_in_sequence_is_raised_without_waiting_for_a_tick() -> None:
    e, dev = engine(), DeviceScript("AM-1001")
    e.handle(*dev.fix(T0, BAN[0] - 400.0, BAN[1]), T0 + 0.2)
    e.tick(T0 + 1)
    changes = []
    for i in range(1, 4):
        changes += e.handle(*dev.fix(T0 + 10 * i, BAN[0] - 200.0 + 100.0 * i, BAN[1]), T0 + 10 * i + 0.2).changes
    assert [c.alert.level for c in changes if c.alert.kind == "exclusion"][-1] == "alarm"


def test_a_gap_holds_the_fix_until_it_is_filled_then_both_go_in_order() -> None:
    e, dev = in_service()
    second, third = dev.fix(T0 + 10, *ORIGIN), dev.fix(T0 + 20, *ORIGIN)
    e.handle(*third, T0 + 20.2)
    assert evaluated(e) == 1  # seq 2 is missing: wait
    e.handle(*second, T0 + 20.25)
    assert evaluated(e) == 3
    track = e.tracks["AM-1001"]
    assert [p.t for p in track.points] == [T0, T0 + 10, T0 + 20]


def test_an_event_closes_the_gap_in_the_shared_sequence() -> None:
    """Fixes and events share one counter (contract: seq per device)."""
    e, dev = in_service()
    event = dev.event(T0 + 5, "charger_connected")
    e.handle(*dev.fix(T0 + 10, *ORIGIN), T0 + 10.2)
    assert evaluated(e) == 1
    e.handle(*event, T0 + 10.3)
    assert evaluated(e) == 2


def test_a_gap_that_is_never_filled_waits_only_the_quiet_period() -> None:
    e, dev = in_service()
    dev.seq += 1  # lost on the way
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    e.tick(T0 + 20.4)
    assert evaluated(e) == 1
    e.tick(T0 + 20.2 + e.config.rules.reorder_quiet_s)
    assert evaluated(e) == 2


def test_a_late_upload_is_gathered_even_in_sequence() -> None:
    """Buffered fixes arriving long after their device time are judged together, as before."""
    e, dev = in_service()
    late_arrival = T0 + 3600
    for i in range(1, 4):
        e.handle(*dev.fix(T0 + 10 * i, *ORIGIN), late_arrival + 0.01 * i)
    assert evaluated(e) == 1
    e.tick(late_arrival + 1)
    assert evaluated(e) == 4


def test_a_rejected_message_that_names_its_seq_does_not_hold_the_next_fix() -> None:
    """A dead-lettered fix (here acc 0) still used its seq; the fix after it need not wait."""
    e, dev = in_service()
    effects = e.handle(*dev.fix(T0 + 10, *ORIGIN, acc=0), T0 + 10.2)
    assert [m.channel for m in effects.messages] == ["deadletter"]
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    assert evaluated(e) == 2


BROKEN = b'{"v":1,"device":"AM-1001","seq":'  # truncated: its seq cannot be read


def test_a_message_too_broken_to_name_its_seq_stands_for_one_missing_seq() -> None:
    """It came on the device's own topic, so it took a seq: the fix after it need not wait."""
    e, dev = in_service()
    e.handle("em/dev/AM-1001/fix", BROKEN, T0 + 10.2)
    dev.seq += 1  # the broken message's seq
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    assert evaluated(e) == 2
    # one broken message covers one missing seq, not two
    e.handle("em/dev/AM-1001/fix", BROKEN, T0 + 30.2)
    dev.seq += 2
    e.handle(*dev.fix(T0 + 40, *ORIGIN), T0 + 40.2)
    assert evaluated(e) == 2
    e.tick(T0 + 40.2 + e.config.rules.reorder_quiet_s)
    assert evaluated(e) == 3


def test_a_broken_message_arriving_after_the_gapped_fix_releases_it() -> None:
    e, dev = in_service()
    dev.seq += 1
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    assert evaluated(e) == 1
    e.handle("em/dev/AM-1001/fix", BROKEN, T0 + 20.25)
    assert evaluated(e) == 2


def test_the_broken_message_count_ends_with_the_release_it_served() -> None:
    """Two broken messages, one gap: the spare one must not excuse a later, real gap."""
    e, dev = in_service()
    for k in range(2):
        e.handle("em/dev/AM-1001/fix", BROKEN, T0 + 5 + k)
    dev.seq += 1
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    assert evaluated(e) == 2 and e.tracks["AM-1001"].unnumbered == 0
    dev.seq += 1  # lost on the way
    e.handle(*dev.fix(T0 + 40, *ORIGIN), T0 + 40.2)
    assert evaluated(e) == 2


def test_a_broken_message_on_another_devices_topic_changes_nothing_here() -> None:
    e, dev = in_service()
    e.handle("em/dev/AM-2002/fix", BROKEN, T0 + 10.2)
    dev.seq += 1
    e.handle(*dev.fix(T0 + 20, *ORIGIN), T0 + 20.2)
    assert evaluated(e) == 1
