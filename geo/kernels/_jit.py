"""Shared Numba settings for every kernel, defined once.

``cache=True`` keeps compile time out of CLI start-up and test runs after the
first call; ``nogil=True`` lets the engine run a kernel in a worker thread
without blocking the event loop; ``fastmath=False`` because the kernels rely on
IEEE comparisons and NaN semantics (a re-associated orientation test is no
longer exact).
"""

from __future__ import annotations

from numba import njit

jit = njit(cache=True, nogil=True, fastmath=False)
"""Decorator for serial kernels."""

pjit = njit(cache=True, nogil=True, fastmath=False, parallel=True)
"""Decorator for the ``prange`` variants of the batch kernels."""
