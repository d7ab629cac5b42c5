"""Daily routines: the ordinary movement a person makes when nothing is scripted.

A routine expands into timed trips (leave at, go to, by mode); executing the
trips from home gives the person's base :class:`~simulator.paths.Path`.
Routines repeat for every local day the scenario spans:

* ``"home"``: stays at home (indoors) all the time;
* ``{"type": "commuter", "work": place, "mode": "cycling", "leave": "08:00",
  "back": "17:30", "jitter_s": 600, "errand_p": 0.4, "days": "mon-fri"}``:
  to work and back, sometimes via a shop on the way home;
* ``{"type": "errands", "count": 2, "mode": "walking", "radius_m": [400, 1500],
  "dwell_s": [600, 2400], "from": "09:00", "to": "20:00"}``: short trips from home;
* ``{"type": "plan", "steps": [{"at": "08:00", "go": place, "mode": "cycling"}, ...]}``
  (or a bare list of steps): exactly the given trips.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from engine.core.orders_load import parse_days
from engine.errors import OrdersError
from simulator.errors import ScenarioError
from simulator.paths import Path, PathBuilder, SpeedProcess, mode_spec
from simulator.scenario import PersonSpec, Place, Scenario, resolve_place


@dataclass(frozen=True, slots=True)
class Trip:
    """Leave at ``at`` for ``dest`` by ``mode`` (a later trip waits until this one arrives)."""

    at: float
    dest: Place
    mode: str
    speed_mps: float | None = None


def base_path(person: PersonSpec, scenario: Scenario, rng: np.random.Generator) -> Path:
    """The person's path from the scenario start to its end, following their routine."""
    home = scenario.places[person.home]
    b = PathBuilder(scenario.start, home.x, home.y)
    for trip in expand_routine(person, scenario, rng):
        if trip.at >= scenario.end:
            break
        b.stay_until(trip.at)
        b.route_to(
            trip.dest.x, trip.dest.y, SpeedProcess(mode_spec(trip.mode, trip.speed_mps), rng), rng
        )
    b.stay_until(scenario.end)
    return b.build()


def expand_routine(person: PersonSpec, scenario: Scenario, rng: np.random.Generator) -> list[Trip]:
    """The routine's trips in time order."""
    r = person.routine
    ctx = f"person {person.id} routine"
    if r is None or r == "home":
        return []
    if isinstance(r, list):
        r = {"type": "plan", "steps": r}
    if not isinstance(r, Mapping):
        raise ScenarioError(f"{ctx}: must be 'home', a list of steps or an object with a 'type'")
    kind = r.get("type", "plan")
    if kind == "home":
        return []
    if kind == "plan":
        return _plan(r, person, scenario, ctx)
    if kind == "commuter":
        return _commuter(r, person, scenario, rng, ctx)
    if kind == "errands":
        return _errands(r, person, scenario, rng, ctx)
    raise ScenarioError(f"{ctx}: unknown routine type {kind!r} (home, commuter, errands, plan)")


def _plan(r: Mapping[str, Any], person: PersonSpec, sc: Scenario, ctx: str) -> list[Trip]:
    trips = []
    for i, step in enumerate(r.get("steps") or []):
        if not isinstance(step, Mapping) or "at" not in step or "go" not in step:
            raise ScenarioError(f"{ctx} step {i}: needs 'at' and 'go'")
        dest = resolve_place(step["go"], sc.places, sc.projector, f"{ctx} step {i}")
        speed = step.get("speed_mps")
        trips.append(
            Trip(
                sc.when(step["at"], f"{ctx} step {i}"),
                dest,
                str(step.get("mode", "walking")),
                float(speed) if speed is not None else None,
            )
        )
    return sorted(trips, key=lambda t: t.at)


