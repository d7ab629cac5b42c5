"""Partition state store (issue 23): Redis fenced commit vs JetStream KV, per worker batch.

Not a test: a seeded script.  It takes real case parts: the first 90 % of the engine-core
benchmark's stream (``benchmarks/engine_core.py``, ``--subjects`` subject/victim pairs, curfew
active) through one in-process ``Engine``, then every case's stored part
(``Engine.state_delta`` of a fresh engine's first commit, as ``benchmarks/state_commit.py``
does; closed-alert parts left out).  A batch of ``--batches`` parts (default 50 and 350: a
worker batch commits about 50-360 case parts) goes to each store, ``--commits`` times, cycling
through the parts in a seeded order; every key exists before the measured commits (a warm-up
wrote them all), so each write is an update of a known revision, the steady state.

It starts its own servers on free 127.0.0.1 ports (never 6379/4222):

* ``redis-always``: redis-server as ``tests/integration/procs.redis`` configures it
  (append-only, ``appendfsync always``); ``redis-everysec``: the same with ``everysec``.
  One commit is ``PartitionStore.commit`` as the worker calls it (the fenced Lua script: epoch
  check, HSET per part; no outbox messages or alert records in the batch).
* ``kv-r1``: one nats-server (JetStream file store, default ``sync_interval``: no fsync per
  write); ``kv-r1-sync``: the same with ``sync_interval: always``; ``kv-r3``: a 3-node
  cluster (``tests/integration/nats_procs.nats_cluster``), bucket with 3 replicas.  One commit
  is one revision-checked ``kv.update(key, part, last=rev)`` per part, all of the batch in
  flight at once (``asyncio.gather``): what fencing by revision needs.  JetStream KV has no
  multi-key transaction, so this is N independent writes, not an atomic batch.

Per commit it reports wall ms (p50, p99) and this client's CPU ms (process time, mean), and
the servers' CPU ms per commit (user + system of their pids by psutil over the measured
commits, all three nodes summed for R3).  Wall time on this shared 2-core box includes waiting
for the server processes, which run on the same cores.  Usage::

    .venv/bin/python benchmarks/state_store.py                       # 2,000 subjects, 300 commits
    .venv/bin/python benchmarks/state_store.py --commits 100 --stores redis-always,kv-r3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import nats  # noqa: E402
from engine_core import T0, feed, messages_for, pinned_doc  # noqa: E402
from ingest import build_engine  # noqa: E402
from nats.js.api import KeyValueConfig, StorageType  # noqa: E402

from engine.core.effects import StateDelta  # noqa: E402
from engine.runtime.nats_store import PartitionStore  # noqa: E402
from engine.tools.native import build_name  # noqa: E402
from tests.integration import nats_procs, procs  # noqa: E402

STORES = ("redis-always", "redis-everysec", "kv-r1", "kv-r1-sync", "kv-r3")
BUCKET = "emguard_state_bench"


def case_parts(subjects: int, seed: int, rate: float) -> list[tuple[str, bytes]]:
    """Every case's stored part after 90 % of the engine-core stream, in case order."""
    doc = pinned_doc(subjects, seed)
    stream = messages_for(subjects, 6 * subjects, seed, rate)
    engine = build_engine(doc)
    feed(engine, stream[: 9 * len(stream) // 10], T0, None, drain=False)
    engine._whole_state = True  # the next delta holds every case (a fresh engine's first commit)
    parts = engine.state_delta().parts
    return [(c, p) for c, p in sorted(parts.items()) if p is not None and not c.startswith("A:")]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sizes(sizes: list[int]) -> str:
    return (f"n={len(sizes)} mean={statistics.fmean(sizes):.0f} median={statistics.median(sizes):.0f} "
            f"p99={_pct([float(s) for s in sizes], 0.99):.0f} max={max(sizes)}")


@dataclass
class Result:
    store: str
    batch: int
    commits: int
    wall_ms: list[float]
    cpu_ms: list[float]
    server_cpu_ms: float  # per commit, all server processes

    def line(self) -> str:
        return (f"store={self.store} batch={self.batch} commits={self.commits} "
                f"wall_ms_p50={_pct(self.wall_ms, 0.5):.2f} wall_ms_p99={_pct(self.wall_ms, 0.99):.2f} "
                f"client_cpu_ms={statistics.fmean(self.cpu_ms):.2f} server_cpu_ms={self.server_cpu_ms:.2f}")


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


async def measure(store: str, batch: int, commits: int, warm: int, pids: list[int],
                  commit: Callable[[list[tuple[str, bytes]]], Awaitable[None]],
                  batches: list[list[tuple[str, bytes]]]) -> Result:
    for i in range(warm):
        await commit(batches[i % len(batches)])
    wall: list[float] = []
    cpu: list[float] = []
    s0 = _cpu_s(pids)
    for i in range(commits):
        b = batches[(warm + i) % len(batches)]
        c0, w0 = time.process_time(), time.perf_counter()
        await commit(b)
        cpu.append(1e3 * (time.process_time() - c0))
        wall.append(1e3 * (time.perf_counter() - w0))
    server = 1e3 * (_cpu_s(pids) - s0) / commits
    return Result(store, batch, commits, wall, cpu, server)


def make_batches(parts: list[tuple[str, bytes]], size: int, seed: int) -> list[list[tuple[str, bytes]]]:
    """Batches of ``size`` distinct cases, cycling through a seeded order of all of them."""
    order = parts[:]
    random.Random(seed).shuffle(order)
    n = max(1, len(order) // size)
    return [order[i * size:(i + 1) * size] for i in range(n)]


async def run_redis(store: str, tmp: Path, parts: list[tuple[str, bytes]], sizes: list[int],
                    args: argparse.Namespace) -> list[Result]:
    proc = procs.redis(tmp)
    if store == "redis-everysec":
        proc.argv[proc.argv.index("always")] = "everysec"
    await proc.start()
    ps = PartitionStore(f"redis://127.0.0.1:{proc.port}/0", namespace="bench")
    out = []
    try:
        token = await ps.claim(0)
        await ps.commit(0, token, StateDelta(dict(parts), False), [], [])  # every key exists

        async def commit(b: list[tuple[str, bytes]]) -> None:
            await ps.commit(0, token, StateDelta(dict(b), False), [], [])

        assert proc.popen is not None
        for size in sizes:
            batches = make_batches(parts, size, args.seed)
            out.append(await measure(store, size, args.commits, args.warm, [proc.popen.pid], commit, batches))
            print(out[-1].line(), flush=True)
    finally:
        await ps.close()
        proc.stop()
    return out


_KEY_BAD = re.compile(r"[^-/_=.a-zA-Z0-9]")


def kv_key(case: str) -> str:
    """The case's KV key in partition 0 (KV keys allow only ``[-/_=.a-zA-Z0-9]``)."""
    return "p0." + _KEY_BAD.sub("_", case)


async def run_kv(store: str, tmp: Path, parts: list[tuple[str, bytes]], sizes: list[int],
                 args: argparse.Namespace) -> list[Result]:
    replicas = 3 if store == "kv-r3" else 1
    if replicas == 3:
        cluster = nats_procs.nats_cluster(tmp, 3)
    else:
        cluster = nats_procs.single_node(tmp, max_memory="64MB", max_file="2GB", sync_always=store == "kv-r1-sync")
    await cluster.start()
    nc = await nats.connect(servers=cluster.urls.split(","), max_reconnect_attempts=-1)
    out = []
    try:
        js = nc.jetstream(timeout=10)
        kv: Any = None
        deadline = time.time() + 60
        while kv is None:  # a new cluster needs its meta leader first
            try:
                kv = await js.create_key_value(KeyValueConfig(bucket=BUCKET, history=1, replicas=replicas,
                                                              storage=StorageType.FILE))
            except Exception:
                if time.time() > deadline:
                    raise
                await asyncio.sleep(0.5)
        keys = {c: kv_key(c) for c, _ in parts}
        assert len(set(keys.values())) == len(keys), "two cases map to one KV key"
        revision: dict[str, int] = {}
        for i in range(0, len(parts), 200):  # every key exists (create: refused if it did)
            chunk = parts[i:i + 200]
            revs = await asyncio.gather(*(kv.create(keys[c], p) for c, p in chunk))
            revision.update((c, r) for (c, _), r in zip(chunk, revs, strict=True))

        async def commit(b: list[tuple[str, bytes]]) -> None:
            revs = await asyncio.gather(*(kv.update(keys[c], p, last=revision[c]) for c, p in b))
            revision.update((c, r) for (c, _), r in zip(b, revs, strict=True))

        pids = [n.proc.popen.pid for n in cluster.nodes if n.proc.popen is not None]
        for size in sizes:
            batches = make_batches(parts, size, args.seed)
            out.append(await measure(store, size, args.commits, args.warm, pids, commit, batches))
            print(out[-1].line(), flush=True)
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        cluster.stop()
    return out


async def run(args: argparse.Namespace, parts: list[tuple[str, bytes]]) -> list[Result]:
    sizes = [int(s) for s in args.batches.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="emguard-state-store-") as t:
        for store in args.stores.split(","):
            assert store in STORES, f"unknown store {store}: one of {','.join(STORES)}"
            tmp = Path(t) / store
            tmp.mkdir()
            runner = run_redis if store.startswith("redis") else run_kv
            results += await runner(store, tmp, parts, sizes, args)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=4000.0, help="virtual arrival rate, msg/s")
    parser.add_argument("--batches", default="50,350", help="parts per commit")
    parser.add_argument("--commits", type=int, default=300, help="measured commits per store and batch")
    parser.add_argument("--warm", type=int, default=20, help="unmeasured commits first")
    parser.add_argument("--stores", default=",".join(STORES))
    args = parser.parse_args()
    print(f"build={build_name()}", flush=True)
    for binary in (shutil.which("redis-server") or "redis-server", nats_procs.nats_server_binary()):
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
        print(f"server={version.strip()}", flush=True)
    parts = case_parts(args.subjects, args.seed, args.rate)
    gc.collect()
    gc.freeze()  # the engine's heap is garbage now; keep the collector out of the timings
    print(f"subjects={args.subjects} case_parts {_sizes([len(p) for _, p in parts])}", flush=True)
    assert len(parts) >= max(int(s) for s in args.batches.split(",")), "fewer cases than a batch"
    results = asyncio.run(run(args, parts))
    by = {(r.store, r.batch): r for r in results}
    for size in (int(s) for s in args.batches.split(",")):
        redis = by.get(("redis-always", size))
        for kv in ("kv-r1", "kv-r3"):
            if redis and (k := by.get((kv, size))):
                print(f"ratio_{kv}_vs_redis_always_batch{size} "
                      f"wall_p50={_pct(k.wall_ms, 0.5) / _pct(redis.wall_ms, 0.5):.1f} "
                      f"client_cpu={statistics.fmean(k.cpu_ms) / statistics.fmean(redis.cpu_ms):.1f}")


if __name__ == "__main__":
    main()
