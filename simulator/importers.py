"""Recorded tracks into traces: GPX and CSV files become contract §2 fixes for a device.

Real recordings (a phone's GPX export, a vendor's CSV dump) can then be
replayed and published like simulated traces.

* GPX: every ``trkpt`` with ``lat``/``lon`` and a ``time``; ``ele`` is read
  but dropped (fixes carry no altitude); ``hdop`` gives ``acc = hdop x 5 m``
  (a typical user-equivalent range error), else ``acc_default``; GPX 1.0
  ``speed``/``course`` become ``spd``/``hdg``.
* CSV: a header row with ``device,t,lat,lon,acc`` and optionally ``spd, hdg,
  sats, src, batt, strap``; ``t`` is RFC 3339 or epoch milliseconds.  With
  ``device`` given, only that device's rows are kept (and the ``device``
  column may be left out).

Fixes are numbered per device in time order from ``seq`` 1 and arrive
``latency_s`` after their time.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from devices.timeutil import format_time, parse_time
from simulator.errors import ImportTrackError
from simulator.trace import TraceMessage, sort_by_arrival, write_trace

UERE_M = 5.0
OPTIONAL_INT = ("sats", "batt")
OPTIONAL_FLOAT = ("spd", "hdg")
OPTIONAL_TEXT = ("src", "strap")


def parse_gpx(text: str, device: str, *, acc_default: float = 10.0) -> list[dict[str, Any]]:
    """Fix payloads (seq from 1, time order) from a GPX document's track points."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ImportTrackError(f"not a GPX/XML document ({exc})") from exc
    points = []
    for n, el in enumerate(e for e in root.iter() if _local(e.tag) == "trkpt"):
        child = {_local(c.tag): (c.text or "").strip() for c in el}
        if "time" not in child:
            raise ImportTrackError(f"track point {n}: no <time> (a fix needs its time)")
        try:
            t = parse_time(child["time"])
            lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
            acc = float(child["hdop"]) * UERE_M if child.get("hdop") else acc_default
            fix: dict[str, Any] = {"t": t, "lat": lat, "lon": lon, "acc": acc}
            if child.get("speed"):
                fix["spd"] = float(child["speed"])
            if child.get("course"):
                fix["hdg"] = float(child["course"])
            if child.get("sat"):
                fix["sats"] = int(child["sat"])
        except (KeyError, ValueError) as exc:
            raise ImportTrackError(f"track point {n}: {exc}") from exc
        points.append(fix)
    if not points:
        raise ImportTrackError("no track points (<trkpt>) in the GPX document")
    return _number(device, points)


def parse_csv(
    text: str, device: str | None = None, *, acc_default: float | None = None
) -> list[dict[str, Any]]:
    """Fix payloads per device (seq from 1 each, time order) from CSV text with a header row."""
    reader = csv.DictReader(io.StringIO(text))
    cols = set(reader.fieldnames or [])
    need = (
        {"t", "lat", "lon"}
        | ({"acc"} if acc_default is None else set())
        | ({"device"} if device is None else set())
    )
    if not need <= cols:
        raise ImportTrackError(f"CSV is missing columns {sorted(need - cols)} (has {sorted(cols)})")
    per_device: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for n, row in enumerate(reader, 2):
        dev = (row.get("device") or "").strip() or device
        if device is not None and dev != device:
            continue
        try:
            fix: dict[str, Any] = {
                "t": _csv_time(row["t"]),
                "lat": float(row["lat"]),
                "lon": float(row["lon"]),
                "acc": float(row["acc"]) if row.get("acc") else float(acc_default),  # type: ignore[arg-type]
            }
            for k in OPTIONAL_FLOAT:
                if row.get(k):
                    fix[k] = float(row[k])
            for k in OPTIONAL_INT:
                if row.get(k):
                    fix[k] = int(row[k])
            for k in OPTIONAL_TEXT:
                if row.get(k):
                    fix[k] = row[k].strip()
        except (ValueError, TypeError) as exc:
            raise ImportTrackError(f"CSV line {n}: {exc}") from exc
        per_device[str(dev)].append(fix)
    if not per_device:
        raise ImportTrackError("no rows" + (f" for device {device!r}" if device else ""))
    return [f for dev in sorted(per_device) for f in _number(dev, per_device[dev])]


def fixes_to_trace(
    fixes: Iterable[Mapping[str, Any]], *, latency_s: float = 0.5, topic_prefix: str = "em"
) -> list[TraceMessage]:
    """Trace messages for fix payloads, each arriving ``latency_s`` after its time."""
    msgs = [
        TraceMessage(
            parse_time(f["t"]) + latency_s, f"{topic_prefix}/dev/{f['device']}/fix", dict(f)
        )
        for f in fixes
    ]
    return sort_by_arrival(msgs)


def import_track(
    path: str | Path,
    out: str | Path,
    device: str | None = None,
    *,
    fmt: str | None = None,
    acc_default: float = 10.0,
    latency_s: float = 0.5,
    topic_prefix: str = "em",
) -> int:
    """Convert a GPX or CSV file (by suffix unless ``fmt``) into a trace file; returns fixes written."""
    p = Path(path)
    kind = (fmt or p.suffix.lstrip(".")).lower()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ImportTrackError(f"{p}: cannot read ({exc.strerror})") from exc
    if kind == "gpx":
        if not device:
            raise ImportTrackError("a GPX track needs a device id")
        fixes = parse_gpx(text, device, acc_default=acc_default)
    elif kind == "csv":
        fixes = parse_csv(text, device, acc_default=acc_default)
    else:
        raise ImportTrackError(f"{p}: unknown track format {kind!r} (gpx or csv)")
    return write_trace(fixes_to_trace(fixes, latency_s=latency_s, topic_prefix=topic_prefix), out)


def _number(device: str, points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    points = sorted(points, key=lambda f: f["t"])
    out = []
    for seq, f in enumerate(points, 1):
        if not (-90 <= f["lat"] <= 90 and -180 <= f["lon"] <= 180):
            raise ImportTrackError(f"fix {seq} of {device}: lat/lon out of range")
        if not f["acc"] > 0:
            raise ImportTrackError(f"fix {seq} of {device}: acc must be > 0")
        fix = {"v": 1, "device": device, "seq": seq, "t": format_time(f["t"])}
        fix.update({k: v for k, v in f.items() if k != "t"})
        out.append(fix)
    return out


def _csv_time(text: str) -> float:
    text = text.strip()
    return parse_time(int(text)) if text.isdigit() else parse_time(text)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
