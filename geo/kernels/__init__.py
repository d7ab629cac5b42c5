"""Numba kernels: every ``@njit`` function of emguard and nothing else.

numpy, numba (with its llvmlite backend) and math only: a test checks that
importing this package does not import shapely or pyproj.  Flat float64 arrays
in projected metres plus int64 offsets; batch kernels write into caller-given
``out`` arrays; ``*_parallel`` variants use ``prange``.  Each kernel's
docstring gives its layout, units and boundary convention.
"""

from .predicates import orient, orient_exact, segment_distance2, segments_touch
from .proximity import (
    MIN_CLOSING_MPS,
    assess_pair,
    assess_pairs_batch,
    assess_pairs_batch_parallel,
    predict_track,
)
from .zones import (
    ALIGN,
    BLOCK_EDGES,
    BLOCK_SIZE,
    BOX_SIZE,
    FLAG_BAD_SLOT,
    FLAG_EXACT,
    FLAG_OK,
    HEADER,
    KIND_CIRCLE,
    KIND_EMPTY,
    KIND_POLYGON,
    crossing_batch,
    exact_side,
    locality_pack,
    locate_exact,
    polygon_fast,
    record_fast,
    resolve_exact,
    signed_distance_batch,
    signed_distance_batch_packed,
    signed_distance_batch_packed_parallel,
    signed_distance_batch_parallel,
    write_polygon_records,
    zone_fast,
    zone_segment_touches,
    zone_signed_distance,
)

__all__ = [
    "ALIGN",
    "BLOCK_EDGES",
    "BLOCK_SIZE",
    "BOX_SIZE",
    "FLAG_BAD_SLOT",
    "FLAG_EXACT",
    "FLAG_OK",
    "HEADER",
    "KIND_CIRCLE",
    "KIND_EMPTY",
    "KIND_POLYGON",
    "MIN_CLOSING_MPS",
    "assess_pair",
    "assess_pairs_batch",
    "assess_pairs_batch_parallel",
    "crossing_batch",
    "exact_side",
    "locality_pack",
    "locate_exact",
    "orient",
    "orient_exact",
    "polygon_fast",
    "predict_track",
    "record_fast",
    "resolve_exact",
    "segment_distance2",
    "segments_touch",
    "signed_distance_batch",
    "signed_distance_batch_packed",
    "signed_distance_batch_packed_parallel",
    "signed_distance_batch_parallel",
    "write_polygon_records",
    "zone_fast",
    "zone_segment_touches",
    "zone_signed_distance",
]
