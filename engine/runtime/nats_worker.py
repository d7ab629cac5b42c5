"""A worker of the NATS scale-out: owns partitions by lease, evaluates them with the pure Engine.

Ownership is a lease per partition in the JetStream KV bucket ``em_leases`` (key ``p{n}``,
value the worker id).  A worker takes a free partition with ``create`` (refused while another
holds it), renews it every heartbeat with ``update`` at the revision it last wrote (refused
once anyone else wrote it), and lets it go with a ``delete`` at that revision.  The bucket's
TTL (``lease_s``) is the server's clock for a dead owner: a lease not renewed for that long
disappears and the partition is free.  Workers count each other through heartbeat keys in
``em_workers`` and each keeps at most ceil(P / live workers) partitions, so a worker that
joins takes partitions from the others (they release their extras) without restarts.

Why a lease and not a ``pinned_client`` priority group: a pin is visible only when a message
arrives, but an owner must run an idle partition's timers (silence, deadlines, order expiry)
and restore its state before the first message; and the lease revision is an explicit,
testable ownership record.  The lease alone cannot stop a paused owner that wakes up after
losing it, so every takeover also raises the partition's fencing epoch in Redis
(``engine.runtime.nats_store``) and every commit is checked against it.

Per owned partition one task claims it (epoch INCR), restores its cases from Redis into the
partition's own ``Engine`` (an order book cut to the partition's cases, so timers such as order
expiry fire once in the whole cluster) and then pulls; one round task evaluates what all of
them pulled, commits it in one pipelined round trip of fenced scripts, only then acknowledges,
and publishes the outboxes (``engine.runtime.nats_rounds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from engine.core.cases import Cases, cases_of
from engine.core.config import EngineConfig, load_engine_config
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.runtime.centre_view import CentreView
from engine.runtime.device_view import DeviceHealth
from engine.runtime.heap import FreezeAfterFullPass, freeze_loaded_state
from engine.runtime.nats_caseview import DeviceFeed, ViewPublisher
from engine.runtime.nats_centre import CentreFeed
from engine.runtime.nats_intake import Intake, Router
from engine.runtime.nats_jetstream import (
    NatsSettings,
    connect,
    connect_near,
    ensure_setup,
    lease_key,
    leases,
    partition_of,
    workers,
)
from engine.runtime.nats_rounds import Owned, Rounds
from engine.runtime.nats_store import PartitionStore
from engine.runtime.store_redis import RedisStore

log = logging.getLogger(__name__)


def partition_books(book: OrderBook, partitions: int) -> dict[int, OrderBook]:
    """The order book cut into the cases of each partition (every order in exactly one)."""
    cases = cases_of(book)
    keep: dict[int, set[str]] = {n: set() for n in range(partitions)}
    for case in {*cases.of_person.values(), *cases.of_device.values()}:
        keep[partition_of(case, partitions)].add(case)
    return {n: _cut(book, cases, keep[n]) for n in range(partitions)}


def _cut(book: OrderBook, cases: Cases, keep: set[str]) -> OrderBook:
    devices = {d for d, c in cases.of_device.items() if c in keep}
    return OrderBook(
        subjects={k: v for k, v in book.subjects.items() if cases.of_person.get(f"S:{k}") in keep},
        protected_persons={k: v for k, v in book.protected_persons.items() if cases.of_person.get(f"P:{k}") in keep},
        orders={k: v for k, v in book.orders.items() if cases.of_order.get(k) in keep},
        device_owner={d: o for d, o in book.device_owner.items() if d in devices},
        owntracks={u: d for u, d in book.owntracks.items() if d in devices},
    )


class Worker:
    """Runs leases, heartbeats, an intake replica and one task per owned partition."""

    def __init__(self, settings: NatsSettings, book: OrderBook, config: EngineConfig | None = None,
                 view: CentreView | None = None, device_health: DeviceHealth | None = None) -> None:
        self.settings = settings
        self.device_health = device_health  # views.devices: each owned partition's health, centre-wide
        self.view = view  # the centre-wide read model behind this worker's HTTP API, if it has one
        self.book = book
        self.config = config or EngineConfig(prefix=settings.prefix)
        self.books = partition_books(book, settings.partitions)
        self.store = PartitionStore(settings.redis, settings.namespace)
        self.archive = RedisStore(settings.redis, settings.namespace)  # the alert records (acks)
        self.rounds = Rounds(settings, self.config, self.books, self.store)
        self.owned: dict[int, Owned] = self.rounds.owned  # the partitions whose lease this worker holds
        self.ready = False  # streams and buckets in place, leases being run
        self.connected: Callable[[], bool] = lambda: False  # the NATS connection is up
        self.intake: Intake | None = None

    async def run(self, stop: asyncio.Event) -> None:
        s = self.settings
        health = await asyncio.start_server(self._health, "0.0.0.0", s.health_port) if s.health_port else None
        nc = await connect(s, f"emguard-worker-{s.worker_id}")
        js = nc.jetstream()
        self.connected = lambda: bool(nc.is_connected)
        near: list[NATS] = []  # the intake's fast path: a connection per node
        try:
            await ensure_setup(js, s)
            lease_kv, worker_kv = await leases(js, s), await workers(js, s)
            if s.evaluate:
                self.rounds.build_engines()
            # orders, zone indexes and the built engines live as long as the process: out of
            # the collector's full passes, and what traffic adds once a full pass saw it, as
            # `serve` does (engine.runtime.heap: full passes otherwise stall every partition)
            freeze_loaded_state()
            FreezeAfterFullPass().install()
            self.ready = True
            tasks = [asyncio.create_task(self._balance(js, lease_kv, worker_kv, stop), name="balance")] \
                if s.evaluate else []
            rounds_stop = asyncio.Event()  # after the partitions' last round, not with the rest
            rounds = asyncio.create_task(self.rounds.run(js, rounds_stop), name="rounds") if s.evaluate else None
            if self.view is not None:
                self.view.archive = self.archive.alert
                tasks.append(asyncio.create_task(CentreFeed(js, s, self.view, self.archive).run(stop), name="centre-view"))
                tasks.append(asyncio.create_task(DeviceFeed(js, s, self.view.devices).run(stop), name="device-feed"))
            if s.evaluate and self.device_health is not None:
                publisher = ViewPublisher(js, s, self.owned, self.device_health)
                tasks.append(asyncio.create_task(publisher.run(stop), name="device-view"))
            if s.intake:
                router = Router(self.book, s.partitions, s.prefix, self.config.max_future_s)
                intake = self.intake = Intake(js, s, router, self.archive.alert)
                tasks.append(asyncio.create_task(intake.run(stop), name="intake"))
                for i, url in enumerate(s.servers):
                    near.append(await connect_near(s, url, f"emguard-intake-{s.worker_id}-{i}"))
                tasks.append(asyncio.create_task(intake.run_core(near, stop), name="intake-core"))
            log.info("worker %s up: %d partitions, intake %s", s.worker_id, s.partitions, s.intake)
            watched = {*tasks, *([rounds] if rounds else [])}
            done, _ = await asyncio.wait({asyncio.ensure_future(stop.wait()), *watched},
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in watched and t.exception() is not None:
                    log.error("task %s failed: %r", t.get_name(), t.exception())
            stop.set()
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for o in self.owned.values():
                o.stop.set()  # all finish their batch at once, then each lease goes
            await asyncio.gather(*(self._release(lease_kv, n) for n in list(self.owned)))
            if rounds is not None:
                rounds_stop.set()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(rounds, 5.0)
            with contextlib.suppress(Exception):
                await worker_kv.delete(s.worker_id)
        finally:
            self.ready = False
            await self.store.close()
            await self.archive.close()
            for conn in (*near, nc):
                with contextlib.suppress(Exception):
                    await conn.drain()
            if health is not None:
                health.close()

    def health(self) -> dict[str, object]:
        """What ``/readyz`` answers: set up and running leases, connected, and the counters."""
        r = self.rounds
        return {"ready": self.ready and self.connected(), "nats_connected": self.connected(),
                "partitions": sorted(self.owned), "processed": r.processed, "published": r.published,
                "repeats_dropped": r.repeats_dropped, "seq_repeats": r.seq_repeats, "rounds": r.rounds,
                "fenced": r.fenced, "intake": self._intake_counts()}

    async def _health(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """``/healthz`` (alive) and ``/readyz`` (set up and running leases) for probes."""
        with contextlib.suppress(Exception):
            line = (await asyncio.wait_for(reader.readline(), 5.0)).decode("latin-1")
            path = line.split(" ")[1] if line.count(" ") >= 2 else ""
            doc = self.health()
            ready = bool(doc["ready"])
            ok = path == "/healthz" or (path == "/readyz" and ready)
            body = json.dumps(doc).encode()
            status = "200 OK" if ok else ("503 Service Unavailable" if path == "/readyz" else "404 Not Found")
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await writer.drain()
        writer.close()

    def _intake_counts(self) -> dict[str, int]:
        i = self.intake
        return {} if i is None else {"routed": i.routed, "dead_lettered": i.dead_lettered,
                                     "fast_path_received": i.core_received, "fast_path_dropped": i.core_dropped}

    # --- ownership --------------------------------------------------------------------------
    async def _balance(self, js: JetStreamContext, lease_kv: KeyValue, worker_kv: KeyValue,
                       stop: asyncio.Event) -> None:
        s = self.settings
        first = True
        while not stop.is_set():
            # renewals first, and on their own: the heartbeat bucket losing its leader (a NATS
            # node died) must not also keep the leases held so far from being renewed
            await self._renew(lease_kv)
            try:
                await worker_kv.put(s.worker_id, b"1")
                if first:  # let the others see us before we count them (and they count us)
                    first = False
                else:
                    try:
                        alive = max(1, len(await worker_kv.keys()))
                    except NoKeysError:
                        alive = 1
                    target = math.ceil(s.partitions / alive)
                    for n in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - target)]:
                        await self._release(lease_kv, n)
                    if len(self.owned) < target:
                        await self._acquire(js, lease_kv, target)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                log.warning("lease round failed (%r); retrying", exc)
            self._forget_lapsed()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), s.heartbeat_s)

    async def _renew(self, lease_kv: KeyValue) -> None:
        """Renew every held lease at once, each bounded by a heartbeat (a stalled node must not
        hold up the others' renewals past their lease)."""
        for o in list(self.owned.values()):
            if o.task is not None and o.task.done():
                self.owned.pop(o.n, None)  # fenced or failed: the lease is not ours to delete
        await asyncio.gather(*(self._renew_one(lease_kv, o) for o in list(self.owned.values())))

    async def _renew_one(self, lease_kv: KeyValue, o: Owned) -> None:
        try:
            update = lease_kv.update(lease_key(o.n), self.settings.worker_id.encode(), last=o.revision)
            o.revision = await asyncio.wait_for(update, self.settings.heartbeat_s)
            o.renewed = time.monotonic()
        except KeyWrongLastSequenceError:
            log.warning("lease of partition %d was taken over: dropping it", o.n)
            await self._drop(o, lost=True)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("could not renew partition %d (%r)", o.n, exc)

    def _forget_lapsed(self) -> None:
        """A lease not renewed within ``lease_s`` has lapsed on the server: stop evaluating."""
        now = time.monotonic()
        for o in list(self.owned.values()):
            if now - o.renewed > self.settings.lease_s:
                log.warning("lease of partition %d lapsed unrenewed: dropping it", o.n)
                self.rounds.lose(o)
                self.owned.pop(o.n, None)

    async def _acquire(self, js: JetStreamContext, lease_kv: KeyValue, target: int) -> None:
        s = self.settings
        start = int(hashlib.sha256(s.worker_id.encode()).hexdigest(), 16) % s.partitions
        for i in range(s.partitions):
            if len(self.owned) >= target:
                return
            n = (start + i) % s.partitions
            if n in self.owned:
                continue
            try:
                revision = await lease_kv.create(lease_key(n), s.worker_id.encode())
            except KeyWrongLastSequenceError:
                continue  # held by another worker
            o = Owned(n, revision, time.monotonic())
            self.owned[n] = o
            o.task = asyncio.create_task(self.rounds.partition(js, o), name=f"partition-{n}")

    async def _release(self, lease_kv: KeyValue, n: int) -> None:
        """Hand a partition back cleanly: finish its batch, then delete the lease."""
        o = self.owned.get(n)
        if o is None:
            return
        await self._drop(o)
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError, nats.errors.Error):
            await lease_kv.delete(lease_key(n), last=o.revision)
        log.info("released partition %d", n)

    async def _drop(self, o: Owned, lost: bool = False) -> None:
        """Stop evaluating ``o``: handed back (its last pull is committed by the rounds, which
        see it until its puller has finished) or ``lost`` (nothing more of it is committed)."""
        if lost:
            self.rounds.lose(o)
        o.stop.set()
        if o.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(o.task), 5.0)
        self.owned.pop(o.n, None)


async def serve(settings: NatsSettings) -> None:
    """Run a worker without HTTP API until SIGTERM/SIGINT (``emguard serve --transport nats``
    runs ``engine.tools.serve_nats``, which adds the API and console)."""
    book = load_orders(settings.orders)
    config = load_engine_config(settings.config, settings.prefix) if settings.config else None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Worker(settings, book, config).run(stop)


def main() -> None:
    """``python -m engine.runtime.nats_worker``: settings from the environment."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(NatsSettings.from_env()))


if __name__ == "__main__":
    main()
