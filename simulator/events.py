"""The event library: composable things that happen in a scenario.

Movement events bend a person's true path for a while and then rejoin what
they would otherwise have done (``"then": "rejoin"``, the default) or stay
where they ended (``"then": "stay"``).  Device events write the device's
script (what it reports, when it is off, offline or wrong) and the scripted
ground-truth episodes.  Victims' movements are applied before offenders', so
an offender can pursue a victim who is herself on the move.

Movement: ``trip``, ``approach``, ``passby``, ``exclusion_breach``,
``edge_nearmiss``, ``curfew_violation``, ``device_left``.
Device: ``tamper``, ``battery_death``, ``panic``, ``gps_loss``, ``multipath``,
``offline``, ``network``, ``clock_skew``.  Parameters are listed in
``simulator/scenarios/README.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import shapely
from shapely.geometry import LinearRing, LineString, Point
from shapely.ops import nearest_points

from simulator.errors import ScenarioError
from simulator.orders_doc import ZoneGeom, find_zone
from simulator.paths import PathBuilder, SpeedProcess, mode_spec
from simulator.scenario import EventSpec, PersonSpec, parse_duration, resolve_place
from simulator.truth import Episode
from simulator.world import Jump, World

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
    return 0 if _mover(world, ev).role == "protected" else 1


# --- helpers -----------------------------------------------------------------------------------


def _mover(world: World, ev: EventSpec) -> PersonSpec:
    p = ev.params
    for key in ("who", "subject", "person"):
        if key in p:
            return world.sc.person(str(p[key]), ev.where)
    if ev.type in ("trip", "device_left") and "protected_person" in p:
        return world.sc.person(str(p["protected_person"]), ev.where)
    raise ScenarioError(f"{ev.where}: say who moves ('subject', 'person' or 'who')")


def _device(world: World, ev: EventSpec) -> str:
    p = ev.params
    if "device" in p:
        dev = str(p["device"])
        world.sc.owner_of(dev, ev.where)
        return dev
    for key in ("who", "subject", "person", "protected_person"):
        if key in p:
            return world.sc.person(str(p[key]), ev.where).device
    raise ScenarioError(f"{ev.where}: say which device ('device' or a person)")


def _time(world: World, ev: EventSpec, key: str, default: Any = None) -> float:
    value = ev.params.get(key, default)
    if value is None:
        raise ScenarioError(f"{ev.where}: needs {key!r}")
    return world.sc.when(value, f"{ev.where} {key}")


def _dur(ev: EventSpec, key: str, default: float) -> float:
    return parse_duration(ev.params.get(key, default), f"{ev.where} {key}")


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
    who = _mover(world, ev)
    t0 = _time(world, ev, "at")
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
    until = _time(world, ev, "until") if "until" in ev.params else None
    dwell = _dur(ev, "dwell_s", 1800.0)
    rng = world.rng(f"route/{ev.index}", who.id)

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.route_to(tx, ty, speed, rng)
        b.stay_until(until if until is not None else b.t + dwell)

    _override(world, ev, who, t0, build)


def approach(world: World, ev: EventSpec) -> None:
    """Head for the victim wherever she is, stop ``closest_m`` from her, linger ``dwell_s``."""
    who = _mover(world, ev)
    victim = world.paths[_victim(world, ev, who).id]
    closest = float(ev.params.get("closest_m", 50.0))
    dwell = _dur(ev, "dwell_s", 300.0)
    end = world.sc.end

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        if b.pursue(victim.at, speed, closest, end):
            b.follow(victim.at, closest, min(b.t + dwell, end), speed)

    _override(world, ev, who, _time(world, ev, "at"), build)


def passby(world: World, ev: EventSpec) -> None:
    """Pass the victim on a straight line ``closest_m`` from her at time ``at`` (closest approach)."""
    who = _mover(world, ev)
    victim = world.paths[_victim(world, ev, who).id]
    base = world.paths[who.id]
    at = _time(world, ev, "at")
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
    who = _mover(world, ev)
    zone = _zone(world, ev)
    t0 = _time(world, ev, "at")
    pos = Point(world.paths[who.id].at(t0))
    depth = ev.params.get("depth_m")
    target = _middle(zone)
    if depth is not None:
        inner = zone.polygon.buffer(-float(depth))
        if not inner.is_empty:
            target = nearest_points(inner, pos)[0]
    dwell = _dur(ev, "dwell_s", 600.0)

    def build(b: PathBuilder, speed: SpeedProcess) -> None:
        b.move_to(target.x, target.y, speed)
        b.stay_until(b.t + dwell)

    _override(world, ev, who, t0, build)


def edge_nearmiss(world: World, ev: EventSpec) -> None:
    """Travel ``length_m`` along the outside of a zone, ``offset_m`` from its edge.

    Afterwards the walk goes on round the edge until the straight way back
    no longer cuts through the zone, so the near miss stays a miss.
    """
    who = _mover(world, ev)
    zone = _zone(world, ev)
    t0 = _time(world, ev, "at")
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
    who = _mover(world, ev)
    zone = _zone(world, ev)
    t0 = _time(world, ev, "at")
    until = _time(world, ev, "until")
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


def device_left(world: World, ev: EventSpec) -> None:
    """The person's device stays where it is from ``from`` to ``to`` while she moves on."""
    who = _mover(world, ev)
    start, end = _time(world, ev, "from"), _time(world, ev, "to")
    if end <= start:
        raise ScenarioError(f"{ev.where}: 'to' must be after 'from'")
    world.scripts[who.device].left.append((start, end))


