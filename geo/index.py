"""All zones compiled into flat arrays (CSR-style) for the Numba kernels, patched in place.

Layout (see ``geo.kernels.zones``): per slot a row of ``zf`` (circle centre and
radius, bounding box, metres) and ``zi`` (kind, ring range); rings index into
one pair of vertex arrays.  Upserting appends the new rings and vertices and
repoints the slot; removing frees the slot for reuse.  Superseded vertices are
garbage until a compaction copies live rings into fresh arrays, which changes
ring offsets but never slots.

Slots are stable for a key while it lives; after ``remove`` a slot may be given
to another key, so callers must not keep slots of removed keys.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from . import kernels
from .errors import GeoError
from .geodesy import WGS84
from .projection import Projector
from .zones import ZoneShape

PARALLEL_MIN_PAIRS = 200_000
_CIRCLE_PROBES = 8


def _grow(arr: np.ndarray, need: int) -> np.ndarray:
    """Return ``arr`` or a copy with capacity >= need (doubling), first axis."""
    if need <= arr.shape[0]:
        return arr
    cap = max(need, 2 * arr.shape[0], 16)
    out = np.zeros((cap, *arr.shape[1:]), dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class ZoneIndex:
    """All zones compiled into flat arrays (CSR-style), patched incrementally."""

    def __init__(self, projector: Projector | None = None) -> None:
        self.projector = projector if projector is not None else Projector()
        self._slot_of: dict[str, int] = {}
        self._key_of: dict[int, str] = {}
        self._free: list[int] = []
        self._n_slots = 0  # high-water mark of slots handed out
        self._n_rings = 0
        self._n_verts = 0
        self._garbage_verts = 0
        self.zf = np.zeros((0, 8), dtype=np.float64)
        self.zi = np.zeros((0, 4), dtype=np.int64)
        self.rings = np.zeros((0, 2), dtype=np.int64)
        self.vx = np.zeros(0, dtype=np.float64)
        self.vy = np.zeros(0, dtype=np.float64)

    # ------------------------------------------------------------------ keys
    def __contains__(self, key: object) -> bool:
        return key in self._slot_of

    def __len__(self) -> int:
        return len(self._slot_of)

    def keys(self) -> list[str]:
        """Keys currently in the index."""
        return list(self._slot_of)

    def slot(self, key: str) -> int:
        """The slot of ``key``; ``GeoError`` if absent."""
        try:
            return self._slot_of[key]
        except KeyError:
            raise GeoError(f"zone {key!r} is not in the index") from None

    def slots(self, keys: Sequence[str]) -> np.ndarray:
        """Slots of many keys as an int64 array."""
        return np.fromiter((self.slot(k) for k in keys), dtype=np.int64, count=len(keys))

    def bounds(self, key: str) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of a zone in projected metres."""
        row = self.zf[self.slot(key)]
        return float(row[3]), float(row[4]), float(row[5]), float(row[6])

    @property
    def nbytes(self) -> int:
        """Bytes held by the kernel arrays (capacity included)."""
        return sum(a.nbytes for a in (self.zf, self.zi, self.rings, self.vx, self.vy))

    # --------------------------------------------------------------- updates
    def upsert(self, key: str, shape: ZoneShape) -> int:
        """Insert or replace one zone; return its slot (unchanged when replacing)."""
        return int(self.upsert_many([(key, shape)])[0])

    def upsert_many(self, items: Iterable[tuple[str, ZoneShape]]) -> np.ndarray:
        """Insert or replace many zones with one projection call per kind; return their slots."""
        items = list(items)
        circles = [(i, s) for i, (_, s) in enumerate(items) if s.kind == "circle"]
        polys = [(i, s) for i, (_, s) in enumerate(items) if s.kind != "circle"]
        batch = _Batch(len(items))
        if circles:
            idx = np.array([i for i, _ in circles], dtype=np.int64)
            lat = np.array([s.center[0] for _, s in circles], dtype=np.float64)  # type: ignore[index]
            lon = np.array([s.center[1] for _, s in circles], dtype=np.float64)  # type: ignore[index]
            rad = np.array([s.radius_m for _, s in circles], dtype=np.float64)
            cx, cy, r = self._project_circles(lon, lat, rad)
            bad = ~np.isfinite(cx + cy + r)
            if bad.any():
                names = [circles[int(j)][1].zone_id for j in np.flatnonzero(bad)]
                raise GeoError(f"zones {names} cannot be projected to {self.projector.crs}")
            batch.circles(idx, cx, cy, r)
        if polys:
            idx = np.array([i for i, _ in polys], dtype=np.int64)
            batch.polygons(idx, [s.geometry for _, s in polys], self.projector.forward)
        return self._store([k for k, _ in items], batch)

    def upsert_planar_many(
        self, items: Iterable[tuple[str, Polygon | MultiPolygon | tuple[float, float, float]]]
    ) -> np.ndarray:
        """Insert or replace zones given directly in projected metres.

        Each item is ``(key, polygon)`` or ``(key, (cx, cy, radius))``; used by
        tests and tools that already work in the planar CRS.
        """
        items = list(items)
        batch = _Batch(len(items))
        circ = [(i, g) for i, (_, g) in enumerate(items) if isinstance(g, tuple)]
        polys = [(i, g) for i, (_, g) in enumerate(items) if not isinstance(g, tuple)]
        if circ:
            c = np.array([g for _, g in circ], dtype=np.float64).reshape(-1, 3)
            if not (np.all(np.isfinite(c)) and np.all(c[:, 2] > 0)):
                raise GeoError("planar circles need finite centres and radius > 0")
            batch.circles(np.array([i for i, _ in circ]), c[:, 0], c[:, 1], c[:, 2])
        if polys:
            batch.polygons(np.array([i for i, _ in polys]), [g for _, g in polys], None)
        return self._store([k for k, _ in items], batch)

    def _project_circles(
        self, lon: np.ndarray, lat: np.ndarray, rad: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre projected; radius = mean projected distance to 8 points of the true circle.

        The projection's scale (RD New: 0.9999-1.0001) is thus folded into the
        radius, so the planar circle follows the geodesic one to centimetres
        for kilometre radii.
        """
        cx, cy = self.projector.forward(lon, lat)
        k = _CIRCLE_PROBES
        az = np.tile(np.arange(k) * (360.0 / k), len(lon))
        plon, plat, _ = WGS84.fwd(np.repeat(lon, k), np.repeat(lat, k), az, np.repeat(rad, k))
        px, py = self.projector.forward(np.asarray(plon), np.asarray(plat))
        dist = np.hypot(px - np.repeat(cx, k), py - np.repeat(cy, k))
        return cx, cy, dist.reshape(-1, k).mean(axis=1)

    def _store(self, keys: list[str], batch: _Batch) -> np.ndarray:
        """Give each key a slot (replacement keeps it) and append the batch's arrays."""
        if len(set(keys)) != len(keys):
            raise GeoError("upsert: duplicate keys in one batch")
        out = np.empty(len(keys), dtype=np.int64)
        for i, key in enumerate(keys):
            s = self._slot_of.get(key)
            if s is None:
                if self._free:
                    s = self._free.pop()
                else:
                    s = self._n_slots
                    self._n_slots += 1
                self._slot_of[key] = s
                self._key_of[s] = key
            else:
                self._release_geometry(s)
            out[i] = s
        self.zf = _grow(self.zf, self._n_slots)
        self.zi = _grow(self.zi, self._n_slots)

        lens = np.concatenate(batch.ring_lens) if batch.ring_lens else np.zeros(0, np.int64)
        nr = int(lens.shape[0])
        nv = int(lens.sum())
        self.rings = _grow(self.rings, self._n_rings + nr)
        self.vx = _grow(self.vx, self._n_verts + nv)
        self.vy = _grow(self.vy, self._n_verts + nv)
        if nv:
            self.vx[self._n_verts : self._n_verts + nv] = np.concatenate(batch.xs)
            self.vy[self._n_verts : self._n_verts + nv] = np.concatenate(batch.ys)
            ends = self._n_verts + np.cumsum(lens)
            self.rings[self._n_rings : self._n_rings + nr, 0] = ends - lens
            self.rings[self._n_rings : self._n_rings + nr, 1] = ends
        ring_hi = self._n_rings + np.cumsum(batch.ring_counts)
        ring_lo = ring_hi - batch.ring_counts
        is_poly = batch.kinds == kernels.KIND_POLYGON
        self.zf[out] = batch.rows
        self.zi[out, 0] = batch.kinds
        self.zi[out, 1] = np.where(is_poly, ring_lo, 0)
        self.zi[out, 2] = np.where(is_poly, ring_hi, 0)
        self._n_rings += nr
        self._n_verts += nv
        self._maybe_compact()
        return out

    def remove(self, key: str) -> None:
        """Remove a zone; its slot becomes free (``GeoError`` if absent)."""
        s = self.slot(key)
        self._release_geometry(s)
        self.zi[s] = 0
        self.zf[s] = 0.0
        del self._slot_of[key]
        del self._key_of[s]
        self._free.append(s)
        self._maybe_compact()

    def _release_geometry(self, s: int) -> None:
        if self.zi[s, 0] == kernels.KIND_POLYGON:
            lo, hi = int(self.zi[s, 1]), int(self.zi[s, 2])
            self._garbage_verts += int((self.rings[lo:hi, 1] - self.rings[lo:hi, 0]).sum())

    def _maybe_compact(self) -> None:
        if self._garbage_verts > max(1 << 16, self._n_verts // 2):
            self.compact()

    def compact(self) -> None:
        """Copy live rings into fresh arrays (slots unchanged, ring offsets renumbered)."""
        live = np.flatnonzero(self.zi[: self._n_slots, 0] == kernels.KIND_POLYGON)
        lo = self.zi[live, 1]
        hi = self.zi[live, 2]
        counts = hi - lo
        ring_ids = (
            np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])
            if len(live)
            else np.zeros(0, np.int64)
        )
        starts = self.rings[ring_ids, 0]
        stops = self.rings[ring_ids, 1]
        lens = stops - starts
        vert_ids = (
            np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
            if len(ring_ids)
            else np.zeros(0, np.int64)
        )
        self.vx = self.vx[vert_ids].copy()
        self.vy = self.vy[vert_ids].copy()
        ends = np.cumsum(lens)
        self.rings = np.column_stack((ends - lens, ends)).astype(np.int64)
        new_hi = np.cumsum(counts)
        self.zi[live, 1] = new_hi - counts
        self.zi[live, 2] = new_hi
        self._n_rings = len(ring_ids)
        self._n_verts = len(vert_ids)
        self._garbage_verts = 0

    # ------------------------------------------------------------ evaluation
    def signed_distance(
        self,
        slots: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        out: np.ndarray | None = None,
        *,
        parallel: bool | None = None,
    ) -> np.ndarray:
        """Signed distance (m) per (slot, point) pair: < 0 inside, > 0 outside, boundary 0 (inside).

        ``parallel=None`` uses the threaded kernel for batches of at least
        ``PARALLEL_MIN_PAIRS`` pairs.
        """
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        n = slots.shape[0]
        if x.shape != (n,) or y.shape != (n,):
            raise GeoError(
                f"slots, x, y must be 1-D of equal length, got {slots.shape}, {x.shape}, {y.shape}"
            )
        if out is None:
            out = np.empty(n, dtype=np.float64)
        elif out.shape != (n,) or out.dtype != np.float64:
            raise GeoError("out must be a float64 array of the same length as slots")
        use_par = parallel if parallel is not None else n >= PARALLEL_MIN_PAIRS
        fn = kernels.signed_distance_batch_parallel if use_par else kernels.signed_distance_batch
        bad = fn(slots, x, y, self.zf, self.zi, self.rings, self.vx, self.vy, out)
        if bad:
            raise GeoError(f"{bad} pair(s) refer to a free or unknown zone slot")
        return out

    def signed_distance_lonlat(
        self, keys: Sequence[str] | str, lon: np.ndarray, lat: np.ndarray
    ) -> np.ndarray:
        """Signed distance (m) for lon/lat points; ``keys`` one per point, or one key for all."""
        x, y = self.projector.forward(
            np.atleast_1d(np.asarray(lon, dtype=np.float64)),
            np.atleast_1d(np.asarray(lat, dtype=np.float64)),
        )
        if isinstance(keys, str):
            slots = np.full(x.shape[0], self.slot(keys), dtype=np.int64)
        else:
            slots = self.slots(keys)
        return self.signed_distance(slots, x, y)

    def crossing(
        self,
        slots: np.ndarray,
        x0: np.ndarray,
        y0: np.ndarray,
        x1: np.ndarray,
        y1: np.ndarray,
    ) -> np.ndarray:
        """Per pair: does segment (x0, y0)->(x1, y1) touch or enter the zone (boundary counts)."""
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        arrs = [np.ascontiguousarray(a, dtype=np.float64) for a in (x0, y0, x1, y1)]
        n = slots.shape[0]
        if any(a.shape != (n,) for a in arrs):
            raise GeoError("slots, x0, y0, x1, y1 must be 1-D of equal length")
        out = np.empty(n, dtype=np.uint8)
        bad = kernels.crossing_batch(
            slots, *arrs, self.zf, self.zi, self.rings, self.vx, self.vy, out
        )
        if bad:
            raise GeoError(f"{bad} pair(s) refer to a free or unknown zone slot")
        return out.view(np.bool_)


