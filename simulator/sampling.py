"""What a device reports: fixes at its interval and events, in device time, before the network.

Each fix reads the device's true position, picks a positioning source from
its surroundings (GNSS outdoors, more error in the dense centre, Wi-Fi/cell
fallback indoors or during a scripted GPS loss), reports that source's 68 %
radius and adds exactly that much gaussian noise (``simulator.noise``).
Scripted multipath jumps, battery, strap state and clock skew are applied on
top.  Messages are returned in true time with per-device sequence numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from devices.timeutil import format_time
from simulator.noise import AccuracyModel, draw_errors, multipath_offset
from simulator.world import DeviceScript, World

INDOOR_RADIUS_M = 50.0  # within this of an indoor place and standing still: indoors
STILL_MPS = 0.3
LOW_BATTERY_PCT = 15.0
RECHARGE_PCT_PER_H = 40.0


@dataclass(frozen=True, slots=True)
class DeviceMessage:
    """One message as the device produced it: true time, ``fix`` or ``event``, and payload."""

    t: float
    kind: str
    device: str
    payload: dict[str, Any]


def sample_device(world: World, device: str) -> list[DeviceMessage]:
    """All fixes and events of one device over the scenario, in true-time order."""
    sc = world.sc
    person = sc.owner_of(device, "sampling")
    script = world.script(device)
    path = world.device_path(device)
    rng_t = world.rng("times", device)
    step = person.interval_s
    ts = np.arange(sc.start + rng_t.uniform(0.0, step), sc.end, step)
    ts = np.round(ts + np.clip(rng_t.normal(0.0, 0.2, ts.size), -1.0, 1.0), 3)
    ts = ts[(ts >= sc.start) & (ts < sc.end)]
    for a, b in script.off:
        ts = ts[(ts < a) | (ts >= b)]
    px, py = path.at_many(ts)
    vx, vy = path.velocity_many(ts)
    speed = np.hypot(vx, vy)
    envs = _environments(world, script, ts, px, py, speed)

    model = AccuracyModel(world.rng("accuracy", device))
    drawn = [model.draw(e) for e in envs]
    src = [d[0] for d in drawn]
    sats = [d[2] for d in drawn]
    acc = np.array([d[1] for d in drawn], dtype=float)
    if sc.noise.enabled:
        dt = np.diff(ts, prepend=ts[:1])
        ex, ey = draw_errors(world.rng("noise", device), acc, dt, sc.noise.tau_s)
    else:
        acc = np.full(ts.size, sc.noise.fixed_acc_m)
        ex, ey = np.zeros(ts.size), np.zeros(ts.size)
    ex, ey = _multipath(world, device, script, ts, envs, ex, ey)
    lat, lon = _latlon(world, px + ex, py + ey)
    batt = _battery(person.battery_pct, person.drain_pct_per_h, script, ts, sc.start)
    rng_v = world.rng("speed-report", device)

    msgs: list[tuple[float, int, str, dict[str, Any]]] = []
    for i, t in enumerate(ts):
        fix: dict[str, Any] = {
            "lat": round(float(lat[i]), 7),
            "lon": round(float(lon[i]), 7),
            "acc": float(acc[i]),
        }
        if src[i] == "gnss":
            fix["spd"] = round(max(0.0, float(speed[i] + rng_v.normal(0.0, 0.3))), 2)
            if speed[i] >= 0.5:
                fix["hdg"] = round(math.degrees(math.atan2(vx[i], vy[i])) % 360.0, 1)
        if sats[i] is not None:
            fix["sats"] = sats[i]
        fix["src"] = src[i]
        fix["batt"] = int(batt[i])
        if person.role == "subject":
            fix["strap"] = _strap(script, float(t))
        msgs.append((float(t), 0, "fix", fix))
    for t, etype, detail in script.events:
        if sc.start <= t < sc.end:
            msgs.append((round(t, 3), 1, "event", {"type": etype, "detail": dict(detail)}))
    msgs.sort(key=lambda m: (m[0], m[1]))

    seq0 = int(world.rng("seq", device).integers(1000, 90000))
    out = []
    for k, (t, _, kind, body) in enumerate(msgs):
        payload = {
            "v": 1,
            "device": device,
            "seq": seq0 + k,
            "t": format_time(t + _skew(script, t)),
            **body,
        }
        out.append(DeviceMessage(t, kind, device, payload))
    return out


def _environments(
    world: World,
    script: DeviceScript,
    ts: NDArray[np.float64],
    px: NDArray[np.float64],
    py: NDArray[np.float64],
    speed: NDArray[np.float64],
) -> list[str]:
    """Positioning environment per fix: scripted loss, indoors, dense centre or open sky."""
    sc = world.sc
    indoor = [(p.x, p.y) for p in sc.places.values() if p.indoor]
    urban = np.hypot(px - sc.center.x, py - sc.center.y) < sc.noise.urban_radius_m
    envs = np.where(urban, "urban", "open").astype(object)
    if sc.noise.indoor and indoor:
        ix = np.array([p[0] for p in indoor])
        iy = np.array([p[1] for p in indoor])
        near = (
            np.min(np.hypot(px[:, None] - ix[None, :], py[:, None] - iy[None, :]), axis=1)
            <= INDOOR_RADIUS_M
        )
        envs[near & (speed < STILL_MPS)] = "indoor"
    for a, b, env in script.env:
        envs[(ts >= a) & (ts < b)] = env
    return [str(e) for e in envs]


def _multipath(
    world: World,
    device: str,
    script: DeviceScript,
    ts: NDArray[np.float64],
    envs: list[str],
    ex: NDArray[np.float64],
    ey: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Add random urban multipath outliers and scripted jumps to the errors."""
    ex, ey = ex.copy(), ey.copy()
    noise = world.sc.noise
    rng = world.rng("multipath", device)
    if noise.enabled and noise.multipath_rate > 0:
        for i in np.flatnonzero(rng.random(ts.size) < noise.multipath_rate):
            if envs[i] == "urban":
                jx, jy = multipath_offset(rng, noise.multipath_m)
                ex[i] += jx
                ey[i] += jy
    for jump in script.jumps:
        idx = np.flatnonzero(ts >= jump.at)[: jump.count]
        jx, jy = multipath_offset(
            rng, jump.jump_m, jump.bearing_deg, spread=0.0 if jump.bearing_deg is not None else 0.2
        )
        ex[idx] += jx
        ey[idx] += jy
    return ex, ey


