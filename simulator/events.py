"""The event library: composable things that happen in a scenario.

Movement events (here) bend a person's true path for a while and then rejoin
what they would otherwise have done (``"then": "rejoin"``, the default) or
stay where they ended (``"then": "stay"``): ``trip``, ``approach``,
``passby``, ``exclusion_breach``, ``edge_nearmiss``, ``curfew_violation``.
Device events (``simulator.device_events``) write device scripts and scripted
ground truth.  Victims' movements are applied before offenders', so an
offender can pursue a victim who is herself on the move; device events come
last.  Parameters are listed in ``simulator/scenarios/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import shapely
from shapely.geometry import LinearRing, LineString, Point
from shapely.ops import nearest_points

from simulator import event_args as args
from simulator.device_events import DEVICE
from simulator.errors import ScenarioError
from simulator.paths import PathBuilder, SpeedProcess, mode_spec
from simulator.scenario import EventSpec, PersonSpec, resolve_place
from simulator.world import World

EDGE_STEP_M = 10.0
Build = Callable[[PathBuilder, SpeedProcess], None]


def apply_events(world: World) -> None:
    """Apply every scenario event in dependency order (victims' moves, offenders' moves, devices)."""
    handlers = {**MOVEMENT, **DEVICE}
    for ev in sorted(world.sc.events, key=lambda e: (_phase(world, e), e.index)):
        handler = handlers.get(ev.type)
        if handler is None:
            known = ", ".join(sorted(handlers))
            raise ScenarioError(f"{ev.where}: unknown event type (known: {known})")
        handler(world, ev)


def _phase(world: World, ev: EventSpec) -> int:
    if ev.type not in MOVEMENT:
        return 2
    return 0 if args.mover(world, ev).role == "protected" else 1


# --- helpers -----------------------------------------------------------------------------------


def _speed(world: World, ev: EventSpec, who: PersonSpec, purpose: str) -> SpeedProcess:
    p = ev.params
    spec = mode_spec(str(p.get("mode", "walking")), p.get("speed_mps"))
    return SpeedProcess(spec, world.rng(f"speed/{purpose}/{ev.index}", who.id))


def _victim(world: World, ev: EventSpec, subject: PersonSpec) -> PersonSpec:
    if "protected_person" in ev.params:
        return world.sc.person(str(ev.params["protected_person"]), ev.where)
    for order in world.book.orders_of_subject(subject.id):
        if order.proximity:
            return world.sc.person(order.proximity[0].protected_person, ev.where)
    raise ScenarioError(f"{ev.where}: needs 'protected_person'")


def _override(world: World, ev: EventSpec, who: PersonSpec, t0: float, build: Build) -> None:
    """Replace the person's path from ``t0`` by ``build``, then rejoin the old path (or stay)."""
    base = world.paths[who.id]
    sc = world.sc
    if not sc.start <= t0 < sc.end:
        raise ScenarioError(
            f"{ev.where}: starts outside the scenario ({t0 - sc.start:.0f} s after its start)"
        )
    b = PathBuilder(t0, *base.at(t0))
    build(b, _speed(world, ev, who, "go"))
    then = ev.params.get("then", "rejoin")
    if then == "rejoin":
        b.pursue(base.at, _speed(world, ev, who, "back"), 0.0, max(base.end, b.t + 1.0))
    elif then != "stay":
        raise ScenarioError(f"{ev.where}: 'then' must be 'rejoin' or 'stay'")
    world.paths[who.id] = base.splice(b.build())


# --- movement events ---------------------------------------------------------------------------


def trip(world: World, ev: EventSpec) -> None:
    """Go somewhere (a place, lat/lon, or bearing_deg + distance_m from here), stay, come back."""
    who = args.mover(world, ev)
    t0 = args.when(world, ev, "at")
    dest = ev.params.get("to")
    if dest is None:
        raise ScenarioError(f"{ev.where}: needs 'to'")
    x0, y0 = world.paths[who.id].at(t0)
    if isinstance(dest, Mapping) and "bearing_deg" in dest:
        a = math.radians(float(dest["bearing_deg"]))
        d = float(dest.get("distance_m", 1000.0))
        tx, ty = x0 + d * math.sin(a), y0 + d * math.cos(a)
    else:
        place = resolve_place(dest, world.sc.places, world.sc.projector, ev.where)
        tx, ty = place.x, place.y
    until = args.when(world, ev, "until") if "until" in ev.params else None
    dwell = args.duration(ev, "dwell_s", 1800.0)
    rng = world.rng(f"route/{ev.index}", who.id)

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.route_to(tx, ty, speed, rng)
        b.stay_until(until if until is not None else b.t + dwell)

    _override(world, ev, who, t0, build)


def approach(world: World, ev: EventSpec) -> None:
    """Head for the victim wherever she is, stop ``closest_m`` from her, linger ``dwell_s``."""
    who = args.mover(world, ev)
    victim = world.paths[_victim(world, ev, who).id]
    closest = float(ev.params.get("closest_m", 50.0))
    dwell = args.duration(ev, "dwell_s", 300.0)
    end = world.sc.end

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        if b.pursue(victim.at, speed, closest, end):
            b.follow(victim.at, closest, min(b.t + dwell, end), speed)

    _override(world, ev, who, args.when(world, ev, "at"), build)


