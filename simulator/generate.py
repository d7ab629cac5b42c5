"""``emguard simulate``: a scenario file in, a trace, its ground truth and its orders file out.

Pipeline: parse the scenario, build the orders (validated by the engine's
loader), walk everyone's routine, apply the event library, compute the ground
truth from the noise-free paths, sample every device and deliver its
messages.  The same scenario and seed give the same bytes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from devices.timeutil import format_time
from simulator.delivery import deliver
from simulator.events import apply_events
from simulator.oracle import compute_truth
from simulator.orders_doc import build_orders_doc, load_book, zone_geometries
from simulator.paths import Path
from simulator.routines import base_path
from simulator.sampling import sample_device
from simulator.scenario import Scenario, load_scenario
from simulator.trace import TraceMessage, sort_by_arrival, write_trace
from simulator.truth import Episode, distance_pieces, write_truth
from simulator.world import DeviceScript, World


@dataclass(frozen=True, slots=True)
class Generated:
    """Everything a scenario produced, in memory."""

    scenario: Scenario
    messages: list[TraceMessage]
    truth: list[Episode]
    orders: dict[str, Any]
    paths: Mapping[str, Path]
    closest_m: Mapping[str, float]  # "order/protected person" -> closest true distance over the run


@dataclass(frozen=True, slots=True)
class Summary:
    """What ``simulate`` wrote, for the command line and for tests."""

    scenario: str
    seed: int
    start: str
    end: str
    messages: int
    fixes: int
    events: int
    bursts: int
    devices: tuple[str, ...]
    episodes: Mapping[str, int]
    closest_m: Mapping[str, float]
    trace_path: str
    truth_path: str
    orders_path: str | None

    def text(self) -> str:
        """A few readable lines for the terminal."""
        eps = ", ".join(f"{k} {v}" for k, v in sorted(self.episodes.items())) or "none"
        close = ", ".join(f"{k} {v:.0f} m" for k, v in sorted(self.closest_m.items())) or "-"
        return (
            f"scenario {self.scenario} (seed {self.seed}), {self.start} .. {self.end}\n"
            f"  {self.messages} messages ({self.fixes} fixes, {self.events} events, {self.bursts} bursts) "
            f"from {len(self.devices)} devices -> {self.trace_path}\n"
            f"  true episodes: {eps} -> {self.truth_path}\n"
            f"  closest true approach: {close}"
            + (f"\n  orders -> {self.orders_path}" if self.orders_path else "")
        )


def generate(sc: Scenario) -> Generated:
    """Run the whole pipeline for a parsed scenario (no files)."""
    orders = build_orders_doc(sc)
    book = load_book(orders)
    devices = [p.device for p in sc.people]
    world = World(
        sc, book, zone_geometries(book, sc.projector), {}, {d: DeviceScript() for d in devices}
    )
    for person in sc.people:
        world.paths[person.id] = base_path(person, sc, world.rng("routine", person.id))
    apply_events(world)
    truth = compute_truth(world)
    messages: list[TraceMessage] = []
    for dev in devices:
        messages += deliver(world, dev, sample_device(world, dev))
    return Generated(
        sc, sort_by_arrival(messages), truth, orders, dict(world.paths), _closest(world)
    )


def simulate(
    scenario_path: str | FilePath,
    out: str | FilePath,
    truth: str | FilePath,
    orders_out: str | FilePath | None = None,
    seed: int | None = None,
) -> Summary:
    """Generate a scenario file's trace (``out``), ground truth and, if asked, its orders file."""
    g = generate(load_scenario(scenario_path, seed))
    write_trace(g.messages, out)
    write_truth(g.truth, truth)
    if orders_out is not None:
        FilePath(orders_out).write_text(json.dumps(g.orders, indent=2) + "\n", encoding="utf-8")
    return summarize(g, str(out), str(truth), None if orders_out is None else str(orders_out))


def summarize(g: Generated, trace_path: str, truth_path: str, orders_path: str | None) -> Summary:
    """Counts and closest approaches of a generated scenario."""
    fixes = events = bursts = 0
    for m in g.messages:
        if m.topic.endswith("/fix"):
            if isinstance(m.payload, list):
                bursts += 1
                fixes += len(m.payload)
            else:
                fixes += 1
        else:
            events += 1
    return Summary(
        scenario=g.scenario.name,
        seed=g.scenario.seed,
        start=format_time(g.scenario.start),
        end=format_time(g.scenario.end),
        messages=len(g.messages),
        fixes=fixes,
        events=events,
        bursts=bursts,
        devices=tuple(p.device for p in g.scenario.people),
        episodes=dict(Counter(e.kind for e in g.truth)),
        closest_m=dict(g.closest_m),
        trace_path=trace_path,
        truth_path=truth_path,
        orders_path=orders_path,
    )


def _closest(world: World) -> dict[str, float]:
    out = {}
    for oid in sorted(world.book.orders):
        order = world.book.orders[oid]
        s = world.paths[order.subject]
        for rule in order.proximity:
            v = world.paths[rule.protected_person]
            p = distance_pieces(s.t, s.x, s.y, v.t, v.x, v.y, 0.0, world.sc.start, world.sc.end)
            out[f"{oid}/{rule.protected_person}"] = float(p.dmin.min()) if p.dmin.size else math.nan
    return out