def _latlon(
    world: World, x: NDArray[np.float64], y: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    if x.size == 0:
        return x, y
    lon, lat = world.sc.projector.inverse(x, y)
    return np.asarray(lat), np.asarray(lon)


def _battery(
    start_pct: float, drain: float, script: DeviceScript, ts: NDArray[np.float64], t0: float
) -> NDArray[np.float64]:
    """Battery percent per fix: steady drain, a scripted run-down to 0 and a recharge."""
    level = np.clip(start_pct - drain * (ts - t0) / 3600.0, 1.0, 100.0)
    for low, dead, back in script.battery:
        ramp_from = low - 3600.0
        start_level = float(
            np.clip(start_pct - drain * (ramp_from - t0) / 3600.0, LOW_BATTERY_PCT, 100.0)
        )
        pre = (ts >= ramp_from) & (ts < low)
        level[pre] = np.interp(ts[pre], [ramp_from, low], [start_level, LOW_BATTERY_PCT + 1])
        dying = (ts >= low) & (ts < dead)
        level[dying] = np.interp(ts[dying], [low, dead], [LOW_BATTERY_PCT, 1.0])
        after = ts >= back
        level[after] = np.minimum(100.0, 1.0 + RECHARGE_PCT_PER_H * (ts[after] - back) / 3600.0)
    return np.round(level)


def _strap(script: DeviceScript, t: float) -> str:
    state = "ok"
    for a, b, s in script.strap:
        if a <= t < b:
            state = s
    return state


def _skew(script: DeviceScript, t: float) -> float:
    total = 0.0
    for a, b, skew_s, drift in script.skew:
        if a <= t < b:
            total += skew_s + drift * (t - a) / 3600.0
    return total
