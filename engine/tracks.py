"""Per-device intake in device time: duplicates, a reorder buffer, the jump filter, a short track.

Fixes arrive late, duplicated and out of order (devices buffer offline and
upload in bursts; shared subscriptions reorder).  Each device's fixes wait in a
small buffer until the device has been quiet for ``reorder_quiet_s`` (or at
most ``reorder_max_hold_s``); the buffer is then released sorted by device
time, so any shuffle of arrivals within that window gives the same decisions.
A fix older than the newest one already evaluated is still evaluated (it may
reveal a past violation) but marked late and not allowed to move the track back.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from devices.model import Fix
from engine.config import RuleConfig

SEEN_SEQS = 8192  # duplicate memory per device
TRACK_POINTS = 64  # projected points kept per device for interpolation
TRACK_SPAN_S = 1800.0  # ... and at most this far back in device time


@dataclass(frozen=True, slots=True)
class TrackPoint:
    """A fix accepted for decisions, in projected metres."""

    t: float
    x: float
    y: float
    acc: float
    key: str
    src: str


@dataclass(slots=True)
class DeviceTrack:
    """What the engine remembers of one device between fixes."""

    device: str
    seen: OrderedDict[int, None] = field(default_factory=OrderedDict)
    pending: list[Fix] = field(default_factory=list)
    first_pending_arrival: float = 0.0
    last_pending_arrival: float = 0.0
    points: deque[TrackPoint] = field(default_factory=lambda: deque(maxlen=TRACK_POINTS))
    newest_t: float = -math.inf
    last_arrival: float = -math.inf
    suspect: list[TrackPoint] = field(default_factory=list)

    def is_duplicate(self, seq: int) -> bool:
        """True when (device, seq) was seen before; remembers it otherwise."""
        if seq in self.seen:
            return True
        self.seen[seq] = None
        if len(self.seen) > SEEN_SEQS:
            self.seen.popitem(last=False)
        return False

    def add_pending(self, fix: Fix, now: float) -> None:
        """Queue a fix for ordered evaluation."""
        if not self.pending:
            self.first_pending_arrival = now
        self.pending.append(fix)
        self.last_pending_arrival = now
        self.last_arrival = max(self.last_arrival, now)

    def due(self, now: float, rules: RuleConfig) -> bool:
        """The buffer is released once the device is quiet or the oldest entry waited long enough."""
        if not self.pending:
            return False
        return (
            now - self.last_pending_arrival >= rules.reorder_quiet_s
            or now - self.first_pending_arrival >= rules.reorder_max_hold_s
        )

    def release(self) -> list[Fix]:
        """Pending fixes in device-time order (ties broken by seq for determinism)."""
        out = sorted(self.pending, key=lambda f: (f.t, f.seq))
        self.pending = []
        return out

    def accept(self, point: TrackPoint, rules: RuleConfig) -> bool:
        """Add a point to the track unless it is an implausible jump; True when accepted.

        A jump is an implied speed above ``max_speed_mps`` after allowing for both
        accuracy radii.  Several consecutive "jumps" that agree with each other
        mean the device really moved (or the track before was wrong): accept them.
        """
        if point.acc > rules.max_decision_acc_m:
            return False
        prev = self._previous(point.t)
        if prev is not None and not _plausible(prev, point, rules.max_speed_mps):
            if self.suspect and _plausible(self.suspect[-1], point, rules.max_speed_mps):
                self.suspect.append(point)
            else:
                self.suspect = [point]
            if len(self.suspect) < rules.jump_accept_after:
                return False
            for p in self.suspect[:-1]:
                self._insert(p)
            self.suspect = []
        else:
            self.suspect = []
        self._insert(point)
        return True

    def _previous(self, t: float) -> TrackPoint | None:
        # the last point at or before t; ``points`` is in ascending time (``_insert``), so
        # the first such point from the end
        for p in reversed(self.points):
            if p.t <= t:
                return p
        return None

    def _insert(self, point: TrackPoint) -> None:
        if not self.points or point.t >= self.points[-1].t:
            self.points.append(point)
        else:
            items = sorted([*self.points, point], key=lambda p: p.t)
            self.points.clear()
            self.points.extend(items[-TRACK_POINTS:])
        self.newest_t = max(self.newest_t, point.t)
        while self.points and self.points[0].t < self.newest_t - TRACK_SPAN_S and len(self.points) > 2:
            self.points.popleft()

    def latest(self) -> TrackPoint | None:
        """Newest accepted point in device time."""
        return self.points[-1] if self.points else None

    def velocity(
        self, at_t: float, window_s: float = 120.0, max_acc_m: float = 100.0
    ) -> tuple[float, float]:
        """Velocity (m/s, projected axes) from the accurate points in the window ending at ``at_t``.

        Wi-Fi and cell positions (hundreds of metres) would turn a man sitting at home into
        one driving at 20 m/s, so only points with accuracy within ``max_acc_m`` count.
        """
        # the first and last accurate point in the window; ``points`` is in ascending time
        # (``_insert``), so walk back from the end and stop before the window
        a = b = None
        start = at_t - window_s
        for p in reversed(self.points):
            if p.t > at_t:
                continue
            if p.t < start:
                break
            if p.acc <= max_acc_m:
                if b is None:
                    b = p
                else:
                    a = p
        if a is None or b is None:
            return (0.0, 0.0)
        dt = b.t - a.t
        if dt <= 0:
            return (0.0, 0.0)
        return ((b.x - a.x) / dt, (b.y - a.y) / dt)


def _plausible(a: TrackPoint, b: TrackPoint, max_speed: float) -> bool:
    dist = math.hypot(b.x - a.x, b.y - a.y)
    slack = a.acc + b.acc
    dt = abs(b.t - a.t)
    return dist - slack <= max_speed * max(dt, 1.0)
