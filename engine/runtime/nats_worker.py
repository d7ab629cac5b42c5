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

Per owned partition one task: claim (epoch INCR), restore the partition's cases from Redis,
republish its unpublished outbox, then loop: pull a micro-batch from the partition's durable
consumer, run it and the timers through the partition's own ``Engine`` (an order book cut to
the partition's cases, so timers such as order expiry fire once in the whole cluster), commit
state + outbox + alerts in one fenced script, only then acknowledge the batch, publish the
outbox to JetStream (``Nats-Msg-Id`` = alert id and change_seq) and drop the published ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import logging
import math
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from engine.core.alert_records import AlertActionError
from engine.core.cases import Cases, cases_of
from engine.core.config import EngineConfig, load_engine_config
from engine.core.effects import Effects
from engine.core.messages import Outgoing, deadletter
from engine.core.orders import OrderBook
from engine.core.orders_load import load_orders
from engine.core.pipeline import Engine
from engine.runtime.acks import InvalidAck, parse_ack
from engine.runtime.centre_view import CentreView
from engine.runtime.nats_bundle import BUNDLE_HEADER, RecentKeys, decode_bundle
from engine.runtime.nats_centre import CentreFeed
from engine.runtime.nats_intake import TOPIC_HEADER, Intake, Router, refusal
from engine.runtime.nats_jetstream import (
    PART_STREAM,
    NatsSettings,
    connect,
    connect_near,
    ensure_setup,
    lease_key,
    leases,
    partition_consumer,
    partition_of,
    topic_to_subject,
    workers,
)
from engine.runtime.nats_store import Fenced, PartitionStore
from engine.runtime.outbound import encode_bounded
from engine.runtime.store import StoreUnavailable
from engine.runtime.store_redis import RedisStore

log = logging.getLogger(__name__)

BATCH = 4  # EM_PART messages per fetch: bundles of up to 256 device messages each, so at
# most ~1,000 fixes per round (a round holds the event loop: lease renewals must get a turn)
RECENT_KEEP_S = 60.0  # a bundled repeat of a device message within this is dropped unread
RECENT_LIMIT = 400_000  # keys kept at most (~16 MB); beyond, the engine's seq memory drops repeats
FETCH_WAIT_S = 0.5  # an idle partition still runs its timers this often
SHORT_BATCH = 64  # device messages: fewer in a round and the next fetch lingers
LINGER_S = 0.02  # a short batch waits this long for more: one commit and ack round per batch
TICK_S = 0.5
PUBLISH_WINDOW = 64  # outbox publishes in flight at once (EM_OUT de-duplicates by Nats-Msg-Id)
PUBLISH_TIMEOUT_S = 5.0  # a window's PubAcks not all back by then: the rest stays in the outbox


def msg_id(m: Outgoing, data: bytes) -> str:
    """The de-duplication id of an outgoing message: the same change always gets the same id.

    A change of an alert is (alert id, change_seq); anything else is named by its topic and
    wire bytes ``data`` (the outbox keeps a payload's key order through Redis, so a republished
    entry encodes to the same bytes).
    """
    p = m.payload
    if "alert_id" in p and "change_seq" in p:
        return f"{m.channel}:{p['alert_id']}:{p['change_seq']}"
    digest = hashlib.sha256(m.topic.encode() + b"\0" + data).hexdigest()
    if "alert_id" in p:
        return f"{m.channel}:{p['alert_id']}:{digest[:24]}"
    return f"{m.channel}:{digest[:32]}"


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


@dataclass(slots=True)
class Owned:
    """A partition this worker holds the lease of."""

    n: int
    revision: int  # the lease's revision this worker last wrote
    renewed: float  # monotonic time of that write
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    token: int = 0  # fencing epoch, once claimed
    ready: bool = False  # state restored: evaluating


