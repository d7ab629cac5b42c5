"""Scenario files: who lives where, how they move, which orders bind them, what happens.

A scenario is JSON (or YAML when PyYAML is installed) with a seed.  Anything
left out gets a default (one offender S-1 with ankle monitor AM-1001 in
south Rotterdam, one victim P-1 with victim device VD-2001 in the centre, one
order O-1 with a 1,000 m exclusion zone round her home and a 1,000 / 3,000 m
proximity rule), so a file only says what its story needs.  The format is
documented in ``simulator/scenarios/README.md``.

Times in a scenario may be seconds after the start (``90``), offsets
(``"+1h30m"``), local wall-clock times (``"21:40"``: the first such time at or
after the start, or ``"d1 02:00"`` for a given day) or RFC 3339 instants.
Places are names from ``places`` or ``{"lat", "lon"}`` objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devices.timeutil import parse_time
from geo.projection import Projector
from simulator.errors import ScenarioError

CITIES: dict[str, tuple[float, float, float]] = {
    # name -> (lat, lon, radius_m of the built-up area used for random places)
    "rotterdam": (51.9225, 4.4792, 6000.0),
}
DEFAULT_START = "2026-11-23T06:00:00Z"
DEFAULT_DURATION_S = 6 * 3600.0
DEFAULT_TZ = "Europe/Amsterdam"
DEFAULT_PLACES: dict[str, tuple[float, float]] = {
    "P1_home": (51.9244, 4.4777),  # centre, near Coolsingel
    "S1_home": (51.8850, 4.4900),  # south bank, about 4.4 km away
}
DEFAULT_INTERVAL_S = 60.0

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$"
)
_CLOCK = re.compile(r"^\s*(?:d(\d+)\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?\s*$")


@dataclass(frozen=True, slots=True)
class Place:
    """A named location in projected metres (and WGS84 for the orders file)."""

    name: str
    lat: float
    lon: float
    x: float
    y: float
    indoor: bool = True


@dataclass(frozen=True, slots=True)
class PersonSpec:
    """A subject or protected person with the one device the simulator carries for them."""

    id: str
    role: str  # "subject" | "protected"
    devices: tuple[str, ...]
    home: str
    routine: Any
    interval_s: float
    battery_pct: float
    drain_pct_per_h: float
    raw: Mapping[str, Any]

    @property
    def device(self) -> str:
        """The simulated device (the first listed)."""
        return self.devices[0]


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One scripted event: its type, its parameters, and its position in the file (for messages)."""

    type: str
    params: Mapping[str, Any]
    index: int

    @property
    def where(self) -> str:
        """How error messages name this event."""
        return f"event #{self.index} ({self.type})"


@dataclass(frozen=True, slots=True)
class DeliverySpec:
    """How messages travel from device to broker."""

    latency_s: float = 0.8  # median
    duplicate_p: float = 0.0
    reorder_p: float = 0.0
    reorder_s: tuple[float, float] = (5.0, 90.0)


