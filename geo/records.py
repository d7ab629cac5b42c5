"""Compile planar zones into the kernels' self-contained records (see ``geo.kernels.zones``).

Vectorised over many zones at once (numpy, plus one Numba kernel that writes
polygon records in a single pass): no Python loop per zone or vertex.  Each function returns the records
concatenated in input order and each record's length in doubles (a multiple
of ``ALIGN``, so records stay cache-line aligned when appended).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from .errors import GeoError
from .kernels import (
    ALIGN,
    BLOCK_EDGES,
    BLOCK_SIZE,
    BOX_SIZE,
    HEADER,
    KIND_CIRCLE,
    write_polygon_records,
)


def _padded(length: np.ndarray) -> np.ndarray:
    out: np.ndarray = (length + ALIGN - 1) // ALIGN * ALIGN
    return out


def circle_records(cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Records of circles (centre and radius in metres): header only."""
    cx, cy, r = (np.asarray(a, dtype=np.float64) for a in (cx, cy, r))
    if not (
        np.all(np.isfinite(cx))
        and np.all(np.isfinite(cy))
        and np.all(r > 0)
        and np.all(np.isfinite(r))
    ):
        raise GeoError("circles need finite centres and a finite radius > 0")
    rec = np.column_stack(
        (np.full(cx.shape, float(KIND_CIRCLE)), cx - r, cy - r, cx + r, cy + r, cx, cy, r)
    )
    return rec.ravel(), np.full(cx.shape[0], HEADER, dtype=np.int64)


def ragged_polygons(
    geoms: Sequence[Polygon | MultiPolygon],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, ring_off, part_off, geom_off) of polygons / multipolygons, without copying objects.

    Offsets as in ``shapely.to_ragged_array`` for MultiPolygon: rings are closed.
    """
    for g in geoms:
        if not isinstance(g, Polygon | MultiPolygon):
            raise GeoError(f"zone geometry must be a Polygon or MultiPolygon, got {g!r:.60}")
    if not geoms:
        return (
            np.zeros(0),
            np.zeros(0),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
            np.zeros(1, np.int64),
        )
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = list(geoms)
    gtype, coords, offsets = shapely.to_ragged_array(arr)
    if gtype == shapely.GeometryType.POLYGON:  # all single polygons: one part each
        ring_off, part_off = offsets
        geom_off = np.arange(len(part_off), dtype=np.int64)
    else:
        ring_off, part_off, geom_off = offsets
    x = np.ascontiguousarray(coords[:, 0], dtype=np.float64)
    y = np.ascontiguousarray(coords[:, 1], dtype=np.float64)
    return x, y, ring_off.astype(np.int64), part_off.astype(np.int64), geom_off.astype(np.int64)


def polygon_records(geoms: Sequence[Polygon | MultiPolygon]) -> tuple[np.ndarray, np.ndarray]:
    """Records of planar polygons / multipolygons (all rings, holes included)."""
    return polygon_records_ragged(*ragged_polygons(geoms))


def polygon_records_ragged(
    x: np.ndarray,
    y: np.ndarray,
    ring_off: np.ndarray,
    part_off: np.ndarray,
    geom_off: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Records from ragged planar coordinates (see ``ragged_polygons``)."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise GeoError("polygon coordinates must be finite (outside the projection's area?)")
    n_geoms = len(geom_off) - 1
    if n_geoms == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    ring_blocks = (np.diff(ring_off) - 1 + BLOCK_EDGES - 1) // BLOCK_EDGES
    rings_per_geom = np.diff(part_off[geom_off])
    ring_geom = np.repeat(np.arange(n_geoms), rings_per_geom)
    geom_blocks = np.bincount(ring_geom, weights=ring_blocks, minlength=n_geoms).astype(np.int64)
    rec_len = _padded(HEADER + (BOX_SIZE + BLOCK_SIZE) * geom_blocks)
    rec_off = np.cumsum(rec_len) - rec_len
    buf = np.zeros(int(rec_len.sum()), dtype=np.float64)
    write_polygon_records(
        np.ascontiguousarray(x, dtype=np.float64),
        np.ascontiguousarray(y, dtype=np.float64),
        np.ascontiguousarray(ring_off, dtype=np.int64),
        np.ascontiguousarray(part_off, dtype=np.int64),
        np.ascontiguousarray(geom_off, dtype=np.int64),
        rec_off,
        buf,
    )
    return buf, rec_len
