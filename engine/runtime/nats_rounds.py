"""Evaluation rounds of a NATS worker: every owned partition's pulls, one commit for them all.

Each owned partition has a task that claims it (the fencing epoch), restores its cases into
its own ``Engine`` and then only pulls: it hands what it fetched to the round and pulls again
once the round has committed and acknowledged it.  One round task evaluates what every
partition pulled, runs the timers, and commits all of it to Redis in one pipelined round trip
(a fenced script per partition, so a partition that lost its lease is refused alone), then
acknowledges, then publishes the outboxes.

Why rounds and not a commit per partition: at a steady 4,000 fixes/s over 16 partitions each
partition saw ~250 fixes/s, so per-partition commits held ~11 fixes each, and a worker spent
more CPU on commit, ack and publish round trips than on the engine (it fell 19 s behind;
benchmarks/README.md).  A round of all partitions every few milliseconds holds what all of
them received meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgspec
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from engine.core.alert_records import AlertActionError
from engine.core.config import EngineConfig
from engine.core.effects import Effects, StateDelta
from engine.core.messages import Outgoing, deadletter
from engine.core.orders import OrderBook
from engine.core.pipeline import Engine
from engine.runtime.acks import InvalidAck, parse_ack
from engine.runtime.nats_bundle import BUNDLE_HEADER, RecentKeys, decode_bundle
from engine.runtime.nats_intake import TOPIC_HEADER, refusal
from engine.runtime.nats_jetstream import (
    PART_STREAM,
    NatsSettings,
    partition_consumer,
    topic_to_subject,
)
from engine.runtime.nats_store import Fenced, PartitionStore
from engine.runtime.outbound import encode_bounded
from engine.runtime.store import StoreUnavailable

log = logging.getLogger(__name__)

ROUND_ENTRIES = 512  # device messages a partition brings to one round, about (fetch sizing)
MAX_FETCH = 64  # bundles per fetch at most
FETCH_WAIT_S = 0.5
ROUND_LINGER_S = 0.01  # after a wake-up, the round waits this long for the other partitions' pulls
TICK_S = 0.5  # an idle partition's timers run this often
RECENT_KEEP_S = 60.0  # a bundled repeat of a device message within this is dropped unread
RECENT_LIMIT = 400_000  # keys kept at most (~16 MB); beyond, the engine's seq memory drops repeats
PUBLISH_WINDOW = 64  # outbox publishes in flight at once per partition (EM_OUT de-duplicates)
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


@dataclass(slots=True)
class Owned:
    """A partition this worker holds the lease of."""

    n: int
    revision: int  # the lease's revision this worker last wrote
    renewed: float  # monotonic time of that write
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    token: int = 0  # fencing epoch, once claimed
    engine: Engine | None = None  # set once the state is restored: evaluating
    outbox: deque[tuple[int, Outgoing]] = field(default_factory=deque)
    # fetched, for the next round, and the future the round resolves once done with them
    pulled: tuple[list[Msg], asyncio.Future[None]] | None = None
    lost: bool = False  # fenced or lapsed: evaluate nothing more, acknowledge nothing
    last_tick: float = 0.0
    per_bundle: float = 1.0  # device messages per pulled message, smoothed (fetch sizing)

    @property
    def ready(self) -> bool:
        return self.engine is not None and not self.lost


@dataclass(slots=True)
class _Done:
    """What a round evaluated for one partition, waiting for its commit."""

    o: Owned
    msgs: list[Msg]
    handed: asyncio.Future[None] | None  # the puller waits on it
    keys: list[bytes]
    items: int
    effects: Effects
    delta: StateDelta


class Rounds:
    """The evaluating half of a worker (leases and balance stay in ``nats_worker.Worker``)."""

    def __init__(self, settings: NatsSettings, config: EngineConfig, books: dict[int, OrderBook],
                 store: PartitionStore) -> None:
        self.settings = settings
        self.config = config
        self.books = books
        self.store = store
        self.owned: dict[int, Owned] = {}
        self.fresh: dict[int, Engine] = {}  # engines built ahead, not yet used (restore needs a fresh one)
        self.recent = RecentKeys(RECENT_KEEP_S, RECENT_LIMIT)
        self.ack_topic = f"{settings.prefix}/ack"
        self.fenced = 0
        self.published = 0
        self.processed = 0  # device messages and actions evaluated (state committed, then acked)
        self.repeats_dropped = 0  # bundled copies of a device message evaluated shortly before
        self.seq_repeats = 0  # fixes the engines dropped as a (device, seq) seen before
        self.rounds = 0
        self._wake = asyncio.Event()
        self._to_publish = asyncio.Event()

    def build_engines(self) -> None:
        """Every partition's engine, before any lease is taken.  Building one (its zones'
        geometry) holds the event loop; 16 built on taking 16 leases at once held it longer
        than a lease (10,000 orders), so renewals lapsed, the leases went and were taken
        again, round after round.  A partition taken again later builds a fresh one then."""
        started = time.monotonic()
        self.fresh = {n: Engine(book, self.config) for n, book in self.books.items()}
        log.info("built %d partition engines in %.1f s", len(self.fresh), time.monotonic() - started)

    # --- one partition's puller -------------------------------------------------------------
    async def partition(self, js: JetStreamContext, o: Owned) -> None:
        """Claim, restore, then pull for the rounds until ``o.stop`` or the partition is lost."""
        n = o.n
        try:
            o.token = await self.store.claim(n)
            parts, pending = await self.store.load(n)
            engine = self.fresh.pop(n, None) or Engine(self.books[n], self.config)
            if parts:
                for problem in engine.restore_parts(parts):
                    log.critical("partition %d: stored case state left out: %s", n, problem)
            o.outbox.extend(pending)
            o.engine = engine
            log.info("partition %d taken (token %d, %d case parts, %d unpublished)", n, o.token, len(parts), len(pending))
            self._wake.set()  # its restored outbox goes out in the next round
            psub = await js.pull_subscribe_bind(durable=partition_consumer(n), stream=PART_STREAM)
            try:
                await self._pull(o, psub)
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        except Exception:
            log.exception("partition %d failed; dropping it", n)

    async def _pull(self, o: Owned, psub: JetStreamContext.PullSubscription) -> None:
        while not (o.stop.is_set() or o.lost):
            size = max(1, min(MAX_FETCH, int(ROUND_ENTRIES / max(o.per_bundle, 1.0))))
            try:
                msgs = await psub.fetch(size, timeout=FETCH_WAIT_S)
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # nothing new; the round runs the timers anyway
            except (nats.errors.Error, OSError) as exc:  # e.g. the node we talk to went away
                log.warning("partition %d: fetch failed (%r); retrying", o.n, exc)
                await asyncio.sleep(0.2)
                continue
            if o.lost:  # lost while fetching: the rounds may no longer see it (redelivered later)
                return
            handed = asyncio.get_running_loop().create_future()
            o.pulled = (msgs, handed)
            self._wake.set()
            await handed  # committed and acknowledged (or the partition was lost)

    # --- the rounds ---------------------------------------------------------------------------
    async def run(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """Rounds until ``stop`` (set once the partitions had their last round and let go),
        with the outboxes published beside them: a round does not wait for the PubAcks of the
        one before, and each partition's outbox still leaves in order (one publisher)."""
        publisher = asyncio.create_task(self._publisher(js, stop), name="outbox")
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), TICK_S)
                self._wake.clear()
                await asyncio.sleep(ROUND_LINGER_S)
                await self._round()
                if any(o.outbox for o in self.owned.values()):
                    self._to_publish.set()
        finally:
            self._to_publish.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(publisher, PUBLISH_TIMEOUT_S)

    async def _publisher(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        # nats-py 2.16 sets up publish_async's reply subscription on first use; several first
        # calls at once (one window per partition) each set up one and replace its map of
        # pending acks, so the earlier calls' acks never arrive (5 s stalls of the outbox
        # right after start, seen in ingest_nats.py). Set it up once, before any window.
        init = getattr(js, "_init_async_reply", None)
        if init is not None and not getattr(js, "_async_reply_prefix", None):
            await init()
        while True:
            await self._to_publish.wait()
            self._to_publish.clear()
            owned = [o for o in self.owned.values() if o.outbox and o.ready]
            try:
                stored = await asyncio.gather(*(self._publish(js, o) for o in owned))
                await self.store.published_many([(o.n, ids) for o, ids in zip(owned, stored, strict=True)])
            except StoreUnavailable as exc:  # stored in EM_OUT: a republish later is de-duplicated
                log.warning("published outbox entries not yet forgotten in Redis: %s", exc)
            except Exception:  # a bug must not end publishing: what is left goes out next time
                log.exception("publishing the outbox failed; retrying")
                await asyncio.sleep(0.5)
                self._to_publish.set()
            if stop.is_set() and not any(o.outbox and o.ready for o in self.owned.values()):
                return

    async def _round(self) -> None:
        now = time.time()
        done: list[_Done] = []
        for o in list(self.owned.values()):
            msgs, handed = o.pulled or ([], None)
            o.pulled = None
            if not o.ready:
                _resolve(handed)
                continue
            if msgs or now - o.last_tick >= TICK_S:
                d = self._evaluate(o, msgs, handed, now)
                if d is not None:
                    done.append(d)
                    continue
            _resolve(handed)
        if done:
            self.rounds += 1
            await self._commit(done, now)

    def _evaluate(self, o: Owned, msgs: list[Msg], handed: asyncio.Future[None] | None, now: float) -> _Done | None:
        engine = o.engine
        assert engine is not None
        effects = Effects()
        items, keys = self._unbundle(msgs, effects, now)
        if msgs:
            o.per_bundle = 0.7 * o.per_bundle + 0.3 * (len(items) / len(msgs))
        engine.prepare((topic, data, now) for topic, data in items if topic != self.ack_topic)
        seen_before = engine.stats.duplicates
        for topic, data in items:
            try:
                if topic == self.ack_topic:
                    effects.extend(self._act(engine, data, now))
                else:
                    effects.extend(engine.handle(topic, data, now))
            except Exception:  # an engine bug on one message must not stop the partition
                log.exception("engine failed on a message from %s", topic)
        self.seq_repeats += engine.stats.duplicates - seen_before
        if now - o.last_tick >= TICK_S:
            effects.extend(engine.tick(now))
            o.last_tick = now
        if not (msgs or effects.messages or effects.changes or engine.state_changed):
            return None
        if time.monotonic() - o.renewed > self.settings.lease_s:
            self._lose(o, f"partition {o.n}: lease not renewed within {self.settings.lease_s} s")
            return None
        return _Done(o, msgs, handed, keys, len(items), effects, engine.state_delta())

    def _lose(self, o: Owned, why: str) -> None:
        log.warning("fenced: %s; dropping the partition unacknowledged", why)
        self.fenced += 1
        self.lose(o)

    def lose(self, o: Owned) -> None:
        """Fenced, lapsed or taken over: nothing more of it is evaluated or acknowledged
        (JetStream redelivers to the next owner), and its puller is let go."""
        o.lost = True
        o.stop.set()
        if o.pulled is not None:
            _resolve(o.pulled[1])

    async def _commit(self, done: list[_Done], now: float) -> None:
        """One pipelined fenced commit for the round; while Redis is down, retried (nothing is
        acknowledged meanwhile); then the acks, partition by partition."""
        batch = [(d.o.n, d.o.token, d.delta, d.effects.messages,
                  list({c.alert.alert_id: c.alert for c in d.effects.changes}.values())) for d in done]
        backoff = 0.1
        while True:
            try:
                results = await self.store.commit_many(batch)
                break
            except StoreUnavailable as exc:
                log.error("state store unavailable, holding acks of %d partitions: %s", len(done), exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 2.0)
        await self._replicated(done)
        for d, result in zip(done, results, strict=True):
            o = d.o
            if isinstance(result, Fenced):
                assert o.engine is not None
                o.engine.state_not_stored(d.delta)
                self._lose(o, str(result))
                _resolve(d.handed)
                continue
            if o.lost:  # lapsed while waiting for Redis replicas: the next owner restores the commit
                _resolve(d.handed)
                continue
            for key in d.keys:
                self.recent.add(key, now)
            for m in d.msgs:
                await m.ack()
            self.processed += d.items
            o.outbox.extend(zip(result, d.effects.messages, strict=True))
            _resolve(d.handed)

    async def _replicated(self, done: list[_Done]) -> None:
        """With ``redis_replicas``: hold the round's acks until that many replicas have it."""
        want = self.settings.redis_replicas
        backoff = 0.1
        while want:
            try:
                if await self.store.replicated(want, self.settings.lease_s / 3):
                    return
            except StoreUnavailable:
                pass
            log.error("fewer than %d Redis replicas hold the commit; holding acks", want)
            for d in done:
                if time.monotonic() - d.o.renewed > self.settings.lease_s and not d.o.lost:
                    self._lose(d.o, f"partition {d.o.n}: lease not renewed while waiting for Redis replicas")
            if all(d.o.lost for d in done):
                return
            await asyncio.sleep(backoff)
            backoff = min(2 * backoff, 2.0)

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

    # --- the outbox ---------------------------------------------------------------------------
    async def _publish(self, js: JetStreamContext, o: Owned) -> list[int]:
        """Publish the outbox in order, up to ``PUBLISH_WINDOW`` in flight (``publish_async``:
        one timeout per window, not a request each); JetStream stores a repeat of an id once
        (dedup window), so entries after a failed one that were stored anyway and are published
        again later are harmless.  Only the stored prefix leaves the outbox: its ids are
        returned, for Redis to forget."""
        outbox, done = o.outbox, []
        while outbox:
            window = list(itertools.islice(outbox, PUBLISH_WINDOW))
            results = await _publish_window(js, [m for _, m in window])
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            stored = next((i for i, r in enumerate(results) if isinstance(r, BaseException)), len(results))
            for _ in range(stored):
                done.append(outbox.popleft()[0])
            self.published += stored
            if failed is not None:
                if not isinstance(failed, (nats.errors.Error, OSError, TimeoutError, asyncio.CancelledError)):
                    raise failed
                log.warning("partition %d: publishing failed (%r); kept in the outbox", o.n, failed)
                break
        return done


def _resolve(handed: asyncio.Future[None] | None) -> None:
    """Let a puller go on: the round is done with what it handed over."""
    if handed is not None and not handed.done():
        handed.set_result(None)


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
        results: list[object] = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True),
                                                       PUBLISH_TIMEOUT_S)
    except TimeoutError as exc:
        results = [f.result() if f.done() and not f.cancelled() and f.exception() is None else exc
                   for f in futures]
    if refused is not None:
        results.append(refused)
    return results
