"""Shared Numba settings for every kernel, defined once.

``cache=True`` keeps compile time out of CLI start-up and test runs after the
first call; ``nogil=True`` lets the engine run a kernel in a worker thread
without blocking the event loop; ``fastmath=False`` because the kernels rely on
IEEE comparisons and NaN semantics (a re-associated orientation test is no
longer exact).

The hot geofence kernels are compiled without Numba's runtime (``_nrt=False``):
they never allocate, and without the runtime no array reference counting is
emitted inside their loops (measured here: it cost ~40 ns per zone check).
Work that needs allocation (the exact predicates) runs in a second pass in
ordinary ``jit`` kernels.
"""

from __future__ import annotations

from numba import njit

jit = njit(cache=True, nogil=True, fastmath=False)
"""Decorator for kernels and helpers that may allocate (exact predicates, cold paths)."""

hot = njit(cache=True, nogil=True, fastmath=False, _nrt=False)
"""Decorator for allocation-free hot kernels and their helpers."""

phot = njit(cache=True, nogil=True, fastmath=False, _nrt=False, parallel=True)
"""``hot`` with ``prange``: the threaded variants of the batch kernels."""

pjit = njit(cache=True, nogil=True, fastmath=False, parallel=True)
"""``jit`` with ``prange``."""
