"""A map of an alert for the evidence bundle: zones, both tracks with accuracy, the alert fixes.

Drawn offline (no tiles: the engine has no internet) in projected metres with
matplotlib's Agg canvas, never pyplot, so no display or global state is used.
Circles are drawn from centre and radius, as the engine evaluates them.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.patches import Polygon as PolygonPatch

from geo.projection import Projector

ROLE_STYLE = {
    "exclusion": ("#d62728", 0.18),
    "inclusion": ("#2ca02c", 0.15),
    "corridor": ("#7f7f7f", 0.25),
    "time_window": ("#9467bd", 0.15),
}
TRACK_COLOURS = ("#1f77b4", "#e377c2", "#ff7f0e", "#17becf")


def _rings(geometry: dict[str, Any]) -> list[list[list[float]]]:
    if geometry["type"] == "Polygon":
        return [geometry["coordinates"][0]]
    if geometry["type"] == "MultiPolygon":
        return [part[0] for part in geometry["coordinates"]]
    return []


def render_map(
    fixes: list[dict[str, Any]],
    zones: dict[str, Any] | None,
    alert: dict[str, Any],
    *,
    crs: str = "EPSG:28992",
    size_px: int = 1200,
) -> bytes:
    """PNG bytes of the alert's map."""
    proj = Projector(crs)
    fig = Figure(figsize=(size_px / 100, size_px / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_aspect("equal", adjustable="box")
    xs_all: list[float] = []
    ys_all: list[float] = []
    for feat in (zones or {}).get("features", []):
        props, geom = feat["properties"], feat["geometry"]
        colour, alpha = ROLE_STYLE.get(props.get("role", ""), ("#000000", 0.1))
        label = f"{props.get('role')} {props.get('id')}"
        frame = props.get("role") != "corridor"  # long routes would shrink the tracks to nothing
        if geom["type"] == "Point":
            (cx,), (cy,) = proj.forward(
                np.array([geom["coordinates"][0]]), np.array([geom["coordinates"][1]])
            )
            r = float(props["radius_m"])
            ax.add_patch(
                Circle((cx, cy), r, facecolor=colour, alpha=alpha, edgecolor=colour, label=label)
            )
            if frame:
                xs_all += [cx - r, cx + r]
                ys_all += [cy - r, cy + r]
            continue
        for i, ring in enumerate(_rings(geom)):
            arr = np.asarray(ring, dtype=np.float64)
            px, py = proj.forward(arr[:, 0], arr[:, 1])
            ax.add_patch(
                PolygonPatch(
                    np.column_stack((px, py)),
                    closed=True,
                    facecolor=colour,
                    alpha=alpha,
                    edgecolor=colour,
                    label=label if i == 0 else None,
                )
            )
            if frame:
                xs_all += [float(np.min(px)), float(np.max(px))]
                ys_all += [float(np.min(py)), float(np.max(py))]
    evidence = set(alert.get("evidence", {}).get("fixes", []))
    devices = sorted({f["device"] for f in fixes})
    for colour, device in zip(TRACK_COLOURS * 4, devices, strict=False):
        pts = sorted((f for f in fixes if f["device"] == device), key=lambda f: f["t"])
        lon = np.array([f["lon"] for f in pts])
        lat = np.array([f["lat"] for f in pts])
        px, py = proj.forward(lon, lat)
        px, py = np.atleast_1d(px), np.atleast_1d(py)
        ok = np.array([bool(f.get("accepted", True)) for f in pts])
        ax.plot(px[ok], py[ok], "-", color=colour, linewidth=1.2, label=f"track {device}")
        ax.plot(px[ok], py[ok], "o", color=colour, markersize=3)
        if (~ok).any():
            ax.plot(
                px[~ok], py[~ok], "x", color=colour, markersize=6, label=f"{device} rejected (jump)"
            )
        for f, x, y in zip(pts, px.tolist(), py.tolist(), strict=True):
            ax.add_patch(
                Circle(
                    (x, y), float(f["acc"]), fill=False, edgecolor=colour, alpha=0.25, linewidth=0.6
                )
            )
            if f["key"] in evidence:
                ax.plot([x], [y], "*", color="#000000", markersize=11)
        xs_all += px.tolist()
        ys_all += py.tolist()
    if xs_all:  # a square window round everything, so equal axes need no adjustment
        half = max(max(xs_all) - min(xs_all), max(ys_all) - min(ys_all)) / 2
        half += max(100.0, 0.08 * half)
        cx, cy = (max(xs_all) + min(xs_all)) / 2, (max(ys_all) + min(ys_all)) / 2
        ax.set_xlim(cx - half, cx + half)
        ax.set_ylim(cy - half, cy + half)
    ax.plot([], [], "*", color="#000000", label="alert evidence fix")
    ax.set_xlabel(f"x (m, {crs})")
    ax.set_ylabel(f"y (m, {crs})")
    ax.ticklabel_format(useOffset=False, style="plain")
    ax.grid(True, linewidth=0.3)
    ax.set_title(
        f"{alert.get('alert_id')}  {alert.get('kind')} {alert.get('level')} ({alert.get('state')})\n"
        f"device time {alert.get('device_time')}  order {alert.get('order')}",
        fontsize=10,
    )
    ax.legend(loc="upper right", fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
