"""Shared pieces of the NATS scale-out tests: orders, an approach workload, devices, a centre."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiomqtt
import nats
from nats.js.errors import NoKeysError

from devices.timeutil import format_time
from engine.core.testing import ORIGIN, DeviceScript
from engine.runtime.nats_bundle import BUNDLE_HEADER, decode_bundle
from engine.runtime.nats_jetstream import (
    LEASES,
    OUT_STREAM,
    PART_STREAM,
    PART_SUBJECT,
    NatsSettings,
    ensure_setup,
    partition_consumer,
)

X0, Y0 = ORIGIN
APPROACH = [3000, 2500, 2000, 1500, 1200, 1000, 700, 400, 150, 50]  # metres, 30 s apart


def orders(pairs: int) -> dict[str, Any]:
    now = time.time()
    return {
        "v": 1,
        "subjects": [{"id": f"S-{i}", "devices": [f"AM-{i}"]} for i in range(pairs)],
        "protected_persons": [{"id": f"P-{i}", "devices": [f"VD-{i}"]} for i in range(pairs)],
        "orders": [{
            "id": f"O-{i}", "subject": f"S-{i}", "legal_basis": "vrijheidsbeperkende_maatregel",
            "valid_from": format_time(now - 86400), "valid_until": format_time(now + 60 * 86400),
            "proximity": [{"protected_person": f"P-{i}", "alert_m": 1000, "warn_m": 3000}],
        } for i in range(pairs)],
    }


def workload(pairs: int) -> list[tuple[str, bytes]]:
    """Each offender drives at his stationary victim (pairs 10 km apart), 3 km to 50 m."""
    t0 = time.time() - 30 * len(APPROACH)
    out = []
    ams = [DeviceScript(f"AM-{i}") for i in range(pairs)]
    vds = [DeviceScript(f"VD-{i}") for i in range(pairs)]
    for k, d in enumerate(APPROACH):
        for i in range(pairs):
            vx = X0 + 10_000 * i
            out.append(vds[i].fix(t0 + 30 * k, vx, Y0, acc=10.0))
            out.append(ams[i].fix(t0 + 30 * k + 1, vx - d, Y0, acc=8.0))
    return out


def settings(urls: str, redis_port: int, orders_file: Path) -> NatsSettings:
    return NatsSettings(servers=tuple(urls.split(",")), redis=f"redis://127.0.0.1:{redis_port}/0",
                        orders=str(orders_file), worker_id="test")


async def publish(mqtt_port: int | list[int], messages: list[tuple[str, bytes]], pause_s: float,
                  identifier: str = "devices-nats") -> None:
    """Devices over MQTT 3.1.1, QoS 1 (what NATS's MQTT listener speaks), like real devices:
    a message without a PUBACK is sent again after reconnecting, to the next node if several."""
    ports = [mqtt_port] if isinstance(mqtt_port, int) else mqtt_port
    i, attempt = 0, 0
    while i < len(messages):
        port = ports[attempt % len(ports)]
        try:
            async with aiomqtt.Client("127.0.0.1", port, identifier=identifier, timeout=5,
                                      protocol=aiomqtt.ProtocolVersion.V311) as c:
                while i < len(messages):
                    topic, payload = messages[i]
                    await c.publish(topic, payload, qos=1)
                    i += 1
                    await asyncio.sleep(pause_s)
        except aiomqtt.MqttError:
            attempt += 1
            await asyncio.sleep(0.2)


class Centre:
    """Reads ``em.alerts.centre`` from the EM_OUT stream (what was stored, repeats included)."""

    def __init__(self, urls: str) -> None:
        self.urls = urls
        self.got: list[dict[str, Any]] = []
        self.nc: Any = None

    async def start(self, s: NatsSettings) -> None:
        self.nc = await nats.connect(servers=self.urls.split(","), max_reconnect_attempts=-1)
        js = self.nc.jetstream()
        await ensure_setup(js, s)

        async def got(msg: Any) -> None:
            self.got.append(json.loads(msg.data))

        await js.subscribe("em.alerts.centre", stream=OUT_STREAM, ordered_consumer=True, cb=got)

    async def leases(self) -> dict[str, str]:
        kv = await self.nc.jetstream().key_value(LEASES)
        out = {}
        with contextlib.suppress(NoKeysError):
            for key in await kv.keys():
                with contextlib.suppress(Exception):
                    out[key] = (await kv.get(key)).value.decode()
        return out

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


def sent_keys(messages: list[tuple[str, bytes]]) -> list[tuple[str, int]]:
    """(device, seq) of every fix or event the devices publish (one object per message)."""
    return [(p["device"], p["seq"]) for p in (json.loads(m) for _, m in messages)]


async def stored_keys(nc: Any) -> list[tuple[str, int]]:
    """(device, seq) of every device message stored in EM_PART (in bundles), repeats included,
    in stream order."""
    js = nc.jetstream()
    count = (await js.stream_info(PART_STREAM)).state.messages
    sub = await js.subscribe(f"{PART_SUBJECT}.>", stream=PART_STREAM, ordered_consumer=True)
    try:
        out = []
        for _ in range(count):
            msg = await sub.next_msg(timeout=10)
            payloads = ([e.payload for e in decode_bundle(msg.data)] if BUNDLE_HEADER in (msg.headers or {})
                        else [msg.data])
            for payload in payloads:
                p = json.loads(payload)
                out.append((p["device"], p["seq"]))
        return out
    finally:
        await sub.unsubscribe()


async def partitions_drained(nc: Any, partitions: int) -> bool:
    """Every message stored in EM_PART was evaluated, committed and acknowledged by its owner."""
    js = nc.jetstream()
    for n in range(partitions):
        info = await js.consumer_info(PART_STREAM, partition_consumer(n))
        if info.num_pending or info.num_ack_pending:
            return False
    return True


def proximity_ids(got: list[dict[str, Any]]) -> dict[str, set[str]]:
    per_pair: dict[str, set[str]] = defaultdict(set)
    for a in got:
        if a["kind"] == "proximity":
            per_pair[a["protected_person"]].add(a["alert_id"])
    return per_pair


def critical_pairs(got: list[dict[str, Any]]) -> set[str]:
    return {a["protected_person"] for a in got if a["kind"] == "proximity" and a["level"] == "critical"}


def repeats(got: list[dict[str, Any]]) -> int:
    """Stored copies of one (alert id, change_seq) beyond the first."""
    seen: dict[tuple[str, int], int] = defaultdict(int)
    for a in got:
        seen[(a["alert_id"], a["change_seq"])] += 1
    return sum(c - 1 for c in seen.values())
