"""Scale-out on a real 3-node NATS cluster: devices over MQTT, intake, leased partitions, Redis.

Every test starts its own cluster (free loopback ports), Redis and ``engine.nats_worker``
processes, and stops them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from tests.integration import nats_helpers as h
from tests.integration import nats_procs, procs

pytestmark = pytest.mark.integration
PARTITIONS = 16


async def _owners(centre: h.Centre, want_workers: int, within_s: float) -> dict[str, str]:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while True:
        leases = await centre.leases()
        if len(leases) == PARTITIONS and len(set(leases.values())) == want_workers:
            return leases
        if loop.time() > end:
            raise AssertionError(f"partitions not spread over {want_workers} workers: {leases}")
        await asyncio.sleep(0.2)


class Rig:
    """A cluster, Redis, a centre reading the alert stream, and workers."""

    def __init__(self, tmp: Path, pairs: int) -> None:
        self.tmp, self.pairs = tmp, pairs
        self.cluster = nats_procs.nats_cluster(tmp)
        self.redis = procs.redis(tmp)
        self.orders = tmp / "orders.json"
        self.orders.write_text(json.dumps(h.orders(pairs)))
        self.centre = h.Centre(self.cluster.urls)
        self.workers: list[procs.Proc] = []

    async def __aenter__(self) -> Rig:
        await self.cluster.start()
        await self.redis.start()
        await self.centre.start(h.settings(self.cluster.urls, self.redis.port, self.orders))
        return self

    async def add_worker(self, name: str) -> procs.Proc:
        w = nats_procs.worker(self.tmp, self.cluster, self.redis.port, self.orders, name)
        await nats_procs.spawn(w)
        self.workers.append(w)
        return w

    async def __aexit__(self, *exc: object) -> None:
        for w in self.workers:
            if w.popen and w.popen.poll() is None:
                w.popen.send_signal(signal.SIGCONT)
            w.stop()
        await self.centre.close()
        self.cluster.stop()
        self.redis.stop()


async def test_two_workers_raise_the_approach_alert_once(tmp_path):
    """Offender and victim fixes through two intake replicas meet in one partition: one alert."""
    async with Rig(tmp_path, pairs=1) as rig:
        for i in range(2):
            await rig.add_worker(f"w{i}")
        await _owners(rig.centre, 2, 60)
        await h.publish(rig.cluster.nodes[0].mqtt_port, h.workload(1), 0.01)
        await procs.until(lambda: h.critical_pairs(rig.centre.got) == {"P-0"}, 60, "a critical proximity alert")
        await asyncio.sleep(1.0)
        ids = h.proximity_ids(rig.centre.got)
        assert {k: len(v) for k, v in ids.items()} == {"P-0": 1}, ids
        assert h.repeats(rig.centre.got) == 0
