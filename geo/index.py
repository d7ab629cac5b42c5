"""All zones compiled into one flat record array for the Numba kernels, patched in place.

Layout (see ``geo.kernels.zones``): ``zoff[slot]`` is the offset of the
slot's self-contained record in ``blob`` (CSR-style: one float array plus
int offsets), ``-1`` for a free slot.  Upserting appends the new record and
repoints the slot; removing frees the slot for reuse.  Superseded records are
garbage until a compaction copies the live ones into a fresh array, which
changes offsets but never slots.

Slots are stable for a key while it lives; after ``remove`` a slot may be given
to another key, so callers must not keep slots of removed keys.  Not
thread-safe for writers: update from one thread; evaluation only reads.

The engine asks ``signed_distance_at`` about one fix and one zone at a time, from compiled
code (engine.tools.native compiles this module too).  A circle's centre and radius are also kept
as plain numbers per slot, and its distance is worked out there with the kernel's own
operations (``kernels.record_fast``: ``sqrt(dx*dx + dy*dy) - r``): the same number without
a Numba call.  Polygons go to the kernel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TypeAlias

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

from . import kernels
from .errors import GeoError
from .geodesy import WGS84
from .projection import Projector
from .records import circle_records, polygon_records, polygon_records_ragged, ragged_polygons
from .zones import ZoneShape

PARALLEL_MIN_PAIRS = 200_000  # threaded kernel from this many pairs (when parallel=None)
LOCALITY_MIN_PAIRS = 50_000  # visit pairs grouped by record address from this many pairs
LOCALITY_SHIFT = 14  # group by 2**14 doubles = 128 KiB of records
_CIRCLE_PROBES = 8

PlanarZone: TypeAlias = Polygon | MultiPolygon | tuple[float, float, float]


def path_may_touch(d0: float, d1: float, length: float) -> bool:
    """Whether a straight path ``length`` long, with its ends ``d0`` and ``d1`` outside a zone,
    can touch it.

    The distance to a zone changes by at most the distance moved, so ends farther from the zone
    together than the path is long mean the path stays outside; 1 mm and 1e-9 relative of slack
    absorb rounding.  The engine asks the exact crossing test only about zones this admits.
    """
    return d0 + d1 <= length + 1e-3 + 1e-9 * (length + d0 + d1)


def _aligned_zeros(n: int) -> np.ndarray:
    """A float64 array of n zeros whose data starts on a 64-byte boundary."""
    raw = np.zeros(n + kernels.ALIGN, dtype=np.float64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + n]


def _grow1(arr: np.ndarray, need: int, fill: float | int) -> np.ndarray:
    if need <= arr.shape[0]:
        return arr
    out = np.full(max(need, 2 * arr.shape[0], 16), fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


class ZoneIndex:
    """All zones compiled into flat arrays (CSR-style), patched incrementally."""

    def __init__(self, projector: Projector | None = None) -> None:
        self.projector = projector if projector is not None else Projector()
        self._slot_of: dict[str, int] = {}
        self._circles: dict[int, tuple[float, float, float]] = {}  # slot -> (cx, cy, radius) m
        self._free: list[int] = []
        self._n_slots = 0  # high-water mark of slots handed out
        self._used = 0  # doubles of blob in use (live + garbage)
        self._garbage = 0
        # counts changes to which key has which slot (a key stored for the first time, or
        # removed): a caller that keeps slots checks it has not moved (engine.core.rules.zones)
        self.slots_version = 0
        self.zoff = np.full(0, -1, dtype=np.int64)
        self.zlen = np.zeros(0, dtype=np.int64)
        self.blob = _aligned_zeros(0)

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
        o = int(self.zoff[self.slot(key)])
        b = self.blob[o + 1 : o + 5]
        return float(b[0]), float(b[1]), float(b[2]), float(b[3])

    def kind(self, key: str) -> str:
        """``"circle"`` or ``"polygon"``."""
        o = int(self.zoff[self.slot(key)])
        return "circle" if self.blob[o] == kernels.KIND_CIRCLE else "polygon"

    def circle(self, key: str) -> tuple[float, float, float] | None:
        """(cx, cy, radius) in projected metres for a circle zone, None for a polygon."""
        o = int(self.zoff[self.slot(key)])
        if self.blob[o] != kernels.KIND_CIRCLE:
            return None
        return float(self.blob[o + 5]), float(self.blob[o + 6]), float(self.blob[o + 7])

    @property
    def nbytes(self) -> int:
        """Bytes held by the kernel arrays (capacity included)."""
        return self.zoff.nbytes + self.zlen.nbytes + self.blob.nbytes

    # --------------------------------------------------------------- updates
    def upsert(self, key: str, shape: ZoneShape) -> int:
        """Insert or replace one zone; return its slot (unchanged when replacing)."""
        return int(self.upsert_many([(key, shape)])[0])

    def upsert_many(self, items: Iterable[tuple[str, ZoneShape]]) -> np.ndarray:
        """Insert or replace many zones with one projection call per kind; return their slots."""
        items = list(items)
        circ = [i for i, (_, s) in enumerate(items) if s.kind == "circle"]
        poly = [i for i, (_, s) in enumerate(items) if s.kind != "circle"]
        parts: list[tuple[list[int], np.ndarray, np.ndarray]] = []
        if circ:
            lat = np.array([items[i][1].center[0] for i in circ], dtype=np.float64)  # type: ignore[index]
            lon = np.array([items[i][1].center[1] for i in circ], dtype=np.float64)  # type: ignore[index]
            rad = np.array([items[i][1].radius_m for i in circ], dtype=np.float64)
            cx, cy, r = self._project_circles(lon, lat, rad)
            bad = ~np.isfinite(cx + cy + r)
            if bad.any():
                names = [items[circ[int(j)]][1].zone_id for j in np.flatnonzero(bad)]
                raise GeoError(f"zones {names} cannot be projected to {self.projector.crs}")
            parts.append((circ, *circle_records(cx, cy, r)))
        if poly:
            lon, lat, ring_off, part_off, geom_off = ragged_polygons(
                [items[i][1].geometry for i in poly]
            )
            x, y = self.projector.forward_bulk(lon, lat)
            if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
                raise GeoError(f"some polygon zones cannot be projected to {self.projector.crs}")
            parts.append((poly, *polygon_records_ragged(x, y, ring_off, part_off, geom_off)))
        return self._store([k for k, _ in items], parts)

    def upsert_planar_many(self, items: Iterable[tuple[str, PlanarZone]]) -> np.ndarray:
        """Insert or replace zones given directly in projected metres.

        Each item is ``(key, polygon)`` or ``(key, (cx, cy, radius))``; used by
        tests and tools that already work in the planar CRS.
        """
        items = list(items)
        circ = [i for i, (_, g) in enumerate(items) if isinstance(g, tuple)]
        poly = [i for i, (_, g) in enumerate(items) if not isinstance(g, tuple)]
        parts: list[tuple[list[int], np.ndarray, np.ndarray]] = []
        if circ:
            c = np.array([items[i][1] for i in circ], dtype=np.float64).reshape(-1, 3)
            parts.append((circ, *circle_records(c[:, 0], c[:, 1], c[:, 2])))
        if poly:
            geoms = [g for i in poly if not isinstance(g := items[i][1], tuple)]
            parts.append((poly, *polygon_records(geoms)))
        return self._store([k for k, _ in items], parts)

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

    def _store(
        self, keys: list[str], parts: list[tuple[list[int], np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """Give each key a slot (replacement keeps it) and append the compiled records."""
        if len(set(keys)) != len(keys):
            raise GeoError("upsert: duplicate keys in one batch")
        rec_len = np.zeros(len(keys), dtype=np.int64)
        rec_src = np.zeros(len(keys), dtype=np.int64)  # offset within the concatenated buffer
        bufs = []
        base = 0
        for idx, buf, lens in parts:
            rec_len[idx] = lens
            rec_src[idx] = base + np.cumsum(lens) - lens
            bufs.append(buf)
            base += buf.shape[0]
        total = base
        if self._used + total > self.blob.shape[0]:
            new = _aligned_zeros(max(self._used + total, 2 * self.blob.shape[0], 1024))
            new[: self._used] = self.blob[: self._used]
            self.blob = new
        if total:
            self.blob[self._used : self._used + total] = np.concatenate(bufs)

        slot_of = self._slot_of
        out = np.fromiter((slot_of.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        new_idx = np.flatnonzero(out < 0)
        if len(new_idx):
            n_reuse = min(len(self._free), len(new_idx))
            reused = [self._free.pop() for _ in range(n_reuse)]
            fresh = list(range(self._n_slots, self._n_slots + len(new_idx) - n_reuse))
            self._n_slots += len(fresh)
            new_slots = np.array(reused + fresh, dtype=np.int64)
            out[new_idx] = new_slots
            slot_of.update(zip((keys[i] for i in new_idx), new_slots.tolist(), strict=True))
            self.slots_version += 1
        self.zoff = _grow1(self.zoff, self._n_slots, -1)
        self.zlen = _grow1(self.zlen, self._n_slots, 0)
        old = self.zoff[out] >= 0
        self._garbage += int(self.zlen[out][old].sum())
        self.zoff[out] = self._used + rec_src
        self.zlen[out] = rec_len
        self._used += total
        self._note_circles(out)
        self._maybe_compact()
        return out

    def _note_circles(self, slots: np.ndarray) -> None:
        """Keep the plain-number copy of the circles among freshly stored ``slots``."""
        off = self.zoff[slots]
        circle = self.blob[off] == kernels.KIND_CIRCLE
        for s in slots[~circle].tolist():
            self._circles.pop(s, None)
        if circle.any():
            o = off[circle]
            self._circles.update(zip(slots[circle].tolist(), zip(
                self.blob[o + 5].tolist(), self.blob[o + 6].tolist(), self.blob[o + 7].tolist(),
                strict=True,
            ), strict=True))

    def remove(self, key: str) -> None:
        """Remove a zone; its slot becomes free (``GeoError`` if absent)."""
        s = self.slot(key)
        self._circles.pop(s, None)
        self._garbage += int(self.zlen[s])
        self.zoff[s] = -1
        self.zlen[s] = 0
        del self._slot_of[key]
        self._free.append(s)
        self.slots_version += 1
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self._garbage > max(1 << 16, self._used // 2):
            self.compact()

    def compact(self) -> None:
        """Copy live records into a fresh array (slots unchanged, offsets renumbered)."""
        live = np.flatnonzero(self.zoff[: self._n_slots] >= 0)
        lens = self.zlen[live]
        new_off = np.cumsum(lens) - lens
        total = int(lens.sum())
        src = np.repeat(self.zoff[live] - new_off, lens) + np.arange(total)
        blob = _aligned_zeros(max(total, 1024))
        blob[:total] = self.blob[src]
        self.blob = blob
        self.zoff[live] = new_off
        self._used = total
        self._garbage = 0

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

        ``parallel=None`` uses the threaded kernel from ``PARALLEL_MIN_PAIRS``
        pairs.  Batches of ``LOCALITY_MIN_PAIRS`` or more are visited grouped
        by where their zone lives in memory (results stay in input order).
        """
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        x = np.ascontiguousarray(x, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        n = slots.shape[0]
        if slots.ndim != 1 or x.shape != (n,) or y.shape != (n,):
            raise GeoError(
                f"slots, x, y must be 1-D of equal length, got {slots.shape}, {x.shape}, {y.shape}"
            )
        if out is None:
            out = np.empty(n, dtype=np.float64)
        elif out.shape != (n,) or out.dtype != np.float64:
            raise GeoError("out must be a float64 array of the same length as slots")
        use_par = parallel if parallel is not None else n >= PARALLEL_MIN_PAIRS
        if n >= LOCALITY_MIN_PAIRS:
            # scratch in one numpy block, not allocated inside the kernel: numpy
            # advises large blocks as huge pages, whereas ~130 MB of Numba
            # allocations per 3 M pairs page-faulted 4 KiB at a time on every call
            scratch = np.empty(5 * n, dtype=np.float64)
            packed = scratch[: 4 * n].reshape(n, 4)
            offs = scratch[4 * n :].view(np.int64)
            start = np.empty((self.blob.shape[0] >> LOCALITY_SHIFT) + 3, dtype=np.int64)
            kernels.locality_pack(slots, x, y, self.zoff, LOCALITY_SHIFT, offs, start, packed)
            if use_par:
                flags = np.empty(n, dtype=np.uint8)
                kernels.signed_distance_batch_packed_parallel(packed, self.blob, out, flags)
                idx = np.flatnonzero(flags)
            else:
                listed = offs  # reused: its pages are already mapped
                k = kernels.signed_distance_batch_packed(
                    packed, self.blob, out, listed, LOCALITY_SHIFT
                )
                idx = np.sort(listed[:k])
        else:
            flags = np.empty(n, dtype=np.uint8)
            if use_par:
                kernels.signed_distance_batch_parallel(
                    slots, x, y, self.zoff, self.blob, out, flags
                )
            else:
                kernels.signed_distance_batch(slots, x, y, self.zoff, self.blob, out, flags)
            idx = np.flatnonzero(flags)
        if len(idx):
            s = slots[idx]
            valid = (s >= 0) & (s < self.zoff.shape[0])
            valid[valid] = self.zoff[s[valid]] >= 0
            bad = int(np.count_nonzero(~valid))
            if bad:
                raise GeoError(f"{bad} pair(s) refer to a free or unknown zone slot")
            kernels.resolve_exact(idx, slots, x, y, self.zoff, self.blob, out)
        return out

    def signed_distance_at(self, slot: int, x: float, y: float) -> float:
        """``signed_distance`` for one (slot, point) pair, on plain numbers.

        The engine asks about one fix against a handful of zones; building four
        one-element arrays per zone cost several times the kernel itself.  The
        same fast pass and exact second pass (``kernels.zone_signed_distance``),
        so the same number; a free or unknown slot raises ``GeoError`` as the
        batch does.
        """
        circle = self._circles.get(slot)
        if circle is not None:  # kernels.record_fast's arithmetic for a circle
            dx = x - circle[0]
            dy = y - circle[1]
            return math.sqrt(dx * dx + dy * dy) - circle[2]
        d = float(kernels.zone_signed_distance(slot, x, y, self.zoff, self.blob))
        if d != d and not (0 <= slot < self.zoff.shape[0] and self.zoff[slot] >= 0):
            raise GeoError("1 pair(s) refer to a free or unknown zone slot")
        return d

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
        bad = kernels.crossing_batch(slots, *arrs, self.zoff, self.blob, out)
        if bad:
            raise GeoError(f"{bad} pair(s) refer to a free or unknown zone slot")
        return out.view(np.bool_)
