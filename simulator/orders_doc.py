"""The orders file a scenario implies (contract §4), and its zones in projected metres.

The scenario may name places in zones (``{"circle": {"at": "P1_home",
"radius_m": 1000}}``) and leave out residences and validity dates; here they
are resolved into the exact contract form, which is then loaded with the
engine's own ``load_orders`` so a scenario can never produce an orders file
the engine would refuse.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Point, Polygon

from devices.timeutil import format_time
from engine.core.orders import OrderBook, ZoneRule
from engine.core.orders_load import load_orders
from engine.errors import OrdersError
from geo.errors import GeoError
from geo.projection import Projector
from simulator.errors import ScenarioError
from simulator.scenario import Scenario, resolve_place

DAY_S = 86400.0
CIRCLE_QUAD_SEGS = 64  # polygon outline of a circle for event geometry (sagitta < 0.1 m at 1 km)


@dataclass(frozen=True, slots=True)
class ZoneGeom:
    """One zone of one order in projected metres.

    Circles are kept exactly as (cx, cy, r) with the projection's local scale
    folded into ``r``; ``polygon`` is always set (a fine outline for circles)
    for geometric constructions such as edge walks.
    """

    order: str
    rule: ZoneRule
    polygon: Polygon | MultiPolygon
    circle: tuple[float, float, float] | None = None

    @property
    def zone(self) -> str:
        """The zone id."""
        return self.rule.zone_id

    @property
    def kind(self) -> str:
        """``exclusion`` or ``inclusion``."""
        return self.rule.kind


def build_orders_doc(sc: Scenario) -> dict[str, Any]:
    """The contract §4 document for the scenario's people and orders."""
    subjects = []
    persons = []
    for p in sc.people:
        home = sc.places[p.home]
        if p.role == "subject":
            residence = p.raw.get(
                "residence", {"lat": round(home.lat, 7), "lon": round(home.lon, 7)}
            )
            subjects.append({"id": p.id, "devices": list(p.devices), "residence": residence})
        else:
            persons.append({"id": p.id, "devices": list(p.devices)})
    orders = []
    for raw in sc.orders:
        o = copy.deepcopy(dict(raw))
        oid = o.get("id", "?")
        o.setdefault("legal_basis", "gedragsaanwijzing")
        o.setdefault("valid_from", format_time(sc.start - 7 * DAY_S))
        o.setdefault("valid_until", format_time(sc.start + 60 * DAY_S))
        for key in ("exclusion_zones", "inclusion_zones"):
            for z in o.get(key) or []:
                circle = z.get("circle") if isinstance(z, Mapping) else None
                if isinstance(circle, dict) and "at" in circle:
                    place = resolve_place(
                        circle.pop("at"), sc.places, sc.projector, f"order {oid} zone {z.get('id')}"
                    )
                    circle["lat"], circle["lon"] = round(place.lat, 7), round(place.lon, 7)
        orders.append(o)
    return {"v": 1, "subjects": subjects, "protected_persons": persons, "orders": orders}


def load_book(doc: Mapping[str, Any]) -> OrderBook:
    """The engine's view of the orders document; a scenario error if the engine would refuse it."""
    try:
        return load_orders(doc)
    except (OrdersError, GeoError) as exc:
        raise ScenarioError(f"the scenario's orders are invalid: {exc}") from exc


def zone_geometries(book: OrderBook, projector: Projector) -> list[ZoneGeom]:
    """Every zone of every order, projected, in (order id, zone id) order."""
    out = []
    for oid in sorted(book.orders):
        for rule in book.orders[oid].zones:
            shape = rule.shape
            if shape.kind == "circle" and shape.center is not None and shape.radius_m is not None:
                lat, lon = shape.center
                cx, cy = projector.forward(lon, lat)
                r = shape.radius_m * projector.scale_at(lon, lat)
                poly = Point(cx, cy).buffer(r, quad_segs=CIRCLE_QUAD_SEGS)
                out.append(ZoneGeom(oid, rule, poly, (cx, cy, r)))
            else:
                poly = projector.project_geometry(shape.geometry)
                shapely.prepare(poly)
                out.append(ZoneGeom(oid, rule, poly))
    return out


def find_zone(zones: list[ZoneGeom], zone_id: str, order: str | None, ctx: str) -> ZoneGeom:
    """The zone with this id (in ``order`` if given); an error if missing or ambiguous."""
    hits = [z for z in zones if z.zone == zone_id and (order is None or z.order == order)]
    if not hits:
        raise ScenarioError(f"{ctx}: no zone {zone_id!r} in the orders")
    if len(hits) > 1:
        raise ScenarioError(f"{ctx}: zone {zone_id!r} is in several orders; say which with 'order'")
    return hits[0]
