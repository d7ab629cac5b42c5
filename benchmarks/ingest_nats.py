"""Ingest over the NATS JetStream scale-out (issue 23): durable throughput per worker CPU second.

Not a test: a seeded script.  It starts its own single-node nats-server (JetStream, streams
with one replica: a throughput figure, not the 3-node cluster of ``failover.py``) and its own
redis-server (append-only, ``appendfsync always``) on free 127.0.0.1 ports, and N
``emguard serve --transport nats`` workers as subprocesses (each with its intake replica).
Once the 16 partition leases are spread over the workers it publishes the seeded fleet of
``benchmarks/ingest.py`` (``build_stream``: 1 % malformed) with a core NATS client straight
to the device subjects ``em.dev.<id>.fix`` (the EM_DEV stream stores them; devices would come
in over MQTT, which this leaves out), as fast as the server takes them.

Per worker it reports the messages it evaluated (``processed`` of its ``/healthz``: state
committed to Redis before the ack), its process CPU seconds (user + system, psutil) from the
moment the leases settled to its last evaluated message, and messages per CPU second.  CPU
time, not wall time: the box has 2 cores shared with other jobs.

``--latency`` adds a paced pass at ``--load`` (80 %) of the wall-clock rate the throughput
pass reached with the same workers: fix-to-alert latency (a centre consumer on EM_OUT; the fix
time is its publish time, an alert carries it as ``device_time``) and the outbox lag (EM_OUT's
stored timestamp minus the change's ``updated_at``, the engine's clock when it decided).

The compiled build: ``benchmarks/native_tree.py /tmp/emguard-native`` and run this script
from that copy (the ``build=`` line says which build the workers import).  Usage::

    .venv/bin/python benchmarks/ingest_nats.py --workers 1,2,3
    .venv/bin/python benchmarks/ingest_nats.py --workers 1 --latency
    .venv/bin/python benchmarks/ingest_nats.py --workers 1 --profile /tmp/w0.prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import nats  # noqa: E402
from ingest import LEVEL_ORDER, RULE_KINDS, _Stamp, build_scenario, build_stream, fix_template  # noqa: E402

from devices.timeutil import parse_time  # noqa: E402
from engine.runtime.nats_jetstream import (  # noqa: E402
    DEV_STREAM,
    INTAKE_CONSUMER,
    LEASES,
    OUT_STREAM,
    PART_STREAM,
    NatsSettings,
    ensure_setup,
    partition_consumer,
    topic_to_subject,
)
from engine.tools.native import build_name  # noqa: E402
from geo.projection import Projector  # noqa: E402
from tests.integration import nats_procs, procs  # noqa: E402


async def commits(port: int) -> int:
    """Scripts Redis ran so far: one per committed batch (the fenced commit is a Lua script)."""
    import redis.asyncio as aioredis

    r = aioredis.Redis(port=port)
    try:
        stats = await r.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))
    finally:
        await r.aclose()


def health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return dict(json.loads(r.read()))


@dataclass
class Result:
    workers: int
    published: int
    wall_s: float
    processed: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    outbox_lag_ms: list[float] = field(default_factory=list)
    alerts: int = 0
    commits: int = 0  # fenced state commits (the worker's Lua script) in the measured stretch
    intake_cpu: float = 0.0  # CPU seconds of the separate intake replicas (--intakes), same stretch

    def per_cpu(self, w: str) -> float:
        return self.processed[w] / self.cpu[w] if self.cpu.get(w) else 0.0


def warm_stream(subjects: int, seed: int) -> list[tuple[str, bytes, bytes]]:
    """One fix per device at its start position (seq 0): the devices are in service before the
    measured stream, as ``ingest.py`` enrols them (a first fix waits the reorder hold)."""
    sc = build_scenario(subjects, seed)
    lon, lat = Projector("EPSG:28992").inverse(sc.start[:, 0], sc.start[:, 1])
    out = []
    for dev, la, lo in zip(sc.devices, np.asarray(lat).tolist(), np.asarray(lon).tolist(), strict=True):
        head, tail = fix_template(dev, 0, la, lo)
        out.append((f"em/dev/{dev}/fix", head.encode(), tail.encode()))
    return out


async def publish(nc: Any, stream: list[tuple[str, bytes, bytes]], rate: float,
                  age_s: float = 0.0) -> tuple[float, float]:
    """Core NATS publishes (flushed every 500); paced at ``rate`` msg/s when > 0; the fix time
    is the publish time (``age_s`` earlier for the warm-up)."""
    stamp = _Stamp()
    t0 = time.time()
    for j, (topic, head, tail) in enumerate(stream):
        now = time.time() - age_s
        if rate > 0 and j % 20 == 0:
            while (due := t0 + j / rate) > now:
                await asyncio.sleep(due - now)
                now = time.time()
        await nc.publish(topic_to_subject(topic), head + stamp(now) + tail)
        if j % 500 == 499:
            await nc.flush()
    await nc.flush()
    return t0, time.time()


async def run_pass(args: argparse.Namespace, n_workers: int, rate: float, tmp: Path,
                   stream: list[tuple[str, bytes, bytes]], doc: dict[str, Any],
                   warm: list[tuple[str, bytes, bytes]]) -> Result:
    cluster, redis = nats_procs.single_node(tmp), procs.redis(tmp)
    orders = tmp / "orders.json"
    orders.write_text(json.dumps(doc))
    await cluster.start()
    await redis.start()
    settings = NatsSettings(servers=(cluster.urls,), redis=f"redis://127.0.0.1:{redis.port}/0",
                            orders=str(orders), worker_id="bench", replicas=1)
    nc = await nats.connect(servers=[cluster.urls], max_reconnect_attempts=-1, pending_size=64 * 2**20)
    js = nc.jetstream()
    await ensure_setup(js, settings)
    seen: list[tuple[float, float, dict[str, Any]]] = []

    async def got(msg: Any) -> None:
        seen.append((time.time(), msg.metadata.timestamp.timestamp(), json.loads(msg.data)))

    centre = await js.subscribe(f"{settings.prefix}.alerts.centre", stream=OUT_STREAM, ordered_consumer=True, cb=got)
    workers: list[procs.Proc] = []
    intakes: list[procs.Proc] = []
    try:
        own_intake = "0" if args.intakes else "1"
        for i in range(n_workers):
            api = {"EMGUARD_HTTP_PORT": "0"} if args.no_api else {}
            w = nats_procs.worker(tmp, cluster, redis.port, orders, f"w{i}", EMGUARD_NATS_REPLICAS="1",
                                  EMGUARD_NATS_INTAKE=own_intake, **api)
            if args.profile and i == 0:
                w.argv[1:1] = ["-m", "cProfile", "-o", str(args.profile)]
            await nats_procs.spawn(w)
            workers.append(w)
        for i in range(args.intakes):  # intake replicas on their own: no leases, no centre API
            q = nats_procs.worker(tmp, cluster, redis.port, orders, f"i{i}", EMGUARD_NATS_REPLICAS="1",
                                  EMGUARD_NATS_EVALUATE="0", EMGUARD_HTTP_PORT="0")
            await nats_procs.spawn(q)
            intakes.append(q)
        names = {f"w{i}" for i in range(n_workers)}
        kv = await js.key_value(LEASES)
        share = -(-16 // n_workers)
        deadline = time.time() + 300
        while time.time() < deadline:
            held: dict[str, int] = {}
            with contextlib.suppress(Exception):
                for key in await kv.keys():
                    owner = (await kv.get(key)).value.decode()
                    held[owner] = held.get(owner, 0) + 1
            if sum(held.values()) == 16 and set(held) == names and max(held.values()) <= share:
                break
            await asyncio.sleep(0.3)
        else:
            raise RuntimeError(f"leases never settled: {held}")
        await asyncio.sleep(1.0)  # the partitions restore and start pulling
        ps = {f"w{i}": psutil.Process(w.popen.pid) for i, w in enumerate(workers) if w.popen}
        ips = [psutil.Process(q.popen.pid) for q in intakes if q.popen]
        ports = {f"w{i}": w.port for i, w in enumerate(workers)}

        def cpu_now() -> dict[str, float]:
            return {k: sum(p.cpu_times()[:2]) for k, p in ps.items()}

        def done_now() -> dict[str, int]:
            return {k: int(health(port)["processed"]) for k, port in ports.items()}

        async def settle(total: int) -> None:
            """Until the workers evaluated ``total`` messages (2 minutes at most), then neither
            evaluated nor published anything for 2 s: the warm-up's alerts must not run into
            the measured stretch (they did: 7,884 and 15,051 changes counted for ~4,300)."""
            for _ in range(480):
                if sum(done_now().values()) >= total:
                    break
                await asyncio.sleep(0.25)
            def progress() -> list[tuple[int, int]]:  # evaluated and published: the outbox too
                return [(int(h["processed"]), int(h["published"])) for h in map(health, ports.values())]

            quiet, last = time.time(), progress()
            while time.time() - quiet < 2.0:
                await asyncio.sleep(0.25)
                if (d := progress()) != last:
                    quiet, last = time.time(), d

        evaluated = sum(done_now().values())
        await publish(nc, warm, 0.0, age_s=60.0)
        await settle(evaluated + len(warm))
        base_commits = await commits(redis.port)
        base_cpu, base_done = cpu_now(), done_now()
        base_intake_cpu = sum(sum(p.cpu_times()[:2]) for p in ips)
        last_cpu, last_done, t_last = dict(base_cpu), dict(base_done), time.time()
        t0, t1 = await publish(nc, stream, rate)
        quiet_since = time.time()
        while time.time() - quiet_since < 3.0 and time.time() - t1 < args.timeout:
            await asyncio.sleep(0.25)
            d, c = done_now(), cpu_now()
            for k in d:
                if d[k] != last_done[k]:
                    last_done[k], last_cpu[k] = d[k], c[k]  # CPU up to each worker's last message
                    quiet_since = t_last = time.time()
        res_intake_cpu = sum(sum(p.cpu_times()[:2]) for p in ips) - base_intake_cpu
        # everything routed and acknowledged?
        left = (await js.consumer_info(DEV_STREAM, INTAKE_CONSUMER)).num_pending
        for n in range(16):
            ci = await js.consumer_info(PART_STREAM, partition_consumer(n))
            left += ci.num_pending + ci.num_ack_pending
        res = Result(n_workers, len(stream), t_last - t0)
        res.commits = await commits(redis.port) - base_commits
        res.processed = {k: last_done[k] - base_done[k] for k in ps}
        res.cpu = {k: last_cpu[k] - base_cpu[k] for k in ps}
        res.intake_cpu = res_intake_cpu
        await asyncio.sleep(1.5)
        top: dict[str, int] = {}
        for recv, stored, a in seen:
            if stored < t0:
                continue  # the warm-up's
            res.alerts += 1
            with contextlib.suppress(KeyError, ValueError):
                res.outbox_lag_ms.append((stored - parse_time(a["updated_at"])) * 1000)
            rank = LEVEL_ORDER.index(a["level"]) if a["level"] in LEVEL_ORDER else -1
            if a["state"] in ("resolved", "closed") or rank <= top.get(a["alert_id"], -1):
                continue
            top[a["alert_id"]] = rank
            if a["kind"] in RULE_KINDS and parse_time(a["device_time"]) >= t0 - 1:
                res.latency_ms.append((recv - parse_time(a["device_time"])) * 1000)
        print(json.dumps({"workers": n_workers, "published": len(stream), "publish_rate": round(len(stream) / (t1 - t0)),
                          "unfinished": left, "wall_s": round(res.wall_s, 2), "processed": res.processed,
                          "cpu_s": {k: round(v, 2) for k, v in res.cpu.items()}, "alert_changes": res.alerts,
                          "commits": res.commits, "intake_cpu_s": round(res.intake_cpu, 2),
                          "fixes_per_commit": round(sum(res.processed.values()) / max(1, res.commits), 1)}),
              flush=True)
        return res
    finally:
        for w in (*workers, *intakes):
            w.stop()
        if args.keep_logs:  # the processes' logs, for a pass that went wrong
            keep_logs(tmp, args.keep_logs, f"w{n_workers}-{'paced' if rate else 'flood'}-")
        with contextlib.suppress(Exception):
            await centre.unsubscribe()  # before the server goes: no recreate attempts at exit
            await nc.close()
        cluster.stop()
        redis.stop()


def keep_logs(tmp: Path, to: Path, prefix: str) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for log in tmp.glob("*.log"):
        shutil.copy(log, to / f"{prefix}{log.name}")


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


async def main_async(args: argparse.Namespace) -> None:
    print(f"build={build_name()} (engine.tools.native; benchmarks/native_tree.py makes a compiled copy)")
    stream = build_stream(args.subjects, args.messages, args.seed)
    doc = build_scenario(args.subjects, args.seed).doc
    warm = warm_stream(args.subjects, args.seed)
    one_rate = 0.0
    for n in [int(x) for x in args.workers.split(",")]:
        if args.rate:  # only a paced pass, at this rate
            await paced(args, n, args.rate, stream, doc, warm)
            continue
        with tempfile.TemporaryDirectory(prefix="emguard-ingest-nats-") as tmp:
            r = await run_pass(args, n, 0.0, Path(tmp), stream, doc, warm)
        rates = [r.per_cpu(w) for w in sorted(r.processed)]
        one_rate = one_rate or rates[0]
        for w in sorted(r.processed):
            print(f"nats_w{n}_{w}_fixes={r.processed[w]} cpu_s={r.cpu[w]:.2f} fixes_per_cpu_s={r.per_cpu(w):.0f}")
        print(f"nats_w{n}_wall_fixes_per_s={sum(r.processed.values()) / r.wall_s:.0f}")
        if args.intakes:
            total = sum(r.processed.values())
            print(f"nats_w{n}_intakes={args.intakes} intake_cpu_s={r.intake_cpu:.2f} "
                  f"fixes_per_intake_cpu_s={total / max(r.intake_cpu, 1e-9):.0f} "
                  f"fixes_per_cpu_s_worker_and_intake={total / (sum(r.cpu.values()) + r.intake_cpu):.0f}")
        print(f"nats_w{n}_min_fixes_per_cpu_s={min(rates):.0f} vs_one_worker={min(rates) / one_rate:.2f}")
        if args.latency:
            await paced(args, n, args.load * sum(r.processed.values()) / r.wall_s, stream, doc, warm)


async def paced(args: argparse.Namespace, n: int, rate: float, stream: list[tuple[str, bytes, bytes]],
                doc: dict[str, Any], warm: list[tuple[str, bytes, bytes]]) -> None:
    """The latency pass: the stream published at ``rate`` msg/s."""
    with tempfile.TemporaryDirectory(prefix="emguard-ingest-nats-") as tmp:
        lat = await run_pass(args, n, rate, Path(tmp), stream, doc, warm)
    print(f"nats_w{n}_paced_msg_per_s={rate:.0f} alert_samples={len(lat.latency_ms)} "
          f"changes={lat.alerts} fixes_per_cpu_s={min(lat.per_cpu(w) for w in lat.processed):.0f}")
    print(f"nats_w{n}_fix_to_alert_p50_ms={pct(lat.latency_ms, 50):.0f} "
          f"p99_ms={pct(lat.latency_ms, 99):.0f}")
    print(f"nats_w{n}_outbox_lag_p50_ms={pct(lat.outbox_lag_ms, 50):.0f} "
          f"p99_ms={pct(lat.outbox_lag_ms, 99):.0f} max_ms={max(lat.outbox_lag_ms, default=0):.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", default="1,2,3", help="comma-separated worker counts, one pass each")
    parser.add_argument("--latency", action="store_true", help="also a paced pass per worker count")
    parser.add_argument("--load", type=float, default=0.8, help="paced rate as a share of the measured one")
    parser.add_argument("--rate", type=float, default=0.0, help="only a paced pass at this many msg/s")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--profile", type=Path, help="cProfile worker w0 into this file")
    parser.add_argument("--no-api", action="store_true",
                        help="workers without the centre HTTP API and its alert view (EMGUARD_HTTP_PORT=0)")
    parser.add_argument("--keep-logs", type=Path, help="copy the servers' and workers' logs here")
    parser.add_argument("--intakes", type=int, default=0,
                        help="run this many intake replicas as processes of their own (workers run none); "
                             "0: every worker runs one")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
