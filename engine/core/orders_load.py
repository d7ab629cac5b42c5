"""Reading an orders file (contract §4) into the orders model (``engine.core.orders``).

Parsing is strict: a misconfigured orders file fails at load with a message naming the order
or zone to fix.  Geometry is parsed and validated by ``geo.zones``; corridors are buffered
lines in metres, time windows are validated against the subject's local time zone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pyproj import Transformer
from shapely.geometry import LineString

from devices.timeutil import parse_time
from engine.core.orders import (
    DAY_NAMES,
    CorridorRule,
    Order,
    OrderBook,
    ProtectedPerson,
    ProximityRule,
    ScheduleWindow,
    Subject,
    TimeWindow,
    ZoneRule,
)
from engine.errors import OrdersError
from geo.errors import ZoneError
from geo.zones import ZoneShape, parse_zone

DEFAULT_CRITICAL_FRACTION = 0.25
DEFAULT_CRITICAL_TTC_S = 120.0


def load_orders(source: str | Path | Mapping[str, Any]) -> OrderBook:
    """Load and validate an orders file or an already-parsed JSON object."""
    if isinstance(source, Mapping):
        doc: Any = source
        where = "orders"
    else:
        where = str(source)
        try:
            doc = json.loads(Path(source).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise OrdersError(f"{where}: file not found") from exc
        except json.JSONDecodeError as exc:
            raise OrdersError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, Mapping):
        raise OrdersError(f"{where}: top level must be a JSON object")
    if doc.get("v", 1) != 1:
        raise OrdersError(f"{where}: unsupported orders version {doc.get('v')!r} (expected 1)")

    subjects: dict[str, Subject] = {}
    persons: dict[str, ProtectedPerson] = {}
    owner: dict[str, tuple[str, str]] = {}
    owntracks: dict[str, str] = {}

    for raw in _list(doc, "subjects", where):
        sid = _str(raw, "id", f"{where}: subject")
        devices = tuple(_str_list(raw, "devices", f"subject {sid}"))
        residence = None
        if raw.get("residence") is not None:
            res = raw["residence"]
            residence = (_num(res, "lat", f"subject {sid} residence"), _num(res, "lon", f"subject {sid} residence"))
        if sid in subjects:
            raise OrdersError(f"subject {sid}: duplicate id")
        subjects[sid] = Subject(sid, devices, residence)
        for d in devices:
            _claim(owner, d, ("subject", sid))

    for raw in _list(doc, "protected_persons", where):
        pid = _str(raw, "id", f"{where}: protected person")
        devices = tuple(_str_list(raw, "devices", f"protected person {pid}"))
        if pid in persons:
            raise OrdersError(f"protected person {pid}: duplicate id")
        persons[pid] = ProtectedPerson(pid, devices)
        for d in devices:
            _claim(owner, d, ("protected", pid))
        for ot in _items(raw.get("owntracks"), f"protected person {pid}: owntracks"):
            if not isinstance(ot, Mapping) or "topic" not in ot or "device" not in ot:
                raise OrdersError(f"protected person {pid}: owntracks entries need 'topic' and 'device'")
            owntracks[str(ot["topic"])] = str(ot["device"])

    top_owntracks = doc.get("owntracks") or {}
    if not isinstance(top_owntracks, Mapping):
        raise OrdersError(f"{where}: 'owntracks' must map 'user/device' to a device id")
    for key, dev in top_owntracks.items():
        owntracks[str(key)] = str(dev)

    orders: dict[str, Order] = {}
    for raw in _list(doc, "orders", where):
        order = _parse_order(raw, subjects, persons)
        if order.id in orders:
            raise OrdersError(f"order {order.id}: duplicate id")
        orders[order.id] = order

    return OrderBook(subjects, persons, orders, owner, owntracks)


def _parse_order(
    raw: Mapping[str, Any], subjects: Mapping[str, Subject], persons: Mapping[str, ProtectedPerson]
) -> Order:
    oid = _str(raw, "id", "order")
    ctx = f"order {oid}"
    subject = _str(raw, "subject", ctx)
    if subject not in subjects:
        raise OrdersError(f"{ctx}: unknown subject {subject!r}")
    legal_basis = str(raw.get("legal_basis", "unspecified"))
    try:
        valid_from = parse_time(raw.get("valid_from", 0))
        valid_until = parse_time(raw.get("valid_until", "9999-12-31T23:59:59Z"))
    except ValueError as exc:
        raise OrdersError(f"{ctx}: {exc}") from exc
    if valid_until <= valid_from:
        raise OrdersError(f"{ctx}: valid_until must be after valid_from")

    zone_ids: set[str] = set()

    def zones(key: str, kind: str) -> tuple[ZoneRule, ...]:
        out = []
        seen: set[str] = set()
        for z in _items(raw.get(key), f"{ctx}: {key}"):
            if not isinstance(z, Mapping):
                raise OrdersError(f"{ctx}: every entry of {key} must be an object")
            zid = _str(z, "id", f"{ctx} {key}")
            if zid in seen:
                raise OrdersError(f"{ctx}: duplicate zone id {zid!r}")
            seen.add(zid)
            zone_ids.add(zid)
            shape = parse_zone(z, zid)
            schedule = tuple(
                _parse_window(w, f"{ctx} zone {zid}")
                for w in _items(z.get("schedule"), f"{ctx} zone {zid}: schedule")
            )
            protects = z.get("protected_person")
            if protects is not None and protects not in persons:
                raise OrdersError(f"{ctx} zone {zid}: unknown protected person {protects!r}")
            out.append(ZoneRule(zid, kind, shape, schedule, protects))
        return tuple(out)

    prox = []
    for p in _items(raw.get("proximity"), f"{ctx}: proximity"):
        if not isinstance(p, Mapping):
            raise OrdersError(f"{ctx}: every proximity rule must be an object")
        pid = _str(p, "protected_person", f"{ctx} proximity")
        if pid not in persons:
            raise OrdersError(f"{ctx}: proximity names unknown protected person {pid!r}")
        alert_m = _num(p, "alert_m", f"{ctx} proximity {pid}")
        rctx = f"{ctx} proximity {pid}"
        warn_m = _num(p, "warn_m", rctx) if "warn_m" in p else 2 * alert_m
        critical_m = (
            _num(p, "critical_m", rctx) if "critical_m" in p else alert_m * DEFAULT_CRITICAL_FRACTION
        )
        critical_ttc = _num(p, "critical_ttc_s", rctx) if "critical_ttc_s" in p else DEFAULT_CRITICAL_TTC_S
        if not 0 < critical_m <= alert_m <= warn_m or critical_ttc < 0:
            raise OrdersError(f"{rctx}: need 0 < critical_m <= alert_m <= warn_m and critical_ttc_s >= 0")
        prox.append(ProximityRule(pid, alert_m, warn_m, critical_m, critical_ttc))

    victim_warn_level = raw.get("victim_warn_level")
    if victim_warn_level is not None and victim_warn_level not in ("info", "warning", "alarm", "critical"):
        raise OrdersError(f"{ctx}: victim_warn_level must be info, warning, alarm or critical")
    offender_prompt = raw.get("offender_prompt", "operator")
    if offender_prompt not in OFFENDER_PROMPTS:
        raise OrdersError(f"{ctx}: offender_prompt must be 'operator' or 'auto'")
    return Order(
        offender_prompt=offender_prompt,
        id=oid,
        victim_warn_level=victim_warn_level,
        subject=subject,
        legal_basis=legal_basis,
        valid_from=valid_from,
        valid_until=valid_until,
        exclusion_zones=zones("exclusion_zones", "exclusion"),
        inclusion_zones=zones("inclusion_zones", "inclusion"),
        proximity=tuple(prox),
        corridors=_parse_corridors(raw, ctx, zone_ids),
        time_windows=_parse_time_windows(raw, ctx, zone_ids),
    )


DEFAULT_CORRIDOR_DWELL_S = 120.0
#: who prompts the offender about a proximity alert: the operator (default) or the engine
OFFENDER_PROMPTS = ("operator", "auto")
MAX_CORRIDOR_WIDTH_M = 2000.0


def _parse_corridors(
    raw: Mapping[str, Any], ctx: str, zone_ids: set[str]
) -> tuple[CorridorRule, ...]:
    out = []
    seen: set[str] = set()
    for c in _items(raw.get("corridors"), f"{ctx}: corridors"):
        if not isinstance(c, Mapping):
            raise OrdersError(f"{ctx}: every entry of corridors must be an object")
        cid = _str(c, "id", f"{ctx} corridors")
        where = f"{ctx} corridor {cid}"
        if cid in seen:
            raise OrdersError(f"{ctx}: duplicate corridor id {cid!r}")
        if f"corridor/{cid}" in zone_ids:
            raise OrdersError(f"{where}: clashes with zone id 'corridor/{cid}'")
        seen.add(cid)
        dwell = _num(c, "max_dwell_s", where) if "max_dwell_s" in c else DEFAULT_CORRIDOR_DWELL_S
        if not 0 < dwell <= 3600:
            raise OrdersError(f"{where}: max_dwell_s must be in (0, 3600], got {dwell}")
        schedule = tuple(_parse_window(w, where) for w in _items(c.get("schedule"), f"{where}: schedule"))
        line = c.get("line")
        if line is not None:
            width = _num(c, "width_m", where)
            if not 0 < width <= MAX_CORRIDOR_WIDTH_M:
                raise OrdersError(f"{where}: width_m must be in (0, {MAX_CORRIDOR_WIDTH_M:.0f}]")
            pts = _line_points(line, where)
            shape = _buffer_line(pts, width, cid)
            out.append(CorridorRule(cid, shape, dwell, schedule, width, pts))
        else:
            try:
                shape = parse_zone(c, cid)
            except ZoneError as exc:
                raise OrdersError(f"{where}: give a 'line' with 'width_m', or a zone geometry ({exc})") from exc
            out.append(CorridorRule(cid, shape, dwell, schedule))
    return tuple(out)


def _line_points(raw: Any, where: str) -> tuple[tuple[float, float], ...]:
    if isinstance(raw, Mapping) and raw.get("type") == "LineString":
        raw = raw.get("coordinates")
    if not isinstance(raw, list) or len(raw) < 2:
        raise OrdersError(f"{where}: 'line' must be a list of at least two [lon, lat] positions")
    pts: list[tuple[float, float]] = []
    for i, pos in enumerate(raw):
        if (
            not isinstance(pos, list | tuple)
            or len(pos) not in (2, 3)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in pos[:2])
        ):
            raise OrdersError(f"{where}: line position {i} must be [lon, lat]")
        lon, lat = float(pos[0]), float(pos[1])
        if not (-180 <= lon <= 180 and -84 <= lat <= 84):
            raise OrdersError(f"{where}: line position {i} out of range")
        pts.append((lon, lat))
    if len(set(pts)) < 2:
        raise OrdersError(f"{where}: line needs two distinct positions")
    return tuple(pts)


def _buffer_line(pts: tuple[tuple[float, float], ...], width_m: float, cid: str) -> ZoneShape:
    """Buffer a [lon, lat] line by ``width_m / 2`` in an equidistant projection centred on it."""
    lons = [p[0] for p in pts]
    lats = [p[1] for p in pts]
    lon0, lat0 = (min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2
    local = f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m +no_defs"
    fwd = Transformer.from_crs("EPSG:4326", local, always_xy=True)
    inv = Transformer.from_crs(local, "EPSG:4326", always_xy=True)
    xs, ys = fwd.transform(lons, lats)
    poly = LineString(list(zip(xs, ys, strict=True))).buffer(width_m / 2.0, quad_segs=8)
    ring_x, ring_y = poly.exterior.coords.xy
    lon_r, lat_r = inv.transform(list(ring_x), list(ring_y))
    ring = [[float(a), float(b)] for a, b in zip(lon_r, lat_r, strict=True)]
    try:
        return parse_zone({"polygon": ring}, cid)
    except ZoneError as exc:
        raise OrdersError(f"corridor {cid}: buffered line is not a valid polygon ({exc})") from exc


def _parse_time_windows(
    raw: Mapping[str, Any], ctx: str, zone_ids: set[str]
) -> tuple[TimeWindow, ...]:
    out = []
    seen: set[str] = set()
    for w in _items(raw.get("time_windows"), f"{ctx}: time_windows"):
        if not isinstance(w, Mapping):
            raise OrdersError(f"{ctx}: every entry of time_windows must be an object")
        wid = _str(w, "id", f"{ctx} time_windows")
        where = f"{ctx} time window {wid}"
        if wid in seen:
            raise OrdersError(f"{ctx}: duplicate time window id {wid!r}")
        if f"window/{wid}" in zone_ids:
            raise OrdersError(f"{where}: clashes with zone id 'window/{wid}'")
        seen.add(wid)
        try:
            start = parse_time(w["from"])
            end = parse_time(w["to"])
        except (KeyError, ValueError) as exc:
            raise OrdersError(f"{where}: needs 'from' and 'to' as RFC 3339 times ({exc})") from exc
        if end <= start:
            raise OrdersError(f"{where}: 'to' must be after 'from'")
        if end - start > 7 * 86400:
            raise OrdersError(f"{where}: longer than 7 days; amend the order instead")
        reason = _str(w, "reason", where)
        area = None
        if w.get("area") is not None:
            try:
                area = parse_zone(w["area"], f"{wid}/area")
            except ZoneError as exc:
                raise OrdersError(f"{where}: bad area ({exc})") from exc
        out.append(TimeWindow(wid, start, end, reason, area))
    return tuple(out)


def _parse_window(raw: Any, ctx: str) -> ScheduleWindow:
    if not isinstance(raw, Mapping):
        raise OrdersError(f"{ctx}: schedule entries must be objects")
    days = parse_days(str(raw.get("days", "mon-sun")), ctx)
    try:
        start = time.fromisoformat(str(raw["from"]))
        end = time.fromisoformat(str(raw["to"]))
    except (KeyError, ValueError) as exc:
        raise OrdersError(f"{ctx}: schedule needs 'from' and 'to' as HH:MM") from exc
    tz = str(raw.get("tz", "Europe/Amsterdam"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise OrdersError(f"{ctx}: unknown time zone {tz!r}") from exc
    if start == end:
        raise OrdersError(f"{ctx}: schedule 'from' and 'to' are equal")
    return ScheduleWindow(days, start, end, tz)


def parse_days(text: str, ctx: str) -> frozenset[int]:
    """The days of a schedule (``"mon-fri"``, ``"sat,sun"``), as weekday numbers (Monday 0).

    Public: the simulator reads its routines' days in the same form as the orders do.
    """
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in DAY_NAMES or b not in DAY_NAMES:
                raise OrdersError(f"{ctx}: bad day range {part!r} (use e.g. mon-fri)")
            i, j = DAY_NAMES.index(a), DAY_NAMES.index(b)
            span = range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)]
            days.update(span)
        elif part in DAY_NAMES:
            days.add(DAY_NAMES.index(part))
        else:
            raise OrdersError(f"{ctx}: bad day {part!r} (use mon..sun)")
    return frozenset(days)


def _items(value: Any, ctx: str) -> list[Any]:
    """An optional list field: absent or null is empty, anything but a list is an error."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise OrdersError(f"{ctx} must be a list")
    return value


def _claim(owner: dict[str, tuple[str, str]], device: str, who: tuple[str, str]) -> None:
    if device in owner and owner[device] != who:
        raise OrdersError(f"device {device}: assigned to both {owner[device]} and {who}")
    owner[device] = who


def _list(doc: Mapping[str, Any], key: str, ctx: str) -> Sequence[Mapping[str, Any]]:
    value = doc.get(key, []) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise OrdersError(f"{ctx}: {key!r} must be a list of objects")
    return value


def _str(doc: Mapping[str, Any], key: str, ctx: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise OrdersError(f"{ctx}: field {key!r} must be a non-empty string")
    return value


def _str_list(doc: Mapping[str, Any], key: str, ctx: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise OrdersError(f"{ctx}: field {key!r} must be a list of device ids")
    return list(value)


def _num(doc: Mapping[str, Any], key: str, ctx: str) -> float:
    value = doc.get(key) if isinstance(doc, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise OrdersError(f"{ctx}: field {key!r} must be a number")
    if value in (float("inf"), float("-inf")):
        raise OrdersError(f"{ctx}: field {key!r} must be finite")
    return float(value)
