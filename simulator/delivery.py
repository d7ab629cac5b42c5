"""From device to broker: latency, offline buffering into late bursts, duplicates, reordering.

The device's messages (true time order) become trace messages with arrival
times.  While a device is offline its fixes are buffered and delivered when
it reconnects as JSON arrays (contract §2 bursts) of at most ``chunk`` fixes;
its events follow one by one.  An ``offline`` event may make that upload
messier (``simulator.world.Upload``): shuffled, mixed single fixes and arrays,
spread over seconds, partly sent twice.  A message may be delivered twice (a lost
PUBACK makes the device resend) or held back so it arrives after later ones.
"""

from __future__ import annotations

import math

import numpy as np

from simulator.sampling import DeviceMessage
from simulator.trace import TraceMessage
from simulator.world import Upload, World

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
        window = next((i for i, (a, b, *_) in enumerate(script.offline) if a <= m.t < b), None)
        if window is not None:
            if script.offline[window][2]:
                buffered.setdefault(window, []).append(m)
            continue
        latency = min(
            MAX_LATENCY_S, sc.delivery.latency_s * math.exp(rng.normal(0.0, LATENCY_SIGMA))
        )
        send(m.t + latency, m.kind, m.payload, m.t)

    for window, held in sorted(buffered.items()):
        _, end, _, upload = script.offline[window]
        arrival = end + float(rng.uniform(*RECONNECT_S))
        fixes = [m for m in held if m.kind == "fix"]
        if upload.plain:
            chunk = max(1, upload.chunk)
            for i in range(0, len(fixes), chunk):
                send(arrival, "fix", [m.payload for m in fixes[i : i + chunk]], end)
                arrival += BURST_GAP_S
        else:
            first = arrival
            for at, body in _messy_upload(rng, upload, fixes, first):
                send(at, "fix", body, end)
            again = [m for m in fixes if rng.random() < upload.repeat_p]
            if again:
                second = first + float(rng.uniform(0.0, upload.spread_s))
                for at, body in _messy_upload(rng, upload, again, second):
                    send(at, "fix", body, end)
            arrival = first + upload.spread_s + BURST_GAP_S
        for m in held:
            if m.kind == "event":
                send(arrival, "event", m.payload, end)
                arrival += BURST_GAP_S
    return out


def _messy_upload(
    rng: np.random.Generator, upload: Upload, fixes: list[DeviceMessage], first: float
) -> list[tuple[float, object]]:
    """One upload of ``fixes`` as ``upload`` describes, from ``first``: (arrival, payload) per
    message, a payload being one fix or an array of them."""
    out: list[tuple[float, object]] = []
    order = list(range(len(fixes)))
    if upload.shuffle:
        order = [int(i) for i in rng.permutation(len(fixes))]
    i = 0
    while i < len(order):
        size = int(rng.integers(upload.chunk_min, upload.chunk + 1))
        group = [fixes[k].payload for k in order[i : i + size]]
        i += size
        body: object = group
        if len(group) == 1 and rng.random() < upload.singles_p:
            body = group[0]
        elif len(group) > 1 and rng.random() < upload.singles_p:
            for payload in group:  # this stretch goes as single-fix messages
                out.append((first + float(rng.uniform(0.0, upload.spread_s)), payload))
            continue
        out.append((first + float(rng.uniform(0.0, upload.spread_s)), body))
    return out
