"""Case-state commit cost (issue 22): bytes per stored part, encode and decode time per part.

Not a test: a seeded script.  It feeds the first 90 % of the engine-core benchmark's stream
(``benchmarks/engine_core.py``: ``--subjects`` subject/victim pairs, 6 messages per subject by
default, curfew active: curfew, exclusion and proximity alerts) through one in-process
``Engine``; operators then close a third of the alerts and acknowledge another third
(``work_alerts``), so that parts hold history and closed alerts have parts of their own.  Its
whole decision state is cut into the parts the service stores (``Engine.state_delta`` with
every case in it, as a fresh engine's first commit) and restored into a fresh engine
(``engine.core.case_state.merge_part`` per part, as ``restore_parts`` does).

Printed: the number of case parts and closed-alert parts (``A:{alert_id}``), their bytes
(mean, median, p99, max), and microseconds per part to encode (``state_delta``) and to decode
(``merge_part``), best of ``--repeat`` by this process's CPU time (the machine is shared),
with wall time beside it; the first encode apart (``_first``: nothing converted before to reuse,
engine.core.state_codec.RecordCache, as in a fresh engine's first commit).  Decoding makes a few hundred thousand objects while the engine's
heap is large, so the cyclic collector's full passes are most of its time: it is also timed
with the collector paused (the codec's own cost; ``emguard serve`` freezes its heap after
loading, engine.runtime.heap, so its restore should lie between the two: not measured here).  The
restored engine is checked to continue the stream with the same effects as the original (a
digest of the next messages on both).  Usage::

    .venv/bin/python benchmarks/state_commit.py                    # 10,000 subjects
    .venv/bin/python benchmarks/state_commit.py --subjects 2000    # quick
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_core import T0, feed, messages_for, pinned_doc  # noqa: E402
from ingest import build_engine  # noqa: E402

from engine.core import case_state  # noqa: E402
from engine.tools.native import build_name  # noqa: E402


def whole_delta(engine: Any) -> dict[str, bytes]:
    """Every stored part of the engine's state, as a fresh engine's first commit writes them."""
    engine._whole_state = True  # the next delta holds every case (a fresh engine's first commit)
    return {k: p for k, p in engine.state_delta().parts.items() if p is not None}


def work_alerts(engine: Any, now: float) -> None:
    """Operators at work: of the alerts in id order, every third closed (acknowledged, a note,
    closed with an outcome), every third claimed and acknowledged, the rest left open."""
    for i, alert_id in enumerate(sorted(engine.alerts.alerts)):
        if i % 3 == 0:
            engine.act(alert_id, "ack", "op-1", "calling him", now)
            engine.act(alert_id, "note", "op-1", "he says he is on his way home", now + 1)
            engine.act(alert_id, "close", "op-1", "went home", now + 2, outcome="subject_contacted")
        elif i % 3 == 1:
            engine.act(alert_id, "claim", "op-2", "", now)
            engine.act(alert_id, "ack", "op-2", "on it", now + 1)


def _stats(sizes: list[int]) -> str:
    if not sizes:
        return "n=0"
    ordered = sorted(sizes)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"n={len(sizes)} mean={statistics.fmean(sizes):.0f} median={statistics.median(sizes):.0f} "
        f"p99={p99} max={ordered[-1]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=0, help="default: 6 per subject")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=4000.0, help="virtual arrival rate, msg/s")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"build={build_name()}", flush=True)
    messages = args.messages or 6 * args.subjects
    doc = pinned_doc(args.subjects, args.seed)
    stream = messages_for(args.subjects, messages, args.seed, args.rate)
    cut = 9 * len(stream) // 10  # the state after 90 % of the stream; the rest checks the restore
    engine = build_engine(doc)
    feed(engine, stream[:cut], T0, None, drain=False)
    work_alerts(engine, stream[cut - 1][2])
    alerts = engine.alerts.alerts
    print(
        f"subjects={args.subjects} messages={cut} tracks={len(engine.tracks)} alerts={len(alerts)} "
        f"open={sum(a.is_open for a in alerts.values())} "
        f"history_entries={sum(len(a.history) for a in alerts.values())}",
        flush=True,
    )

    gc.collect()
    encode: list[tuple[float, float]] = []
    parts: dict[str, bytes] = {}
    for _ in range(args.repeat):
        c0, w0 = time.process_time(), time.perf_counter()
        parts = whole_delta(engine)
        encode.append((time.process_time() - c0, time.perf_counter() - w0))
    blobs = [parts[k] for k in sorted(parts)]
    decode: list[tuple[float, float]] = []
    decode_no_gc: list[float] = []
    restored: Any = None
    for paused in [False] * args.repeat + [True] * args.repeat:
        restored = build_engine(doc)
        gc.collect()
        if paused:
            gc.disable()
        c0, w0 = time.process_time(), time.perf_counter()
        for blob in blobs:
            case_state.merge_part(restored, blob)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        gc.enable()
        if paused:
            decode_no_gc.append(cpu)
        else:
            decode.append((cpu, wall))
    restored.drop_indexes()
    restored._index_alerts()  # what restore_parts does after merging (untimed: not the codec)
    restored._whole_state = False

    case_sizes = [len(p) for k, p in parts.items() if not k.startswith("A:")]
    alert_sizes = [len(p) for k, p in parts.items() if k.startswith("A:")]
    total = sum(map(len, blobs))
    n = len(blobs)
    enc_cpu, enc_wall = min(encode)
    dec_cpu, dec_wall = min(decode)
    print(f"case_parts {_stats(case_sizes)}")
    print(f"closed_alert_parts {_stats(alert_sizes)}")
    print(f"all_parts n={n} total_bytes={total}")
    print(f"encode_whole_s cpu={enc_cpu:.3f} wall={enc_wall:.3f}")
    print(f"decode_whole_s cpu={dec_cpu:.3f} wall={dec_wall:.3f} cpu_collector_paused={min(decode_no_gc):.3f}")

    rest = stream[cut:]
    digests = []
    for e in (engine, restored):
        h = hashlib.sha256()
        feed(e, rest, rest[0][2], h, drain=True)
        digests.append(h.hexdigest()[:16])
    print(f"continue_digest original={digests[0]} restored={digests[1]}")
    assert digests[0] == digests[1], "the restored engine decided differently"
    print(f"state_bytes_per_part={total / n:.0f}")
    print(f"state_encode_us_per_part={1e6 * enc_cpu / n:.1f}")
    # the first encode had no conversions to reuse (engine.core.state_codec.RecordCache)
    print(f"state_encode_us_per_part_first={1e6 * encode[0][0] / n:.1f}")
    print(f"state_decode_us_per_part_collector_paused={1e6 * min(decode_no_gc) / n:.1f}")
    print(f"state_decode_us_per_part={1e6 * dec_cpu / n:.1f}")


if __name__ == "__main__":
    main()
