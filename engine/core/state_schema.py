"""The stored form of the engine's decision state: explicit, versioned msgspec Structs.

Every part the service stores (``engine.core.case_state``: one per case, one per closed alert) is
one ``StatePart`` encoded as MessagePack.  The stored form names plain values only (numbers,
strings, lists, maps, these records): nothing in it names a Python class or makes the reader
call one, so renaming an engine class is no migration, a store written by the pure build is
read by the compiled one (engine.tools.native) and back, and whoever can write to the store can at
worst make a part unreadable, never make the engine run code.

Records are ``array_like`` (a record is the list of its values in field order, not a map of
names: a track's 64 points would otherwise repeat six names each).  So:

* a field is only ever **added at the end** of its record, **with a default** that is right
  for parts stored before it existed: those parts decode with it as they are, same version;
* anything else (a field removed, reordered, retyped, or one whose default would be wrong for
  old parts) is a new ``SCHEMA_VERSION``, with an entry in ``UPGRADES`` that turns the plain
  decoded form of the previous version into the next; ``decode_part`` runs the chain from a
  part's version up to the current one, then checks the result against these records.  A
  sample part of every version lives in tests/engine/state_samples/ and must keep restoring.

Field names and types follow the engine's classes (``engine.core.state_codec`` converts;
tests/engine/test_state_codec.py fails when a stored class has a field no record covers).
This module stays Python in the compiled build: mypyc turns a ``Struct`` into a class msgspec
no longer decodes into (devices/wire.py).  docs/state-schema.md describes the format for
operators, and how a store from before this format (pickles) is handled.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Literal

import msgspec

from engine.errors import EngineError

#: version of the stored form written today; the first explicit schema is 1 (pickles before it)
SCHEMA_VERSION: Final = 1

Source = Literal["gnss", "wifi", "cell"]  # devices.model.FixSource
Strap = Literal["ok", "open", "cut"]  # devices.model.StrapState
StoredLevel = Literal["info", "warning", "alarm", "critical"]  # engine.core.alerts.Level
StoredState = Literal["open", "acknowledged", "escalated", "closed"]  # engine.core.alerts.State
StoredCondition = Literal["active", "cleared"]  # engine.core.alerts.Condition


class StateSchemaError(EngineError):
    """A stored part this engine cannot read: not this format, or a version it does not know."""


class PointRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.tracks.TrackPoint``: a fix accepted for decisions, projected metres."""

    t: float
    x: float
    y: float
    acc: float
    key: str
    src: str


class FixRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``devices.model.Fix``: a fix waiting in its device's reorder buffer."""

    device: str
    seq: int
    t: float
    lat: float
    lon: float
    acc: float
    arrival: float
    spd: float | None
    hdg: float | None
    sats: int | None
    src: Source
    batt: int | None
    strap: Strap | None


class SeqMemoryRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.tracks.SeqMemory``: the device's recent sequence numbers as runs
    ``(first, last)`` of consecutive values, in arrival order (the set is rebuilt from them)."""

    limit: int
    runs: list[tuple[int, int]]


class TrackRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.tracks.DeviceTrack``: what the engine remembers of one device between fixes."""

    device: str
    seen: SeqMemoryRecord
    pending: list[FixRecord]
    first_pending_arrival: float
    last_pending_arrival: float
    points: list[PointRecord]
    newest_t: float
    last_arrival: float
    suspect: list[PointRecord]
    last_seq: int | None
    unnumbered: int
    newest_seen_t: float
    # where the device's last released burst ended (engine.core.tracks: late data)
    released_arrival: float = -math.inf
    released_seq: int | None = None


class BatteryRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.rules.device_events.BatteryTrend``: (device time, percent) samples, oldest
    first, and the bound of the deque that holds them (None: unbounded).  A whole percent is
    stored as an integer (smaller) and read back as a float, as the engine keeps it."""

    samples: list[tuple[float, int | float]]
    samples_max: int | None
    charging: bool


class ZoneEpisodeRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.rules.zones.ZoneEpisode``: debounce state of one (subject, order, zone)."""

    possible_run: int
    clear_run: int
    candidate_start: float | None
    outside_since: float | None
    window: tuple[float, float] | None
    forewarned: bool
    pursuit: bool
    unconfirmed: PointRecord | None
    last_outside: PointRecord | None
    last_t: float
    crossed: tuple[float, float] | None


class PairEpisodeRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.rules.proximity.PairEpisode``: debounce state of one (order, subject, person)."""

    start: float | None
    lower_since: float | None
    lower_level: StoredLevel | None
    clear_run: int
    pursuit: bool
    possible_run: int
    last_t: float
    unsure_run: int = 0  # readings in a row that would raise to alarm on doubtful accuracy


class CorridorVisitRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.rules.crossings.CorridorVisit``: points ``(t, x, y, acc)`` oldest first, and the
    bound of the deque that holds them (None: unbounded)."""

    entered_t: float
    points: list[tuple[float, float, float, float]]
    points_max: int | None
    stopped: bool


class SuppressionRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.rules.crossings.Suppression``: why an order's alerts are capped; ``kinds`` sorted."""

    source: str
    ident: str
    reason: str
    kinds: list[str]


class StatusRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A value of ``ApprovedCrossings.status``: since when (device time), and the cap or None."""

    t: float
    suppression: SuppressionRecord | None


class HistoryRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.alert_records.HistoryEntry``: who did what to an alert, and when."""

    at: float
    state: StoredState
    level: StoredLevel
    by: str
    note: str
    action: str
    outcome: str
    target: str


class AlertRecord(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """``engine.core.alert_records.Alert`` with its history."""

    alert_id: str
    kind: str
    level: StoredLevel
    state: StoredState
    order: str | None
    subject: str | None
    protected_person: str | None
    zone: str | None
    device_time: float
    raised_at: float
    deadline: float
    episode_start: float
    distance_m: float | None
    certainty: str | None
    closing_speed_mps: float | None
    time_to_contact_s: float | None
    evidence: list[str]
    late: bool
    detail: str
    updated_at: float
    target: str | None
    device: str | None
    history: list[HistoryRecord]
    condition: StoredCondition
    cleared_at: float | None
    claimed_by: str | None
    escalated_to: str | None
    outcome: str | None
    closed_by: str | None


class StatePart(msgspec.Struct, array_like=True, gc=False):
    """One stored part: a case's state with its open alerts, or one closed alert (``case`` is
    then ``A:{alert_id}`` and only the alert sections are filled).

    The sections are the engine's dicts restricted to the case, keyed as there
    (``engine.core.case_state``): devices, (subject, order, zone), (order, subject, protected
    person), (subject, order, corridor), (subject, order), (order, kind, target), alert ids.
    """

    v: int
    case: str
    tracks: dict[str, TrackRecord] = {}
    battery: dict[str, BatteryRecord] = {}
    non_gnss: dict[str, float] = {}  # device -> device time of the first Wi-Fi/cell fix in a row
    silent: list[str] = []  # devices reported silent
    zones: dict[tuple[str, str, str], ZoneEpisodeRecord] = {}
    proximity: dict[tuple[str, str, str], PairEpisodeRecord] = {}
    visits: dict[tuple[str, str, str], CorridorVisitRecord] = {}
    status: dict[tuple[str, str], StatusRecord] = {}
    alerts: dict[str, AlertRecord] = {}
    open_by_key: dict[tuple[str | None, str, str | None], str] = {}  # episode key -> alert id
    victim_rank: dict[str, int] = {}  # alert id -> highest level the victim was told
    noted: dict[str, int] = {}  # alert id -> highest suppressed level recorded
    # device -> (device time, on) of her device's pursuit period (engine.core.rules.proximity)
    cover: dict[str, tuple[float, bool]] = {}


class _Version(msgspec.Struct, array_like=True, gc=False):
    """The first value of every stored part (later ones are skipped unread)."""

    v: int


#: version N -> the function that turns a part of version N, as plain decoded MessagePack
#: (lists, dicts, numbers, strings; map keys that were lists come back as tuples), into the
#: same part in version N + 1.  Empty while 1 is the only version.
UPGRADES: dict[int, Callable[[list[Any]], list[Any]]] = {}

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StatePart)
_version = msgspec.msgpack.Decoder(_Version)
_plain = msgspec.msgpack.Decoder()


def encode_part(part: StatePart) -> bytes:
    """The bytes stored for one part."""
    return _encoder.encode(part)


def decode_part(
    blob: bytes, upgrades: dict[int, Callable[[list[Any]], list[Any]]] | None = None
) -> StatePart:
    """A stored part in today's form, upgraded from the version it was written in.

    Raises ``StateSchemaError`` for bytes that are not a part of this format (a pickle from
    before it, torn bytes) or of a version this engine does not know (a newer one), and
    ``msgspec.ValidationError`` for a part whose values do not fit its records.
    """
    if blob[:1] == b"\x80" and blob[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise StateSchemaError(
            "a pickled part from before state schema v1: not read (docs/state-schema.md)"
        )
    try:
        version = _version.decode(blob).v
    except msgspec.MsgspecError as exc:  # not MessagePack, or not a list led by a version
        raise StateSchemaError(f"not a state part: {exc}") from exc
    if version == SCHEMA_VERSION:
        return _decoder.decode(blob)
    chain = UPGRADES if upgrades is None else upgrades
    if not 0 <= version < SCHEMA_VERSION or any(n not in chain for n in range(version, SCHEMA_VERSION)):
        raise StateSchemaError(
            f"state part schema version {version}: this engine reads "
            f"{sorted({*chain, SCHEMA_VERSION})} (a newer engine wrote it?)"
        )
    doc = _plain.decode(blob)
    for n in range(version, SCHEMA_VERSION):
        doc = chain[n](doc)
        doc[0] = n + 1
    return msgspec.convert(doc, StatePart)