class Worker:
    """Runs leases, heartbeats, an intake replica and one task per owned partition."""

    def __init__(self, settings: NatsSettings, book: OrderBook, config: EngineConfig | None = None,
                 view: CentreView | None = None) -> None:
        self.settings = settings
        self.view = view  # the centre-wide read model behind this worker's HTTP API, if it has one
        self.book = book
        self.config = config or EngineConfig(prefix=settings.prefix)
        self.books = partition_books(book, settings.partitions)
        self.store = PartitionStore(settings.redis, settings.namespace)
        self.archive = RedisStore(settings.redis, settings.namespace)  # the alert records (acks)
        self.owned: dict[int, Owned] = {}
        self.fenced = 0
        self.published = 0
        self.processed = 0  # device messages and actions evaluated (state committed, then acked)
        self.repeats_dropped = 0  # bundled copies of a device message evaluated shortly before
        self.recent = RecentKeys(RECENT_KEEP_S, RECENT_LIMIT)
        self.ready = False  # streams and buckets in place, leases being run
        self.connected: Callable[[], bool] = lambda: False  # the NATS connection is up
        self.ack_topic = f"{settings.prefix}/ack"
        self.intake: Intake | None = None
        self.fresh: dict[int, Engine] = {}  # engines built ahead, not yet used (restore needs a fresh one)

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
                self._build_engines()
            self.ready = True
            tasks = [asyncio.create_task(self._balance(js, lease_kv, worker_kv, stop), name="balance")] \
                if s.evaluate else []
            if self.view is not None:
                self.view.archive = self.archive.alert
                tasks.append(asyncio.create_task(CentreFeed(js, s, self.view, self.archive).run(stop), name="centre-view"))
            if s.intake:
                router = Router(self.book, s.partitions, s.prefix, self.config.max_future_s)
                intake = self.intake = Intake(js, s, router, self.archive.alert)
                tasks.append(asyncio.create_task(intake.run(stop), name="intake"))
                for i, url in enumerate(s.servers):
                    near.append(await connect_near(s, url, f"emguard-intake-{s.worker_id}-{i}"))
                tasks.append(asyncio.create_task(intake.run_core(near, stop), name="intake-core"))
            log.info("worker %s up: %d partitions, intake %s", s.worker_id, s.partitions, s.intake)
            done, _ = await asyncio.wait({asyncio.ensure_future(stop.wait()), *tasks},
                                         return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t in tasks and t.exception() is not None:
                    log.error("task %s failed: %r", t.get_name(), t.exception())
            stop.set()
            for t in tasks:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            for o in self.owned.values():
                o.stop.set()  # all finish their batch at once, then each lease goes
            await asyncio.gather(*(self._release(lease_kv, n) for n in list(self.owned)))
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

    def _build_engines(self) -> None:
        """Every partition's engine, before any lease is taken.  Building one (its zones'
        geometry) holds the event loop; 16 built on taking 16 leases at once held it longer
        than a lease (10,000 orders), so renewals lapsed, the leases went and were taken
        again, round after round.  A partition taken again later builds a fresh one then."""
        started = time.monotonic()
        self.fresh = {n: Engine(book, self.config) for n, book in self.books.items()}
        log.info("built %d partition engines in %.1f s", len(self.fresh), time.monotonic() - started)

    def health(self) -> dict[str, object]:
        """What ``/readyz`` answers: set up and running leases, connected, and the counters."""
        return {"ready": self.ready and self.connected(), "nats_connected": self.connected(),
                "partitions": sorted(self.owned), "processed": self.processed, "published": self.published,
                "repeats_dropped": self.repeats_dropped,
                "fenced": self.fenced, "intake": self._intake_counts()}

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
            await self._drop(o)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("could not renew partition %d (%r)", o.n, exc)

    def _forget_lapsed(self) -> None:
        """A lease not renewed within ``lease_s`` has lapsed on the server: stop evaluating."""
        now = time.monotonic()
        for o in list(self.owned.values()):
            if now - o.renewed > self.settings.lease_s:
                log.warning("lease of partition %d lapsed unrenewed: dropping it", o.n)
                o.stop.set()
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
            o.task = asyncio.create_task(self._partition(js, o), name=f"partition-{n}")

    async def _release(self, lease_kv: KeyValue, n: int) -> None:
        """Hand a partition back cleanly: finish its batch, then delete the lease."""
        o = self.owned.pop(n, None)
        if o is None:
            return
        await self._drop(o)
        with contextlib.suppress(KeyWrongLastSequenceError, KeyNotFoundError, nats.errors.Error):
            await lease_kv.delete(lease_key(n), last=o.revision)
        log.info("released partition %d", n)

    async def _drop(self, o: Owned) -> None:
        o.stop.set()
        self.owned.pop(o.n, None)
        if o.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(o.task), 5.0)

    # --- one partition ----------------------------------------------------------------------
    async def _partition(self, js: JetStreamContext, o: Owned) -> None:
        n = o.n
        try:
            o.token = await self.store.claim(n)
            parts, pending = await self.store.load(n)
            engine = self.fresh.pop(n, None) or Engine(self.books[n], self.config)
            if parts:
                for problem in engine.restore_parts(parts):
                    log.critical("partition %d: stored case state left out: %s", n, problem)
            outbox: deque[tuple[int, Outgoing]] = deque(pending)
            o.ready = True
            log.info("partition %d taken (token %d, %d case parts, %d unpublished)", n, o.token, len(parts), len(pending))
            psub = await js.pull_subscribe_bind(durable=partition_consumer(n), stream=PART_STREAM)
            try:
                await self._loop(js, o, engine, psub, outbox)
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        except Fenced as exc:
            self.fenced += 1
            log.warning("fenced: %s; dropping the partition unacknowledged", exc)
        except Exception:
            log.exception("partition %d failed; dropping it", n)

    async def _loop(self, js: JetStreamContext, o: Owned, engine: Engine,
                    psub: JetStreamContext.PullSubscription, outbox: deque[tuple[int, Outgoing]]) -> None:
        last_tick = 0.0
        short = False  # the last fetch brought a short, non-empty batch
        while True:
            await self._publish(js, o.n, outbox)
            if o.stop.is_set():
                return
            msgs: list[Msg] = []
            try:
                if short:  # let the next batch gather on the server: fewer, larger commits
                    await asyncio.sleep(LINGER_S)
                msgs = await psub.fetch(BATCH, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                pass  # nothing new: run the timers
            except (nats.errors.Error, OSError) as exc:  # e.g. the node we talk to went away
                log.warning("partition %d: fetch failed (%r); retrying", o.n, exc)
                await asyncio.sleep(0.2)
            if o.stop.is_set() and not msgs:
                return
            now = time.time()
            effects = Effects()
            items, keys = self._unbundle(msgs, effects, now)
            short = 0 < len(items) < SHORT_BATCH
            engine.prepare((topic, data, now) for topic, data in items if topic != self.ack_topic)
            for topic, data in items:
                try:
                    if topic == self.ack_topic:
                        effects.extend(self._act(engine, data, now))
                    else:
                        effects.extend(engine.handle(topic, data, now))
                except Exception:  # an engine bug on one message must not stop the partition
                    log.exception("engine failed on a message from %s", topic)
            if now - last_tick >= TICK_S:
                effects.extend(engine.tick(now))
                last_tick = now
            if not (msgs or effects.messages or effects.changes or engine.state_changed):
                continue
            if time.monotonic() - o.renewed > self.settings.lease_s:
                raise Fenced(f"partition {o.n}: lease not renewed within {self.settings.lease_s} s")
            ids = await self._commit(o, engine, effects)
            for key in keys:
                self.recent.add(key, now)
            for m in msgs:
                await m.ack()
            self.processed += len(items)
            outbox.extend(zip(ids, effects.messages, strict=True))

    def _unbundle(self, msgs: list[Msg], effects: Effects, now: float) -> tuple[list[tuple[str, bytes]], list[bytes]]:
        """(topic, payload) of every message the pulled ``EM_PART`` messages carry, in order,
        less the repeats of a device message evaluated within ``RecentKeys``' span (the other
        intake path's or another replica's copy: engine.runtime.nats_bundle), and the keys of
        those evaluated: remembered only once their commit is stored (a failed commit leaves
        them to the redelivery).  A bundle this worker cannot read is dead-lettered whole."""
        items: list[tuple[str, bytes]] = []
        keys: list[bytes] = []
        recent, taken = self.recent, set()
        for m in msgs:
            headers = m.headers or {}
            if BUNDLE_HEADER not in headers:  # an operator action, or a message routed on its own
                items.append((headers.get(TOPIC_HEADER, ""), m.data))
                continue
            try:
                entries = decode_bundle(m.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("dead-lettering an unreadable bundle (format %s): %s", headers.get(BUNDLE_HEADER), exc)
                detail = f"bundle format {headers.get(BUNDLE_HEADER)}: {exc}"
                effects.messages.append(deadletter(self.settings.prefix, refusal("bad_bundle", detail, m.subject, m.data, now)))
                continue
            for e in entries:
                if e.key in recent or e.key in taken:
                    self.repeats_dropped += 1
                    continue
                taken.add(e.key)
                keys.append(e.key)
                items.append((e.topic, e.payload))
        return items, keys

    def _act(self, engine: Engine, payload: bytes, now: float) -> Effects:
        """An operator action (``em/ack``, routed here by the intake): applied or dead-lettered."""
        try:
            command = parse_ack(payload)
            return engine.act(command.alert_id, command.action, command.by, command.note, now,
                              outcome=command.outcome, target=command.target)
        except (InvalidAck, AlertActionError) as exc:
            reason = exc.reason if isinstance(exc, InvalidAck) else "bad_ack"
            engine.stats.rejected[reason] += 1
            return Effects([deadletter(self.settings.prefix, refusal(reason, str(exc), self.ack_topic, payload, now))])

    async def _commit(self, o: Owned, engine: Engine, effects: Effects) -> list[int]:
        """The fenced commit; while Redis is down, retried (nothing is acknowledged meanwhile)."""
        alerts = {c.alert.alert_id: c.alert for c in effects.changes}
        delta = engine.state_delta()
        backoff = 0.1
        while True:
            try:
                ids = await self.store.commit(o.n, o.token, delta, effects.messages, list(alerts.values()))
                break
            except StoreUnavailable as exc:
                log.error("partition %d: state store unavailable, holding acks: %s", o.n, exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 2.0)
            except Fenced:
                engine.state_not_stored(delta)
                raise
        await self._replicated(o)
        return ids

    async def _replicated(self, o: Owned) -> None:
        """With ``redis_replicas``: hold the batch's acks until that many replicas have the commit."""
        want = self.settings.redis_replicas
        backoff = 0.1
        while want:
            try:
                if await self.store.replicated(want, self.settings.lease_s / 3):
                    return
            except StoreUnavailable:
                pass
            log.error("partition %d: fewer than %d Redis replicas hold the commit; holding acks", o.n, want)
            if time.monotonic() - o.renewed > self.settings.lease_s:
                raise Fenced(f"partition {o.n}: lease not renewed while waiting for Redis replicas")
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 2.0)

    async def _publish(self, js: JetStreamContext, n: int, outbox: deque[tuple[int, Outgoing]]) -> None:
        """Publish the outbox in order, up to ``PUBLISH_WINDOW`` in flight (``publish_async``:
        one timeout per window, not a request each); JetStream stores a repeat of an id once
        (dedup window), so entries after a failed one that were stored anyway and are published
        again later are harmless.  Only the stored prefix leaves the outbox."""
        done: list[int] = []
        while outbox:
            window = list(itertools.islice(outbox, PUBLISH_WINDOW))
            results = await self._publish_window(js, [m for _, m in window])
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            stored = next((i for i, r in enumerate(results) if isinstance(r, BaseException)), len(results))
            for _ in range(stored):
                done.append(outbox.popleft()[0])
            self.published += stored
            if failed is not None:
                if not isinstance(failed, (nats.errors.Error, OSError, TimeoutError, asyncio.CancelledError)):
                    raise failed
                log.warning("partition %d: publishing failed (%r); kept in the outbox", n, failed)
                break
        if done:
            with contextlib.suppress(StoreUnavailable):
                await self.store.published(n, done)

    @staticmethod
    async def _publish_window(js: JetStreamContext, messages: list[Outgoing]) -> list[object]:
        """Each message's PubAck or the exception that stands for it, in order."""
        futures: list[asyncio.Future[Any]] = []
        refused: BaseException | None = None
        for m in messages:
            data, _ = encode_bounded(m.payload)
            try:
                futures.append(await js.publish_async(topic_to_subject(m.topic), data, wait_stall=PUBLISH_TIMEOUT_S,
                                                      headers={"Nats-Msg-Id": msg_id(m, data)}))
            except (nats.errors.Error, OSError) as exc:  # not sent: it and the rest wait
                refused = exc
                break
        try:
            results: list[object] = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), PUBLISH_TIMEOUT_S)
        except TimeoutError as exc:
            results = [f.result() if f.done() and not f.cancelled() and f.exception() is None else exc
                       for f in futures]
        if refused is not None:
            results.append(refused)
        return results


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
