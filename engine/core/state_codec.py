"""The engine's state classes to and from their stored records (``engine.core.state_schema``).

One pair of functions per stored class, plain typed Python: compiled with the rules in the
compiled build (engine.tools.native), so a part written by either build is read by the other.
Records are made with keyword arguments, and every field of every stored class is named
here once each way; ``COVERAGE`` lists, per class, its record and the attributes it leaves
out because they are rebuilt from the stored ones, and tests/engine/test_state_codec.py fails
when a class gains a field that neither covers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

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
    return PointRecord(t=p.t, x=p.x, y=p.y, acc=p.acc, key=p.key, src=p.src)


def point_from(r: PointRecord) -> TrackPoint:
    return TrackPoint(t=r.t, x=r.x, y=r.y, acc=r.acc, key=r.key, src=r.src)


def _point_or_none(p: TrackPoint | None) -> PointRecord | None:
    return None if p is None else point_record(p)


def _point_from_or_none(r: PointRecord | None) -> TrackPoint | None:
    return None if r is None else point_from(r)


def fix_record(f: Fix) -> FixRecord:
    return FixRecord(
        device=f.device, seq=f.seq, t=f.t, lat=f.lat, lon=f.lon, acc=f.acc, arrival=f.arrival,
        spd=f.spd, hdg=f.hdg, sats=f.sats, src=f.src, batt=f.batt, strap=f.strap,
    )


def fix_from(r: FixRecord) -> Fix:
    return Fix(
        device=r.device, seq=r.seq, t=r.t, lat=r.lat, lon=r.lon, acc=r.acc, arrival=r.arrival,
        spd=r.spd, hdg=r.hdg, sats=r.sats, src=r.src, batt=r.batt, strap=r.strap,
    )


def seq_memory_record(m: SeqMemory) -> SeqMemoryRecord:
    return SeqMemoryRecord(limit=m.limit, runs=m.runs())


def seq_memory_from(r: SeqMemoryRecord) -> SeqMemory:
    return SeqMemory.from_runs(limit=r.limit, runs=r.runs)


def track_record(t: DeviceTrack) -> TrackRecord:
    return TrackRecord(
        device=t.device,
        seen=seq_memory_record(t.seen),
        pending=[fix_record(f) for f in t.pending],
        first_pending_arrival=t.first_pending_arrival,
        last_pending_arrival=t.last_pending_arrival,
        points=[point_record(p) for p in t.points],
        newest_t=t.newest_t,
        last_arrival=t.last_arrival,
        suspect=[point_record(p) for p in t.suspect],
        last_seq=t.last_seq,
        unnumbered=t.unnumbered,
        newest_seen_t=t.newest_seen_t,
        released_arrival=t.released_arrival,
        released_seq=t.released_seq,
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


# --- rules ----------------------------------------------------------------------------------
def battery_record(b: BatteryTrend) -> BatteryRecord:
    return BatteryRecord(
        samples=[(t, _whole_as_int(pct)) for t, pct in b.samples],
        samples_max=b.samples.maxlen,
        charging=b.charging,
    )


def battery_from(r: BatteryRecord) -> BatteryTrend:
    return BatteryTrend(
        samples=deque([(t, float(pct)) for t, pct in r.samples], maxlen=r.samples_max),
        charging=r.charging,
    )


def _whole_as_int(value: float) -> int | float:
    """A whole number as an integer (one byte in MessagePack for a percent, not nine)."""
    if -2.0**53 < value < 2.0**53 and value.is_integer():
        return int(value)
    return value


def zone_episode_record(e: ZoneEpisode) -> ZoneEpisodeRecord:
    return ZoneEpisodeRecord(
        possible_run=e.possible_run,
        clear_run=e.clear_run,
        candidate_start=e.candidate_start,
        outside_since=e.outside_since,
        window=e.window,
        forewarned=e.forewarned,
        pursuit=e.pursuit,
        unconfirmed=_point_or_none(e.unconfirmed),
        last_outside=_point_or_none(e.last_outside),
        last_t=e.last_t,
        crossed=e.crossed,
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
        start=e.start, lower_since=e.lower_since, lower_level=e.lower_level,
        clear_run=e.clear_run, pursuit=e.pursuit, possible_run=e.possible_run, last_t=e.last_t,
        unsure_run=e.unsure_run,
    )


def pair_episode_from(r: PairEpisodeRecord) -> PairEpisode:
    return PairEpisode(
        start=r.start, lower_since=r.lower_since, lower_level=r.lower_level,
        clear_run=r.clear_run, pursuit=r.pursuit, possible_run=r.possible_run, last_t=r.last_t,
        unsure_run=r.unsure_run,
    )


def visit_record(v: CorridorVisit) -> CorridorVisitRecord:
    return CorridorVisitRecord(
        entered_t=v.entered_t, points=list(v.points), points_max=v.points.maxlen, stopped=v.stopped,
    )


def visit_from(r: CorridorVisitRecord) -> CorridorVisit:
    return CorridorVisit(
        entered_t=r.entered_t, points=deque(r.points, maxlen=r.points_max), stopped=r.stopped,
    )


def status_record(status: tuple[float, Suppression | None]) -> StatusRecord:
    t, s = status
    return StatusRecord(
        t=t,
        suppression=None if s is None else SuppressionRecord(
            source=s.source, ident=s.ident, reason=s.reason, kinds=sorted(s.kinds),
        ),
    )


def status_from(r: StatusRecord) -> tuple[float, Suppression | None]:
    s = r.suppression
    if s is None:
        return (r.t, None)
    return (r.t, Suppression(source=s.source, ident=s.ident, reason=s.reason, kinds=frozenset(s.kinds)))


# --- alerts ---------------------------------------------------------------------------------
def history_record(h: HistoryEntry) -> HistoryRecord:
    return HistoryRecord(
        at=h.at, state=h.state, level=h.level, by=h.by, note=h.note, action=h.action,
        outcome=h.outcome, target=h.target,
    )


def history_from(r: HistoryRecord) -> HistoryEntry:
    return HistoryEntry(
        at=r.at, state=r.state, level=r.level, by=r.by, note=r.note, action=r.action,
        outcome=r.outcome, target=r.target,
    )


def alert_record(a: Alert) -> AlertRecord:
    return AlertRecord(
        alert_id=a.alert_id,
        kind=a.kind,
        level=a.level,
        state=a.state,
        order=a.order,
        subject=a.subject,
        protected_person=a.protected_person,
        zone=a.zone,
        device_time=a.device_time,
        raised_at=a.raised_at,
        deadline=a.deadline,
        episode_start=a.episode_start,
        distance_m=a.distance_m,
        certainty=a.certainty,
        closing_speed_mps=a.closing_speed_mps,
        time_to_contact_s=a.time_to_contact_s,
        evidence=list(a.evidence),
        late=a.late,
        detail=a.detail,
        updated_at=a.updated_at,
        target=a.target,
        device=a.device,
        history=[history_record(h) for h in a.history],
        condition=a.condition,
        cleared_at=a.cleared_at,
        claimed_by=a.claimed_by,
        escalated_to=a.escalated_to,
        outcome=a.outcome,
        closed_by=a.closed_by,
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
