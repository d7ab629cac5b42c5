"""From device to broker: latency, offline buffering into late bursts, duplicates, reordering.

The device's messages (true time order) become trace messages with arrival
times.  While a device is offline its fixes are buffered and delivered when
it reconnects as JSON arrays (contract §2 bursts) of at most ``chunk`` fixes;
its events follow one by one.  A message may be delivered twice (a lost
PUBACK makes the device resend) or held back so it arrives after later ones.
"""

from __future__ import annotations

import math

from simulator.sampling import DeviceMessage
from simulator.trace import TraceMessage
from simulator.world import World

LATENCY_SIGMA = 0.5  # log-normal spread of ordinary latency
MAX_LATENCY_S = 30.0
RESEND_S = (1.0, 30.0)
RECONNECT_S = (2.0, 10.0)
BURST_GAP_S = 0.1


def deliver(world: World, device: str, messages: list[DeviceMessage]) -> list[TraceMessage]:
    """Trace messages (unsorted) for one device's messages."""
    sc = world.sc
    script = world.script(device)
    rng = world.rng("delivery", device)
    topic = f"{sc.topic_prefix}/dev/{device}/"
    out: list[TraceMessage] = []
    buffered: dict[int, list[DeviceMessage]] = {}

    def glitch(t: float) -> tuple[float, float]:
        dup, reorder = sc.delivery.duplicate_p, sc.delivery.reorder_p
        for a, b, d, r in script.glitch:
            if a <= t < b:
                dup, reorder = max(dup, d), max(reorder, r)
        return dup, reorder

    def send(arrival: float, kind: str, payload: object, t: float) -> None:
        dup, reorder = glitch(t)
        if rng.random() < reorder:
            arrival += float(rng.uniform(*sc.delivery.reorder_s))
        out.append(TraceMessage(arrival, topic + kind, payload))
        if rng.random() < dup:
            out.append(TraceMessage(arrival + float(rng.uniform(*RESEND_S)), topic + kind, payload))

    for m in messages:
        window = next((i for i, (a, b, _, _) in enumerate(script.offline) if a <= m.t < b), None)
        if window is not None:
            if script.offline[window][2]:
                buffered.setdefault(window, []).append(m)
            continue
        latency = min(
            MAX_LATENCY_S, sc.delivery.latency_s * math.exp(rng.normal(0.0, LATENCY_SIGMA))
        )
        send(m.t + latency, m.kind, m.payload, m.t)

    for window, held in sorted(buffered.items()):
        _, end, _, chunk = script.offline[window]
        arrival = end + float(rng.uniform(*RECONNECT_S))
        fixes = [m for m in held if m.kind == "fix"]
        for i in range(0, len(fixes), max(1, chunk)):
            send(arrival, "fix", [m.payload for m in fixes[i : i + chunk]], end)
            arrival += BURST_GAP_S
        for m in held:
            if m.kind == "event":
                send(arrival, "event", m.payload, end)
                arrival += BURST_GAP_S
    return out
