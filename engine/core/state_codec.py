"""The engine's state classes to and from their stored records (``engine.core.state_schema``).

One pair of functions per stored class, plain typed Python: compiled with the rules in the
compiled build (engine.tools.native), so a part written by either build is read by the other.
Every field of every stored class is named here once each way; ``COVERAGE`` lists, per
class, its record and the attributes it leaves out because they are rebuilt from the stored
ones, and tests/engine/test_state_codec.py fails when a class gains a field that neither covers.

Every commit converts the cases it stores (engine.core.case_state.part_of), so the way to
records is written for speed, with the same bytes as before: records are made positionally, in
their fields' order (msgspec matched 29 keywords to an alert's fields at 3.5x the cost; the
test file checks that each value lands in the field of its name), and ``RecordCache`` reuses the
point records and battery rows of a device's previous part.  The way back uses keywords.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from operator import is_
from typing import Any, Final, TypeVar

from devices.model import Fix
from engine.core.alert_records import Alert, HistoryEntry
from engine.core.rules.crossings import CorridorVisit, Suppression
from engine.core.rules.device_events import BatteryTrend
from engine.core.rules.proximity import PairEpisode
from engine.core.rules.zones import ZoneEpisode
from engine.core.state_schema import (
    AlertRecord,
    BatteryRecord,
    CorridorVisitRecord,
    FixRecord,
    HistoryRecord,
    PairEpisodeRecord,
    PointRecord,
    SeqMemoryRecord,
    StatusRecord,
    SuppressionRecord,
    TrackRecord,
    ZoneEpisodeRecord,
)
from engine.core.tracks import DeviceTrack, SeqMemory, TrackPoint

T = TypeVar("T")  # what a cache converts
R = TypeVar("R")  # what it converts it to

#: (stored class, its record, the class's attributes not stored as such (rebuilt from what is
#: stored), the record's fields that are not attributes of the class)
COVERAGE: tuple[tuple[type, type, frozenset[str], frozenset[str]], ...] = (
    (TrackPoint, PointRecord, frozenset(), frozenset()),
    (Fix, FixRecord, frozenset(), frozenset()),
    # the runs are stored; the set of numbers is rebuilt from them
    (SeqMemory, SeqMemoryRecord, frozenset({"_seen", "_runs"}), frozenset({"runs"})),
    (DeviceTrack, TrackRecord, frozenset(), frozenset()),
    (BatteryTrend, BatteryRecord, frozenset(), frozenset({"samples_max"})),  # the deque's bound
    (ZoneEpisode, ZoneEpisodeRecord, frozenset(), frozenset()),
    (PairEpisode, PairEpisodeRecord, frozenset(), frozenset()),
    (CorridorVisit, CorridorVisitRecord, frozenset(), frozenset({"points_max"})),  # the deque's bound
    (Suppression, SuppressionRecord, frozenset(), frozenset()),
    (HistoryEntry, HistoryRecord, frozenset(), frozenset()),
    (Alert, AlertRecord, frozenset(), frozenset()),
)


# --- tracks ---------------------------------------------------------------------------------
def point_record(p: TrackPoint) -> PointRecord:
    return PointRecord(p.t, p.x, p.y, p.acc, p.key, p.src)


def point_from(r: PointRecord) -> TrackPoint:
    return TrackPoint(t=r.t, x=r.x, y=r.y, acc=r.acc, key=r.key, src=r.src)


def _point_from_or_none(r: PointRecord | None) -> TrackPoint | None:
    return None if r is None else point_from(r)


def fix_record(f: Fix) -> FixRecord:
    return FixRecord(
        f.device, f.seq, f.t, f.lat, f.lon, f.acc, f.arrival, f.spd, f.hdg, f.sats, f.src, f.batt,
        f.strap,
    )


def fix_from(r: FixRecord) -> Fix:
    return Fix(
        device=r.device, seq=r.seq, t=r.t, lat=r.lat, lon=r.lon, acc=r.acc, arrival=r.arrival,
        spd=r.spd, hdg=r.hdg, sats=r.sats, src=r.src, batt=r.batt, strap=r.strap,
    )


def seq_memory_record(m: SeqMemory) -> SeqMemoryRecord:
    return SeqMemoryRecord(m.limit, m.runs())  # runs


def seq_memory_from(r: SeqMemoryRecord) -> SeqMemory:
    return SeqMemory.from_runs(limit=r.limit, runs=r.runs)


def track_record(t: DeviceTrack, cache: RecordCache | None = None) -> TrackRecord:
    """With a ``cache``, the records of points converted for an earlier part are reused."""
    return TrackRecord(
        t.device,
        seq_memory_record(t.seen),
        [fix_record(f) for f in t.pending] if t.pending else [],
        t.first_pending_arrival,
        t.last_pending_arrival,
        _point_records(t.points) if cache is None else cache.points(t.device, t.points),
        t.newest_t,
        t.last_arrival,
        [point_record(p) for p in t.suspect] if t.suspect else [],
        t.last_seq,
        t.unnumbered,
        t.newest_seen_t,
        t.released_arrival,
        t.released_seq,
    )


def track_from(r: TrackRecord) -> DeviceTrack:
    return DeviceTrack(
        device=r.device,
        seen=seq_memory_from(r.seen),
        pending=[fix_from(f) for f in r.pending],
        first_pending_arrival=r.first_pending_arrival,
        last_pending_arrival=r.last_pending_arrival,
        points=[point_from(p) for p in r.points],
        newest_t=r.newest_t,
        last_arrival=r.last_arrival,
        suspect=[point_from(p) for p in r.suspect],
        last_seq=r.last_seq,
        unnumbered=r.unnumbered,
        newest_seen_t=r.newest_seen_t,
        released_arrival=r.released_arrival,
        released_seq=r.released_seq,
    )


def _point_records(points: Iterable[TrackPoint]) -> list[PointRecord]:
    return [PointRecord(p.t, p.x, p.y, p.acc, p.key, p.src) for p in points]  # point_record, inline


_EXACT: Final = 2.0**53  # every whole float below this in magnitude is an exact integer


def _sample_rows(samples: Iterable[tuple[float, float]]) -> list[tuple[float, int | float]]:
    """Battery samples as stored: a whole percent as an integer (one byte in MessagePack, not
    nine); inline, as a function called per sample was a fifth of ``battery_record``'s time."""
    return [(t, int(pct) if pct.is_integer() and -_EXACT < pct < _EXACT else pct) for t, pct in samples]


