"""``emguard orders check``: is an orders file enforceable before it goes live?

A zone that the engine can evaluate is not necessarily one the centre can
enforce.  This checks what a judge's order and the field demand:

* blocking ``residence_near_exclusion`` — the subject's residence is closer
  than 1,000 m (straight line, projected metres) to an exclusion zone: normal
  life at home would keep tripping the ban, and the order would be set aside.
* advice ``victim_zone_small`` — a zone around a protected person (the zone
  names her as ``protected_person``, or its id contains her id) with a radius
  under 5 km leaves little reaction time; the message gives the minutes from
  the edge to the centre walking (1.4 m/s), cycling (4.5) and driving (13.9).
* blocking ``inclusion_zone_too_small`` — an inclusion zone whose radius (or,
  for a polygon, inradius) is under 50 m: GPS accuracy (68 % radius) in town
  is often 20-50 m, so a subject at home would be reported outside all night.
  Blocking, not advice, because the resulting false alarms make the curfew
  unenforceable and train the centre to ignore it.
* blocking ``missing_device`` — a subject or a protected person the order
  relies on has no device.
* blocking ``validity_exceeds_legal_basis`` — longer than the statutory
  maximum of its legal basis (``engine.core.orders.LEGAL_BASES``, e.g.
  gedragsaanwijzing 90 days); blocking ``unknown_legal_basis`` for a basis not in
  that list: its maximum cannot be checked, and an unknown name is most often a
  misspelt basis that has one (a 2030 "gedragsaanwijzng" would run unchecked).
* blocking ``lapsed`` — already ended; advice ``expires_soon`` within 14 days.
* blocking ``invalid`` — the file does not load (bad geometry, unknown ids):
  the loader's message is reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import shapely
from shapely.geometry import Point
from shapely.ops import polylabel

from devices.timeutil import format_time
from engine.core.orders import LEGAL_BASES, Order, OrderBook, ZoneRule
from engine.core.orders_load import load_orders
from engine.errors import EngineError
from geo.errors import GeoError
from geo.projection import Projector

Severity = Literal["blocking", "advice"]

RESIDENCE_MIN_M = 1000.0
VICTIM_ZONE_MIN_M = 5000.0
INCLUSION_MIN_M = 50.0
EXPIRY_ADVICE_DAYS = 14.0
SPEEDS_MPS = {"walking": 1.4, "cycling": 4.5, "driving": 13.9}
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem with an order, with enough detail for the person who drafts it."""

    order: str | None
    zone: str | None
    severity: Severity
    code: str
    message: str


def check_orders(
    book_or_doc: OrderBook | Mapping[str, Any], now: float, projector: Projector | None = None,
    *, only: str | None = None,
) -> list[Finding]:
    """All findings for an order book (or an orders document, which is loaded first); with
    ``only``, for that one order (the HTTP API checks the order it is given, not the caseload)."""
    if isinstance(book_or_doc, OrderBook):
        book = book_or_doc
    else:
        try:
            book = load_orders(book_or_doc)
        except (EngineError, GeoError) as exc:
            return [Finding(None, None, "blocking", "invalid", str(exc))]
    proj = projector or Projector()
    findings: list[Finding] = []
    for order in sorted(book.orders.values(), key=lambda o: o.id):
        if only is not None and order.id != only:
            continue
        findings += _validity(order, now)
        findings += _devices(book, order)
        findings += _residence(book, order, proj)
        findings += _zone_sizes(book, order, proj)
    return sorted(
        findings, key=lambda f: (f.severity != "blocking", f.order or "", f.zone or "", f.code)
    )


def _validity(order: Order, now: float) -> list[Finding]:
    out = []
    max_days = LEGAL_BASES.get(order.legal_basis, -1)
    days = (order.valid_until - order.valid_from) / DAY
    if max_days == -1:
        out.append(
            Finding(
                order.id,
                None,
                "blocking",
                "unknown_legal_basis",
                f"legal basis {order.legal_basis!r} is not known; maximum validity not checked "
                f"(known: {', '.join(LEGAL_BASES)})",
            )
        )
    elif max_days is not None and days > max_days:
        out.append(
            Finding(
                order.id,
                None,
                "blocking",
                "validity_exceeds_legal_basis",
                f"valid for {days:.1f} days but {order.legal_basis} allows at most {max_days} days",
            )
        )
    if order.valid_until < now:
        out.append(
            Finding(
                order.id, None, "blocking", "lapsed", f"lapsed on {format_time(order.valid_until)}"
            )
        )
    elif order.valid_until - now < EXPIRY_ADVICE_DAYS * DAY:
        left = (order.valid_until - now) / DAY
        out.append(
            Finding(
                order.id,
                None,
                "advice",
                "expires_soon",
                f"expires in {left:.1f} days ({format_time(order.valid_until)}): arrange renewal",
            )
        )
    return out


