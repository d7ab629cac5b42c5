"""An order as a canonical document and its zones as GeoJSON, for digests and bundles.

Each chained alert change carries ``order_sha256``, the digest of the order
in force as the engine parsed it (``order_document``).  An evidence bundle
ships that document; ``verify`` recomputes its digest and the zones GeoJSON
from it, so the zones shown to a court are provably the ones the engine used.
The document is built from the parsed ``Order`` (not the raw file), so
whitespace or key order in ``orders.json`` does not change it.
"""

from __future__ import annotations

import json
from typing import Any

from shapely.geometry import mapping

from devices.timeutil import format_time
from engine.core.orders import Order, ScheduleWindow
from engine.evidence.chain import body_digest
from geo.zones import ZoneShape

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _shape(shape: ZoneShape) -> dict[str, Any]:
    if shape.kind == "circle" and shape.center is not None and shape.radius_m is not None:
        lat, lon = shape.center
        return {"circle": {"lat": lat, "lon": lon, "radius_m": shape.radius_m}}
    geo: Any = json.loads(json.dumps(mapping(shape.geometry)))  # tuples -> lists
    return {"geometry": geo}


def _schedule(windows: tuple[ScheduleWindow, ...]) -> list[dict[str, Any]]:
    return [
        {
            "days": ",".join(DAY_NAMES[d] for d in sorted(w.days)),
            "from": w.start.isoformat(timespec="minutes"),
            "to": w.end.isoformat(timespec="minutes"),
            "tz": w.tz,
        }
        for w in windows
    ]


def order_document(order: Order) -> dict[str, Any]:
    """The order in canonical contract §4 form (plus corridors and time windows)."""
    doc: dict[str, Any] = {
        "id": order.id,
        "subject": order.subject,
        "legal_basis": order.legal_basis,
        "valid_from": format_time(order.valid_from),
        "valid_until": format_time(order.valid_until),
        "exclusion_zones": [],
        "inclusion_zones": [],
        "proximity": [
            {
                "protected_person": p.protected_person,
                "alert_m": p.alert_m,
                "warn_m": p.warn_m,
                "critical_m": p.critical_m,
                "critical_ttc_s": p.critical_ttc_s,
            }
            for p in order.proximity
        ],
    }
    for zone in order.zones:
        z: dict[str, Any] = {"id": zone.zone_id, **_shape(zone.shape)}
        if zone.schedule:
            z["schedule"] = _schedule(zone.schedule)
        if zone.protects:
            z["protected_person"] = zone.protects
        doc[f"{zone.kind}_zones"].append(z)
    if order.corridors:
        doc["corridors"] = []
        for c in order.corridors:
            cd: dict[str, Any] = {"id": c.corridor_id, "max_dwell_s": c.max_dwell_s}
            if c.line is not None:
                cd["line"] = [list(p) for p in c.line]
                cd["width_m"] = c.width_m
            cd.update(_shape(c.shape))  # the buffered polygon actually used
            if c.schedule:
                cd["schedule"] = _schedule(c.schedule)
            doc["corridors"].append(cd)
    if order.time_windows:
        doc["time_windows"] = []
        for w in order.time_windows:
            wd: dict[str, Any] = {
                "id": w.window_id,
                "from": format_time(w.start),
                "to": format_time(w.end),
                "reason": w.reason,
            }
            if w.area is not None:
                wd["area"] = _shape(w.area)
            doc["time_windows"].append(wd)
    plain: dict[str, Any] = json.loads(json.dumps(doc))  # plain JSON types only
    return plain


def order_digest(order: Order) -> str:
    """SHA-256 of the canonical order document."""
    return body_digest(order_document(order))


def _feature(geom: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    if "circle" in geom:
        c = geom["circle"]
        return {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [c["lon"], c["lat"]]},
            "properties": {**props, "radius_m": c["radius_m"]},
        }
    return {"type": "Feature", "geometry": geom["geometry"], "properties": props}


def zones_geojson(doc: dict[str, Any]) -> dict[str, Any]:
    """A FeatureCollection of an order document's zones, corridors and time-window areas.

    Circles are Points with ``radius_m`` (exact, as the engine evaluates them);
    every feature has ``role`` (exclusion, inclusion, corridor, time_window) and ``id``.
    """
    feats = []
    for role in ("exclusion", "inclusion"):
        for z in doc.get(f"{role}_zones", []):
            props = {"role": role, "id": z["id"], "order": doc["id"]}
            if "protected_person" in z:
                props["protected_person"] = z["protected_person"]
            if "schedule" in z:
                props["schedule"] = z["schedule"]
            feats.append(_feature(z, props))
    for c in doc.get("corridors", []):
        props = {
            "role": "corridor",
            "id": c["id"],
            "order": doc["id"],
            "max_dwell_s": c["max_dwell_s"],
        }
        if "width_m" in c:
            props["width_m"] = c["width_m"]
        feats.append(_feature(c, props))
    for w in doc.get("time_windows", []):
        if "area" in w:
            props = {
                "role": "time_window",
                "id": w["id"],
                "order": doc["id"],
                "from": w["from"],
                "to": w["to"],
                "reason": w["reason"],
            }
            feats.append(_feature(w["area"], props))
    return {"type": "FeatureCollection", "features": feats}
