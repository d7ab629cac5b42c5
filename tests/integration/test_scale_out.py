"""Two workers on shared subscriptions: every case evaluated by one worker, every alert once.

Real mosquitto and Redis started here; two ``emguard serve`` processes in group ``emguard``.
The broker deals each device message to either worker, so an offender's and his victim's
fixes land on different workers; the case's owner (engine/runtime/cluster.py) must still see both.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import aiomqtt
import httpx
import pytest

from devices.timeutil import format_time
from engine.core.orders import load_orders
from engine.runtime.cluster import Cluster
from engine.tools.testing import ORIGIN, DeviceScript
from tests.integration import procs

pytestmark = pytest.mark.integration
X0, Y0 = ORIGIN
PAIRS = 8
APPROACH = [5000, 4000, 3000, 2500, 2000, 1500, 1000, 700, 400, 150]  # metres, 30 s apart


def orders() -> dict:
    now = time.time()
    return {
        "v": 1,
        "subjects": [{"id": f"S-{i}", "devices": [f"AM-{i}"]} for i in range(PAIRS)],
        "protected_persons": [{"id": f"P-{i}", "devices": [f"VD-{i}"]} for i in range(PAIRS)],
        "orders": [{
            "id": f"O-{i}", "subject": f"S-{i}", "legal_basis": "vrijheidsbeperkende_maatregel",
            "valid_from": format_time(now - 86400), "valid_until": format_time(now + 60 * 86400),
            "proximity": [{"protected_person": f"P-{i}", "alert_m": 1000, "warn_m": 3000}],
        } for i in range(PAIRS)],
    }


def workload() -> list[tuple[str, bytes]]:
    """Each offender drives at his victim (stationary, 10 km apart from the next pair)."""
    t0 = time.time() - 30 * len(APPROACH)
    out = []
    ams = [DeviceScript(f"AM-{i}") for i in range(PAIRS)]
    vds = [DeviceScript(f"VD-{i}") for i in range(PAIRS)]
    for k, d in enumerate(APPROACH):
        for i in range(PAIRS):
            vx = X0 + 10_000 * i
            out.append(vds[i].fix(t0 + 30 * k, vx, Y0, acc=10.0))
            out.append(ams[i].fix(t0 + 30 * k + 1, vx - d, Y0, acc=8.0))
    return out


class Centre:
    def __init__(self, port: int) -> None:
        self.port, self.got, self.ready = port, [], asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="centre-scale") as c:
                    await c.subscribe("em/alerts/centre", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        self.got.append(json.loads(m.payload))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


async def _publish(port: int, messages: list[tuple[str, bytes]], pause_s: float) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="devices-scale") as c:
        for topic, payload in messages:
            await c.publish(topic, payload, qos=1)
            await asyncio.sleep(pause_s)


def _critical_pairs(got: list[dict]) -> set[str]:
    return {a["protected_person"] for a in got if a["kind"] == "proximity" and a["level"] == "critical"}


async def _run(tmp: Path, kill_one: bool) -> tuple[list[dict], list[int]]:
    broker, store = procs.mosquitto(tmp), procs.redis(tmp)
    orders_file = tmp / "orders.json"
    orders_file.write_text(json.dumps(orders()))
    await broker.start()
    await store.start()
    workers = [procs.engine(tmp, broker.port, store.port, orders_file, f"emguard-engine-w{i}",
                            EMGUARD_WORKER_INDEX=str(i), EMGUARD_WORKERS="2",
                            EMGUARD_SHARED_GROUP="emguard") for i in range(2)]
    centre = Centre(broker.port)
    task = asyncio.create_task(centre.run())
    try:
        await centre.ready.wait()
        for w in workers:
            await w.start()
        for w in workers:
            await procs.ready(w)  # both subscribed to the shared group
        pub = asyncio.create_task(_publish(broker.port, workload(), 0.02))
        if kill_one:
            await procs.until(lambda: len(centre.got) >= 4, 180, "the first alerts")
            workers[1].kill()
            assert not pub.done(), "the kill must land while devices are still sending"
            await asyncio.sleep(0.5)
            await workers[1].start()
        await pub
        await procs.until(lambda: len(_critical_pairs(centre.got)) >= PAIRS, 180, "a critical alert per pair")
        await asyncio.sleep(2.0)
        owned = []
        for w in workers:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{w.port}", timeout=5,
                                         headers=procs.API_HEADERS) as c:
                owned.append(len((await c.get("/api/alerts", params={"kind": "proximity"})).json()["alerts"]))
        return centre.got, owned
    finally:
        for w in workers:
            w.stop()
        task.cancel()
        broker.stop()
        store.stop()


def _check(got: list[dict]) -> None:
    per_pair: dict[str, set[str]] = defaultdict(set)
    for a in got:
        if a["kind"] == "proximity":
            per_pair[a["protected_person"]].add(a["alert_id"])
    assert sorted(per_pair) == sorted(f"P-{i}" for i in range(PAIRS))
    assert all(len(ids) == 1 for ids in per_pair.values()), per_pair  # one alert per approach
    assert _critical_pairs(got) == {f"P-{i}" for i in range(PAIRS)}
    repeats = Counter((a["alert_id"], a["change_seq"]) for a in got)
    copies = defaultdict(set)
    for a in got:
        copies[(a["alert_id"], a["change_seq"])].add(json.dumps(a, sort_keys=True))
    assert all(len(v) == 1 for v in copies.values()), "a repeat must be an identical copy"
    return sum(c - 1 for c in repeats.values())


def test_cases_are_split_between_the_workers():
    """Both workers own cases under the stable hash, and every device maps to its pair's case."""
    book = load_orders(orders())
    owners = {Cluster.from_book(book, 0, 2).owner_of_topic(f"em/dev/AM-{i}/fix") for i in range(PAIRS)}
    assert owners == {0, 1}
    c = Cluster.from_book(book, 0, 2)
    assert all(c.owner_of_topic(f"em/dev/AM-{i}/fix") == c.owner_of_topic(f"em/dev/VD-{i}/fix")
               for i in range(PAIRS))


async def test_two_workers_raise_every_proximity_alert_once(tmp_path):
    """Offender and victim fixes dealt to different workers still meet: one alert per pair, no copy."""
    got, owned = await _run(tmp_path, kill_one=False)
    assert _check(got) == 0
    assert all(n > 0 for n in owned) and sum(owned) == PAIRS  # each worker holds its own cases


async def test_a_worker_killed_mid_run_loses_no_alert(tmp_path):
    """SIGKILL one worker after the first alerts and restart it: every pair still ends critical."""
    got, owned = await _run(tmp_path, kill_one=True)
    assert _check(got) <= 1  # at most the one message whose PUBACK raced the kill
    assert sum(owned) == PAIRS