class RecordCache:
    """Per device, the point records and battery sample rows of the part last made, for the next.

    A commit stores the whole part of every case its batch touched (engine.core.case_state), so
    each fix had its devices' track points (up to 64) and battery samples (up to 32) converted
    again, though it adds at most one of each: at 64 points that was most of a part's cost.
    A ``TrackPoint`` and a sample tuple never change once made, and a track or trend gains them
    at the end and loses them at the front.  So the records made last time are reused for the
    leading run of objects that are the very same ones (``is``, never ``==``: ``0.0 == -0.0``)
    as then, and only the rest are converted: the same values, so the same bytes (checked
    against the uncached path in tests/engine/test_state_codec.py).  The price is memory: one
    record per point and sample of every device whose part was made, held by the engine.
    """

    __slots__ = ("_points", "_samples")

    def __init__(self) -> None:
        self._points: dict[str, tuple[list[TrackPoint], list[PointRecord]]] = {}
        self._samples: dict[str, tuple[list[tuple[float, float]], list[tuple[float, int | float]]]] = {}

    def points(self, device: str, points: list[TrackPoint]) -> list[PointRecord]:
        """``_point_records(points)``, reusing the records of the points last converted for ``device``."""
        if len(points) < REUSE_FROM:
            self._points.pop(device, None)
            return _point_records(points)
        now = points[:]  # the track's list changes in place: keep what these records are of
        return _reuse(self._points, device, now, _point_records)

    def samples(self, device: str, samples: deque[tuple[float, float]]) -> list[tuple[float, int | float]]:
        """``_sample_rows(samples)``, reusing the rows of the samples last converted for ``device``."""
        if len(samples) < REUSE_FROM:
            self._samples.pop(device, None)
            return _sample_rows(samples)
        return _reuse(self._samples, device, list(samples), _sample_rows)


