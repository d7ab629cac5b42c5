"""A self-contained HTML score report: tables, an inline SVG map and a timeline.

No scripts, no fonts, no tiles, no CDN: the file opens offline on a
monitoring-centre workstation.  The map is drawn in projected metres (RD New):
device tracks from the trace (subjects red, protected persons blue), zones
from the orders file, alerts at the fix that triggered them (their evidence),
false alarms ringed in black and missed episodes as hollow squares at the
subject's position.  The timeline puts each true episode (grey) beside the
alerts raised for the same key.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from devices.timeutil import format_time, parse_time
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from geo.projection import Projector
from simulator.orders_doc import zone_geometries
from simulator.score import AlertEpisode, ScoreResult
from simulator.tables import format_table
from simulator.trace import iter_trace

MAP_W = 960.0
LEVEL_COLOURS = {"info": "#6c757d", "warning": "#e0a800", "alarm": "#d9480f", "critical": "#a50026"}
ROLE_COLOURS = {"subject": "#c92a2a", "protected": "#1864ab", None: "#495057"}


@dataclass(frozen=True, slots=True)
class TrackFix:
    """A fix from the trace, projected."""

    device: str
    seq: int
    t: float
    x: float
    y: float
    acc: float
    src: str


def write_report(
    result: ScoreResult,
    path: str | Path,
    *,
    trace: str | Path | None = None,
    orders: str | Path | None = None,
    title: str = "emguard score report",
) -> None:
    """Write the HTML report to ``path``."""
    Path(path).write_text(
        render_report(result, trace=trace, orders=orders, title=title), encoding="utf-8"
    )


def render_report(
    result: ScoreResult,
    *,
    trace: str | Path | None = None,
    orders: str | Path | None = None,
    title: str = "emguard score report",
) -> str:
    """The report as one HTML document."""
    projector = Projector()
    fixes = read_fixes(trace, projector) if trace is not None else []
    book = load_orders(orders) if orders is not None else None
    parts = [
        f"<h1>{_e(title)}</h1>",
        "<h2>Summary</h2>",
        f"<pre>{_e(format_table(result))}</pre>",
        "<h2>Map</h2>",
        map_svg(result, fixes, book, projector)
        if fixes or book
        else "<p>No trace or orders given: no map.</p>",
        "<h2>Timeline</h2>",
        timeline_svg(result),
        "<h2>True episodes</h2>",
        _episode_table(result),
        "<h2>False alarms</h2>",
        _false_table(result),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )


def read_fixes(trace: str | Path, projector: Projector) -> list[TrackFix]:
    """Every native fix in the trace (bursts unpacked, duplicates dropped), projected."""
    seen: set[tuple[str, int]] = set()
    raw = []
    for _, topic, payload in iter_trace(trace):
        if not topic.endswith("/fix"):
            continue
        for p in payload if isinstance(payload, list) else [payload]:
            try:
                key = (str(p["device"]), int(p["seq"]))
                if key in seen:
                    continue
                seen.add(key)
                raw.append(
                    (
                        key[0],
                        key[1],
                        parse_time(p["t"]),
                        float(p["lat"]),
                        float(p["lon"]),
                        float(p["acc"]),
                        str(p.get("src", "gnss")),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue  # the report shows what can be shown; the engine judges bad fixes
    if not raw:
        return []
    lon = np.array([r[4] for r in raw])
    lat = np.array([r[3] for r in raw])
    xs, ys = projector.forward(lon, lat)
    fixes = [
        TrackFix(r[0], r[1], r[2], float(x), float(y), r[5], r[6])
        for r, x, y in zip(raw, xs, ys, strict=True)
    ]
    return sorted(fixes, key=lambda f: (f.device, f.t))


def map_svg(
    result: ScoreResult, fixes: list[TrackFix], book: OrderBook | None, projector: Projector
) -> str:
    """The inline SVG map."""
    zones = zone_geometries(book, projector) if book is not None else []
    role: dict[str, str] = {}
    subject_devices: dict[str, list[str]] = {}
    if book is not None:
        for s in book.subjects.values():
            subject_devices[s.id] = list(s.devices)
            role.update({d: "subject" for d in s.devices})
        for p in book.protected_persons.values():
            role.update({d: "protected" for d in p.devices})
    xs = [f.x for f in fixes]
    ys = [f.y for f in fixes]
    for z in zones:
        x0, y0, x1, y1 = z.polygon.bounds
        xs += [x0, x1]
        ys += [y0, y1]
    if not xs:
        return "<p>Nothing to draw.</p>"
    pad = 200.0
    minx, maxx, miny, maxy = min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad
    k = MAP_W / max(maxx - minx, 1.0)
    height = (maxy - miny) * k

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - minx) * k, (maxy - y) * k

    def px(x: float, y: float) -> str:
        sx, sy = to_px(x, y)
        return f"{sx:.1f},{sy:.1f}"

    out = [
        f'<svg class="map" viewBox="0 0 {MAP_W:.0f} {height:.0f}" width="{MAP_W:.0f}" height="{height:.0f}" xmlns="http://www.w3.org/2000/svg">'
    ]
    out.append(f'<rect width="{MAP_W:.0f}" height="{height:.0f}" fill="#f8f9fa"/>')
    for z in zones:
        colour = "#c92a2a" if z.kind == "exclusion" else "#2b8a3e"
        for part in shapely.get_parts(z.polygon):
            rings = [part.exterior, *part.interiors]
            d = " ".join("M" + " L".join(px(x, y) for x, y in ring.coords) + " Z" for ring in rings)
            out.append(
                f'<path d="{d}" fill="{colour}" fill-opacity="0.12" stroke="{colour}" stroke-width="1.5" fill-rule="evenodd">'
                f"<title>{_e(z.kind)} zone {_e(z.zone)} ({_e(z.order)})</title></path>"
            )
    by_device: dict[str, list[TrackFix]] = defaultdict(list)
    for f in fixes:
        by_device[f.device].append(f)
    for dev, track in sorted(by_device.items()):
        colour = ROLE_COLOURS[role.get(dev)]
        pts = " ".join(px(f.x, f.y) for f in track if f.src == "gnss")
        if pts:
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1" stroke-opacity="0.6"><title>{_e(dev)}</title></polyline>'
            )
        for f in track:
            if f.src != "gnss":
                cx, cy = to_px(f.x, f.y)
                out.append(
                    f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2" fill="{colour}" fill-opacity="0.3"><title>{_e(dev)} {_e(f.src)} acc {f.acc:.0f} m</title></circle>'
                )
    index = {(f.device, f.seq): f for f in fixes}
    false_ids = {a.alert_id for a in result.false_alarms}
    for a in result.alerts:
        at = _alert_fix(a, index, by_device, subject_devices)
        if at is None:
            continue
        cx, cy = to_px(at.x, at.y)
        ring = ' stroke="#000" stroke-width="2"' if a.alert_id in false_ids else ""
        label = f"{a.alert_id} {a.kind} {a.max_level}" + (
            " FALSE ALARM" if a.alert_id in false_ids else ""
        )
        out.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{LEVEL_COLOURS[a.max_level]}"{ring}><title>{_e(label)}</title></circle>'
        )
    for r in result.episodes:
        if r.detected or r.episode.subject is None:
            continue
        where = _nearest(by_device, subject_devices.get(r.episode.subject, []), r.episode.start)
        if where is not None:
            cx, cy = to_px(where.x, where.y)
            out.append(
                f'<rect x="{cx - 6:.1f}" y="{cy - 6:.1f}" width="12" height="12" fill="none" stroke="#000" stroke-width="2">'
                f"<title>MISSED {_e(_key(r.episode))}</title></rect>"
            )
    bar = 10 ** math.floor(math.log10(max((maxx - minx) / 4, 1.0)))
    out.append(
        f'<line x1="20" y1="{height - 20:.0f}" x2="{20 + bar * k:.1f}" y2="{height - 20:.0f}" stroke="#000" stroke-width="3"/>'
    )
    out.append(f'<text x="20" y="{height - 28:.0f}" font-size="12">{bar:.0f} m</text>')
    out.append("</svg>")
    return "\n".join(out)


def _alert_fix(
    a: AlertEpisode,
    index: dict[tuple[str, int], TrackFix],
    by_device: dict[str, list[TrackFix]],
    subject_devices: dict[str, list[str]],
) -> TrackFix | None:
    """Where to draw an alert: its evidence fix (the subject's first), else the subject's nearest fix."""
    found = []
    for ref in a.evidence:
        dev, _, seq = ref.rpartition(":")
        f = index.get((dev, int(seq))) if seq.isdigit() else None
        if f is not None:
            found.append(f)
    mine = subject_devices.get(a.subject or "", [])
    for f in found:
        if f.device in mine:
            return f
    if found:
        return found[0]
    if a.subject is not None:
        return _nearest(by_device, subject_devices.get(a.subject, []), a.first_t)
    return None


def _nearest(by_device: dict[str, list[TrackFix]], devices: list[str], t: float) -> TrackFix | None:
    best = None
    for dev in devices:
        for f in by_device.get(dev, []):
            if best is None or abs(f.t - t) < abs(best.t - t):
                best = f
    return best


def timeline_svg(result: ScoreResult) -> str:
    """One row per (kind, keys): true episodes grey, alerts coloured by their highest level."""
    rows: dict[str, list[tuple[float, float, str, str]]] = defaultdict(list)
    for r in result.episodes:
        rows[_key(r.episode)].append((r.episode.start, r.episode.end, "truth", "true episode"))
    for a in result.alerts:
        rows[_key(a)].append((a.first_t, a.end_t, a.max_level, a.alert_id))
    if not rows:
        return "<p>No episodes and no alerts.</p>"
    finite = [
        t for items in rows.values() for s, e, _, _ in items for t in (s, e) if math.isfinite(t)
    ]
    t0, t1 = min(finite), max(finite)
    t1 = max(t1, t0 + 60.0)
    label_w, width, row_h = 300.0, 640.0, 22.0
    k = width / (t1 - t0)
    out = [
        f'<svg class="timeline" width="{label_w + width + 20:.0f}" height="{row_h * len(rows) + 30:.0f}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (key, items) in enumerate(sorted(rows.items())):
        y = 10 + i * row_h
        out.append(f'<text x="0" y="{y + 14:.0f}" font-size="11">{_e(key)}</text>')
        for s, e, what, label in items:
            e = min(e, t1)
            x = label_w + (s - t0) * k
            w = max((e - s) * k, 2.0)
            if what == "truth":
                out.append(
                    f'<rect x="{x:.1f}" y="{y:.0f}" width="{w:.1f}" height="8" fill="#adb5bd"><title>{_e(label)}</title></rect>'
                )
            else:
                out.append(
                    f'<rect x="{x:.1f}" y="{y + 9:.0f}" width="{w:.1f}" height="8" fill="{LEVEL_COLOURS[what]}"><title>{_e(label)} ({_e(what)})</title></rect>'
                )
    out.append("</svg>")
    return "\n".join(out)


def _key(x: Any) -> str:
    """Kind and keys of an episode or alert; a zone names the row (an alert may also name the victim)."""
    target = x.zone if x.zone is not None else x.protected_person
    keys = [str(v) for v in (x.order, x.subject, target) if v is not None]
    return f"{x.kind} " + "/".join(keys)


def _episode_table(result: ScoreResult) -> str:
    head = "<tr><th>kind</th><th>keys</th><th>start</th><th>end</th><th>min dist m</th><th>detected</th><th>delay s</th><th>lead s</th><th>alerts</th></tr>"
    rows = []
    for r in result.episodes:
        ep = r.episode
        cls = "" if r.detected else ' class="missed"'
        rows.append(
            f"<tr{cls}><td>{_e(ep.kind)}</td><td>{_e(_key(ep))}</td><td>{format_time(ep.start)}</td><td>{format_time(ep.end)}</td>"
            f"<td>{'' if ep.min_distance_m is None else f'{ep.min_distance_m:.0f}'}</td><td>{'yes' if r.detected else 'MISSED'}</td>"
            f"<td>{_num(r.delay_s)}</td><td>{_num(r.lead_s)}</td><td>{_e(', '.join(r.alert_ids))}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>None.</p>"


def _false_table(result: ScoreResult) -> str:
    rows = [
        f"<tr><td>{_e(a.alert_id)}</td><td>{_e(_key(a))}</td><td>{_e(a.max_level)}</td><td>{format_time(a.first_t)}</td></tr>"
        for a in sorted(result.false_alarms, key=lambda a: (a.first_t, a.alert_id))
    ]
    head = "<tr><th>alert</th><th>keys</th><th>level</th><th>device time</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>" if rows else "<p>None.</p>"


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"


def _e(s: object) -> str:
    return html.escape(str(s))


CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#212529}
pre{background:#f1f3f5;padding:1em;overflow-x:auto}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #dee2e6;padding:3px 6px;text-align:left}
tr.missed td{background:#ffe3e3}
svg{border:1px solid #dee2e6;margin:0.5em 0}
"""
