"""Image build step: compile and cache every Numba kernel the engine uses, then prove it.

Numba compiles a kernel the first time it is called with a given type
signature; with ``cache=True`` the machine code is written to
``NUMBA_CACHE_DIR``.  Importing ``geo.kernels`` alone compiles nothing, so the
warm-up replays a small trace (an offender approaching a victim, entering her
home zone, opening his strap, an OwnTracks phone) through the real engine
pipeline: every kernel is compiled with exactly the types production uses,
and the first fix after a container start does not wait for the compiler.

Exit code 1 (failing the image build) when the replay raises no alert or no
kernel signature was compiled: an image whose engine cannot replay is broken.

Usage: python warmup.py TRACE.jsonl ORDERS.json
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def compiled_signatures() -> int:
    """How many (kernel, type signature) pairs are compiled or loaded from the cache."""
    import geo.kernels

    count = 0
    for info in pkgutil.iter_modules(geo.kernels.__path__, "geo.kernels."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            signatures = getattr(obj, "signatures", None)
            if isinstance(signatures, list):
                count += len(signatures)
    return count


def main(argv: list[str]) -> int:
    """Replay the warm-up trace, report alerts, kernel signatures and time; non-zero on failure."""
    if len(argv) != 2:
        print("usage: warmup.py TRACE.jsonl ORDERS.json", file=sys.stderr)
        return 2
    from engine.runtime.replay import replay_trace

    trace, orders = Path(argv[0]), Path(argv[1])
    started = time.perf_counter()
    alerts = replay_trace(trace, orders)
    elapsed = time.perf_counter() - started
    signatures = compiled_signatures()
    print(f"warm-up: {len(alerts)} alert changes, {signatures} kernel signatures, {elapsed:.1f} s")
    if not alerts or signatures == 0:
        print("warm-up failed: the replay raised no alert or compiled no kernel", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
