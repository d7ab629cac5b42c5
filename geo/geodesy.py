"""Ellipsoidal (WGS84) reference computations: used for checks, tests and circle outlines.

The hot path never calls these; they are the truth the planar kernels are
measured against.
"""

from __future__ import annotations

import numpy as np
from pyproj import Geod

WGS84 = Geod(ellps="WGS84")


def geodesic_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance in metres between two WGS84 points (Karney's algorithm)."""
    _, _, dist = WGS84.inv(lon1, lat1, lon2, lat2)
    return float(dist)


def geodesic_destination(
    lat: float, lon: float, azimuth_deg: float, dist_m: float
) -> tuple[float, float]:
    """(lon, lat) reached from (lat, lon) after ``dist_m`` metres on ``azimuth_deg``."""
    lon2, lat2, _ = WGS84.fwd(lon, lat, azimuth_deg, dist_m)
    return float(lon2), float(lat2)


def geodesic_circle(
    lat: float, lon: float, radius_m: float, n: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Open ring (lon, lat arrays, counter-clockwise) of n points at ``radius_m`` around a centre."""
    az = np.linspace(360.0, 0.0, n, endpoint=False)  # decreasing azimuth = counter-clockwise
    lons, lats, _ = WGS84.fwd(np.full(n, lon), np.full(n, lat), az, np.full(n, float(radius_m)))
    return np.asarray(lons, dtype=np.float64), np.asarray(lats, dtype=np.float64)
