"""JSON views of engine state for the HTTP API and the console (pure: state and ``now`` in).

Positions are given twice: ``lat``/``lon`` (WGS84, what the console's Leaflet map draws) and
``x``/``y`` in the engine's projected metres.  The latest position of each person involved in
an alert also carries RD New coordinates (EPSG:28992, what Dutch police dispatch asks for),
computed here with pyproj so the browser holds no projection code.  These views are for the
monitoring centre only: nothing here is ever sent to the offender's device.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import shapely

from devices.timeutil import format_time
from engine.core.alert_records import ALARM_RANK, LEVEL_RANK, LEVELS, Alert, peak_rank
from engine.core.orders import LEGAL_BASES, Order
from engine.core.pipeline import Engine
from geo.projection import RD_NEW, Projector

CONSOLE_DIR = Path(__file__).parent / "console"
TRACK_LIMIT = 64
PERSON_FIELDS = ("name", "alias", "phone", "address")  # optional in the orders document
_RD = Projector(RD_NEW)


def queue_order(alert: Alert) -> tuple[int, int, int, float, str]:
    """The centre's queue: alerts not closed first (a cleared condition keeps its place), and
    among them the unacknowledged (open or escalated) first, then by level (highest first),
    then by the nearest deadline: a new panic above an acknowledged critical."""
    return (
        0 if alert.is_open else 1,
        0 if alert.needs_ack else 1,
        -LEVEL_RANK[alert.level],
        alert.deadline,
        alert.alert_id,
    )


def alert_summary(alert: Alert, now: float) -> dict[str, Any]:
    """Contract §5 form plus what the queue needs: overdue flag, seconds to deadline, the
    highest level it reached, and what the centre may still do with it."""
    doc = alert.to_wire()
    doc["overdue"] = alert.needs_ack and now >= alert.deadline
    doc["seconds_to_deadline"] = round(alert.deadline - now, 1) if alert.is_open else None
    peak = LEVELS[peak_rank(alert)]
    doc["peak_level"] = peak
    doc["close_needs"] = ["outcome", "note"] if LEVEL_RANK[peak] >= ALARM_RANK else []
    return doc


def alert_detail(
    engine: Engine, alert: Alert, now: float, orders_doc: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Everything the centre needs for one alert: history, notes thread, procedure, evidence
    fixes, map data, and the case (people, order) it belongs to."""
    doc = alert_summary(alert, now)
    doc["history"] = [h.to_dict(format_time(h.at)) for h in alert.history]
    doc["notes"] = notes_thread(alert)
    policy = engine.alerts.policy
    doc["procedure"] = {
        "escalation_targets": list(policy.targets_for(alert.kind)),
        "outcomes": list(policy.outcomes),
        "script": list(policy.script_for(alert.kind)),
    }
    doc["evidence_fixes"] = evidence_fixes(engine, alert.evidence)
    doc["map"] = alert_map(engine, alert)
    doc["case"] = case_panel(engine, alert, orders_doc, now)
    return doc


def case_panel(
    engine: Engine, alert: Alert, orders_doc: Mapping[str, Any] | None, now: float
) -> dict[str, Any]:
    """Who and what an alert is about: the subject and the protected person (ids, devices, and
    the optional ``name``/``alias``/``phone``/``address`` of the orders document, which the
    engine itself never reads) and the order (legal basis, validity, zones).  An operator who
    must call the victim or send the police needs these on the same screen as the alarm."""
    book = engine.book

    def person(kind: str, pid: str | None) -> dict[str, Any] | None:
        if not pid:
            return None
        known = book.subjects.get(pid) if kind == "subjects" else book.protected_persons.get(pid)
        entry: dict[str, Any] = {"id": pid, "devices": list(known.devices) if known else []}
        raw = next(
            (
                p
                for p in (orders_doc or {}).get(kind, []) or []
                if isinstance(p, Mapping) and p.get("id") == pid
            ),
            None,
        )
        for key in PERSON_FIELDS:
            value = raw.get(key) if raw is not None else None
            entry[key] = str(value) if isinstance(value, str | int | float) and value != "" else None
        return entry

    order = book.orders.get(alert.order or "")
    return {
        "subject": person("subjects", alert.subject),
        "protected_person": person("protected_persons", alert.protected_person),
        "order": order_summary(order, now) if order is not None else None,
    }