def _reuse(cache: dict[str, tuple[list[T], list[R]]], device: str, now: list[T],
           convert: Callable[[list[T]], list[R]]) -> list[R]:
    """``convert(now)``, taking the converted items of the run ``now`` shares with the list
    last converted for ``device`` from the cache (an unchanged list: its whole result)."""
    old = cache.get(device)
    if old is None:
        out = convert(now)
    else:
        start, n = _shared_run(old[0], now)
        if start == 0 and n == len(now) == len(old[0]):  # unchanged since: the same list
            out = old[1]
        else:
            out = old[1][start : start + n] + convert(now[n:])
    cache[device] = (now, out)
    return out


#: a list shorter than this is converted whole: reusing costs more than converting so few
REUSE_FROM: Final = 16


def _shared_run(old: list[Any], new: list[Any]) -> tuple[int, int]:
    """``(start, n)`` such that ``new[:n]`` are the very objects ``old[start:start + n]``, as long
    a run as ``new`` has from its first item; ``(0, 0)`` when it does not begin with one (an
    item inserted in between: everything is converted again, which is rare and still right)."""
    if not old or not new:
        return 0, 0
    first, start, size = new[0], 0, len(old)
    while start < size and old[start] is not first:
        start += 1
    n = min(len(new), size - start)
    if n and all(map(is_, new[:n], old[start : start + n])):
        return start, n
    return 0, 0


# --- rules ----------------------------------------------------------------------------------
def battery_record(b: BatteryTrend, cache: RecordCache | None = None, device: str = "") -> BatteryRecord:
    """With a ``cache`` (and the trend's device), the samples converted for an earlier part are reused."""
    return BatteryRecord(
        _sample_rows(b.samples) if cache is None else cache.samples(device, b.samples),  # samples
        b.samples.maxlen,  # samples_max
        b.charging,
    )


def battery_from(r: BatteryRecord) -> BatteryTrend:
    return BatteryTrend(
        samples=deque([(t, float(pct)) for t, pct in r.samples], maxlen=r.samples_max),
        charging=r.charging,
    )


def zone_episode_record(e: ZoneEpisode) -> ZoneEpisodeRecord:
    return ZoneEpisodeRecord(
        e.possible_run,
        e.clear_run,
        e.candidate_start,
        e.outside_since,
        e.window,
        e.forewarned,
        e.pursuit,
        None if e.unconfirmed is None else point_record(e.unconfirmed),
        None if e.last_outside is None else point_record(e.last_outside),
        e.last_t,
        e.crossed,
    )


def zone_episode_from(r: ZoneEpisodeRecord) -> ZoneEpisode:
    return ZoneEpisode(
        possible_run=r.possible_run,
        clear_run=r.clear_run,
        candidate_start=r.candidate_start,
        outside_since=r.outside_since,
        window=r.window,
        forewarned=r.forewarned,
        pursuit=r.pursuit,
        unconfirmed=_point_from_or_none(r.unconfirmed),
        last_outside=_point_from_or_none(r.last_outside),
        last_t=r.last_t,
        crossed=r.crossed,
    )


def pair_episode_record(e: PairEpisode) -> PairEpisodeRecord:
    return PairEpisodeRecord(
        e.start, e.lower_since, e.lower_level, e.clear_run, e.pursuit, e.possible_run, e.last_t,
        e.unsure_run,
    )


def pair_episode_from(r: PairEpisodeRecord) -> PairEpisode:
    return PairEpisode(
        start=r.start, lower_since=r.lower_since, lower_level=r.lower_level,
        clear_run=r.clear_run, pursuit=r.pursuit, possible_run=r.possible_run, last_t=r.last_t,
        unsure_run=r.unsure_run,
    )


