"""Noise-free trajectories: where a person (or a device) truly is at every instant.

A :class:`Path` is piecewise linear in time over projected metres, so ground
truth can be computed exactly from its vertices (``simulator.truth``) and the
sampler can read a position at any fix time.  :class:`PathBuilder` writes a
path move by move: dwell, travel to a point along a street-grid route, pursue
or follow a moving target (an offender approaching a victim who walks on),
walk along a polyline (a zone edge).  Speeds come from :class:`SpeedProcess`:
walking 1.4 m/s, cycling 4.5 m/s, driving 8-14 m/s, with traffic-light stops
for bikes and cars, so a time-to-contact estimate meets realistic stop-and-go.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from simulator.errors import ScenarioError

FloatArray = NDArray[np.float64]
Point = tuple[float, float]
Target = Callable[[float], Point]

GRID_ANGLE_DEG = 20.0  # orientation of the synthetic street grid
STRAIGHT_BELOW_M = 60.0  # shorter hops go straight, not round a block


@dataclass(frozen=True, slots=True)
class ModeSpec:
    """How one travel mode moves: speed range, how long a speed holds, traffic stops."""

    name: str
    low_mps: float
    high_mps: float
    chunk_s: tuple[float, float]
    stop_p: float = 0.0
    stop_s: tuple[float, float] = (0.0, 0.0)


MODES: dict[str, ModeSpec] = {
    "walking": ModeSpec("walking", 1.25, 1.55, (60.0, 180.0)),
    "cycling": ModeSpec("cycling", 3.8, 5.2, (30.0, 120.0), 0.15, (10.0, 40.0)),
    "driving": ModeSpec("driving", 8.0, 14.0, (15.0, 60.0), 0.2, (10.0, 45.0)),
}


def mode_spec(mode: str, speed_mps: float | None = None) -> ModeSpec:
    """The named mode, or a constant-speed mode without stops when ``speed_mps`` is given."""
    if speed_mps is not None:
        if speed_mps <= 0:
            raise ScenarioError(f"speed_mps must be > 0, got {speed_mps}")
        return ModeSpec(f"fixed@{speed_mps}", speed_mps, speed_mps, (math.inf, math.inf))
    try:
        return MODES[mode]
    except KeyError:
        raise ScenarioError(f"unknown travel mode {mode!r} (use {', '.join(MODES)})") from None


class SpeedProcess:
    """Piecewise-constant speed: a speed holds for a chunk of time, chunks may end in a stop."""

    def __init__(self, spec: ModeSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        self._rng = rng
        self._left = 0.0
        self._speed = 0.0
        self._next_is_stop = False
        self._new_chunk()

    def _new_chunk(self) -> None:
        spec, rng = self.spec, self._rng
        if self._next_is_stop:
            self._speed = 0.0
            self._left = float(rng.uniform(*spec.stop_s))
            self._next_is_stop = False
            return
        self._speed = float(rng.uniform(spec.low_mps, spec.high_mps))
        lo, hi = spec.chunk_s
        self._left = math.inf if math.isinf(lo) else float(rng.uniform(lo, hi))
        self._next_is_stop = spec.stop_p > 0 and bool(rng.random() < spec.stop_p)

    def current(self) -> tuple[float, float]:
        """(seconds left in the current chunk, its speed in m/s)."""
        return self._left, self._speed

    def consume(self, seconds: float) -> None:
        """Advance the process by ``seconds`` (at most the chunk's remainder)."""
        self._left -= seconds
        if self._left <= 1e-9:
            self._new_chunk()


class Path:
    """Piecewise-linear position over time in projected metres; clamps outside its span.

    Vertices have strictly increasing times; a dwell is two vertices at the
    same place.
    """

    __slots__ = ("t", "x", "y")

    def __init__(self, t: FloatArray, x: FloatArray, y: FloatArray) -> None:
        t = np.asarray(t, dtype=float)
        if t.ndim != 1 or t.size == 0 or np.any(np.diff(t) <= 0):
            raise ValueError("path times must be a non-empty strictly increasing 1-D array")
        self.t = t
        self.x = np.asarray(x, dtype=float)
        self.y = np.asarray(y, dtype=float)

    @classmethod
    def constant(cls, x: float, y: float, t0: float, t1: float) -> Path:
        """Standing still at (x, y) from t0 to t1."""
        return cls(np.array([t0, t1]), np.array([x, x]), np.array([y, y]))

    @property
    def start(self) -> float:
        """Time of the first vertex."""
        return float(self.t[0])

    @property
    def end(self) -> float:
        """Time of the last vertex."""
        return float(self.t[-1])

    def at(self, t: float) -> Point:
        """Position at time ``t``."""
        return float(np.interp(t, self.t, self.x)), float(np.interp(t, self.t, self.y))

    def at_many(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Positions at many times."""
        return np.interp(t, self.t, self.x), np.interp(t, self.t, self.y)

    def velocity_many(self, t: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Velocity (vx, vy) in m/s of the segment containing each time (zero outside the span)."""
        t = np.asarray(t, dtype=float)
        if self.t.size < 2:
            return np.zeros_like(t), np.zeros_like(t)
        i = np.clip(np.searchsorted(self.t, t, side="right") - 1, 0, self.t.size - 2)
        dt = self.t[i + 1] - self.t[i]
        vx = (self.x[i + 1] - self.x[i]) / dt
        vy = (self.y[i + 1] - self.y[i]) / dt
        outside = (t < self.t[0]) | (t >= self.t[-1])
        return np.where(outside, 0.0, vx), np.where(outside, 0.0, vy)

    def splice(self, other: Path) -> Path:
        """This path with [other.start, other.end] replaced by ``other`` (which must join on)."""
        t0, t1 = other.start, other.end
        sx, sy = self.at(t0)
        if math.hypot(sx - other.x[0], sy - other.y[0]) > 1e-3:
            raise ValueError("spliced path does not start where this path is")
        before = self.t < t0
        after = self.t > t1
        t = np.concatenate([self.t[before], other.t, self.t[after]])
        x = np.concatenate([self.x[before], other.x, self.x[after]])
        y = np.concatenate([self.y[before], other.y, self.y[after]])
        if self.end > t1:
            ex, ey = self.at(t1)
            if math.hypot(ex - other.x[-1], ey - other.y[-1]) > 1e-3:
                # the override ends elsewhere: it holds its last position from then on
                t = np.concatenate([self.t[before], other.t, [self.end]])
                x = np.concatenate([self.x[before], other.x, [other.x[-1]]])
                y = np.concatenate([self.y[before], other.y, [other.y[-1]]])
        return Path(*_dedupe(t, x, y))


def _dedupe(
    t: FloatArray, x: FloatArray, y: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    keep = np.concatenate([[True], np.diff(t) > 1e-9])
    return t[keep], x[keep], y[keep]


class PathBuilder:
    """Writes a path one move at a time, starting at (x, y) at time t."""

    def __init__(self, t: float, x: float, y: float) -> None:
        self.t, self.x, self.y = t, x, y
        self._t = [t]
        self._x = [x]
        self._y = [y]

    @property
    def pos(self) -> Point:
        """Current position."""
        return self.x, self.y

    def _add(self, t: float, x: float, y: float) -> None:
        if t <= self._t[-1] + 1e-9:
            if math.hypot(x - self._x[-1], y - self._y[-1]) > 1e-6:
                raise ValueError("zero-duration move")
            return
        self.t, self.x, self.y = t, x, y
        self._t.append(t)
        self._x.append(x)
        self._y.append(y)

    def stay_until(self, t: float) -> None:
        """Stand still until ``t`` (no-op if already later)."""
        if t > self.t:
            self._add(t, self.x, self.y)

    def move_to(self, x: float, y: float, speed: SpeedProcess) -> None:
        """Travel in a straight line to (x, y)."""
        while True:
            dx, dy = x - self.x, y - self.y
            dist = math.hypot(dx, dy)
            if dist < 1e-6:
                return
            left, v = speed.current()
            if v <= 0:
                speed.consume(left)
                self._add(self.t + left, self.x, self.y)
                continue
            if dist <= v * left:
                dt = dist / v
                speed.consume(dt)
                self._add(self.t + dt, x, y)
                return
            f = v * left / dist
            speed.consume(left)
            self._add(self.t + left, self.x + dx * f, self.y + dy * f)

    def move_along(self, points: Sequence[Point], speed: SpeedProcess) -> None:
        """Travel through each point in turn."""
        for px, py in points:
            self.move_to(px, py, speed)

    def route_to(self, x: float, y: float, speed: SpeedProcess, rng: np.random.Generator) -> None:
        """Travel to (x, y) round the blocks of a street grid (an L-shaped, stepped route)."""
        self.move_along(grid_route(self.pos, (x, y), rng), speed)

    def pursue(
        self,
        target: Target,
        speed: SpeedProcess,
        stop_within_m: float,
        t_max: float,
        dt: float = 1.0,
    ) -> bool:
        """Head for a moving target until within ``stop_within_m`` of it; False if ``t_max`` came first.

        The last step is shortened so the final distance is ``stop_within_m``
        exactly when the target stands still.
        """
        while self.t < t_max:
            tx, ty = target(self.t)
            if math.hypot(tx - self.x, ty - self.y) <= stop_within_m + 1e-6:
                return True
            self._step_toward(target, speed, stop_within_m, min(dt, t_max - self.t))
        return False

    def follow(
        self, target: Target, distance_m: float, until: float, speed: SpeedProcess, dt: float = 1.0
    ) -> None:
        """Stay about ``distance_m`` from a moving target until ``until`` (closing in when it moves off)."""
        while self.t < until:
            self._step_toward(target, speed, distance_m, min(dt, until - self.t))

    def _step_toward(self, target: Target, speed: SpeedProcess, keep_m: float, dt: float) -> None:
        """One step of at most ``dt`` toward where the target will be, never closer than ``keep_m``."""
        left, v = speed.current()
        step = min(dt, left)
        speed.consume(step)
        t_next = self.t + step
        tx, ty = target(t_next)
        dx, dy = tx - self.x, ty - self.y
        dist = math.hypot(dx, dy)
        travel = min(v * step, max(dist - keep_m, 0.0))
        f = travel / dist if dist > 0 else 0.0
        self._add(t_next, self.x + dx * f, self.y + dy * f)

    def build(self) -> Path:
        """The path written so far (a lone start vertex becomes a 1 s dwell)."""
        if len(self._t) == 1:
            return Path.constant(self._x[0], self._y[0], self._t[0], self._t[0] + 1.0)
        return Path(np.array(self._t), np.array(self._x), np.array(self._y))


def grid_route(a: Point, b: Point, rng: np.random.Generator) -> list[Point]:
    """Waypoints from a to b along a rotated street grid: along one axis, across, then the rest."""
    ax, ay = a
    bx, by = b
    th = math.radians(GRID_ANGLE_DEG)
    c, s = math.cos(th), math.sin(th)
    dx, dy = bx - ax, by - ay
    du = dx * c + dy * s
    dv = -dx * s + dy * c
    if abs(du) < STRAIGHT_BELOW_M or abs(dv) < STRAIGHT_BELOW_M:
        return [b]
    f = float(rng.uniform(0.2, 0.8))
    if rng.random() < 0.5:
        legs = [(du * f, 0.0), (du * f, dv)]
    else:
        legs = [(0.0, dv * f), (du, dv * f)]
    pts = [(ax + u * c - v * s, ay + u * s + v * c) for u, v in legs]
    return [*pts, b]