def notes_thread(alert: Alert) -> list[dict[str, Any]]:
    """The people's notes on an alert, oldest first, each with who and when (and the action
    it came with: a note, an ack, an escalation, a close)."""
    return [
        {"at": format_time(h.at), "by": h.by, "note": h.note, "action": h.action or h.state}
        for h in alert.history
        if h.by != "engine" and h.note
    ]


def evidence_fixes(engine: Engine, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Evidence keys ("device:seq") with the positions still held in the device tracks."""
    out = []
    for key in keys:
        device = key.rsplit(":", 1)[0]
        track = engine.tracks.get(device)
        point = next((p for p in track.points if p.key == key), None) if track else None
        entry: dict[str, Any] = {"key": key, "device": device, "found": point is not None}
        if point is not None:
            entry.update(
                _point(engine, point.x, point.y),
                t=format_time(point.t),
                acc=point.acc,
                src=point.src,
            )
        out.append(entry)
    return out


def alert_map(engine: Engine, alert: Alert) -> dict[str, Any]:
    """Tracks of the people involved, the zone ids to draw, and the victim's area."""
    book = engine.book
    devices: list[str] = []
    if alert.subject and alert.subject in book.subjects:
        devices += book.subjects[alert.subject].devices
    if alert.protected_person and alert.protected_person in book.protected_persons:
        devices += book.protected_persons[alert.protected_person].devices
    if alert.device and alert.device not in devices:
        devices.append(alert.device)
    tracks = {}
    positions: list[dict[str, Any]] = []
    for d in devices:
        track = engine.tracks.get(d)
        if track and track.points:
            pts = list(track.points)[-TRACK_LIMIT:]
            tracks[d] = [
                dict(_point(engine, p.x, p.y), t=format_time(p.t), acc=p.acc, src=p.src)
                for p in pts
            ]
            owner = book.owner_of(d)
            last: dict[str, Any] = dict(tracks[d][-1])
            last.update(
                device=d,
                role=owner[0] if owner else None,
                person=owner[1] if owner else None,
                **rd_new(float(last["lon"]), float(last["lat"])),
            )
            positions.append(last)
    victim = None
    order = book.orders.get(alert.order or "")
    if order and alert.protected_person:
        rule = next(
            (r for r in order.proximity if r.protected_person == alert.protected_person), None
        )
        person = book.protected_persons.get(alert.protected_person)
        latest = _freshest(engine, person.devices) if person else None
        if rule is not None and latest is not None:
            victim = dict(
                _point(engine, latest.x, latest.y),
                alert_m=rule.alert_m,
                warn_m=rule.warn_m,
                t=format_time(latest.t),
            )
    zones = [z.zone_id for z in order.zones] if order else []
    return {
        "crs": engine.config.crs,
        "tracks": tracks,
        "latest": positions,
        "order_zones": zones,
        "zone": alert.zone,
        "victim_area": victim,
    }


def rd_new(lon: float, lat: float) -> dict[str, float]:
    """RD New (EPSG:28992) of a WGS84 position, what dispatch asks for, whatever CRS the engine
    runs in (also used by a NATS worker's map, built from the owners' device snapshots)."""
    rd_x, rd_y = _RD.forward(lon, lat)
    return {"rd_x": round(float(rd_x), 2), "rd_y": round(float(rd_y), 2)}


def order_summary(order: Order, now: float) -> dict[str, Any]:
    """An order as the centre sees it: validity, zones, proximity, in force now or not."""
    return {
        "id": order.id,
        "subject": order.subject,
        "legal_basis": order.legal_basis,
        "legal_max_days": LEGAL_BASES.get(order.legal_basis),
        "valid_from": format_time(order.valid_from),
        "valid_until": format_time(order.valid_until),
        "in_force": order.valid_at(now),
        "exclusion_zones": [z.zone_id for z in order.exclusion_zones],
        "inclusion_zones": [z.zone_id for z in order.inclusion_zones],
        "proximity": [
            {
                "protected_person": p.protected_person,
                "alert_m": p.alert_m,
                "warn_m": p.warn_m,
                "critical_m": p.critical_m,
            }
            for p in order.proximity
        ],
    }


def devices(engine: Engine, now: float) -> list[dict[str, Any]]:
    """Health of every known device: last seen, latest fix quality and position, battery, strap,
    silence.  A NATS worker publishes this per owned partition (``engine.runtime.nats_caseview``)."""
    book = engine.book
    names = sorted(set(book.device_owner) | set(engine.tracks))
    health = getattr(engine, "health", None)
    # the open tamper alerts by device, found in one pass (once per device was devices x alerts:
    # 32 ms of 54 for a NATS partition of 1,266 devices with 633 open alerts)
    tampered: dict[str | None, list[Alert]] = {}
    for a in engine.alerts.alerts.values():
        if a.kind == "tamper" and a.is_open:
            tampered.setdefault(a.device, []).append(a)
    out = []
    for d in names:
        owner = book.owner_of(d)
        track = engine.tracks.get(d)
        latest = track.latest() if track else None
        last_arrival = track.last_arrival if track and track.last_arrival > float("-inf") else None
        trend = engine.device_rules.battery.get(d)
        battery = trend.samples[-1][1] if trend and trend.samples else None
        tamper = tampered.get(d, [])
        strap = None
        if tamper:
            strap = "cut" if any("cut" in a.detail for a in tamper) else "open"
        entry: dict[str, Any] = {
            "device": d,
            "role": owner[0] if owner else None,
            "person": owner[1] if owner else None,
            "last_seen": format_time(last_arrival) if last_arrival is not None else None,
            "seconds_since_seen": round(now - last_arrival, 1)
            if last_arrival is not None
            else None,
            "last_fix_time": format_time(latest.t) if latest else None,
            "accuracy_m": latest.acc if latest else None,
            "src": latest.src if latest else None,
            "battery_pct": battery,
            "charging": bool(trend and trend.charging),
            "strap": strap,
            "silent": d in engine.silent,
            # the latest fix's position (a NATS worker's centre-wide list carries it from the owner)
            "position": _point(engine, latest.x, latest.y) if latest else None,
        }
        if health is not None and hasattr(health, "snapshot"):
            snap = health.snapshot(d)
            entry["battery_pct"] = snap.batt if snap.batt is not None else battery
            entry["strap"] = snap.strap if snap.strap is not None else strap
        out.append(entry)
    return out


def zones(engine: Engine, now: float) -> list[dict[str, Any]]:
    """Every zone of every order as lon/lat rings and projected rings (exterior first)."""
    out = []
    for order in sorted(engine.book.orders.values(), key=lambda o: o.id):
        for z in order.zones:
            geom = z.shape.geometry
            polys = list(geom.geoms) if isinstance(geom, shapely.MultiPolygon) else [geom]
            rings = [
                [list(map(list, p.exterior.coords))]
                + [list(map(list, r.coords)) for r in p.interiors]
                for p in polys
            ]
            xy = [
                [[list(_xy(engine, lon, lat)) for lon, lat in ring] for ring in poly]
                for poly in rings
            ]
            out.append(
                {
                    "order": order.id,
                    "zone": z.zone_id,
                    "kind": z.kind,
                    "shape": z.shape.kind,
                    "active": order.valid_at(now) and z.active_at(now),
                    "in_force": order.valid_at(now),
                    "protected_person": z.protects,
                    "rings": rings,
                    "xy": xy,
                }
            )
    return out


def _point(engine: Engine, x: float, y: float) -> dict[str, float]:
    lon, lat = engine.projector.inverse(x, y)
    return {
        "x": round(x, 2),
        "y": round(y, 2),
        "lat": round(float(lat), 7),
        "lon": round(float(lon), 7),
    }


def _xy(engine: Engine, lon: float, lat: float) -> tuple[float, float]:
    x, y = engine.projector.forward(lon, lat)
    return round(float(x), 2), round(float(y), 2)


def _freshest(engine: Engine, devices: tuple[str, ...]) -> Any:
    best = None
    for d in devices:
        t = engine.tracks.get(d)
        p = t.latest() if t else None
        if p is not None and (best is None or p.t > best.t):
            best = p
    return best