def visit_record(v: CorridorVisit) -> CorridorVisitRecord:
    return CorridorVisitRecord(v.entered_t, list(v.points), v.points.maxlen, v.stopped)  # points_max


def visit_from(r: CorridorVisitRecord) -> CorridorVisit:
    return CorridorVisit(
        entered_t=r.entered_t, points=deque(r.points, maxlen=r.points_max), stopped=r.stopped,
    )


def status_record(status: tuple[float, Suppression | None]) -> StatusRecord:
    t, s = status
    return StatusRecord(
        t,
        None if s is None else SuppressionRecord(s.source, s.ident, s.reason, sorted(s.kinds)),
    )


def status_from(r: StatusRecord) -> tuple[float, Suppression | None]:
    s = r.suppression
    if s is None:
        return (r.t, None)
    return (r.t, Suppression(source=s.source, ident=s.ident, reason=s.reason, kinds=frozenset(s.kinds)))


# --- alerts ---------------------------------------------------------------------------------
def history_record(h: HistoryEntry) -> HistoryRecord:
    return HistoryRecord(h.at, h.state, h.level, h.by, h.note, h.action, h.outcome, h.target)


def history_from(r: HistoryRecord) -> HistoryEntry:
    return HistoryEntry(
        at=r.at, state=r.state, level=r.level, by=r.by, note=r.note, action=r.action,
        outcome=r.outcome, target=r.target,
    )


def alert_record(a: Alert) -> AlertRecord:
    return AlertRecord(
        a.alert_id,
        a.kind,
        a.level,
        a.state,
        a.order,
        a.subject,
        a.protected_person,
        a.zone,
        a.device_time,
        a.raised_at,
        a.deadline,
        a.episode_start,
        a.distance_m,
        a.certainty,
        a.closing_speed_mps,
        a.time_to_contact_s,
        list(a.evidence),
        a.late,
        a.detail,
        a.updated_at,
        a.target,
        a.device,
        [history_record(h) for h in a.history],
        a.condition,
        a.cleared_at,
        a.claimed_by,
        a.escalated_to,
        a.outcome,
        a.closed_by,
    )


def alert_from(r: AlertRecord) -> Alert:
    return Alert(
        alert_id=r.alert_id,
        kind=r.kind,
        level=r.level,
        state=r.state,
        order=r.order,
        subject=r.subject,
        protected_person=r.protected_person,
        zone=r.zone,
        device_time=r.device_time,
        raised_at=r.raised_at,
        deadline=r.deadline,
        episode_start=r.episode_start,
        distance_m=r.distance_m,
        certainty=r.certainty,
        closing_speed_mps=r.closing_speed_mps,
        time_to_contact_s=r.time_to_contact_s,
        evidence=tuple(r.evidence),
        late=r.late,
        detail=r.detail,
        updated_at=r.updated_at,
        target=r.target,
        device=r.device,
        history=tuple([history_from(h) for h in r.history]),
        condition=r.condition,
        cleared_at=r.cleared_at,
        claimed_by=r.claimed_by,
        escalated_to=r.escalated_to,
        outcome=r.outcome,
        closed_by=r.closed_by,
    )


#: each stored class -> its functions to and from its record (ApprovedCrossings.status values,
#: plain tuples holding a ``Suppression``, go through ``status_record``/``status_from``)
CONVERSIONS: dict[type, tuple[Callable[..., object], Callable[..., object]]] = {
    TrackPoint: (point_record, point_from),
    Fix: (fix_record, fix_from),
    SeqMemory: (seq_memory_record, seq_memory_from),
    DeviceTrack: (track_record, track_from),
    BatteryTrend: (battery_record, battery_from),
    ZoneEpisode: (zone_episode_record, zone_episode_from),
    PairEpisode: (pair_episode_record, pair_episode_from),
    CorridorVisit: (visit_record, visit_from),
    Suppression: (status_record, status_from),
    HistoryEntry: (history_record, history_from),
    Alert: (alert_record, alert_from),
}
