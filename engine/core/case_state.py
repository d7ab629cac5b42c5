"""The engine's decision state cut into one part per case, for incremental commits.

The service commits state after every micro-batch, before it acknowledges the
batch's MQTT messages.  Storing the whole state each time cost 1.3 s at
10,000 subjects (11 MB), which capped the durable path at about 20 messages/s.
A batch touches only the cases of its devices and alerts (``engine.core.cases``), so
a commit now stores just those cases' parts, and a restart merges all stored
parts back.  A part holds, for its case:

* per device: the track, battery trend, Wi-Fi/cell run start, silence mark, and (an ankle
  monitor) whether its random pursuit period is on;
* per order: zone and proximity episodes, corridor visits and status;
* per alert still open: the alert, its open-episode key, what the victim was
  told, the highest suppressed level noted.

A closed alert no longer changes, so it leaves its case's part and is stored
once as a part of its own (``A:{alert_id}``): a case's part stays the size of
its live state however many alerts its history holds.

Every key of every section belongs to exactly one case, so parts never
overlap; a part replaces its case's previous part as a whole, so a key the
engine deleted disappears from the store with the next commit of its case.

A part is an ``engine.core.state_schema.StatePart`` (explicit records with a schema version,
MessagePack), made from and turned back into the engine's objects by ``engine.core.state_codec``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from engine.core import state_codec as codec
from engine.core.alerts import AlertBook
from engine.core.cases import Cases
from engine.core.notify import Notifier
from engine.core.rules.crossings import ApprovedCrossings
from engine.core.rules.device_events import DeviceRules
from engine.core.rules.proximity import ProximityRules
from engine.core.rules.zones import ZoneRules
from engine.core.state_schema import (
    SCHEMA_VERSION,
    AlertRecord,
    BatteryRecord,
    CorridorVisitRecord,
    PairEpisodeRecord,
    StatePart,
    StatusRecord,
    TrackRecord,
    ZoneEpisodeRecord,
    decode_part,
    encode_part,
)
from engine.core.tracks import DeviceTrack


class StateHolder(Protocol):
    """The decision state a part is cut from and merged into: ``engine.core.pipeline.Engine``.

    Named here so that what a case part holds is read in one place, and this module needs
    nothing of the pipeline that drives it.
    """

    tracks: dict[str, DeviceTrack]
    silent: set[str]
    alerts: AlertBook
    zones: ZoneRules
    proximity: ProximityRules
    crossings: ApprovedCrossings
    device_rules: DeviceRules
    notifier: Notifier
    record_cache: codec.RecordCache  # what the last parts converted, for the next ones


def zone_keys(cases: Cases, case: str) -> Iterable[tuple[str, str, str]]:
    """Keys of ``ZoneRules.episodes`` for the case's orders: (subject, order, zone)."""
    for order in cases.orders.get(case, ()):
        for zone in order.zones:
            yield (order.subject, order.id, zone.zone_id)


def pair_keys(cases: Cases, case: str) -> Iterable[tuple[str, str, str]]:
    """Keys of ``ProximityRules.episodes``: (order, subject, protected person)."""
    for order in cases.orders.get(case, ()):
        for rule in order.proximity:
            yield (order.id, order.subject, rule.protected_person)


def forget_orders(engine: StateHolder, ended: set[str]) -> None:
    """Drop the episode state of orders that left the book (their alerts stay, with history).

    Beside the key generators above because it relies on the same key layouts: the order id
    is at position 1 of zone, visit and status keys and at position 0 of pair keys.
    """
    if not ended:
        return
    crossings = engine.crossings
    by_order: tuple[tuple[dict[Any, Any], int], ...] = (
        (engine.zones.episodes, 1), (engine.proximity.episodes, 0),
        (crossings.visits, 1), (crossings.status, 1),
    )
    for episodes, at in by_order:
        for key in [k for k in episodes if k[at] in ended]:
            del episodes[key]


def part_of(engine: StateHolder, cases: Cases, case: str, alert_ids: Iterable[str]) -> bytes | None:
    """The stored part of one case (with its open alerts), or None when there is none.

    Every commit pays this for each case it stores, so each section is filled in one plain
    loop over the case's devices and one over its orders (no generators, no helper per key)
    and records are made positionally (``engine.core.state_codec``); each section holds its
    keys in the order ``zone_keys``/``pair_keys`` and the key layouts above give, so the bytes
    are those of a section built key by key.
    """
    rules, crossings = engine.device_rules, engine.crossings
    tracks, battery, non_gnss, silent = engine.tracks, rules.battery, rules.non_gnss_since, engine.silent
    cover, cache = engine.proximity.cover_state, engine.record_cache
    track_part: dict[str, TrackRecord] = {}
    battery_part: dict[str, BatteryRecord] = {}
    non_gnss_part: dict[str, float] = {}
    silent_part: list[str] = []
    cover_part: dict[str, tuple[float, bool]] = {}
    for d in cases.devices_in(case):
        track = tracks.get(d)
        if track is not None:
            track_part[d] = codec.track_record(track, cache)
        trend = battery.get(d)
        if trend is not None:
            battery_part[d] = codec.battery_record(trend, cache, d)
        if d in non_gnss:  # these three are sparse: a test, no call, for most devices
            non_gnss_part[d] = non_gnss[d]
        if d in silent:
            silent_part.append(d)
        if d in cover:
            cover_part[d] = cover[d]
    zones, pairs = engine.zones.episodes, engine.proximity.episodes
    visits, status = crossings.visits, crossings.status
    zone_part: dict[tuple[str, str, str], ZoneEpisodeRecord] = {}
    pair_part: dict[tuple[str, str, str], PairEpisodeRecord] = {}
    visit_part: dict[tuple[str, str, str], CorridorVisitRecord] = {}
    status_part: dict[tuple[str, str], StatusRecord] = {}
    for order in cases.orders.get(case, ()):
        subject, order_id = order.subject, order.id
        for zone in order.zones:
            zkey = (subject, order_id, zone.zone_id)  # zone_keys
            episode = zones.get(zkey)
            if episode is not None:
                zone_part[zkey] = codec.zone_episode_record(episode)
        for rule in order.proximity:
            pkey = (order_id, subject, rule.protected_person)  # pair_keys
            pair = pairs.get(pkey)
            if pair is not None:
                pair_part[pkey] = codec.pair_episode_record(pair)
        for corridor in order.corridors:
            vkey = (subject, order_id, corridor.corridor_id)
            visit = visits.get(vkey)
            if visit is not None:
                visit_part[vkey] = codec.visit_record(visit)
        skey = (subject, order_id)
        held = status.get(skey)
        if held is not None:
            status_part[skey] = codec.status_record(held)
    alerts, open_by_key, victim_rank, noted = _alert_sections(engine, alert_ids)
    return _encoded(StatePart(  # positionally, in StatePart's field order (state_codec: why)
        SCHEMA_VERSION, case, track_part, battery_part, non_gnss_part, silent_part, zone_part,
        pair_part, visit_part, status_part, alerts, open_by_key, victim_rank, noted, cover_part,
    ))