def _commuter(
    r: Mapping[str, Any], person: PersonSpec, sc: Scenario, rng: np.random.Generator, ctx: str
) -> list[Trip]:
    if "work" not in r:
        raise ScenarioError(f"{ctx}: a commuter needs 'work'")
    work = resolve_place(r["work"], sc.places, sc.projector, f"{ctx} work")
    home = sc.places[person.home]
    mode = str(r.get("mode", "cycling"))
    jitter = float(r.get("jitter_s", 600.0))
    errand_p = float(r.get("errand_p", 0.0))
    days = _days(str(r.get("days", "mon-fri")), ctx)
    leave, back = _clock(r.get("leave", "08:00"), ctx), _clock(r.get("back", "17:30"), ctx)
    trips: list[Trip] = []
    for day in _local_days(sc):
        if day.weekday() not in days:
            continue
        t_leave = _at(day, leave, sc.tz) + float(rng.normal(0.0, jitter / 2))
        t_back = _at(day, back, sc.tz) + float(rng.normal(0.0, jitter / 2))
        trips.append(Trip(t_leave, work, mode))
        if rng.random() < errand_p:
            shop = _random_place(
                rng, work, 300.0, 1500.0, sc, f"{person.id}-shop-{day.isoformat()}"
            )
            trips.append(Trip(t_back, shop, mode))
            trips.append(Trip(t_back + float(rng.uniform(600, 1800)), home, mode))
        else:
            trips.append(Trip(t_back, home, mode))
    return trips


def _errands(
    r: Mapping[str, Any], person: PersonSpec, sc: Scenario, rng: np.random.Generator, ctx: str
) -> list[Trip]:
    home = sc.places[person.home]
    mode = str(r.get("mode", "walking"))
    count = int(r.get("count", 2))
    rlo, rhi = (float(v) for v in r.get("radius_m", (400.0, 1500.0)))
    dlo, dhi = (float(v) for v in r.get("dwell_s", (600.0, 2400.0)))
    lo, hi = _clock(r.get("from", "09:00"), ctx), _clock(r.get("to", "20:00"), ctx)
    trips: list[Trip] = []
    for day in _local_days(sc):
        t0, t1 = _at(day, lo, sc.tz), _at(day, hi, sc.tz)
        if t1 <= t0 or count <= 0:
            continue
        slot = (t1 - t0) / count
        for k in range(count):
            leave = t0 + k * slot + float(rng.uniform(0.0, slot * 0.4))
            spot = _random_place(
                rng, home, rlo, rhi, sc, f"{person.id}-errand-{day.isoformat()}-{k}"
            )
            trips.append(Trip(leave, spot, mode))
            trips.append(
                Trip(
                    leave + _travel_guess(home, spot, mode) + float(rng.uniform(dlo, dhi)),
                    home,
                    mode,
                )
            )
    return trips


def _travel_guess(a: Place, b: Place, mode: str) -> float:
    spec = mode_spec(mode)
    return 1.3 * math.hypot(a.x - b.x, a.y - b.y) / spec.low_mps


def _random_place(
    rng: np.random.Generator, near: Place, rlo: float, rhi: float, sc: Scenario, name: str
) -> Place:
    """A place rlo..rhi metres from ``near``, pulled back inside the city radius."""
    r = float(rng.uniform(rlo, rhi))
    a = float(rng.uniform(0.0, 2 * math.pi))
    x, y = near.x + r * math.cos(a), near.y + r * math.sin(a)
    dx, dy = x - sc.center.x, y - sc.center.y
    d = math.hypot(dx, dy)
    if d > sc.city_radius_m:
        x, y = sc.center.x + dx * sc.city_radius_m / d, sc.center.y + dy * sc.city_radius_m / d
    lon, lat = sc.projector.inverse(x, y)
    return Place(name, lat, lon, x, y, True)


def _local_days(sc: Scenario) -> list[Any]:
    zone = ZoneInfo(sc.tz)
    d0 = datetime.fromtimestamp(sc.start, tz=UTC).astimezone(zone).date()
    d1 = datetime.fromtimestamp(sc.end, tz=UTC).astimezone(zone).date()
    return [d0 + timedelta(days=i) for i in range((d1 - d0).days + 1)]


def _at(day: Any, clock: time, tz: str) -> float:
    return datetime.combine(day, clock, ZoneInfo(tz)).timestamp()


def _clock(value: Any, ctx: str) -> time:
    try:
        return time.fromisoformat(str(value))
    except ValueError:
        raise ScenarioError(f"{ctx}: bad clock time {value!r} (use HH:MM)") from None


def _days(text: str, ctx: str) -> frozenset[int]:
    """Weekdays (0 = Monday) from "mon-fri" / "sat,sun", parsed as orders' schedules are."""
    try:
        return parse_days(text, ctx)
    except OrdersError as exc:
        raise ScenarioError(str(exc)) from exc
