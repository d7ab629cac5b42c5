"""Run half of a seeded stream through the engine, in whichever build this tree imports.

A helper of tests/test_native_build.py, run as a script in the pure tree and in a compiled
copy (``benchmarks/native_tree.py``):

    python tests/native_probe.py first PARTS    # fresh engine, first half; store the state in PARTS
    python tests/native_probe.py second PARTS   # fresh engine restored from PARTS, second half

Each prints ``build=... digest=... effects=...``: the digest hashes every message and alert
change the engine produced (benchmarks/engine_core.py), so two builds that print the same
digest made the same decisions, and a second half that matches after a restore from the
other build's state shows that state moved between the builds intact.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from engine_core import T0, feed, messages_for, pinned_doc  # noqa: E402
from ingest import build_engine  # noqa: E402

from engine.tools.native import build_name  # noqa: E402

SUBJECTS, MESSAGES, SEED, RATE = 300, 4000, 11, 4000.0


def run(half: str, parts_path: Path) -> None:
    stream = messages_for(SUBJECTS, MESSAGES, SEED, RATE)
    cut = len(stream) // 2
    engine = build_engine(pinned_doc(SUBJECTS, SEED))
    if half == "second":
        engine.restore_parts(msgspec.msgpack.decode(parts_path.read_bytes(), type=list[bytes]))
        stream, start = stream[cut:], stream[cut - 1][2]
    else:
        stream, start = stream[:cut], T0
    h = hashlib.sha256()
    n = feed(engine, stream, start, h, drain=half == "second")
    if half == "first":
        delta = engine.state_delta()
        parts = [p for _, p in sorted(delta.parts.items()) if p is not None]
        parts_path.write_bytes(msgspec.msgpack.encode(parts))
    print(f"build={build_name()} digest={h.hexdigest()[:16]} effects={n}")


if __name__ == "__main__":
    run(sys.argv[1], Path(sys.argv[2]))
