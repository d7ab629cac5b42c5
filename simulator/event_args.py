"""Reading an event's parameters: who, which device, when, how long, which zone.

Shared by the movement events (``simulator.events``) and the device events
(``simulator.device_events``); every problem is a ScenarioError naming the event.
"""

from __future__ import annotations

from typing import Any

from shapely.geometry import Point

from simulator.errors import ScenarioError
from simulator.orders_doc import ZoneGeom, find_zone
from simulator.scenario import EventSpec, PersonSpec, parse_duration
from simulator.world import World


def mover(world: World, ev: EventSpec) -> PersonSpec:
    """The person the event moves (``who``, ``subject``, ``person``; victims for trips)."""
    p = ev.params
    for key in ("who", "subject", "person"):
        if key in p:
            return world.sc.person(str(p[key]), ev.where)
    if ev.type in ("trip", "device_left") and "protected_person" in p:
        return world.sc.person(str(p["protected_person"]), ev.where)
    raise ScenarioError(f"{ev.where}: say who moves ('subject', 'person' or 'who')")


def device(world: World, ev: EventSpec) -> str:
    """The device the event concerns: ``device``, or the named person's device."""
    p = ev.params
    if "device" in p:
        dev = str(p["device"])
        world.sc.owner_of(dev, ev.where)
        return dev
    for key in ("who", "subject", "person", "protected_person"):
        if key in p:
            return world.sc.person(str(p[key]), ev.where).device
    raise ScenarioError(f"{ev.where}: say which device ('device' or a person)")


def when(world: World, ev: EventSpec, key: str, default: Any = None) -> float:
    """A scenario time parameter as epoch seconds (required unless a default is given)."""
    value = ev.params.get(key, default)
    if value is None:
        raise ScenarioError(f"{ev.where}: needs {key!r}")
    return world.sc.when(value, f"{ev.where} {key}")


def duration(ev: EventSpec, key: str, default: float) -> float:
    """A duration parameter in seconds."""
    return parse_duration(ev.params.get(key, default), f"{ev.where} {key}")


def zone(world: World, ev: EventSpec) -> ZoneGeom:
    """The zone named by ``zone`` (and ``order`` when the id is not unique)."""
    if "zone" not in ev.params:
        raise ScenarioError(f"{ev.where}: needs 'zone'")
    return find_zone(world.zones, str(ev.params["zone"]), ev.params.get("order"), ev.where)


def middle(z: ZoneGeom) -> Point:
    """A point well inside the zone: a circle's centre, a polygon's representative point."""
    if z.circle is not None:
        return Point(z.circle[0], z.circle[1])
    return z.polygon.representative_point()