def passby(world: World, ev: EventSpec) -> None:
    """Pass the victim on a straight line ``closest_m`` from her at time ``at`` (closest approach)."""
    who = args.mover(world, ev)
    victim = world.paths[_victim(world, ev, who).id]
    base = world.paths[who.id]
    at = args.when(world, ev, "at")
    closest = float(ev.params.get("closest_m", 1500.0))
    half = float(ev.params.get("length_m", 3000.0)) / 2
    spec = mode_spec(str(ev.params.get("mode", "driving")), ev.params.get("speed_mps"))
    v_pass = (spec.low_mps + spec.high_mps) / 2
    vx, vy = victim.at(at)
    sx, sy = base.at(at)
    bearing = ev.params.get("bearing_deg")
    a = (
        math.radians(float(bearing))
        if bearing is not None
        else float(world.rng(f"passby/{ev.index}", who.id).uniform(0, 2 * math.pi))
    )
    dx, dy = math.sin(a), math.cos(a)
    nx, ny = -dy, dx
    if nx * (sx - vx) + ny * (sy - vy) < 0:
        nx, ny = -nx, -ny
    cx, cy = vx + nx * closest, vy + ny * closest
    if math.hypot(cx + dx * half - sx, cy + dy * half - sy) < math.hypot(
        cx - dx * half - sx, cy - dy * half - sy
    ):
        dx, dy = -dx, -dy
    p0 = (cx - dx * half, cy - dy * half)
    p1 = (cx + dx * half, cy + dy * half)
    t_p0 = at - half / v_pass
    t0 = t_p0
    for _ in range(
        4
    ):  # leave early enough to reach the line's start at the slowest speed, plus stops
        bx, by = base.at(t0)
        t0 = max(
            world.sc.start, t_p0 - 1.3 * math.hypot(p0[0] - bx, p0[1] - by) / spec.low_mps - 120.0
        )

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.move_to(*p0, speed)
        b.stay_until(t_p0)
        # a constant speed along the line keeps the closest approach at ``at``
        line_speed = SpeedProcess(
            mode_spec("fixed", v_pass), world.rng(f"passby-line/{ev.index}", who.id)
        )
        b.move_to(*p1, line_speed)

    _override(world, ev, who, t0, build)


def exclusion_breach(world: World, ev: EventSpec) -> None:
    """Go ``depth_m`` into a zone (or to its middle), stay ``dwell_s``, leave."""
    who = args.mover(world, ev)
    zone = args.zone(world, ev)
    t0 = args.when(world, ev, "at")
    pos = Point(world.paths[who.id].at(t0))
    depth = ev.params.get("depth_m")
    target = args.middle(zone)
    if depth is not None:
        inner = zone.polygon.buffer(-float(depth))
        if not inner.is_empty:
            target = nearest_points(inner, pos)[0]
    dwell = args.duration(ev, "dwell_s", 600.0)

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.move_to(target.x, target.y, speed)
        b.stay_until(b.t + dwell)

    _override(world, ev, who, t0, build)


def edge_nearmiss(world: World, ev: EventSpec) -> None:
    """Travel ``length_m`` along the outside of a zone, ``offset_m`` from its edge.

    Afterwards the walk goes on round the edge until the straight way back
    no longer cuts through the zone, so the near miss stays a miss.
    """
    who = args.mover(world, ev)
    zone = args.zone(world, ev)
    t0 = args.when(world, ev, "at")
    pos = Point(world.paths[who.id].at(t0))
    offset = float(ev.params.get("offset_m", 50.0))
    length = float(ev.params.get("length_m", 1500.0))
    grown = zone.polygon.buffer(offset, quad_segs=64)
    parts = list(shapely.get_parts(grown))
    ring: LinearRing = min((p.exterior for p in parts), key=lambda r: r.distance(pos))
    s0 = ring.project(pos)
    direction = ev.params.get("direction")
    sign = {"ccw": 1.0, "cw": -1.0}.get(str(direction), 0.0) if direction else 0.0
    if sign == 0.0:
        sign = 1.0 if world.rng(f"edge/{ev.index}", who.id).random() < 0.5 else -1.0
    n = max(1, math.ceil(length / EDGE_STEP_M))
    pts = [ring.interpolate((s0 + sign * k * length / n) % ring.length) for k in range(n + 1)]
    s = s0 + sign * length
    for _ in range(math.ceil(ring.length / EDGE_STEP_M)):
        if not LineString([pts[-1], pos]).intersects(zone.polygon):
            break
        s += sign * EDGE_STEP_M
        pts.append(ring.interpolate(s % ring.length))

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.move_along([(p.x, p.y) for p in pts], speed)

    _override(world, ev, who, t0, build)


def curfew_violation(world: World, ev: EventSpec) -> None:
    """Leave at ``at`` for a spot ``distance_m`` outside an inclusion zone (or ``to``); head back at ``until``."""
    who = args.mover(world, ev)
    zone = args.zone(world, ev)
    t0 = args.when(world, ev, "at")
    until = args.when(world, ev, "until")
    rng = world.rng(f"curfew/{ev.index}", who.id)
    if "to" in ev.params:
        place = resolve_place(ev.params["to"], world.sc.places, world.sc.projector, ev.where)
        tx, ty = place.x, place.y
    else:
        ring = zone.polygon.buffer(float(ev.params.get("distance_m", 800.0))).exterior
        p = ring.interpolate(float(rng.uniform(0, 1)), normalized=True)
        tx, ty = p.x, p.y

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.route_to(tx, ty, speed, rng)
        b.stay_until(until)

    _override(world, ev, who, t0, build)


MOVEMENT: dict[str, Callable[[World, EventSpec], None]] = {
    "trip": trip,
    "approach": approach,
    "passby": passby,
    "exclusion_breach": exclusion_breach,
    "edge_nearmiss": edge_nearmiss,
    "curfew_violation": curfew_violation,
}
__all__ = ["MOVEMENT", "apply_events"]