def closed_alert_part(engine: StateHolder, alert_id: str) -> bytes | None:
    """The stored part of one closed alert (``A:{alert_id}``); None when it is open or gone."""
    alert = engine.alerts.alerts.get(alert_id)
    if alert is None or alert.is_open:
        return None
    alerts, open_by_key, victim_rank, noted = _alert_sections(engine, (alert_id,))
    return _encoded(StatePart(
        v=SCHEMA_VERSION, case=f"A:{alert_id}", alerts=alerts, open_by_key=open_by_key,
        victim_rank=victim_rank, noted=noted,
    ))


AlertSections = tuple[
    dict[str, AlertRecord], dict[tuple[str | None, str, str | None], str], dict[str, int], dict[str, int]
]


def _alert_sections(engine: StateHolder, alert_ids: Iterable[str]) -> AlertSections:
    """These alerts (those the engine knows), the episode keys they hold open, what their
    victims were told, the suppressed levels noted on them.  Most cases hold no open alert:
    four empty sections then, without sorting or looking anything up."""
    records: dict[str, AlertRecord] = {}
    open_part: dict[tuple[str | None, str, str | None], str] = {}
    rank_part: dict[str, int] = {}
    noted_part: dict[str, int] = {}
    if not alert_ids:
        return records, open_part, rank_part, noted_part
    known, open_by_key = engine.alerts.alerts, engine.alerts.open_by_key
    ranks, noted = engine.notifier.victim_rank, engine.crossings.noted
    alerts = [known[a] for a in sorted(alert_ids) if a in known]
    for a in alerts:
        records[a.alert_id] = codec.alert_record(a)
    for a in alerts:
        key = (a.order, a.kind, a.target)
        if open_by_key.get(key) == a.alert_id:
            open_part[key] = a.alert_id
    for a in alerts:
        rank = ranks.get(a.alert_id)
        if rank is not None:
            rank_part[a.alert_id] = rank
    for a in alerts:
        level = noted.get(a.alert_id)
        if level is not None:
            noted_part[a.alert_id] = level
    return records, open_part, rank_part, noted_part


def _encoded(part: StatePart) -> bytes | None:
    if not (
        part.tracks or part.battery or part.non_gnss or part.silent or part.zones
        or part.proximity or part.visits or part.status or part.alerts or part.open_by_key
        or part.victim_rank or part.noted
    ):
        return None
    return encode_part(part)


def merge_part(engine: StateHolder, blob: bytes) -> None:
    """Add one stored part to the engine's state.

    The whole part is decoded and converted before anything is added, so a part that cannot
    be read (``engine.core.state_schema.decode_part``) leaves the engine as it was.
    """
    part = decode_part(blob)
    tracks = {d: codec.track_from(r) for d, r in part.tracks.items()}
    battery = {d: codec.battery_from(r) for d, r in part.battery.items()}
    zones = {k: codec.zone_episode_from(r) for k, r in part.zones.items()}
    pairs = {k: codec.pair_episode_from(r) for k, r in part.proximity.items()}
    visits = {k: codec.visit_from(r) for k, r in part.visits.items()}
    status = {k: codec.status_from(r) for k, r in part.status.items()}
    alerts = {k: codec.alert_from(r) for k, r in part.alerts.items()}
    engine.tracks.update(tracks)
    engine.device_rules.battery.update(battery)
    engine.device_rules.non_gnss_since.update(part.non_gnss)
    engine.silent.update(part.silent)
    engine.zones.episodes.update(zones)
    engine.proximity.episodes.update(pairs)
    engine.crossings.visits.update(visits)
    engine.crossings.status.update(status)
    engine.alerts.alerts.update(alerts)
    engine.alerts.open_by_key.update(part.open_by_key)
    engine.notifier.victim_rank.update(part.victim_rank)
    engine.crossings.noted.update(part.noted)
    engine.proximity.cover_state.update(part.cover)


def _pick(source: dict[Any, Any], keys: Iterable[Any]) -> dict[Any, Any]:
    return {k: source[k] for k in keys if k in source}
