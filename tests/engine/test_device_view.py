"""Device health centre-wide (pure): an owner's per-partition snapshot, encoded, and its merge."""

from __future__ import annotations

import time

import pytest

from devices.timeutil import format_time
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.core.testing import ORIGIN, T0, DeviceScript, orders_doc
from engine.runtime.device_view import (
    DeviceView,
    Snapshot,
    decode_snapshot,
    encode_snapshot,
    records_of,
)
from engine.runtime.nats_worker import partition_books
from engine.web import views
from tests.integration.nats_helpers import orders


def _engine() -> Engine:
    engine = Engine(load_orders(orders_doc()))
    topic, payload = DeviceScript("AM-1001").fix(T0, *ORIGIN, acc=12.0, batt=55, src="wifi")
    engine.handle(topic, payload, T0 + 1)
    engine.tick(T0 + 2)  # releases the fix from the reorder window
    return engine


def test_a_snapshot_carries_what_the_single_node_lists_and_the_merge_adds_as_of_and_owner() -> None:
    """The records of ``views.devices`` come back unchanged (seconds since seen counted again
    at read time), each with the snapshot's time and worker."""
    engine = _engine()
    single = {d["device"]: d for d in views.devices(engine, T0 + 10)}
    assert single["AM-1001"]["position"]["lat"] > 51 and single["VD-2001"]["position"] is None
    view = DeviceView(partitions=2, period_s=2.0)
    assert view.take(encode_snapshot(1, "w-a", T0 + 10, list(single.values())))
    assert view.missing() == [0]
    merged = {d["device"]: d for d in view.devices(T0 + 15)}
    am = merged.pop("AM-1001")
    assert am.pop("as_of") == format_time(T0 + 10) and am.pop("owner") == "w-a"
    assert am.pop("seconds_since_seen") == 14.0  # seen at T0 + 1, read at T0 + 15
    want = dict(single["AM-1001"])
    del want["seconds_since_seen"]
    assert am == want
    assert merged["VD-2001"]["last_seen"] is None and merged["VD-2001"]["seconds_since_seen"] is None


def test_the_merge_lists_every_partition_newest_first_and_says_what_is_stale() -> None:
    """Devices of all partitions by id; a device in two snapshots from the newer; a partition
    not published for five periods is stale; a deleted key's partition is missing again."""
    view = DeviceView(partitions=3, period_s=2.0)
    row = {"device": "X", "last_seen": None, "silent": False}
    assert view.take(encode_snapshot(0, "w-a", 100.0, [dict(row, device="B"), dict(row, device="X")]))
    assert view.take(encode_snapshot(2, "w-b", 109.0, [dict(row, device="A"), dict(row, silent=True)]))
    got = view.devices(111.0)
    assert [d["device"] for d in got] == ["A", "B", "X"]
    assert got[2]["silent"] is True and got[2]["owner"] == "w-b"  # the newer snapshot's
    assert view.missing() == [1] and view.stale(111.0) == [0]
    assert view.coverage(111.0)["with_snapshot"] == 2
    view.drop(0)
    assert view.missing() == [0, 1] and [d["device"] for d in view.devices(111.0)] == ["A", "X"]


def test_unreadable_snapshots_are_refused() -> None:
    """Not JSON, another version, or a partition this deployment does not have: nothing kept."""
    view = DeviceView(partitions=2)
    assert not view.take(b"{")
    with pytest.raises(ValueError, match="version"):
        decode_snapshot(b'{"v":2,"partition":0,"worker":"w","at":1.0,"fields":[],"rows":[]}')
    assert not view.take(encode_snapshot(5, "w", 1.0, []))
    assert view.snapshots == {} and view.taken == 0
    snap = decode_snapshot(encode_snapshot(1, "w", 1.5, [{"device": "D", "a": 1}, {"b": 2, "device": "E"}]))
    assert snap == Snapshot(1, 1, "w", 1.5, ["device", "a", "b"], [["D", 1, None], ["E", None, 2]])
    assert records_of(snap, 2.0)[1] == {"device": "E", "a": None, "b": 2, "as_of": format_time(1.5), "owner": "w"}


def test_a_partition_of_10000_subjects_fits_a_kv_value() -> None:
    """10,000 subjects and their victims over 16 partitions: the largest partition's snapshot,
    every device with a fix and an open alert per pair, stays well under NATS's 1 MB payload."""
    book = load_orders(orders(10_000))
    books = partition_books(book, 16)
    n = max(books, key=lambda k: len(books[k].device_owner))
    engine = Engine(books[n])
    now = time.time()
    for d in sorted(books[n].device_owner):  # every pair at one spot: an alarm per pair
        topic, payload = DeviceScript(d).fix(now - 5, ORIGIN[0] + 1234.5, ORIGIN[1] + 987.6, batt=77)
        engine.handle(topic, payload, now - 4)
    engine.tick(now)
    data = encode_snapshot(n, "emguard-worker-7-1234", now, views.devices(engine, now))
    devices = len(books[n].device_owner)
    print(f"snapshot_bytes={len(data)} devices={devices} per_device={len(data) / devices:.0f}")
    assert 1200 < devices < 1300 and len(engine.alerts.alerts) > 600
    assert len(data) < 300_000