class _Batch:
    """Rows, kinds, rings and vertices of zones being compiled, before slots are assigned."""

    def __init__(self, n: int) -> None:
        self.rows = np.zeros((n, 8), dtype=np.float64)
        self.kinds = np.zeros(n, dtype=np.int64)
        self.ring_counts = np.zeros(n, dtype=np.int64)
        self.ring_lens: list[np.ndarray] = []
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []

    def circles(self, idx: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> None:
        rows = self.rows
        rows[idx, 0] = cx
        rows[idx, 1] = cy
        rows[idx, 2] = r
        rows[idx, 3] = cx - r
        rows[idx, 4] = cy - r
        rows[idx, 5] = cx + r
        rows[idx, 6] = cy + r
        self.kinds[idx] = kernels.KIND_CIRCLE

    def polygons(
        self,
        idx: np.ndarray,
        geoms_in: Sequence[object],
        project: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None,
    ) -> None:
        """All vertices projected in one call; rings stored closed, in input order."""
        geoms = []
        for g in geoms_in:
            if isinstance(g, Polygon):
                geoms.append(MultiPolygon([g]))
            elif isinstance(g, MultiPolygon):
                geoms.append(g)
            else:
                raise GeoError(f"zone geometry must be a Polygon or MultiPolygon, got {g!r:.60}")
        _, coords, (ring_off, part_off, geom_off) = shapely.to_ragged_array(geoms)
        if project is None:
            x = np.ascontiguousarray(coords[:, 0], dtype=np.float64)
            y = np.ascontiguousarray(coords[:, 1], dtype=np.float64)
        else:
            x, y = project(coords[:, 0], coords[:, 1])
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise GeoError("some polygon zones cannot be projected (outside the CRS's area)")
        self.ring_counts[idx] = np.diff(part_off[geom_off])
        self.ring_lens.append(np.diff(ring_off).astype(np.int64))
        self.xs.append(x)
        self.ys.append(y)
        starts = ring_off[part_off[geom_off[:-1]]]  # every geometry has >= 4 vertices
        self.rows[idx, 3] = np.minimum.reduceat(x, starts)
        self.rows[idx, 4] = np.minimum.reduceat(y, starts)
        self.rows[idx, 5] = np.maximum.reduceat(x, starts)
        self.rows[idx, 6] = np.maximum.reduceat(y, starts)
        self.kinds[idx] = kernels.KIND_POLYGON
