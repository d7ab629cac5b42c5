"""The engine's decision state cut into one part per case, for incremental commits.

The service commits state after every micro-batch, before it acknowledges the
batch's MQTT messages.  Pickling the whole state each time cost 1.3 s at
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
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.core import state_unpickle
from engine.core.alerts import migrate_alert
from engine.core.cases import Cases

if TYPE_CHECKING:
    from engine.core.pipeline import Engine

#: version of one case part (a v2 whole-engine snapshot is still accepted by ``merge_part``)
PART_VERSION = 3


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


def forget_orders(engine: Engine, ended: set[str]) -> None:
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


SECTIONS = (
    "tracks", "battery", "non_gnss", "silent", "zones", "proximity", "visits", "status",
    "alerts", "open_by_key", "victim_rank", "noted", "cover",
)  # fmt: skip


def part_of(engine: Engine, cases: Cases, case: str, alert_ids: Iterable[str]) -> bytes | None:
    """The pickled state of one case (with its open alerts), or None when there is none."""
    devices = cases.devices_in(case)
    orders = cases.orders.get(case, ())
    rules, crossings = engine.device_rules, engine.crossings
    return _pickled(
        case,
        _alert_sections(engine, alert_ids),
        tracks=_pick(engine.tracks, devices),
        battery=_pick(rules.battery, devices),
        non_gnss=_pick(rules.non_gnss_since, devices),
        silent=[d for d in devices if d in engine.silent],
        zones=_pick(engine.zones.episodes, zone_keys(cases, case)),
        proximity=_pick(engine.proximity.episodes, pair_keys(cases, case)),
        visits=_pick(crossings.visits, (
            (o.subject, o.id, c.corridor_id) for o in orders for c in o.corridors
        )),
        status=_pick(crossings.status, ((o.subject, o.id) for o in orders)),
        cover=_pick(engine.proximity.cover_state, devices),
    )


def closed_alert_part(engine: Engine, alert_id: str) -> bytes | None:
    """The pickled part of one closed alert (``A:{alert_id}``); None when it is open or gone."""
    alert = engine.alerts.alerts.get(alert_id)
    if alert is None or alert.is_open:
        return None
    return _pickled(f"A:{alert_id}", _alert_sections(engine, (alert_id,)))


def _alert_sections(engine: Engine, alert_ids: Iterable[str]) -> dict[str, dict[Any, Any]]:
    known = engine.alerts.alerts
    alerts = {a: known[a] for a in sorted(alert_ids) if a in known}
    open_by_key = engine.alerts.open_by_key
    return {
        "alerts": alerts,
        "open_by_key": {
            (a.order, a.kind, a.target): a.alert_id
            for a in alerts.values()
            if open_by_key.get((a.order, a.kind, a.target)) == a.alert_id
        },
        "victim_rank": _pick(engine.notifier.victim_rank, alerts),
        "noted": _pick(engine.crossings.noted, alerts),
    }


def _pickled(key: str, alert_sections: dict[str, dict[Any, Any]], **sections: Any) -> bytes | None:
    state: dict[str, Any] = dict.fromkeys(SECTIONS, ())
    state.update(alert_sections, **sections)
    if not any(state.values()):
        return None
    state["v"] = PART_VERSION
    state["case"] = key
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def merge_part(engine: Engine, blob: bytes) -> bool:
    """Add one stored part (or a whole v2 snapshot) to the engine's state; True for a v2 snapshot."""
    state = state_unpickle.loads(blob)  # our own trusted store (engine.runtime.store), never device input
    version = state.get("v")
    if version == 2:  # a whole-engine snapshot from before per-case parts
        state = dict(state, non_gnss={})
        state["visits"], state["status"], state["noted"] = state.pop("crossings")
        state["silent"] = list(state["silent"])
    elif version != PART_VERSION:
        raise ValueError(f"state part version {version} is neither {PART_VERSION} nor 2")
    state = {k: (v if v != () else {}) for k, v in state.items()}
    engine.tracks.update(state["tracks"])
    engine.device_rules.battery.update(state["battery"])
    engine.device_rules.non_gnss_since.update(state["non_gnss"])
    engine.silent.update(state["silent"])
    engine.zones.episodes.update(state["zones"])
    engine.proximity.episodes.update(state["proximity"])
    engine.crossings.visits.update(state["visits"])
    engine.crossings.status.update(state["status"])
    # alerts stored before condition/closed existed ("resolved") in today's form
    engine.alerts.alerts.update({k: migrate_alert(a) for k, a in state["alerts"].items()})
    engine.alerts.open_by_key.update(state["open_by_key"])
    engine.notifier.victim_rank.update(state["victim_rank"])
    engine.crossings.noted.update(state["noted"])
    engine.proximity.cover_state.update(state.get("cover") or {})  # parts stored before it: none
    return bool(version == 2)


def _pick(source: dict[Any, Any], keys: Iterable[Any]) -> dict[Any, Any]:
    return {k: source[k] for k in keys if k in source}