@dataclass(frozen=True, slots=True)
class NoiseSpec:
    """Positioning noise: on/off, temporal correlation, indoor fallback, multipath rate."""

    enabled: bool = True
    tau_s: float = 30.0
    indoor: bool = True
    multipath_rate: float = 0.0
    multipath_m: float = 500.0
    urban_radius_m: float = 3000.0
    fixed_acc_m: float = 5.0  # reported radius when noise is off


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario, every reference resolved."""

    name: str
    description: str
    seed: int
    start: float
    end: float
    tz: str
    center: Place
    city_radius_m: float
    places: Mapping[str, Place]
    people: tuple[PersonSpec, ...]
    orders: tuple[Mapping[str, Any], ...]
    events: tuple[EventSpec, ...]
    delivery: DeliverySpec
    noise: NoiseSpec
    topic_prefix: str = "em"
    merge_gap_s: float = 60.0
    contact_m: tuple[float, ...] = (100.0,)
    silent_min_s: float = 600.0
    projector: Projector = field(default_factory=Projector, compare=False)

    def person(self, pid: str, ctx: str) -> PersonSpec:
        """The person with this id, or a ScenarioError naming ``ctx``."""
        for p in self.people:
            if p.id == pid:
                return p
        raise ScenarioError(f"{ctx}: unknown person {pid!r}")

    def owner_of(self, device: str, ctx: str) -> PersonSpec:
        """The person carrying this device."""
        for p in self.people:
            if device in p.devices:
                return p
        raise ScenarioError(f"{ctx}: unknown device {device!r}")

    def when(self, value: Any, ctx: str) -> float:
        """A scenario time (see module docstring) as epoch seconds."""
        return parse_when(value, self.start, self.tz, ctx)


def load_scenario(path: str | Path, seed: int | None = None) -> Scenario:
    """Read a JSON or YAML scenario file; ``seed`` overrides the file's seed."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read ({exc.strerror})") from exc
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - PyYAML is in the test extra
            raise ScenarioError(f"{p}: YAML scenarios need PyYAML (pip install PyYAML)") from exc
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{p}: not valid YAML ({exc})") from exc
    else:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{p}: not valid JSON ({exc})") from exc
    if not isinstance(doc, Mapping):
        raise ScenarioError(f"{p}: top level must be an object")
    doc = dict(doc)
    doc.setdefault("name", p.stem)
    return parse_scenario(doc, seed)


def parse_scenario(doc: Mapping[str, Any], seed: int | None = None) -> Scenario:
    """Build a :class:`Scenario` from an already-parsed document."""
    if doc.get("v", 1) != 1:
        raise ScenarioError(f"unsupported scenario version {doc.get('v')!r} (expected 1)")
    projector = Projector()
    tz = str(doc.get("timezone", DEFAULT_TZ))
    try:
        ZoneInfo(tz)
    except Exception as exc:
        raise ScenarioError(f"unknown time zone {tz!r}") from exc
    try:
        start = parse_time(doc.get("start", DEFAULT_START))
    except ValueError as exc:
        raise ScenarioError(f"start: {exc}") from exc
    if "end" in doc:
        end = parse_when(doc["end"], start, tz, "end")
    else:
        end = start + parse_duration(doc.get("duration", DEFAULT_DURATION_S), "duration")
    if end <= start:
        raise ScenarioError("the scenario must end after it starts")

    city = doc.get("city", "rotterdam")
    if isinstance(city, str):
        if city.lower() not in CITIES:
            raise ScenarioError(
                f"unknown city {city!r} (known: {', '.join(CITIES)}; or give lat/lon)"
            )
        clat, clon, cradius = CITIES[city.lower()]
    elif isinstance(city, Mapping):
        clat, clon = _num(city, "lat", "city"), _num(city, "lon", "city")
        cradius = float(city.get("radius_m", 6000.0))
    else:
        raise ScenarioError("city must be a name or an object with lat, lon")
    center = _place("centre", clat, clon, projector, indoor=False)

    places: dict[str, Place] = {
        n: _place(n, lat, lon, projector) for n, (lat, lon) in DEFAULT_PLACES.items()
    }
    for name, raw in (doc.get("places") or {}).items():
        if not isinstance(raw, Mapping):
            raise ScenarioError(f"place {name!r}: must be an object with lat, lon")
        places[str(name)] = _place(
            str(name),
            _num(raw, "lat", f"place {name}"),
            _num(raw, "lon", f"place {name}"),
            projector,
            bool(raw.get("indoor", True)),
        )

    subjects = doc.get("subjects")
    victims = doc.get("protected_persons")
    if subjects is None:
        subjects = [{"id": "S-1", "devices": ["AM-1001"], "home": "S1_home"}]
    if victims is None:
        victims = [{"id": "P-1", "devices": ["VD-2001"], "home": "P1_home"}]
    people = [_person(r, "subject", places, projector) for r in _objects(subjects, "subjects")]
    people += [
        _person(r, "protected", places, projector) for r in _objects(victims, "protected_persons")
    ]
    ids = [p.id for p in people]
    devices = [d for p in people for d in p.devices]
    if len(set(ids)) != len(ids):
        raise ScenarioError(f"duplicate person ids in {ids}")
    if len(set(devices)) != len(devices):
        raise ScenarioError(f"a device is listed twice in {devices}")

    if "orders" in doc:
        orders = tuple(dict(o) for o in _objects(doc["orders"], "orders"))
    else:
        orders = (_default_order(people, start),) if people else ()

    events = tuple(
        EventSpec(str(e.get("type", "")), dict(e), i)
        for i, e in enumerate(_objects(doc.get("events") or [], "events"))
    )
    d = doc.get("delivery") or {}
    delivery = DeliverySpec(
        latency_s=float(d.get("latency_s", 0.8)),
        duplicate_p=_prob(d, "duplicate_p"),
        reorder_p=_prob(d, "reorder_p"),
        reorder_s=_pair(d.get("reorder_s", (5.0, 90.0)), "delivery.reorder_s"),
    )
    n = doc.get("noise") or {}
    noise = NoiseSpec(
        enabled=bool(n.get("enabled", True)),
        tau_s=float(n.get("tau_s", 30.0)),
        indoor=bool(n.get("indoor", True)),
        multipath_rate=_prob(n, "multipath_rate"),
        multipath_m=float(n.get("multipath_m", 500.0)),
        urban_radius_m=float(n.get("urban_radius_m", 3000.0)),
        fixed_acc_m=float(n.get("fixed_acc_m", 5.0)),
    )
    truth = doc.get("truth") or {}
    return Scenario(
        name=str(doc.get("name", "scenario")),
        description=str(doc.get("description", "")),
        seed=int(seed if seed is not None else doc.get("seed", 0)),
        start=start,
        end=end,
        tz=tz,
        center=center,
        city_radius_m=cradius,
        places=places,
        people=tuple(people),
        orders=orders,
        events=events,
        delivery=delivery,
        noise=noise,
        topic_prefix=str(doc.get("topic_prefix", "em")),
        merge_gap_s=float(truth.get("merge_gap_s", 60.0)),
        contact_m=tuple(float(c) for c in truth.get("contact_m", (100.0,))),
        silent_min_s=float(truth.get("silent_min_s", 600.0)),
        projector=projector,
    )


