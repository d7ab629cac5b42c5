"""Device events: what happens to a device beyond where it is carried.

Each writes the device's script (reported events, strap state, power, network,
positioning, clock) and, where something truly happened, a scripted ground-truth
episode keyed by the device's owner: ``device_left``, ``tamper``,
``battery_death``, ``panic``, ``gps_loss``, ``multipath``, ``offline``,
``network``, ``clock_skew``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from simulator import event_args as args
from simulator.errors import ScenarioError
from simulator.orders_doc import find_zone
from simulator.scenario import EventSpec
from simulator.truth import Episode
from simulator.world import Jump, Upload, World


def device_left(world: World, ev: EventSpec) -> None:
    """The person's device stays where it is from ``from`` to ``to`` while she moves on."""
    who = args.mover(world, ev)
    start, end = args.when(world, ev, "from"), args.when(world, ev, "to")
    if end <= start:
        raise ScenarioError(f"{ev.where}: 'to' must be after 'from'")
    world.scripts[who.device].left.append((start, end))


def tamper(world: World, ev: EventSpec) -> None:
    """Strap opened or cut (or case opened) at ``at``, closed again at ``until`` if given."""
    dev = args.device(world, ev)
    kind = str(ev.params.get("kind", "strap_open"))
    if kind not in ("strap_open", "strap_cut", "case_open"):
        raise ScenarioError(f"{ev.where}: kind must be strap_open, strap_cut or case_open")
    at = args.when(world, ev, "at")
    end = args.when(world, ev, "until") if "until" in ev.params else world.sc.end
    script = world.script(dev)
    script.events.append((at, kind, {}))
    if kind != "case_open":
        script.strap.append((at, end, "open" if kind == "strap_open" else "cut"))
    world.scripted.append(_device_episode(world, "tamper", at, end, dev, ev))


def battery_death(world: World, ev: EventSpec) -> None:
    """Low battery at ``at``, dead ``dead_after_s`` later, back on the charger at ``recharge_at``."""
    dev = args.device(world, ev)
    low = args.when(world, ev, "at")
    dead = low + args.duration(ev, "dead_after_s", 1800.0)
    back = args.when(world, ev, "recharge_at") if "recharge_at" in ev.params else math.inf
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
        world.scripted.append(_device_episode(world, "signal_loss", dead, end, dev, ev))


def panic(world: World, ev: EventSpec) -> None:
    """The victim presses the panic button at ``at``."""
    dev = args.device(world, ev)
    at = args.when(world, ev, "at")
    world.script(dev).events.append((at, "panic", {}))
    world.scripted.append(_device_episode(world, "panic", at, at, dev, ev))


def gps_loss(world: World, ev: EventSpec) -> None:
    """No GNSS from ``from`` to ``to``: Wi-Fi, cell or mixed fallback fixes with 100-2000 m radii
    (``wifi_near``: Wi-Fi with 30-60 m radii, good enough to decide on; with ``"episode": false``
    the truth lists no signal_loss for it)."""
    dev = args.device(world, ev)
    start, end = args.when(world, ev, "from"), args.when(world, ev, "to")
    fallback = str(ev.params.get("fallback", "mixed"))
    env = {"wifi": "wifi", "wifi_near": "wifi_near", "cell": "cell", "mixed": "fallback"}.get(fallback)
    if env is None:
        raise ScenarioError(f"{ev.where}: fallback must be wifi, wifi_near, cell or mixed")
    script = world.script(dev)
    script.env.append((start, end, env))
    if ev.params.get("events", True):
        script.events += [(start, "gnss_lost", {}), (end, "gnss_restored", {})]
    if ev.params.get("episode", True):
        world.scripted.append(_device_episode(world, "signal_loss", start, end, dev, ev))


def multipath(world: World, ev: EventSpec) -> None:
    """``count`` fixes from ``at`` jump ``jump_m`` (bearing_deg, or toward a person or zone)."""
    dev = args.device(world, ev)
    at = args.when(world, ev, "at")
    bearing = ev.params.get("bearing_deg")
    toward = ev.params.get("toward")
    if toward is not None:
        x, y = world.device_path(dev).at(at)
        if any(p.id == toward for p in world.sc.people):
            tx, ty = world.paths[str(toward)].at(at)
        else:
            mid = args.middle(find_zone(world.zones, str(toward), ev.params.get("order"), ev.where))
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
    """No network from ``from`` to ``to``; fixes are buffered and sent as a burst (unless
    ``buffered`` is false), uploaded as ``simulator.world.Upload`` says."""
    dev = args.device(world, ev)
    start, end = args.when(world, ev, "from"), args.when(world, ev, "to")
    if end <= start:
        raise ScenarioError(f"{ev.where}: 'to' must be after 'from'")
    p = ev.params
    chunk = p.get("chunk", 50)
    lo, hi = (int(chunk[0]), int(chunk[1])) if isinstance(chunk, list) else (int(chunk), int(chunk))
    upload = Upload(
        chunk=hi, chunk_min=lo, shuffle=bool(p.get("shuffle", False)),
        singles_p=float(p.get("singles_p", 0.0)), spread_s=float(p.get("spread_s", 0.0)),
        repeat_p=float(p.get("repeat_p", 0.0)),
    )
    if not (1 <= lo <= hi and 0 <= upload.singles_p <= 1 and 0 <= upload.repeat_p <= 1
            and upload.spread_s >= 0):
        raise ScenarioError(
            f"{ev.where}: chunk is a size or [min, max] >= 1, singles_p and repeat_p are "
            "probabilities, spread_s >= 0"
        )
    world.script(dev).offline.append((start, end, bool(p.get("buffered", True)), upload))
    if end - start >= world.sc.silent_min_s:
        world.scripted.append(_device_episode(world, "signal_loss", start, end, dev, ev))


def network(world: World, ev: EventSpec) -> None:
    """Duplicates and out-of-order delivery for one device (or all) during a window (or always)."""
    start = args.when(world, ev, "from") if "from" in ev.params else world.sc.start
    end = args.when(world, ev, "to") if "to" in ev.params else world.sc.end
    dup = float(ev.params.get("duplicate_p", 0.0))
    reorder = float(ev.params.get("reorder_p", 0.0))
    if not (0 <= dup <= 1 and 0 <= reorder <= 1):
        raise ScenarioError(f"{ev.where}: duplicate_p and reorder_p are probabilities")
    has_target = any(
        k in ev.params for k in ("device", "who", "subject", "person", "protected_person")
    )
    devices = [args.device(world, ev)] if has_target else list(world.scripts)
    for dev in devices:
        world.script(dev).glitch.append((start, end, dup, reorder))


def clock_skew(world: World, ev: EventSpec) -> None:
    """The device's clock is off by ``skew_s`` (+ ``drift_s_per_h``) from ``from`` to ``to``."""
    dev = args.device(world, ev)
    start = args.when(world, ev, "from") if "from" in ev.params else world.sc.start
    end = args.when(world, ev, "to") if "to" in ev.params else world.sc.end
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
