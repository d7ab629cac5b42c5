"""``emguard replay``: a trace through the same engine, in-process, no broker, same bytes every run.

Processing time is the trace's arrival time, so reorder buffers, deadlines and
"late" marks behave as they did (or would have) live; between messages the
engine is ticked at a fixed step of trace time, so timers fire at the same
points on every run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devices.timeutil import parse_time
from engine.core.config import EngineConfig
from engine.core.effects import Effects
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.errors import EngineError
from engine.evidence import Chain, attach, open_log

TICK_S = 1.0


class TraceError(EngineError):
    """A trace line that is not the contract §7 form."""


def read_trace(path: str | Path) -> Iterator[tuple[float, str, bytes]]:
    """(arrival, topic, payload bytes) per line; a broken line names its line number."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                arrival = parse_time(rec["arrival"])
                topic = str(rec["topic"])
                payload = rec["payload"]
            except (ValueError, KeyError, TypeError) as exc:
                raise TraceError(f"{path}:{n}: not a trace line ({exc})") from exc
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            yield arrival, topic, raw


def replay_messages(
    messages: Iterator[tuple[float, str, bytes]] | list[tuple[float, str, bytes]],
    book: OrderBook,
    config: EngineConfig | None = None,
    *,
    include_messages: bool = False,
    evidence: Chain | None = None,
) -> list[dict[str, Any]]:
    """Run messages through a fresh engine; return alert state changes in contract §5 form.

    With ``evidence`` every evaluated fix and every change is appended to that hash chain.
    """
    engine = Engine(book, config)
    out: list[dict[str, Any]] = []
    listen = attach(engine, evidence) if evidence is not None else None
    now = 0.0

    def collect(effects: Effects) -> None:
        if listen is not None:
            listen(effects, now)
        for change in effects.changes:
            out.append(change.alert.to_wire())
        if include_messages:
            out.extend(
                {"_channel": m.channel, "_topic": m.topic, **m.payload}
                for m in effects.messages
                if m.channel != "centre"
            )

    clock: float | None = None
    last = 0.0
    for arrival, topic, payload in messages:
        if clock is None:
            clock = arrival
        while clock + TICK_S <= arrival:
            clock += TICK_S
            now = clock
            collect(engine.tick(clock))
        now = arrival
        collect(engine.handle(topic, payload, arrival))
        last = max(last, arrival)
    if clock is not None:
        end = last + engine.config.rules.reorder_max_hold_s + TICK_S
        now = end
        collect(engine.flush(end))
        collect(engine.tick(end))
    return out


def replay_trace(
    trace_path: str | Path,
    orders_path: str | Path,
    config: EngineConfig | None = None,
    *,
    evidence_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Replay a trace file against an orders file (the simulator's suite calls this)."""
    messages = list(read_trace(trace_path))
    book = load_orders(orders_path)
    if evidence_path is None:
        return replay_messages(messages, book, config)
    chain = Chain(open_log(evidence_path))
    try:
        return replay_messages(messages, book, config, evidence=chain)
    finally:
        chain.close()


def write_alerts(alerts: list[dict[str, Any]], out: str | Path) -> None:
    """One alert state change per line, stable key order, so runs compare byte for byte."""
    with open(out, "w", encoding="utf-8") as fh:
        for a in alerts:
            fh.write(json.dumps(a, sort_keys=True, separators=(",", ":")) + "\n")
