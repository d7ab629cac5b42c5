"""Engine core throughput without a broker (issue 10): ``Engine.handle`` + periodic ``Engine.tick``.

Feeds the seeded message stream of ``benchmarks/ingest.py`` (same scenario and
generator functions) straight into one in-process ``Engine`` on a virtual clock:
message ``j`` arrives at ``T0 + j / rate`` with its device time 5 ms earlier, and
``tick`` runs every 0.2 s of that clock (as ``engine.runtime.service`` does in wall time).
The orders' validity is pinned to ``T0`` (not the wall clock), so a run's decisions
are the same every time and on every machine: the last lines print a digest of every
effect (messages and alert changes) that a code change must not alter.

Rates are messages per second of this process's CPU time (the machine is shared),
best of ``--repeat`` runs; wall time is printed next to it.  Usage::

    .venv/bin/python benchmarks/engine_core.py                      # 2,000 and 10,000 subjects
    .venv/bin/python benchmarks/engine_core.py --subjects 10000 --messages 60000
    .venv/bin/python benchmarks/engine_core.py --subjects 2000 --profile 25   # cProfile top 25
    .venv/bin/python benchmarks/engine_core.py --gc-freeze    # heap frozen after the build, as serve
    .venv/bin/python benchmarks/engine_core.py --day          # outside the curfew: fewer alerts
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import pstats
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import build_engine, build_scenario, build_stream  # noqa: E402

from devices.timeutil import format_time, parse_time  # noqa: E402
from engine.tools.native import build_name  # noqa: E402

T0 = parse_time("2026-11-24T21:30:00Z")  # 22:30 in Amsterdam: the night curfews are active
TICK_S = 0.2
BATCH = 64  # engine.runtime.service.BATCH


DAY_CURFEW = ("00:30", "08:30")  # starts 2 h after T0 (Amsterdam time), as ingest.py's day runs


def pinned_doc(subjects: int, seed: int, day: bool = False) -> dict[str, Any]:
    """The benchmark's orders, valid from a day before ``T0`` for 60 days (not from the wall clock).

    By default ``T0`` falls inside the subjects' 22:00-06:00 curfew (most wanderers breach
    it: an alert-heavy stream); ``day`` moves the curfew so that the run is outside it.
    """
    doc = (build_scenario(subjects, seed, DAY_CURFEW) if day else build_scenario(subjects, seed)).doc
    for order in doc["orders"]:
        order["valid_from"] = format_time(T0 - 86_400)
        order["valid_until"] = format_time(T0 + 60 * 86_400)
    return doc


def messages_for(subjects: int, messages: int, seed: int, rate: float) -> list[tuple[str, bytes, float]]:
    """(topic, payload, arrival) on the virtual clock."""
    out = []
    for j, (topic, head, tail) in enumerate(build_stream(subjects, messages, seed)):
        arrival = T0 + j / rate
        stamp = format_time(arrival - 0.005)
        out.append((topic, head + f'"{stamp}"'.encode() + tail, arrival))
    return out


def _digest(h: Any, effects: Any) -> int:
    for m in effects.messages:
        h.update(repr((m.channel, m.topic, sorted(m.payload.items()))).encode())
    for c in effects.changes:
        h.update(repr(c).encode())
    return len(effects.messages) + len(effects.changes)


def feed(
    engine: Any, stream: list[tuple[str, bytes, float]], start: float, h: Any, *, drain: bool
) -> int:
    """The stream through ``engine.handle`` (each ``BATCH`` messages ``engine.prepare``-d first,
    as the service does), with ``tick`` every ``TICK_S`` of the virtual clock from ``start``; with ``drain``, ticks go on for 5 s after the last message (the reorder
    buffers drain on later ticks, as in the service).  Effects are hashed into ``h`` unless it
    is None; returns how many were."""
    n_effects = 0
    next_tick = start + TICK_S
    for j, (topic, payload, arrival) in enumerate(stream):
        if j % BATCH == 0:  # as the service takes a micro-batch: decoded and projected ahead
            engine.prepare([(t, p, a) for t, p, a in stream[j : j + BATCH]])
        while arrival >= next_tick:
            fx = engine.tick(next_tick)
            if h is not None:
                n_effects += _digest(h, fx)
            next_tick += TICK_S
        fx = engine.handle(topic, payload, arrival)
        if h is not None:
            n_effects += _digest(h, fx)
    if drain:
        end = stream[-1][2] + 5.0
        while next_tick <= end:
            fx = engine.tick(next_tick)
            if h is not None:
                n_effects += _digest(h, fx)
            next_tick += TICK_S
    return n_effects


def run_once(
    doc: dict[str, Any],
    stream: list[tuple[str, bytes, float]],
    digest: bool,
    prof: cProfile.Profile | None = None,
    freeze: bool = False,
) -> tuple[float, float, str, int, Any]:
    engine = build_engine(doc)
    h = hashlib.sha256()
    gc.collect()
    if freeze:
        gc.freeze()  # as ``emguard serve`` does once the orders are loaded
    if prof is not None:
        prof.enable()
    c0, w0 = time.process_time(), time.perf_counter()
    n_effects = feed(engine, stream, T0, h if digest else None, drain=True)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if prof is not None:
        prof.disable()
    if freeze:
        gc.unfreeze()
    return cpu, wall, h.hexdigest()[:16], n_effects, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, action="append", help="default: 2000 and 10000")
    parser.add_argument("--messages", type=int, default=0, help="default: max(20000, 6 per subject)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=4000.0, help="virtual arrival rate, msg/s")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", type=int, default=0, help="cProfile, print the top N (cumulative and own)")
    parser.add_argument("--no-digest", action="store_true")
    parser.add_argument("--day", action="store_true", help="curfew moved so the run is outside it")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after building the engine, as emguard serve"
    )
    args = parser.parse_args()
    # warm the JIT (and the Numba cache) outside the timed runs
    print(f"build={build_name()}", flush=True)  # engine.tools.native: pure or compiled modules
    warm_doc = pinned_doc(10, args.seed)
    run_once(warm_doc, messages_for(10, 200, args.seed, args.rate), digest=False)
    for subjects in args.subjects or [2_000, 10_000]:
        messages = args.messages or max(20_000, 6 * subjects)
        doc = pinned_doc(subjects, args.seed, args.day)
        stream = messages_for(subjects, messages, args.seed, args.rate)
        best = None
        for _ in range(args.repeat):
            prof = cProfile.Profile() if args.profile else None
            cpu, wall, dig, n_eff, engine = run_once(doc, stream, not args.no_digest, prof, args.gc_freeze)
            if prof is not None:
                for key in ("cumulative", "tottime"):
                    pstats.Stats(prof).sort_stats(key).print_stats(args.profile)
            if best is None or cpu < best[0]:
                best = (cpu, wall)
            s = engine.stats
            print(
                f"subjects={subjects} messages={messages} cpu_s={cpu:.2f} wall_s={wall:.2f} "
                f"fixes={s.fixes} evaluated={s.evaluated} rejected={sum(s.rejected.values())} "
                f"alerts={len(engine.alerts.alerts)} effects={n_eff} digest={dig}",
                flush=True,
            )
        assert best is not None
        print(f"engine_core_{subjects}_msgs_per_cpu_s={messages / best[0]:.0f}")
        print(f"engine_core_{subjects}_msgs_per_wall_s={messages / best[1]:.0f}")


if __name__ == "__main__":
    main()