def _devices(book: OrderBook, order: Order) -> list[Finding]:
    out = []
    subject = book.subjects[order.subject]
    if not subject.devices:
        out.append(
            Finding(
                order.id,
                None,
                "blocking",
                "missing_device",
                f"subject {subject.id} has no ankle monitor assigned",
            )
        )
    persons = {p.protected_person for p in order.proximity} | {
        z.protects for z in order.zones if z.protects
    }
    for pid in sorted(persons):
        if not book.protected_persons[pid].devices:
            out.append(
                Finding(
                    order.id,
                    None,
                    "blocking",
                    "missing_device",
                    f"protected person {pid} has no device: proximity to her cannot be checked "
                    "and she cannot be warned",
                )
            )
    return out


def _residence(book: OrderBook, order: Order, proj: Projector) -> list[Finding]:
    residence = book.subjects[order.subject].residence
    if residence is None:
        return []
    x, y = proj.forward(residence[1], residence[0])
    home = Point(x, y)
    out = []
    for zone in order.exclusion_zones:
        dist = float(_projected(zone, proj).distance(home))
        if dist < RESIDENCE_MIN_M:
            where = "inside" if dist == 0.0 else f"{dist:,.0f} m from"
            out.append(
                Finding(
                    order.id,
                    zone.zone_id,
                    "blocking",
                    "residence_near_exclusion",
                    f"residence of {order.subject} is {where} exclusion zone {zone.zone_id} "
                    f"(needs at least {RESIDENCE_MIN_M:,.0f} m)",
                )
            )
    return out


def _zone_sizes(book: OrderBook, order: Order, proj: Projector) -> list[Finding]:
    out = []
    victims = {p.protected_person for p in order.proximity} | set(book.protected_persons)
    for zone in order.zones:
        radius = _radius(zone, proj)
        kind = "radius" if zone.shape.kind == "circle" else "inradius"
        if zone.kind == "inclusion" and radius < INCLUSION_MIN_M:
            out.append(
                Finding(
                    order.id,
                    zone.zone_id,
                    "blocking",
                    "inclusion_zone_too_small",
                    f"inclusion zone {kind} {radius:.0f} m is below {INCLUSION_MIN_M:.0f} m: GPS "
                    "accuracy cannot tell inside from outside, expect false curfew alarms",
                )
            )
        person = zone.protects or _named_person(zone.zone_id, victims)
        if zone.kind == "exclusion" and person is not None and radius < VICTIM_ZONE_MIN_M:
            times = ", ".join(f"{radius / v / 60:.1f} min {mode}" for mode, v in SPEEDS_MPS.items())
            out.append(
                Finding(
                    order.id,
                    zone.zone_id,
                    "advice",
                    "victim_zone_small",
                    f"zone around {person} has {kind} {radius:,.0f} m (< {VICTIM_ZONE_MIN_M:,.0f} m): "
                    f"from its edge the centre has {times} to react",
                )
            )
    return out


def _projected(zone: ZoneRule, proj: Projector) -> shapely.Geometry:
    return proj.project_geometry(zone.shape.geometry)


def _radius(zone: ZoneRule, proj: Projector) -> float:
    """Circle radius, or the polygon's inradius (largest circle inside it) in projected metres."""
    if zone.shape.kind == "circle" and zone.shape.radius_m is not None:
        return float(zone.shape.radius_m)
    geom = _projected(zone, proj)
    parts = list(geom.geoms) if isinstance(geom, shapely.MultiPolygon) else [geom]
    return max(float(p.boundary.distance(polylabel(p, tolerance=1.0))) for p in parts)


def _named_person(zone_id: str, persons: set[str]) -> str | None:
    """A protected person whose id appears in the zone id (``Z-home-P1`` or ``Z-P-1`` for ``P-1``)."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", zone_id.lower()) if t]
    for pid in sorted(persons):
        key = re.sub(r"[^a-z0-9]", "", pid.lower())
        for i in range(len(tokens)):
            for j in range(i + 1, len(tokens) + 1):
                if "".join(tokens[i:j]) == key:
                    return pid
    return None


def format_table(findings: list[Finding]) -> str:
    """Findings as an aligned text table (one line per finding)."""
    if not findings:
        return "no findings: the orders are enforceable"
    rows = [("SEVERITY", "ORDER", "ZONE", "CODE", "MESSAGE")]
    rows += [(f.severity, f.order or "-", f.zone or "-", f.code, f.message) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        for r in rows
    )