def resolve_place(ref: Any, places: Mapping[str, Place], projector: Projector, ctx: str) -> Place:
    """A place name or an inline ``{"lat", "lon"}`` object."""
    if isinstance(ref, str):
        try:
            return places[ref]
        except KeyError:
            raise ScenarioError(f"{ctx}: unknown place {ref!r}") from None
    if isinstance(ref, Mapping):
        return _place(
            str(ref.get("name", ctx)),
            _num(ref, "lat", ctx),
            _num(ref, "lon", ctx),
            projector,
            bool(ref.get("indoor", True)),
        )
    raise ScenarioError(f"{ctx}: a place must be a name or an object with lat, lon")


def parse_duration(value: Any, ctx: str) -> float:
    """Seconds from a number or text such as ``"1h30m"``, ``"45m"``, ``"90s"``."""
    if isinstance(value, bool):
        raise ScenarioError(f"{ctx}: a duration must be seconds or text like '1h30m'")
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(str(value)) if isinstance(value, str) else None
    if not m or not any(m.groups()):
        raise ScenarioError(f"{ctx}: bad duration {value!r} (use seconds or e.g. '1h30m')")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s


def parse_when(value: Any, start: float, tz: str, ctx: str) -> float:
    """Epoch seconds for a scenario time (see the module docstring for the forms)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return start + float(value)
    if not isinstance(value, str):
        raise ScenarioError(f"{ctx}: bad time {value!r}")
    text = value.strip()
    if text.startswith("+"):
        return start + parse_duration(text[1:], ctx)
    m = _CLOCK.match(text)
    if m:
        zone = ZoneInfo(tz)
        day0 = datetime.fromtimestamp(start, tz=UTC).astimezone(zone).date()
        try:
            clock = time(int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))
        except ValueError as exc:
            raise ScenarioError(f"{ctx}: bad clock time {value!r} ({exc})") from exc
        if m.group(1) is not None:
            return datetime.combine(day0 + timedelta(days=int(m.group(1))), clock, zone).timestamp()
        for ahead in range(2):
            t = datetime.combine(day0 + timedelta(days=ahead), clock, zone).timestamp()
            if t >= start:
                return t
    try:
        return parse_time(text)
    except ValueError as exc:
        raise ScenarioError(
            f"{ctx}: bad time {value!r} (seconds, '+1h', 'HH:MM', 'd1 HH:MM' or RFC 3339)"
        ) from exc


def _place(name: str, lat: float, lon: float, projector: Projector, indoor: bool = True) -> Place:
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ScenarioError(f"place {name!r}: lat/lon out of range")
    x, y = projector.forward(lon, lat)
    return Place(name, lat, lon, x, y, indoor)


def _person(
    raw: Mapping[str, Any], role: str, places: dict[str, Place], projector: Projector
) -> PersonSpec:
    pid = raw.get("id")
    if not isinstance(pid, str) or not pid:
        raise ScenarioError(f"every {role} needs an 'id'")
    devices = raw.get("devices") or ([raw["device"]] if "device" in raw else None)
    if not devices or not all(isinstance(d, str) and d for d in devices):
        raise ScenarioError(f"person {pid}: needs 'device' or a non-empty 'devices' list")
    home_ref = raw.get("home")
    if home_ref is None:
        raise ScenarioError(f"person {pid}: needs a 'home' (place name or lat/lon)")
    home = resolve_place(home_ref, places, projector, f"person {pid} home")
    if home.name not in places:
        places[home.name] = home
    interval = float(raw.get("interval_s", DEFAULT_INTERVAL_S))
    if interval <= 0:
        raise ScenarioError(f"person {pid}: interval_s must be > 0")
    return PersonSpec(
        id=pid,
        role=role,
        devices=tuple(devices),
        home=home.name,
        routine=raw.get("routine", "home"),
        interval_s=interval,
        battery_pct=float(raw.get("battery_pct", 95.0)),
        drain_pct_per_h=float(raw.get("drain_pct_per_h", 2.5)),
        raw=raw,
    )


def _default_order(people: list[PersonSpec], start: float) -> dict[str, Any]:
    subject = next((p for p in people if p.role == "subject"), None)
    victim = next((p for p in people if p.role == "protected"), None)
    if subject is None or victim is None:
        raise ScenarioError(
            "no 'orders' given and no subject/protected person pair to build the default order"
        )
    return {
        "id": "O-1",
        "subject": subject.id,
        "legal_basis": "gedragsaanwijzing",
        "exclusion_zones": [
            {
                "id": f"Z-home-{victim.id}",
                "circle": {"at": victim.home, "radius_m": 1000},
                "protected_person": victim.id,
            }
        ],
        "proximity": [{"protected_person": victim.id, "alert_m": 1000, "warn_m": 3000}],
    }


def _objects(value: Any, ctx: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ScenarioError(f"{ctx} must be a list of objects")
    return value


def _num(raw: Mapping[str, Any], key: str, ctx: str) -> float:
    v = raw.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ScenarioError(f"{ctx}: {key!r} must be a number")
    return float(v)


def _prob(raw: Mapping[str, Any], key: str) -> float:
    v = float(raw.get(key, 0.0))
    if not 0.0 <= v <= 1.0:
        raise ScenarioError(f"{key} must be a probability in [0, 1], got {v}")
    return v


def _pair(value: Any, ctx: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ScenarioError(f"{ctx} must be [low, high]") from None
    if not 0 <= lo <= hi:
        raise ScenarioError(f"{ctx} must satisfy 0 <= low <= high")
    return lo, hi
