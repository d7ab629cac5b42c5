"""Protection orders: who is protected from whom, where and when (contract §4).

The model: orders, their zones, proximity rules, corridors, schedules and time
windows, and the ``OrderBook`` that indexes them by subject, person and device.
Reading a file into it is ``engine.core.orders_load.load_orders``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from geo.zones import ZoneShape

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

LEGAL_BASES: Mapping[str, int | None] = {
    # legal basis -> maximum validity in days (None: no statutory maximum here)
    "gedragsaanwijzing": 90,  # art. 509hh Sv, behavioural order
    "schorsing_voorlopige_hechtenis": None,  # suspension of pre-trial detention
    "vrijheidsbeperkende_maatregel": None,  # freedom-restricting measure (38v Sr)
    "voorwaardelijke_veroordeling": None,  # conditional sentence
    "voorwaardelijke_invrijheidstelling": None,  # conditional release
    "dadelijk_uitvoerbaar_toezicht": None,  # immediately enforceable supervision (DUT)
}


@dataclass(frozen=True, slots=True)
class ScheduleWindow:
    """A weekly window in a named time zone, e.g. mon-sun 22:00-06:00 Europe/Amsterdam.

    A window whose ``end`` is not after ``start`` runs past midnight; it belongs
    to the day it starts on.  Wall-clock times are resolved in ``tz`` so the
    window follows daylight-saving changes.
    """

    days: frozenset[int]  # 0 = Monday
    start: time
    end: time
    tz: str
    # [a, b, c, d, e]: every t in [a, b) lies in the window (a, e), every t in [c, d) in none;
    # see window_containing (a device's fixes ask about nearby times, each a local-time
    # calculation otherwise)
    _memo: list[float] = field(
        default_factory=lambda: [math.inf, -math.inf, math.inf, -math.inf, math.nan],
        init=False, repr=False, compare=False,
    )
    # the same as one tuple in a holder shared by all equal windows (__post_init__)
    _shared: list[tuple[float, float, float, float, float]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_shared", _shared_memo(self.days, self.start, self.end, self.tz))

    def active_at(self, t: float) -> bool:
        """True when device time ``t`` (epoch seconds) falls inside this window."""
        return self.window_containing(t) is not None

    def window_containing(self, t: float) -> tuple[float, float] | None:
        """The concrete (start, end) epoch interval containing ``t``, if any.

        Remembers the last answer as an interval of times with the same answer: a window
        (s, e) found for ``t`` is the answer for every time in [s, min(e, next start after
        s)) (no later window has begun, and today's window is looked at first), and "none"
        for ``t`` is the answer up to the next start after ``t``.  Same results as computing.

        Those intervals depend only on (days, start, end, tz): before calculating, the memo
        shared by equal windows (every night curfew of the same hours) is asked, so the
        local-time calculation is made about once per schedule, not once per order.  The
        shared memo is replaced as one tuple, so a reader in another thread sees a
        consistent one (a lost update only costs a calculation).
        """
        memo = self._memo
        if memo[0] <= t < memo[1]:
            return (memo[0], memo[4])
        if memo[2] <= t < memo[3]:
            return None
        a, b, c, d, e = self._shared[0]
        if a <= t < b:
            memo[0], memo[1], memo[4] = a, b, e
            return (a, e)
        if c <= t < d:
            memo[2], memo[3] = c, d
            return None
        found = self._window_containing(t)
        if found is not None:
            nxt = self.next_start_after(found[0])
            memo[0], memo[1], memo[4] = found[0], found[1] if nxt is None else min(found[1], nxt), found[1]
            m = self._shared[0]
            self._shared[0] = (memo[0], memo[1], m[2], m[3], memo[4])
        else:
            nxt = self.next_start_after(t)
            if nxt is not None:
                memo[2], memo[3] = t, nxt
                m = self._shared[0]
                self._shared[0] = (m[0], m[1], t, nxt, m[4])
        return found

    def _window_containing(self, t: float) -> tuple[float, float] | None:
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(t, tz=UTC).astimezone(zone)
        for back in (0, 1):
            day = (local - timedelta(days=back)).date()
            if day.weekday() not in self.days:
                continue
            start = datetime.combine(day, self.start, tzinfo=zone)
            end_day = day if self.end > self.start else day + timedelta(days=1)
            end = datetime.combine(end_day, self.end, tzinfo=zone)
            s, e = start.timestamp(), end.timestamp()
            if s <= t < e:
                return (s, e)
        return None

    def next_start_after(self, t: float, horizon_days: int = 8) -> float | None:
        """Epoch time of the first window start strictly after ``t``."""
        zone = ZoneInfo(self.tz)
        local = datetime.fromtimestamp(t, tz=UTC).astimezone(zone)
        for ahead in range(horizon_days):
            day = (local + timedelta(days=ahead)).date()
            if day.weekday() not in self.days:
                continue
            s = datetime.combine(day, self.start, tzinfo=zone).timestamp()
            if s > t:
                return s
        return None


_WINDOW_MEMOS: dict[
    tuple[frozenset[int], time, time, str], list[tuple[float, float, float, float, float]]
] = {}


def _shared_memo(
    days: frozenset[int], start: time, end: time, tz: str
) -> list[tuple[float, float, float, float, float]]:
    """The memo holder of every window with this schedule (one entry per distinct schedule
    ever loaded: a handful of curfew hours, not one per order)."""
    key = (days, start, end, tz)
    memo = _WINDOW_MEMOS.get(key)
    if memo is None:
        memo = _WINDOW_MEMOS.setdefault(key, [(math.inf, -math.inf, math.inf, -math.inf, math.nan)])
    return memo


@dataclass(frozen=True, slots=True)
class ZoneRule:
    """An exclusion zone (locatieverbod) or inclusion zone (locatiegebod) of an order."""

    zone_id: str
    kind: str  # "exclusion" | "inclusion"
    shape: ZoneShape
    schedule: tuple[ScheduleWindow, ...] = ()
    protects: str | None = None  # protected person this zone is about (e.g. her home)

    def active_at(self, t: float) -> bool:
        """Zones without a schedule are always active."""
        return not self.schedule or any(w.active_at(t) for w in self.schedule)


@dataclass(frozen=True, slots=True)
class ProximityRule:
    """A contact ban enforced by distance between two moving devices."""

    protected_person: str
    alert_m: float
    warn_m: float
    critical_m: float
    critical_ttc_s: float


@dataclass(frozen=True, slots=True)
class CorridorRule:
    """An approved crossing: a route (motorway, bus line) the subject may travel through.

    While the subject moves through it, proximity and exclusion alerts of the
    order are capped at ``info`` (still sent to the centre, and recorded);
    standing still in it for longer than ``max_dwell_s`` or leaving it brings
    the normal levels back.  Given as a centre ``line`` of ``[lon, lat]`` with
    ``width_m`` (full width; buffered at load in a local equidistant
    projection) or as any zone geometry; ``shape`` is the polygon used.
    """

    corridor_id: str
    shape: ZoneShape
    max_dwell_s: float = 120.0
    schedule: tuple[ScheduleWindow, ...] = ()
    width_m: float | None = None
    line: tuple[tuple[float, float], ...] | None = None

    def active_at(self, t: float) -> bool:
        """Corridors without a schedule are always active."""
        return not self.schedule or any(w.active_at(t) for w in self.schedule)


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """An approved period (a court hearing) in which this order's alerts are capped at ``info``.

    With an ``area`` the cap holds only while the subject is inside it (the
    court building and its surroundings); without one it holds everywhere.
    """

    window_id: str
    start: float
    end: float
    reason: str
    area: ZoneShape | None = None

    def active_at(self, t: float) -> bool:
        """True in ``[start, end)`` device time."""
        return self.start <= t < self.end


@dataclass(frozen=True, slots=True)
class Subject:
    """The person wearing the ankle monitor (pleger / verdachte)."""

    id: str
    devices: tuple[str, ...]
    residence: tuple[float, float] | None = None  # (lat, lon)


@dataclass(frozen=True, slots=True)
class ProtectedPerson:
    """The victim (slachtoffer) carrying a victim device or phone."""

    id: str
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Order:
    """One protection order with its validity period and rules."""

    id: str
    subject: str
    legal_basis: str
    valid_from: float
    valid_until: float
    exclusion_zones: tuple[ZoneRule, ...] = ()
    inclusion_zones: tuple[ZoneRule, ...] = ()
    proximity: tuple[ProximityRule, ...] = ()
    victim_warn_level: str | None = None  # None: the engine default (alarm, two-tier response)
    corridors: tuple[CorridorRule, ...] = ()
    time_windows: tuple[TimeWindow, ...] = ()
    # who prompts the offender about a proximity alert (docs/contract-extensions.md): "operator"
    # (the default: the engine sends his device nothing about her; the centre calls him) or
    # "auto" (``contact_centre`` on his ankle monitor at alarm, which tells him she is near)
    offender_prompt: str = "operator"

    def valid_at(self, t: float) -> bool:
        """True when the order is in force at device time ``t``."""
        return self.valid_from <= t <= self.valid_until

    @property
    def zones(self) -> tuple[ZoneRule, ...]:
        """All zones, exclusion first."""
        return self.exclusion_zones + self.inclusion_zones


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Everything the engine must know about people, devices and orders."""

    subjects: Mapping[str, Subject]
    protected_persons: Mapping[str, ProtectedPerson]
    orders: Mapping[str, Order]
    device_owner: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    owntracks: Mapping[str, str] = field(default_factory=dict)
    _by_subject: dict[str, tuple[Order, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protecting: dict[str, tuple[Order, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    # plain dicts of what every fix asks (the fields are Mappings: generic look-ups compiled)
    _owner: dict[str, tuple[str, str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _subject_devices: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _protected_devices: dict[str, tuple[str, ...]] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every fix asks for its person's orders; scanning all orders each time made that the
        # engine's main cost at national scale (10,000 orders), so index them once per book.
        by_subject: dict[str, list[Order]] = {}
        protecting: dict[str, list[Order]] = {}
        for order in sorted(self.orders.values(), key=lambda o: o.id):
            by_subject.setdefault(order.subject, []).append(order)
            for pid in dict.fromkeys(p.protected_person for p in order.proximity):
                protecting.setdefault(pid, []).append(order)
        object.__setattr__(self, "_by_subject", {k: tuple(v) for k, v in by_subject.items()})
        object.__setattr__(self, "_protecting", {k: tuple(v) for k, v in protecting.items()})
        object.__setattr__(self, "_owner", dict(self.device_owner))
        object.__setattr__(self, "_subject_devices", {k: s.devices for k, s in self.subjects.items()})
        object.__setattr__(
            self, "_protected_devices", {k: p.devices for k, p in self.protected_persons.items()}
        )

    def owner_of(self, device: str) -> tuple[str, str] | None:
        """("subject" | "protected", person id) for a device, or None if unknown."""
        return self._owner.get(device)

    def subject_devices(self, subject_id: str) -> tuple[str, ...]:
        """The devices of a subject in the book (KeyError for another)."""
        return self._subject_devices[subject_id]

    def protected_devices(self, person_id: str) -> tuple[str, ...]:
        """The devices of a protected person in the book (KeyError for another)."""
        return self._protected_devices[person_id]

    def orders_of_subject(self, subject_id: str) -> list[Order]:
        """Orders naming this subject, in id order (deterministic)."""
        return list(self._by_subject.get(subject_id, ()))

    def orders_protecting(self, person_id: str) -> list[Order]:
        """Orders with a proximity rule for this protected person, in id order."""
        return list(self._protecting.get(person_id, ()))
