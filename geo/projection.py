"""WGS84 lon/lat <-> projected metres, with one cached pyproj transformer per CRS.

All geometry in the hot path is planar: fixes and zones are projected once
into a conformal CRS whose scale error is small where we work (RD New in the
Netherlands: < 1e-4; UTM within its zone: < 4e-4), so Euclidean distances in
the projection are metres to well under 0.1 %.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, cast, overload

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from .errors import GeoError

RD_NEW = "EPSG:28992"
BULK_MIN_POINTS = 1_000_000  # forward_bulk splits over threads from this many points

_local = threading.local()


@lru_cache(maxsize=32)
def _transformers(crs: str) -> tuple[Transformer, Transformer]:
    try:
        target = CRS.from_user_input(crs)
    except CRSError as exc:
        raise GeoError(f"unknown CRS {crs!r}: {exc}") from exc
    if not target.is_projected:
        raise GeoError(f"CRS {crs!r} is not a projected CRS in metres")
    fwd = Transformer.from_crs("EPSG:4326", target, always_xy=True)
    inv = Transformer.from_crs(target, "EPSG:4326", always_xy=True)
    return fwd, inv


def utm_epsg(lon: float, lat: float) -> str:
    """EPSG code of the WGS84 UTM zone for a point (with the Norway/Svalbard exceptions)."""
    if not (-180.0 <= lon <= 180.0 and -80.0 <= lat <= 84.0):
        raise GeoError(f"no UTM zone for lon={lon}, lat={lat} (UTM covers -80..84 latitude)")
    zone = int((lon + 180.0) // 6.0) + 1
    zone = min(zone, 60)
    if 56.0 <= lat < 64.0 and 3.0 <= lon < 12.0:
        zone = 32
    elif 72.0 <= lat <= 84.0 and lon >= 0.0:
        if lon < 9.0:
            zone = 31
        elif lon < 21.0:
            zone = 33
        elif lon < 33.0:
            zone = 35
        elif lon < 42.0:
            zone = 37
    return f"EPSG:{(32600 if lat >= 0.0 else 32700) + zone}"


class Projector:
    """Projects WGS84 lon/lat to planar metres and back in one fixed CRS.

    The pyproj ``Transformer`` pair is built once per CRS and shared by all
    projectors of that CRS (``always_xy=True``: arguments are lon, lat).
    """

    __slots__ = ("_fwd", "_inv", "crs")

    def __init__(self, crs: str = RD_NEW) -> None:
        self.crs = crs
        self._fwd, self._inv = _transformers(crs)

    @classmethod
    def auto_for(cls, lon: float, lat: float) -> Projector:
        """A projector in the local UTM zone (EPSG:326xx north / 327xx south)."""
        return cls(utm_epsg(lon, lat))

    def __repr__(self) -> str:
        return f"Projector({self.crs!r})"

    @overload
    def forward(self, lon: float, lat: float) -> tuple[float, float]: ...
    @overload
    def forward(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def forward(self, lon: Any, lat: Any) -> tuple[Any, Any]:
        """lon/lat degrees (floats or arrays) -> x/y metres."""
        if np.isscalar(lon) and np.isscalar(lat):
            x, y = self._fwd.transform(float(cast(float, lon)), float(cast(float, lat)))
            return float(x), float(y)
        x, y = self._fwd.transform(
            np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        )
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def forward_bulk(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``forward`` for millions of points (index builds): split over up to 2 threads.

        pyproj releases the GIL while transforming; each thread uses its own
        transformer (they are not shared across threads).  Same results as ``forward``.
        """
        lon = np.ascontiguousarray(lon, dtype=np.float64)
        lat = np.ascontiguousarray(lat, dtype=np.float64)
        n = lon.shape[0]
        workers = min(2, os.cpu_count() or 1)
        if n < BULK_MIN_POINTS or workers < 2:
            return self.forward(lon, lat)
        x = np.empty(n)
        y = np.empty(n)
        bounds = np.linspace(0, n, workers + 1).astype(int)

        def work(k: int) -> None:
            cache = _local.__dict__.setdefault("fwd", {})
            tr = cache.get(self.crs)
            if tr is None:
                tr = cache[self.crs] = Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
            a, b = bounds[k], bounds[k + 1]
            x[a:b], y[a:b] = tr.transform(lon[a:b], lat[a:b])

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, range(workers)))
        return x, y

    @overload
    def inverse(self, x: float, y: float) -> tuple[float, float]: ...
    @overload
    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def inverse(self, x: Any, y: Any) -> tuple[Any, Any]:
        """x/y metres (floats or arrays) -> lon/lat degrees."""
        if np.isscalar(x) and np.isscalar(y):
            lon, lat = self._inv.transform(float(cast(float, x)), float(cast(float, y)))
            return float(lon), float(lat)
        lon, lat = self._inv.transform(
            np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        )
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def project_geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        """A lon/lat shapely geometry -> the same geometry in projected metres (vectorised)."""

        def _fwd(coords: np.ndarray) -> np.ndarray:
            x, y = self._fwd.transform(coords[:, 0], coords[:, 1])
            return np.column_stack((x, y))

        out = shapely.transform(geom, _fwd)
        if not np.all(np.isfinite(shapely.get_coordinates(out))):
            raise GeoError(f"geometry cannot be projected to {self.crs} (outside its area)")
        return out

    def unproject_geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        """A projected shapely geometry -> lon/lat (for display)."""

        def _inv(coords: np.ndarray) -> np.ndarray:
            lon, lat = self._inv.transform(coords[:, 0], coords[:, 1])
            return np.column_stack((lon, lat))

        return shapely.transform(geom, _inv)

    def scale_at(self, lon: float, lat: float, probe_m: float = 100.0) -> float:
        """Projected metres per true metre near (lon, lat), measured over ``probe_m``."""
        from .geodesy import geodesic_destination

        x0, y0 = self.forward(lon, lat)
        total = 0.0
        for az in (0.0, 90.0, 180.0, 270.0):
            lon1, lat1 = geodesic_destination(lat, lon, az, probe_m)
            x1, y1 = self.forward(lon1, lat1)
            total += math.hypot(x1 - x0, y1 - y0)
        return total / (4.0 * probe_m)