def _zone(world: World, ev: EventSpec) -> ZoneGeom:
    if "zone" not in ev.params:
        raise ScenarioError(f"{ev.where}: needs 'zone'")
    return find_zone(world.zones, str(ev.params["zone"]), ev.params.get("order"), ev.where)


def _middle(zone: ZoneGeom) -> Point:
    if zone.circle is not None:
        return Point(zone.circle[0], zone.circle[1])
    return zone.polygon.representative_point()


# --- device events -----------------------------------------------------------------------------


def tamper(world: World, ev: EventSpec) -> None:
    """Strap opened or cut (or case opened) at ``at``, closed again at ``until`` if given."""
    dev = _device(world, ev)
    kind = str(ev.params.get("kind", "strap_open"))
    if kind not in ("strap_open", "strap_cut", "case_open"):
        raise ScenarioError(f"{ev.where}: kind must be strap_open, strap_cut or case_open")
    at = _time(world, ev, "at")
    end = _time(world, ev, "until") if "until" in ev.params else world.sc.end
    script = world.script(dev)
    script.events.append((at, kind, {}))
    if kind != "case_open":
        script.strap.append((at, end, "open" if kind == "strap_open" else "cut"))
    world.scripted.append(_device_episode(world, "tamper", at, end, dev, ev))


def battery_death(world: World, ev: EventSpec) -> None:
    """Low battery at ``at``, dead ``dead_after_s`` later, back on the charger at ``recharge_at``."""
    dev = _device(world, ev)
    low = _time(world, ev, "at")
    dead = low + _dur(ev, "dead_after_s", 1800.0)
    back = _time(world, ev, "recharge_at") if "recharge_at" in ev.params else math.inf
    if back <= dead:
        raise ScenarioError(f"{ev.where}: recharge_at must be after the battery is dead")
    script = world.script(dev)
    script.battery.append((low, dead, back))
    script.events += [(low, "low_battery", {}), (dead - 1.0, "power_off", {})]
    if back < world.sc.end:
        script.events.append((back, "charger_connected", {}))
    script.off.append((dead, min(back, world.sc.end)))
    end = min(back, world.sc.end)
    world.scripted.append(_device_episode(world, "battery", low, end, dev, ev))
    if end - dead >= world.sc.silent_min_s:
        world.scripted.append(_device_episode(world, "device_silent", dead, end, dev, ev))


def panic(world: World, ev: EventSpec) -> None:
    """The victim presses the panic button at ``at``."""
    dev = _device(world, ev)
    at = _time(world, ev, "at")
    world.script(dev).events.append((at, "panic", {}))
    world.scripted.append(_device_episode(world, "panic", at, at, dev, ev))


def gps_loss(world: World, ev: EventSpec) -> None:
    """No GNSS from ``from`` to ``to``: Wi-Fi, cell or mixed fallback fixes with 100-2000 m radii."""
    dev = _device(world, ev)
    start, end = _time(world, ev, "from"), _time(world, ev, "to")
    fallback = str(ev.params.get("fallback", "mixed"))
    env = {"wifi": "wifi", "cell": "cell", "mixed": "fallback"}.get(fallback)
    if env is None:
        raise ScenarioError(f"{ev.where}: fallback must be wifi, cell or mixed")
    script = world.script(dev)
    script.env.append((start, end, env))
    if ev.params.get("events", True):
        script.events += [(start, "gnss_lost", {}), (end, "gnss_restored", {})]
    world.scripted.append(_device_episode(world, "signal_loss", start, end, dev, ev))


