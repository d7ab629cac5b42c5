"""``emguard demo``: the whole engine on embedded defaults, with a built-in scenario.

An offender (S-1, ankle monitor AM-1001) drives at 90 km/h through a banned
area, then towards the woman he is banned from approaching (P-1, victim
device VD-2001), who presses her panic button; he turns away.  Everything runs
here: an embedded broker, the engine service with in-memory state, a publisher
playing the scenario (device time runs ``speed`` times faster than the wall
clock, so the car moves at a real speed in device time), and a printer showing
each alert and message as it happens.  Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TextIO

import aiomqtt

from devices.timeutil import format_time
from engine.core.config import EngineConfig, ServiceConfig
from engine.core.effects import Effects
from engine.core.messages import Outgoing
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.runtime.broker import EmbeddedBroker
from engine.runtime.service import Service
from geo.projection import Projector

# Rotterdam, RD New metres: the victim's home, a banned square on the offender's way.
HOME = (94_000.0, 437_000.0)
BAN_CENTRE = (90_600.0, 436_700.0)
BAN_HALF = 150.0
START = (89_700.0, 436_700.0)
FIX_EVERY_S = 2.0  # the ankle monitor in pursuit-like mode; the victim device every 10 s


def demo_orders(now: float, projector: Projector) -> dict[str, Any]:
    """The demo's orders file (contract §4), valid from yesterday for 60 days."""

    def lonlat(x: float, y: float) -> list[float]:
        lon, lat = projector.inverse(x, y)
        return [round(float(lon), 7), round(float(lat), 7)]

    cx, cy = BAN_CENTRE
    ring = [lonlat(cx + dx, cy + dy) for dx, dy in
            ((-BAN_HALF, -BAN_HALF), (BAN_HALF, -BAN_HALF), (BAN_HALF, BAN_HALF), (-BAN_HALF, BAN_HALF))]
    res_lon, res_lat = lonlat(86_000.0, 440_000.0)
    return {
        "v": 1,
        "subjects": [{"id": "S-1", "devices": ["AM-1001"], "residence": {"lat": res_lat, "lon": res_lon}}],
        "protected_persons": [{"id": "P-1", "devices": ["VD-2001"]}],
        "orders": [{
            "id": "O-1", "subject": "S-1", "legal_basis": "vrijheidsbeperkende_maatregel",
            "valid_from": format_time(now - 86400), "valid_until": format_time(now + 60 * 86400),
            "exclusion_zones": [{"id": "Z-station", "polygon": [*ring, ring[0]]}],
            "proximity": [{"protected_person": "P-1", "alert_m": 400, "warn_m": 800, "critical_m": 100}],
        }],
    }


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted message: after ``at_s`` seconds, publish on ``topic``."""

    at_s: float
    topic: str
    build: Callable[[float], dict[str, Any]]


def scenario(projector: Projector, speed_mps: float = 25.0) -> list[Step]:
    """The built-in scenario in device seconds: a fix every 2 s from him, every 10 s from her."""
    path = [START, (BAN_CENTRE[0] + 600.0, BAN_CENTRE[1]), (HOME[0] - 90.0, HOME[1] - 40.0),
            (HOME[0] - 1200.0, HOME[1] + 2000.0)]
    points = list(_walk(path, speed_mps * FIX_EVERY_S))
    steps: list[Step] = []
    for i, (x, y) in enumerate(points):
        lon, lat = projector.inverse(x, y)
        steps.append(Step(i * FIX_EVERY_S, "em/dev/AM-1001/fix",
                          _fix("AM-1001", 1000 + i, float(lat), float(lon), 6.0, speed_mps)))
    vlon, vlat = projector.inverse(*HOME)
    end_s = len(points) * FIX_EVERY_S + 20
    for j in range(int(end_s // 10) + 1):
        steps.append(Step(j * 10.0 + 0.5, "em/dev/VD-2001/fix",
                          _fix("VD-2001", 5000 + j, float(vlat), float(vlon), 10.0, 0.0)))
    closest = min(range(len(points)), key=lambda k: math.dist(points[k], HOME))
    steps.append(Step(closest * FIX_EVERY_S + 0.7, "em/dev/VD-2001/event",
                      lambda t: {"v": 1, "device": "VD-2001", "seq": 9000, "t": format_time(t), "type": "panic", "detail": {}}))
    return sorted(steps, key=lambda s: s.at_s)


def _walk(path: list[tuple[float, float]], step_m: float) -> Iterator[tuple[float, float]]:
    for (x0, y0), (x1, y1) in pairwise(path):
        n = max(1, int(math.dist((x0, y0), (x1, y1)) // step_m))
        for k in range(n):
            yield (x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n)
    yield path[-1]


def _fix(device: str, seq: int, lat: float, lon: float, acc: float, spd: float) -> Callable[[float], dict[str, Any]]:
    def build(t: float) -> dict[str, Any]:
        return {"v": 1, "device": device, "seq": seq, "t": format_time(t), "lat": round(lat, 7),
                "lon": round(lon, 7), "acc": acc, "spd": spd, "src": "gnss", "batt": 80, "strap": "ok"}
    return build


_COLOURS = {"info": "\033[37m", "warning": "\033[33m", "alarm": "\033[31m", "critical": "\033[1;41;97m"}


def printer(out: TextIO, colour: bool) -> Callable[[Effects, float], None]:
    """A listener that prints each alert change and each victim/offender message as a line."""

    def paint(level: str, text: str) -> str:
        return f"{_COLOURS.get(level, '')}{text}\033[0m" if colour else text

    def show(effects: Effects, now: float) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(now))
        for change in effects.changes:
            a = change.alert
            dist = f" {a.distance_m:.0f} m" if a.distance_m is not None else ""
            who = (a.protected_person and f" {a.subject}→{a.protected_person}") or f" {a.subject or ''}"
            note = a.detail if change.change in ("raised", "level") else a.history[-1].note
            print(paint(a.level, f"{stamp} ALERT {a.level.upper():8s} {a.kind:12s} {a.state:12s}"
                  f"{who}{dist}  [{a.alert_id}] {note}"), file=out, flush=True)
        for m in effects.messages:
            if m.channel in ("victim", "subject", "device"):
                print(f"{stamp}   → {m.topic}: {_summary(m)}", file=out, flush=True)

    return show


def _summary(m: Outgoing) -> str:
    p = m.payload
    if m.channel == "victim":
        return f"{p.get('level')} '{p.get('message')}' {p.get('near', '')} {p.get('status', '')}".strip()
    if m.channel == "device":
        return f"set_interval {p.get('interval_s')} s"
    return f"{p.get('instruction')} ({p.get('level')})"


async def run_demo(
    *,
    once: bool = False,
    http_port: int | None = 8080,
    broker: str = "auto",
    out: TextIO = sys.stdout,
    speed: float = 4.0,
) -> Engine:
    """Run the demo; with ``once`` stop after the scenario has played and settled."""
    projector = Projector()
    now = time.time()
    doc = demo_orders(now, projector)
    book: OrderBook = load_orders(doc)
    # device time runs ahead of the wall clock when the scenario is sped up
    engine = Engine(book, EngineConfig(max_future_s=3600.0))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with EmbeddedBroker(prefer=broker) as info:
        print(f"emguard demo: {info.kind} broker at {info.url} (MQTT {info.protocol}), in-memory state", file=out)
        config = ServiceConfig(broker=info.url, client_id="emguard-demo-engine", http_port=http_port or 0)
        service = Service(engine, config, protocol=info.protocol, persistent_session=False)
        service.listeners.append(printer(out, colour=out.isatty()))
        server = await _start_http(service, http_port, out, doc)
        runner = asyncio.create_task(service.run(stop))
        try:
            await _play(info.url, info.protocol, projector, speed, stop)
            print("emguard demo: scenario played" + ("" if once else "; Ctrl-C to stop"), file=out, flush=True)
            if once:
                await asyncio.sleep(3.0)
                stop.set()
            await stop.wait()
        finally:
            stop.set()
            await runner
            if server is not None:
                await server.stop()
    return engine


async def _play(url: str, protocol: str, projector: Projector, speed: float, stop: asyncio.Event) -> None:
    from urllib.parse import urlparse

    u = urlparse(url)
    version = aiomqtt.ProtocolVersion.V5 if protocol == "5" else aiomqtt.ProtocolVersion.V311
    await asyncio.sleep(0.5)  # let the engine subscribe first
    async with aiomqtt.Client(u.hostname or "127.0.0.1", u.port or 1883, identifier="emguard-demo-devices",
                              protocol=version) as client:
        start, t0 = time.monotonic(), time.time()
        for step in scenario(projector):
            delay = start + step.at_s / speed - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            # device time runs `speed` times faster than the wall clock
            await client.publish(step.topic, json.dumps(step.build(t0 + step.at_s)), qos=1)


async def _start_http(service: Service, port: int | None, out: TextIO, doc: dict[str, Any]) -> Any:
    """Serve the operator console, API and metrics (demo: no tokens, bound to 127.0.0.1)."""
    if not port:
        return None
    from engine.web.server import HttpServer

    server = HttpServer(service, host="127.0.0.1", port=port, orders_doc=doc)
    await server.start()
    print(f"emguard demo: operator console at http://127.0.0.1:{port}/", file=out, flush=True)
    return server
