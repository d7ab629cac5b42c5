"""Compile planar zones into the kernels' self-contained records (see ``geo.kernels.zones``).

Pure numpy, vectorised over many zones at once: one call per batch of circles
or polygons, no Python loop per vertex.  Each function returns the records
concatenated in input order and each record's length in doubles (a multiple
of ``ALIGN``, so records stay cache-line aligned when appended).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from .errors import GeoError
from .kernels import ALIGN, BLOCK_EDGES, BLOCK_SIZE, BOX_SIZE, HEADER, KIND_CIRCLE, KIND_POLYGON

POLYGON_BATCH = 20_000  # polygons compiled per numpy pass (bounds temporary memory)


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
    """Records from ragged planar coordinates (see ``ragged_polygons``), in batches."""
    n_geoms = len(geom_off) - 1
    bufs: list[np.ndarray] = []
    lens: list[np.ndarray] = []
    for g0 in range(0, n_geoms, POLYGON_BATCH):
        g1 = min(g0 + POLYGON_BATCH, n_geoms)
        p0, p1 = geom_off[g0], geom_off[g1]
        r0, r1 = part_off[p0], part_off[p1]
        v0, v1 = ring_off[r0], ring_off[r1]
        b, n = _polygon_batch(
            x[v0:v1],
            y[v0:v1],
            ring_off[r0 : r1 + 1] - v0,
            part_off[p0 : p1 + 1] - r0,
            geom_off[g0 : g1 + 1] - p0,
        )
        bufs.append(b)
        lens.append(n)
    if not bufs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(bufs), np.concatenate(lens)


def _polygon_batch(
    x: np.ndarray,
    y: np.ndarray,
    ring_off: np.ndarray,
    part_off: np.ndarray,
    geom_off: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise GeoError("polygon coordinates must be finite (outside the projection's area?)")
    n_geoms = len(geom_off) - 1
    ring_len = np.diff(ring_off)  # closed rings: edges = len - 1
    ring_blocks = (ring_len - 1 + BLOCK_EDGES - 1) // BLOCK_EDGES
    rings_per_geom = np.diff(part_off[geom_off]).astype(np.int64)
    ring_geom = np.repeat(np.arange(n_geoms), rings_per_geom)
    geom_blocks = np.bincount(ring_geom, weights=ring_blocks, minlength=n_geoms).astype(np.int64)

    # edge blocks: vertex indices, padded by repeating the ring's last vertex
    n_blocks = int(ring_blocks.sum())
    block_ring = np.repeat(np.arange(len(ring_len)), ring_blocks)
    first_block_of_ring = np.cumsum(ring_blocks) - ring_blocks
    block_j = np.arange(n_blocks) - first_block_of_ring[block_ring]
    base = ring_off[block_ring] + BLOCK_EDGES * block_j
    last = ring_off[block_ring + 1] - 1
    vidx = np.minimum(base[:, None] + np.arange(BLOCK_EDGES + 1)[None, :], last[:, None])
    bx = x[vidx]
    by = y[vidx]
    boxes = np.column_stack((bx.min(axis=1), by.min(axis=1), bx.max(axis=1), by.max(axis=1)))

    rec_len = _padded(HEADER + (BOX_SIZE + BLOCK_SIZE) * geom_blocks)
    rec_off = np.cumsum(rec_len) - rec_len
    buf = np.zeros(int(rec_len.sum()), dtype=np.float64)
    geom_first_block = np.cumsum(geom_blocks) - geom_blocks
    block_geom = np.repeat(np.arange(n_geoms), geom_blocks)
    k = np.arange(n_blocks) - geom_first_block[block_geom]  # block index within its record

    box_pos = rec_off[block_geom] + HEADER + BOX_SIZE * k
    buf[box_pos[:, None] + np.arange(BOX_SIZE)[None, :]] = boxes
    blk_pos = rec_off[block_geom] + HEADER + BOX_SIZE * geom_blocks[block_geom] + BLOCK_SIZE * k
    ex = np.diff(bx, axis=1)
    ey = np.diff(by, axis=1)
    len2 = ex * ex + ey * ey
    with np.errstate(divide="ignore"):
        inv = np.where(len2 > 0.0, 1.0 / len2, 0.0)
    buf[blk_pos[:, None] + np.arange(BLOCK_SIZE)[None, :]] = np.concatenate((bx, by, inv), axis=1)

    starts = geom_first_block
    header = np.column_stack(
        (
            np.full(n_geoms, float(KIND_POLYGON)),
            np.minimum.reduceat(boxes[:, 0], starts),
            np.minimum.reduceat(boxes[:, 1], starts),
            np.maximum.reduceat(boxes[:, 2], starts),
            np.maximum.reduceat(boxes[:, 3], starts),
            geom_blocks.astype(np.float64),
            rings_per_geom.astype(np.float64),
            np.zeros(n_geoms),
        )
    )
    buf[rec_off[:, None] + np.arange(HEADER)[None, :]] = header
    return buf, rec_len