def multipath(world: World, ev: EventSpec) -> None:
    """``count`` fixes from ``at`` jump ``jump_m`` (bearing_deg, or toward a person or zone)."""
    dev = _device(world, ev)
    at = _time(world, ev, "at")
    bearing = ev.params.get("bearing_deg")
    toward = ev.params.get("toward")
    if toward is not None:
        x, y = world.device_path(dev).at(at)
        if any(p.id == toward for p in world.sc.people):
            tx, ty = world.paths[str(toward)].at(at)
        else:
            mid = _middle(find_zone(world.zones, str(toward), ev.params.get("order"), ev.where))
            tx, ty = mid.x, mid.y
        bearing = math.degrees(math.atan2(tx - x, ty - y))
    world.script(dev).jumps.append(
        Jump(
            at,
            int(ev.params.get("count", 1)),
            float(ev.params.get("jump_m", 500.0)),
            None if bearing is None else float(bearing),
        )
    )


def offline(world: World, ev: EventSpec) -> None:
    """No network from ``from`` to ``to``; fixes are buffered and sent as a burst (unless ``buffered`` is false)."""
    dev = _device(world, ev)
    start, end = _time(world, ev, "from"), _time(world, ev, "to")
    if end <= start:
        raise ScenarioError(f"{ev.where}: 'to' must be after 'from'")
    world.script(dev).offline.append(
        (start, end, bool(ev.params.get("buffered", True)), int(ev.params.get("chunk", 50)))
    )
    if end - start >= world.sc.silent_min_s:
        world.scripted.append(_device_episode(world, "device_silent", start, end, dev, ev))


def network(world: World, ev: EventSpec) -> None:
    """Duplicates and out-of-order delivery for one device (or all) during a window (or always)."""
    start = _time(world, ev, "from") if "from" in ev.params else world.sc.start
    end = _time(world, ev, "to") if "to" in ev.params else world.sc.end
    dup = float(ev.params.get("duplicate_p", 0.0))
    reorder = float(ev.params.get("reorder_p", 0.0))
    if not (0 <= dup <= 1 and 0 <= reorder <= 1):
        raise ScenarioError(f"{ev.where}: duplicate_p and reorder_p are probabilities")
    has_target = any(
        k in ev.params for k in ("device", "who", "subject", "person", "protected_person")
    )
    devices = [_device(world, ev)] if has_target else list(world.scripts)
    for dev in devices:
        world.script(dev).glitch.append((start, end, dup, reorder))


def clock_skew(world: World, ev: EventSpec) -> None:
    """The device's clock is off by ``skew_s`` (+ ``drift_s_per_h``) from ``from`` to ``to``."""
    dev = _device(world, ev)
    start = _time(world, ev, "from") if "from" in ev.params else world.sc.start
    end = _time(world, ev, "to") if "to" in ev.params else world.sc.end
    world.script(dev).skew.append(
        (
            start,
            end,
            float(ev.params.get("skew_s", 0.0)),
            float(ev.params.get("drift_s_per_h", 0.0)),
        )
    )


def _device_episode(
    world: World, kind: str, start: float, end: float, dev: str, ev: EventSpec
) -> Episode:
    """A scripted truth episode keyed by the device's owner (subject or protected person)."""
    owner = world.sc.owner_of(dev, ev.where)
    if owner.role == "subject":
        return Episode(kind, start, end, subject=owner.id, device=dev)
    return Episode(kind, start, end, protected_person=owner.id, device=dev)


MOVEMENT: dict[str, Callable[[World, EventSpec], None]] = {
    "trip": trip,
    "approach": approach,
    "passby": passby,
    "exclusion_breach": exclusion_breach,
    "edge_nearmiss": edge_nearmiss,
    "curfew_violation": curfew_violation,
}
DEVICE: dict[str, Callable[[World, EventSpec], None]] = {
    "device_left": device_left,
    "tamper": tamper,
    "battery_death": battery_death,
    "panic": panic,
    "gps_loss": gps_loss,
    "multipath": multipath,
    "offline": offline,
    "network": network,
    "clock_skew": clock_skew,
}

__all__ = ["DEVICE", "MOVEMENT", "apply_events"]
