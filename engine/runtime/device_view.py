"""Device health centre-wide on NATS workers: the owners' snapshots per partition, merged (pure).

Device health and latest positions live in the engine of the partition that owns a device's
case, so only its owner can list them.  Every ``EMGUARD_NATS_VIEW_S`` an owner encodes the
health records of each partition it evaluates (``engine.web.views.devices``, the same records a
single node's ``GET /api/devices`` answers) into one snapshot, which
``engine.runtime.nats_caseview`` puts into the KV bucket ``em_view`` under the partition's key.
Every worker watches that bucket into a ``DeviceView`` and answers ``GET /api/devices`` from the
merge, each device with ``as_of`` (when its snapshot was taken) and ``owner`` (by which worker).

Why positional rows: a record is a dict of a dozen fixed keys; naming them once per snapshot
instead of once per device halves its size: 10,000 subjects and their victims over 16
partitions, the largest partition (1,266 devices) is 231,630 bytes instead of 458 KB
(tests/engine/test_device_view.py), well under NATS's 1 MB payload.  This module does no I/O
and reads no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from devices.timeutil import format_time, parse_time
from engine.core.pipeline import Engine

SNAPSHOT_VERSION = 1
STALE_PERIODS = 5  # a snapshot older than this many periods is reported as stale
#: the health records of one engine's devices at ``now``: ``engine.web.views.devices``, handed
#: in by the tools layer (the runtime does not import the web layer)
DeviceHealth = Callable[[Engine, float], list[dict[str, Any]]]


class Snapshot(msgspec.Struct, frozen=True):
    """One partition's device health as its owner saw it at ``at`` (epoch seconds)."""

    v: int
    partition: int
    worker: str
    at: float
    fields: list[str]  # the record keys, in the order of every row
    rows: list[list[Any]]


_DECODER = msgspec.json.Decoder(Snapshot)
_ENCODER = msgspec.json.Encoder()


def view_key(n: int) -> str:
    """The KV key of partition ``n``'s snapshot (as the lease's key in ``em_leases``)."""
    return f"p{n}"


def encode_snapshot(partition: int, worker: str, at: float, records: list[dict[str, Any]]) -> bytes:
    """One partition's health records as compact JSON: the keys once, then a row per device."""
    fields: list[str] = []
    for record in records:
        for key in record:
            if key not in fields:
                fields.append(key)
    rows = [[record.get(key) for key in fields] for record in records]
    return _ENCODER.encode(Snapshot(SNAPSHOT_VERSION, partition, worker, at, fields, rows))


def decode_snapshot(data: bytes) -> Snapshot:
    """The snapshot in ``data``; ValueError for anything else (a newer version included)."""
    try:
        snap = _DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a device snapshot: {exc}") from exc
    if snap.v != SNAPSHOT_VERSION:
        raise ValueError(f"device snapshot version {snap.v}, this worker reads {SNAPSHOT_VERSION}")
    return snap


def records_of(snap: Snapshot, now: float) -> list[dict[str, Any]]:
    """A snapshot's records as the single node lists them, plus ``as_of`` and ``owner``.

    ``seconds_since_seen`` is counted again from ``last_seen`` at ``now``: the owner counted it
    when it took the snapshot, up to a period ago.
    """
    as_of = format_time(snap.at)
    out = []
    for row in snap.rows:
        record = dict(zip(snap.fields, row, strict=False))
        seen = record.get("last_seen")
        if isinstance(seen, str) and "seconds_since_seen" in record:
            try:
                record["seconds_since_seen"] = round(now - parse_time(seen), 1)
            except ValueError:
                pass
        record["as_of"] = as_of
        record["owner"] = snap.worker
        out.append(record)
    return out


@dataclass(slots=True)
class DeviceView:
    """The latest snapshot of every partition, as a worker's watch of ``em_view`` last saw it."""

    partitions: int = 16
    period_s: float = 2.0  # how often owners publish (EMGUARD_NATS_VIEW_S)
    snapshots: dict[int, Snapshot] = field(default_factory=dict)
    taken: int = 0
    _rows: dict[int, dict[str, int]] = field(default_factory=dict)  # partition -> device -> row

    def take(self, data: bytes) -> bool:
        """Keep a published snapshot; False (and nothing kept) for one that does not decode or
        names a partition outside ``0..partitions-1``."""
        try:
            snap = decode_snapshot(data)
        except ValueError:
            return False
        if not 0 <= snap.partition < self.partitions:
            return False
        self.snapshots[snap.partition] = snap
        at = snap.fields.index("device") if "device" in snap.fields else None
        self._rows[snap.partition] = {} if at is None else {str(r[at]): i for i, r in enumerate(snap.rows)}
        self.taken += 1
        return True

    def drop(self, partition: int) -> None:
        """The partition's key was deleted or purged: nothing is known of it any more."""
        self.snapshots.pop(partition, None)
        self._rows.pop(partition, None)

    def record(self, device: str, now: float) -> dict[str, Any] | None:
        """One device's record from the newest snapshot listing it (an alert's map), or None."""
        found: tuple[Snapshot, int] | None = None
        for n, rows in self._rows.items():
            i = rows.get(device)
            snap = self.snapshots[n]
            if i is not None and (found is None or snap.at > found[0].at):
                found = (snap, i)
        if found is None:
            return None
        snap, i = found
        return records_of(Snapshot(snap.v, snap.partition, snap.worker, snap.at, snap.fields, [snap.rows[i]]), now)[0]

    def missing(self) -> list[int]:
        """Partitions with no snapshot yet (their devices are not listed)."""
        return [n for n in range(self.partitions) if n not in self.snapshots]

    def stale(self, now: float) -> list[int]:
        """Partitions whose last snapshot is older than ``STALE_PERIODS`` periods (no owner
        published since: none holds it, or its owner cannot reach the cluster)."""
        limit = STALE_PERIODS * self.period_s
        return sorted(n for n, s in self.snapshots.items() if now - s.at > limit)

    def devices(self, now: float) -> list[dict[str, Any]]:
        """Every device of every snapshot, by device id.  A device in two snapshots (a case
        moved partitions between releases, or a former owner's late write) is taken from the
        newer one."""
        best: dict[str, tuple[float, dict[str, Any]]] = {}
        for snap in self.snapshots.values():
            for record in records_of(snap, now):
                device = str(record.get("device"))
                held = best.get(device)
                if held is None or snap.at > held[0]:
                    best[device] = (snap.at, record)
        return [best[d][1] for d in sorted(best)]

    def coverage(self, now: float) -> dict[str, Any]:
        """What the list covers: partitions with a snapshot, the oldest one, the stale ones."""
        oldest = min((s.at for s in self.snapshots.values()), default=None)
        return {"partitions": self.partitions, "with_snapshot": len(self.snapshots),
                "oldest_as_of": format_time(oldest) if oldest is not None else None,
                "stale": self.stale(now), "period_s": self.period_s}
