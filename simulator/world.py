"""The simulated world: true paths of people and everything scripted for their devices.

Built in three steps by ``simulator.generate``: base paths from routines,
then the event library (``simulator.events``) bends paths and writes device
scripts, then the sampler turns device paths plus scripts into messages.
Randomness is drawn from generators keyed by (seed, purpose, name), so adding
a person or an event does not change anyone else's noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.orders import OrderBook
from simulator.orders_doc import ZoneGeom
from simulator.paths import Path
from simulator.scenario import Scenario
from simulator.truth import Episode


@dataclass(frozen=True, slots=True)
class Upload:
    """How a device uploads its buffer when it reconnects (``offline`` event, issue 25).

    The default is the old form: arrays of ``chunk`` fixes in device-time order, 0.1 s apart.
    ``chunk_min`` < ``chunk`` draws each message's size between them; ``shuffle`` sends the
    fixes in random order; ``singles_p`` is the share of messages that carry one fix as a plain
    object (not an array); ``spread_s`` spreads the messages at random over that many seconds
    from reconnect; ``repeat_p`` is the share of the fixes a second upload sends again (a lost
    acknowledgement), itself shuffled and spread the same way, starting within ``spread_s``.
    """

    chunk: int = 50
    chunk_min: int = 50
    shuffle: bool = False
    singles_p: float = 0.0
    spread_s: float = 0.0
    repeat_p: float = 0.0

    @property
    def plain(self) -> bool:
        """The old form (no randomness drawn: existing scenarios keep their traces)."""
        return (
            self.chunk_min >= self.chunk and not self.shuffle and self.singles_p == 0.0
            and self.spread_s == 0.0 and self.repeat_p == 0.0
        )


@dataclass(frozen=True, slots=True)
class Jump:
    """A multipath outlier: ``count`` fixes from ``at`` displaced ``jump_m`` on ``bearing_deg``."""

    at: float
    count: int
    jump_m: float
    bearing_deg: float | None


@dataclass
class DeviceScript:
    """What happens to one device beyond where it is carried.

    Windows are (start, end) in true time; ``end`` may be the scenario end.
    """

    events: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    strap: list[tuple[float, float, str]] = field(default_factory=list)
    off: list[tuple[float, float]] = field(default_factory=list)
    offline: list[tuple[float, float, bool, Upload]] = field(default_factory=list)  # buffered
    env: list[tuple[float, float, str]] = field(default_factory=list)
    jumps: list[Jump] = field(default_factory=list)
    skew: list[tuple[float, float, float, float]] = field(
        default_factory=list
    )  # skew_s, drift_s_per_h
    glitch: list[tuple[float, float, float, float]] = field(
        default_factory=list
    )  # dup_p, reorder_p
    battery: list[tuple[float, float, float]] = field(default_factory=list)  # low, dead, recharge
    left: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class World:
    """Scenario, orders, true person paths, device scripts and scripted truth episodes."""

    sc: Scenario
    book: OrderBook
    zones: list[ZoneGeom]
    paths: dict[str, Path]
    scripts: dict[str, DeviceScript]
    scripted: list[Episode] = field(default_factory=list)

    def rng(self, purpose: str, name: str) -> np.random.Generator:
        """A generator for one purpose and one name, independent of all others."""
        key = zlib.crc32(f"{purpose}/{name}".encode())
        return np.random.default_rng([self.sc.seed, key])

    def device_path(self, device: str) -> Path:
        """Where the device truly is: with its person, except while left behind somewhere."""
        person = self.sc.owner_of(device, "device path")
        path = self.paths[person.id]
        for start, end in sorted(self.scripts[device].left):
            x, y = path.at(start)
            path = path.splice(Path.constant(x, y, start, end))
        return path

    def script(self, device: str) -> DeviceScript:
        """The device's script (every simulated device has one)."""
        return self.scripts[device]
