"""The asyncio service: the only module that owns the event loop and the MQTT client.

Tasks around the pure ``Engine``:

* ``_connection``: connects (MQTT v5, falling back to 3.1.1 for brokers that
  refuse it) and subscribes; reconnects with backoff.  Received messages go
  straight from the client's callback into a **bounded** inbox
  (``engine/runtime/intake.py``): QoS 1 messages are acknowledged only once processed,
  so the broker's in-flight window limits them, and a full inbox stops the
  socket being read (explicit back-pressure, never a silent drop).
* ``_publishing``: a second connection (client id ``<client_id>-pub``) that
  publishes the outbox.  On the subscribing connection the PUBACK for an alert
  queues behind every device message the broker has already written to us: a
  flood the engine cannot keep up with (QoS 0, or mosquitto 2.0 sending past
  our Receive Maximum) held it there for over 10 s, aiomqtt gave up and the
  service reconnected, and the outbox, one alert per PUBACK, stalled meanwhile.
* ``_processor``: takes micro-batches from the inbox through the engine and
  hands them to ``_committer``, which commits in the background (group commit:
  while one commit is on its way to the store, the next batches are processed
  and go into the next commit).
* ``_ticker``: drives timers (reorder release, deadlines, silence, expiry).
* ``_store_watch``: asks the state store whether it answers, so readiness knows of an outage
  even when no commit is due.

Every task runs under ``engine.runtime.supervise.Supervisor``: a task that dies is logged with its
cause and restarted where that is safe (connections, timers); otherwise (processing,
committing) the service stops without acknowledging what it had not committed, records those
messages as suspects (``engine.runtime.poison``) and ``run`` raises ``ServiceFailed``, so the process
exits non-zero and the orchestrator restarts it.  ``readiness`` reports all of it.

With a state store (``emguard serve --redis``) ingest is at-least-once and
alerts effectively-once: QoS 1 messages are acknowledged manually, only after
the batch's state snapshot and outgoing messages are committed atomically to
the store (a transactional outbox); outbox entries are removed once the broker
acknowledged their publish.  After a crash the engine restores the snapshot,
republishes the outbox, and the broker redelivers what was never acknowledged;
the snapshot's dedup memory skips what was already applied.  While the store is
unreachable, acks are held, the broker stops sending at its in-flight limit
(back-pressure) until it returns.  Without a store (demo) a message is
acknowledged once the engine has processed it, and the outbox lives in memory and
still survives broker reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices.timeutil import format_time
from engine.core.alerts import Alert, AlertActionError
from engine.core.config import ServiceConfig
from engine.core.messages import Outgoing, deadletter
from engine.core.pipeline import Effects, Engine
from engine.runtime.acks import AckCommand, InvalidAck, parse_ack
from engine.runtime.intake import Inbox, IngestClient
from engine.runtime.outbound import encode_bounded
from engine.runtime.poison import POISON_AFTER, Suspects, message_key
from engine.runtime.store import StateStore, StoreUnavailable
from engine.runtime.supervise import ServiceFailed, Supervisor

log = logging.getLogger(__name__)

Listener = Callable[[Effects, float], None]
Ack = tuple[int, int, int]  # (connection generation, mid, qos)
BATCH = 64  # messages per micro-batch: alerts of a batch are published when it ends
PUBLISH_WINDOW = 16  # QoS 1 publishes in flight at once (paho allows 20 by default)
COMMIT_GATHER_S = 0.005  # longest a processed message waits for its commit to start
GATHER_ACKS = 64  # ... unless this many are unacknowledged already (a 3.1.1 broker may allow only 100)
MAX_UNCOMMITTED = 2048  # processed but not yet committed messages before the processor waits
# MQTT v5 Receive Maximum: unacknowledged QoS 1 messages the broker may have sent us.  Without
# it a v5 client allows 65,535 and mosquitto ignores its max_inflight_messages: a flood then
# stacks up in the socket.  1,024 is ~0.1 s of work at full speed.  Not a hard bound: mosquitto
# 2.0.11 sent 3x a Receive Maximum of 100 while acks and new messages interleaved, and 20,000+
# were outstanding in the ingest benchmark's Redis pass (hence the separate publishing connection).
RECEIVE_MAXIMUM = 1024
# reconnect backoff of both MQTT connections (receiving and publishing): the first wait, doubled
# after each failed attempt up to the last (one policy, so the two connections cannot drift apart)
MQTT_RETRY_FIRST_S = 0.2
MQTT_RETRY_MAX_S = 10.0
TICK_S = 0.2
STORE_PING_S = 2.0  # how often the store is asked whether it answers (readiness)
READY_MAX_LAG_S = 30.0  # not ready while the oldest waiting message is older than this


class Service:
    """Runs an ``Engine`` against an MQTT broker until ``stop`` is set."""

    def __init__(
        self,
        engine: Engine,
        config: ServiceConfig,
        *,
        protocol: str = "auto",
        persistent_session: bool = True,
        store: StateStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.config = config
        self.protocol = protocol
        self.persistent_session = persistent_session
        self.store = store
        self.clock = clock
        self.inbox: Inbox[tuple[float, str, bytes, Ack | None]] = Inbox(config.queue_size)
        self.outbox: deque[tuple[int | None, Outgoing]] = deque()
        self.outbox_ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self.before_ack: list[Callable[[], None]] = []  # e.g. flush the evidence log
        self.connected = False  # subscribed: what devices publish from now on reaches us
        self.connected_protocol: str | None = None
        self.publishing = False  # the outbox's own connection is up
        self.store_connected = True  # in-memory state is always there; a store is checked at start
        self.published = 0
        self.reconnects = 0
        self.last_processed = 0.0
        self._client_ref: IngestClient | None = None
        self._generation = 0
        self._staged: list[Outgoing] = []
        self._staged_alerts: dict[str, Alert] = {}
        self._held_acks: list[Ack] = []
        self._unconfirmed: list[int] = []
        self._commit_lock = asyncio.Lock()
        self._commit_wanted = asyncio.Event()
        self._commit_landed = asyncio.Event()
        # durable commits: how many, how many case parts and bytes of state, seconds spent
        self.commits = 0
        self.committed_parts = 0
        self.committed_bytes = 0
        self.commit_seconds = 0.0
        # supervision and poison messages (engine.runtime.supervise, engine.runtime.poison)
        self.supervisor = Supervisor(asyncio.Event())
        self.suspects = Suspects()
        self._uncommitted: list[tuple[str, bytes]] = []  # messages whose acks are held, in order
        self._suspects_cleared: list[str] = []  # handled suspects to forget with the next commit
        self.poisoned = 0
        self.oversized = 0
        self.unreadable_state: list[str] = []  # stored case parts that could not be restored
        # submit(): a future per message taken in another way (by id of its inbox item, alive
        # until processed), then in processing order until the commit that covers it lands
        self._submitted: dict[int, asyncio.Future[None]] = {}
        self._submitted_processed: list[asyncio.Future[None]] = []

    # --- public ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then drain, commit and publish what is left.

        Raises ``ServiceFailed`` when a supervised task failed beyond repair: nothing that was
        not committed is acknowledged then, and the caller should exit non-zero.
        """
        supervisor = self.supervisor = Supervisor(stop)
        await self._recover(stop)
        supervisor.start("mqtt", lambda: self._connection(stop), restartable=True)
        publishing = supervisor.start("mqtt-publish", self._publishing, restartable=True)
        supervisor.start("processor", self._processor, restartable=False)
        supervisor.start("committer", self._committer_loop, restartable=False)
        supervisor.start("ticker", lambda: self._ticker(stop), restartable=True)
        if self.store is not None:
            supervisor.start("store-watch", lambda: self._store_watch(stop), restartable=True)
        inner = [n for n in ("processor", "committer", "ticker", "store-watch") if n in supervisor.tasks]
        try:
            await stop.wait()
        finally:
            supervisor.stopping = True
            await supervisor.cancel(inner)
            if supervisor.fatal is None:
                try:
                    await self._drain_inbox()
                    self._emit(self.engine.flush(self.clock()))
                    with contextlib.suppress(StoreUnavailable):
                        await self._commit()
                except Exception as exc:
                    log.exception("failed while draining at shutdown")
                    supervisor.fail(f"shutdown drain failed: {type(exc).__name__}: {exc}")
            if supervisor.fatal is not None:
                await self._record_suspects()
            self._fail_submitted(supervisor.fatal or "the service stopped before committing it")
            await self._final_publish(publishing)
            await self._close(supervisor.tasks["mqtt"])
            if self.store is not None:
                await self.store.close()
        if supervisor.fatal is not None:
            raise ServiceFailed(supervisor.fatal)

    def readiness(self) -> dict[str, Any]:
        """Whether the service does its job now, and each reason it may not (``/readyz``).

        Ready only when device messages reach us and alerts can leave (each has its own
        connection), the store answers, every supervised task runs and no message has waited
        longer than ``READY_MAX_LAG_S``.
        """
        now = self.clock()
        lag = max(0.0, now - self.inbox[0][0]) if self.inbox else 0.0
        supervisor = self.supervisor
        problems = []
        if not self.connected:
            problems.append("not subscribed to the broker")
        if not self.publishing:
            problems.append("publishing connection down")
        if not self.store_connected:
            problems.append("state store unreachable")
        if supervisor.fatal is not None:
            problems.append(f"failed: {supervisor.fatal}")
        elif not supervisor.healthy:
            down = sorted(n for n, h in supervisor.health.items() if not h.running)
            problems.append(f"task(s) not running: {', '.join(down)}")
        if lag > READY_MAX_LAG_S:
            problems.append(f"processing lag {lag:.0f} s")
        last = self.last_processed
        return {
            "ready": not problems,
            "problems": problems,
            "broker_connected": self.connected,
            "publishing_connected": self.publishing,
            "store_connected": self.store_connected,
            "tasks": supervisor.report(),
            "inbox_depth": self.inbox.qsize(),
            "outbox_depth": len(self.outbox),
            "uncommitted": len(self._held_acks),
            "lag_s": round(lag, 3),
            "last_processed": format_time(last) if last else None,
            # not a reason to be unready (every other case is monitored), but never silent
            "unreadable_state_parts": len(self.unreadable_state),
        }

    async def submit(self, topic: str, payload: bytes) -> None:
        """A device message that came another way than MQTT (e.g. the victim app over HTTPS).

        It joins the inbox like a message from the broker, so it is decoded, evaluated and
        dead-lettered exactly alike; returns once it is processed and committed (with a store:
        durable), so the caller may then tell the device it can forget the message.
        """
        if self.supervisor.stopping:
            raise ServiceFailed("the service is stopping")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (self.clock(), topic, payload, None)
        self._submitted[id(item)] = done
        self.inbox.put_nowait(item)
        await done

    def act(
        self, alert_id: str, action: str, by: str, note: str, *,
        outcome: str = "", target: str = "", supervisor: bool = False,
    ) -> Effects:
        """An operator action (``Engine.act``) at the service's clock; published like every other change."""
        effects = self.engine.act(
            alert_id, action, by, note, self.clock(), outcome=outcome, target=target, supervisor=supervisor
        )
        self._emit(effects)
        return effects

    def apply(self, effects: Effects) -> None:
        """Publish and fan out effects produced outside the service loop (e.g. order changes)."""
        self._emit(effects)

    # --- recovery -------------------------------------------------------------------------
    async def _recover(self, stop: asyncio.Event) -> None:
        """Restore the last committed state and re-queue unconfirmed outbox entries."""
        if self.store is None:
            return
        backoff = 0.2
        while not stop.is_set():
            try:
                parts = await self.store.load_state()
                pending = await self.store.pending()
                self.suspects = Suspects(await self.store.suspects())
                break
            except StoreUnavailable as exc:
                self.store_connected = False
                log.warning("state store unavailable at start (%s); retrying", exc)
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 5.0)
        else:
            return
        self.store_connected = True
        if parts:
            self.unreadable_state = self.engine.restore_parts(parts)
            for problem in self.unreadable_state:
                log.critical("stored case state left out, its case starts afresh: %s", problem)
            log.info(
                "restored engine state (%d alerts, %d case parts)", len(self.engine.alerts.alerts), len(parts)
            )
        if self.suspects:
            log.warning(
                "%d message(s) were in flight when the service last failed: each is handled "
                "alone; one in flight at %d failures is dead-lettered as poison",
                len(self.suspects.counts), POISON_AFTER,
            )
        self.outbox.extend(pending)
        if pending:
            log.info("republishing %d unconfirmed outbox messages", len(pending))
            self.outbox_ready.set()

    # --- tasks ----------------------------------------------------------------------------
    async def _connection(self, stop: asyncio.Event) -> None:
        backoff = MQTT_RETRY_FIRST_S
        while not stop.is_set():
            tried = self._protocol_version()
            try:
                async with self._client(tried) as client:
                    self._generation += 1
                    self._client_ref = client
                    backoff = MQTT_RETRY_FIRST_S
                    await self._subscribe(client)
                    # only now: /readyz (and the tests) rely on it meaning "messages published
                    # from here on reach us"; a broker drops what arrives before the SUBACK
                    self.connected = True
                    log.info("connected to %s (MQTT %s)", self._broker_address(), self.connected_protocol)
                    await self._read(client, stop)
                    if stop.is_set():
                        await self._leave_shared_group(client)
            except aiomqtt.MqttError as exc:
                if self._v5_refused(exc, tried):
                    continue
                log.warning("MQTT connection lost or refused: %s; retrying in %.1f s", exc, backoff)
            finally:
                if self.connected:
                    self.reconnects += 1
                self.connected = False
                self._client_ref = None
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, MQTT_RETRY_MAX_S)

    async def _publishing(self) -> None:
        """The outbox's connection: publishes only, so its PUBACKs never wait behind device traffic.

        Runs until cancelled (after the final publish at shutdown); reconnects with backoff.
        """
        backoff = MQTT_RETRY_FIRST_S
        while True:
            tried = self._protocol_version()
            try:
                async with self._publish_client(tried) as client:
                    self.publishing = True
                    backoff = MQTT_RETRY_FIRST_S
                    await self._publisher(client)
            except aiomqtt.MqttError as exc:
                if self._v5_refused(exc, tried):
                    continue
                log.warning("MQTT publishing connection lost or refused: %s; retrying in %.1f s", exc, backoff)
            finally:
                self.publishing = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MQTT_RETRY_MAX_S)

    async def _read(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        """Until ``stop`` or the connection is lost (messages themselves arrive in ``_receive``)."""
        stopper = asyncio.ensure_future(stop.wait())
        # the client's iterator never yields (its messages go to the inbox) but raises once
        # the connection is lost
        lost = asyncio.ensure_future(client.messages.__anext__())
        try:
            await asyncio.wait({lost, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                lost.result()  # the MqttError that ended the connection
        finally:
            stopper.cancel()
            if not lost.done():
                lost.cancel()
                # it may fail as the connection closes: retrieve it so nothing is logged as lost
                lost.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _receive(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """A message paho read itself, from the client's packet handling (on the event loop)."""
        ack = (self._generation, mid, qos) if qos else None
        self.inbox.put_nowait((self.clock(), topic, payload, ack))
        if self.inbox.full and self._client_ref is not None:
            self._client_ref.pause_reading()

    def _receive_many(self, items: list[tuple[str, bytes, int, int]]) -> None:
        """The messages of one socket read (``IngestClient``), all arrived now."""
        arrival, generation = self.clock(), self._generation
        self.inbox.put_many(
            [(arrival, topic, payload, (generation, mid, qos) if qos else None) for topic, payload, mid, qos in items]
        )
        if self.inbox.full and self._client_ref is not None:
            self._client_ref.pause_reading()

    async def _publisher(self, client: IngestClient) -> None:
        # the client's message iterator never yields here (nothing is subscribed) but raises once
        # the connection is lost: without it an idle publisher noticed a dead broker only at the
        # next alert, and ``publishing`` (readiness, the metric) stayed true meanwhile
        lost = asyncio.ensure_future(client.messages.__anext__())
        try:
            await self._publish_until_lost(client, lost)
        finally:
            if not lost.done():
                lost.cancel()
                lost.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _publish_until_lost(self, client: IngestClient, lost: asyncio.Future[Any]) -> None:
        while True:
            while self.outbox:
                window = self._publish_window()
                acked = await client.publish_many([(m.topic, self._encode(m)) for _, m in window])
                for (outbox_id, _), ok in zip(window, acked, strict=True):
                    if not ok:
                        await self._confirm_published()
                        # the rest stays in the outbox for the next connection
                        raise aiomqtt.MqttError("publishing connection lost or timed out before a PUBACK")
                    self.outbox.popleft()
                    self.published += 1
                    if outbox_id is not None:
                        self._unconfirmed.append(outbox_id)
                await self._confirm_published()
            await self._confirm_published()
            self.outbox_ready.clear()
            ready = asyncio.ensure_future(self.outbox_ready.wait())
            try:
                await asyncio.wait({ready, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if lost.done():
                lost.result()  # the MqttError that ended the connection
                raise aiomqtt.MqttError("publishing connection lost")

    def _encode(self, message: Outgoing) -> bytes:
        """The wire bytes of an outbox entry, never larger than the broker takes.

        A message over the broker's maximum packet size makes mosquitto close the connection;
        republished after every reconnect it stopped every alert behind it (a 2 MB operator note
        did this).  Such a message goes out shortened (long texts cut, long lists trimmed,
        marked ``"truncated": true``) and is counted, so the centre still hears of the alert.
        """
        data, shortened = encode_bounded(message.payload)
        if shortened:
            self.oversized += 1
            log.error("outgoing message on %s was too large; published shortened", message.topic)
        return data

    def _publish_window(self) -> list[tuple[int | None, Outgoing]]:
        """The next outbox entries to have in flight at once, in outbox order.

        Up to PUBLISH_WINDOW QoS 1 publishes share one PUBACK round trip; the client writes them
        in order, so the broker delivers them in order.  A crash between their PUBACKs and the
        outbox confirmation publishes the window again, so a window holds only what a repeat
        cannot harm: messages forwarded to the worker owning their case (its (device, seq)
        memory drops a repeat) and, without a store, everything (there is nothing to replay).
        Alert traffic with a durable outbox goes one message at a time: a crash repeats at most
        one change (an identical copy: same alert id and change_seq).
        """
        window: list[tuple[int | None, Outgoing]] = []
        for entry in itertools.islice(self.outbox, PUBLISH_WINDOW):
            outbox_id, message = entry
            if outbox_id is not None and message.channel != "forward":
                return window or [entry]
            window.append(entry)
        return window

    async def _confirm_published(self) -> None:
        """Remove broker-acknowledged entries from the durable outbox (retried if the store is down)."""
        if self.store is None:
            return
        while self._unconfirmed:
            done = list(self._unconfirmed)
            try:
                await self.store.published(done)
            except StoreUnavailable:
                self.store_connected = False
                return
            del self._unconfirmed[: len(done)]

    async def _processor(self) -> None:
        ack_topic = f"{self.config.topic_prefix}/ack"
        while True:
            await self.inbox.wait()
            batch = self.inbox.take(BATCH)
            client = self._client_ref
            if client is not None and client.paused and self.inbox.drained:
                client.resume_reading()
            if self.suspects:
                await self._process_with_suspects(batch, ack_topic)
            else:
                self._prepare(batch, ack_topic)
                for item in batch:
                    self._process(item, ack_topic)
            self._commit_wanted.set()
            if len(self._held_acks) >= MAX_UNCOMMITTED:
                # the store is slow or down: stop taking messages until a commit lands
                # (the broker stops too, at its in-flight limit of unacknowledged messages)
                await self._committed_some()
            else:
                # let the publisher send this batch's alerts, the committer ack them and the
                # reader refill the inbox: ``inbox.wait`` does not yield while messages wait
                await asyncio.sleep(0)

    def _prepare(self, batch: list[tuple[float, str, bytes, Ack | None]], ack_topic: str) -> None:
        """Decode a batch ahead and project its fixes in one call (``Engine.prepare``).

        Only a shortcut: when it fails, each message is decoded as it is handled, where a
        failure is the one message's dead letter.
        """
        try:
            self.engine.prepare([(t, p, a) for a, t, p, _ in batch if t != ack_topic])
        except Exception:
            log.exception("decoding a batch ahead failed; decoding its messages one by one")
            self.engine.stats.rejected["prepare_failed"] += 1

    def _process(self, item: tuple[float, str, bytes, Ack | None], ack_topic: str) -> None:
        arrival, topic, payload, ack = item
        if self._submitted:
            waiter = self._submitted.pop(id(item), None)
            if waiter is not None:
                self._submitted_processed.append(waiter)
        if topic == ack_topic:
            self._ack_message(payload, arrival)
        else:
            self._handle(topic, payload, arrival)
        if ack is not None:
            self._held_acks.append(ack)
            self._uncommitted.append((topic, payload))
        self.last_processed = arrival

    async def _process_with_suspects(
        self, batch: list[tuple[float, str, bytes, Ack | None]], ack_topic: str
    ) -> None:
        """After a failure: a suspect is committed alone, a poison message only dead-lettered."""
        for item in batch:
            arrival, topic, payload, ack = item
            key = message_key(topic, payload)
            failures = self.suspects.failures(key)
            if not failures:
                self._process(item, ack_topic)
                continue
            if self.suspects.is_poison(key):
                self.poisoned += 1
                self.engine.stats.rejected["poison"] += 1
                log.error("dead-lettering a message on %s: in flight at %d failures", topic, failures)
                self._dead_letter(
                    "poison", f"the service failed {failures} times with this message in flight",
                    topic, payload[:4096], arrival,
                )
                if ack is not None:
                    self._held_acks.append(ack)
                self._suspects_cleared.append(key)
                continue
            # everything before it committed first, so it is the only message a failure can blame
            await self._commit_until_stored()
            self._process(item, ack_topic)
            self._suspects_cleared.append(key)
            await self._commit_until_stored()

    async def _record_suspects(self) -> None:
        """The service failed: count a failure for every message it had not committed."""
        keys = list(dict.fromkeys(message_key(t, p) for t, p in self._uncommitted))
        if not keys:
            return
        log.error("%d uncommitted message(s) recorded as suspects of the failure", len(keys))
        if self.store is None:
            for key in keys:
                self.suspects.counts[key] = self.suspects.counts.get(key, 0) + 1
            return
        try:
            await self.store.add_suspects(keys)
        except StoreUnavailable as exc:
            log.error("could not record suspects, the store is unreachable: %s", exc)

    async def _committer_loop(self) -> None:
        """Commit whatever the processor left uncommitted, one commit at a time."""
        while True:
            await self._commit_wanted.wait()
            if self.store is not None:
                # gather a few milliseconds of batches into one commit: a store round trip per
                # message would cost more than the message; stop short of the broker's in-flight
                # limit, which stops delivery until acks flow again
                if len(self._held_acks) < GATHER_ACKS:
                    await asyncio.sleep(COMMIT_GATHER_S)
            self._commit_wanted.clear()
            await self._commit_until_stored()
            self._commit_landed.set()

    async def _committed_some(self) -> None:
        self._commit_landed.clear()
        await self._commit_landed.wait()

    async def _ticker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._emit(self.engine.tick(self.clock()))
            # time alone changes state too (escalations, a victim's old positions forgotten)
            if self._staged or self._staged_alerts or (self.store is not None and self.engine.state_changed):
                self._commit_wanted.set()
            await asyncio.sleep(TICK_S)

    async def _store_watch(self, stop: asyncio.Event) -> None:
        """Ask the store whether it answers: a Redis outage shows in readiness with no commit due."""
        assert self.store is not None
        while not stop.is_set():
            up = await self.store.ping()
            if up and not self.store_connected:
                log.warning("state store reachable again")
                self.outbox_ready.set()  # retry confirmations held while the store was down
            elif not up and self.store_connected:
                log.error("state store does not answer")
            self.store_connected = up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STORE_PING_S)

    # --- durability -----------------------------------------------------------------------
    async def _commit_until_stored(self) -> None:
        """Commit staged effects; while the store is down, keep trying (acks stay held)."""
        backoff = 0.1
        while True:
            try:
                await self._commit()
                return
            except StoreUnavailable as exc:
                if self.store_connected:
                    log.error("state store unavailable, holding acks: %s", exc)
                self.store_connected = False
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 2.0)

    async def _commit(self) -> None:
        """One atomic store commit of the state and staged messages; then ack and publish."""
        async with self._commit_lock:
            for hook in self.before_ack:  # what must be durable before a message is acked
                hook()
            if self.store is None:
                self._release(list(zip([None] * len(self._staged), self._staged, strict=True)))
                self._staged.clear()
                acks = list(self._held_acks)
                del self._held_acks[: len(acks)]
                self._uncommitted.clear()
                self.suspects.cleared(self._suspects_cleared)
                self._suspects_cleared.clear()
                self._send_acks(acks)
                self._resolve_submitted(len(self._submitted_processed))
                return
            if not (self._staged or self._staged_alerts or self._held_acks or self.engine.state_changed):
                return
            # what this commit covers is fixed here: batches processed while it is on its way
            # (group commit), and operator actions meanwhile, belong to the next one
            messages, staged_alerts = list(self._staged), dict(self._staged_alerts)
            acks = list(self._held_acks)
            uncommitted = len(self._uncommitted)
            cleared = list(self._suspects_cleared)
            submitted = len(self._submitted_processed)
            started = time.perf_counter()
            delta = self.engine.state_delta()
            try:
                ids = await self.store.commit(delta, messages, list(staged_alerts.values()))
            except BaseException:
                self.engine.state_not_stored(delta)
                raise
            self.commits += 1
            self.committed_parts += len(delta.parts)
            self.committed_bytes += sum(len(p) for p in delta.parts.values() if p is not None)
            self.commit_seconds += time.perf_counter() - started
            if not self.store_connected:
                log.warning("state store reachable again")
            self.store_connected = True
            del self._staged[: len(messages)]
            del self._held_acks[: len(acks)]
            del self._uncommitted[:uncommitted]
            for alert_id, alert in staged_alerts.items():
                if self._staged_alerts.get(alert_id) is alert:
                    del self._staged_alerts[alert_id]
            self._release(list(zip(ids, messages, strict=True)))
            self._send_acks(acks)
            self._resolve_submitted(submitted)
            if cleared:
                del self._suspects_cleared[: len(cleared)]
                self.suspects.cleared(cleared)
                await self.store.clear_suspects(cleared)

    def _resolve_submitted(self, count: int) -> None:
        """The first ``count`` submitted messages are committed: their callers may go on."""
        for waiter in self._submitted_processed[:count]:
            if not waiter.done():
                waiter.set_result(None)
        del self._submitted_processed[:count]

    def _fail_submitted(self, reason: str) -> None:
        """Stopping: callers of ``submit`` whose message was not committed hear that it was not."""
        for waiter in [*self._submitted.values(), *self._submitted_processed]:
            if not waiter.done():
                waiter.set_exception(ServiceFailed(reason))
        self._submitted.clear()
        self._submitted_processed.clear()

    def _send_acks(self, acks: list[Ack]) -> None:
        client = self._client_ref
        if client is None:
            return
        # an ack for a message of an earlier connection would hit a reused mid: drop it, the
        # broker redelivers that message and dedup skips it
        current = [(mid, qos) for generation, mid, qos in acks if generation == self._generation]
        # QoS 1 (every device message): one write for all; QoS 2 through paho's handshake
        client.ack_many([mid for mid, qos in current if qos == 1])
        for mid, qos in current:
            if qos == 2:
                client._client.ack(mid, qos)  # private: aiomqtt does not expose manual ack

    def _release(self, entries: list[tuple[int | None, Outgoing]]) -> None:
        if entries:
            self.outbox.extend(entries)
            self.outbox_ready.set()

    # --- helpers --------------------------------------------------------------------------
    def _ack_message(self, payload: bytes, arrival: float) -> None:
        """An operator action over MQTT (``em/ack``): parsed within limits, else dead-lettered."""
        command: AckCommand | None = None
        try:
            command = parse_ack(payload)
            effects = self.engine.act(
                command.alert_id, command.action, command.by, command.note, self.clock(),
                outcome=command.outcome, target=command.target,
            )
        except (InvalidAck, AlertActionError) as exc:
            reason = exc.reason if isinstance(exc, InvalidAck) else "bad_ack"
            self.engine.stats.rejected[reason] += 1
            self._dead_letter(reason, str(exc)[:500], f"{self.config.topic_prefix}/ack", payload[:4096], arrival)
            return
        self._emit(effects)

    def _dead_letter(self, reason: str, detail: str, topic: str, payload: bytes, arrival: float) -> None:
        """A message the service itself refused (not the decoder), staged like every dead letter."""
        self._stage([deadletter(self.config.topic_prefix, {
            "reason": reason, "detail": detail, "topic": topic,
            "payload": payload.decode("utf-8", "replace"), "arrival": format_time(arrival),
        })])

    def _emit(self, effects: Effects) -> None:
        if not effects.messages and not effects.changes:
            return
        self._stage(effects.messages)  # without a store, _stage hands them to the outbox at once
        if self.store is not None:  # changed alerts are archived with the next commit
            for change in effects.changes:
                self._staged_alerts[change.alert.alert_id] = change.alert
        now = self.clock()
        for listener in self.listeners:
            try:
                listener(effects, now)
            except Exception:  # a broken listener must never stop the engine
                log.exception("effects listener failed")

    def _stage(self, messages: list[Outgoing]) -> None:
        self._staged.extend(messages)
        if self.store is None:
            self._release([(None, m) for m in self._staged])
            self._staged.clear()

    def _handle(self, topic: str, payload: bytes, arrival: float) -> None:
        """One device message through the engine; an engine bug dead-letters it, never stops the loop."""
        try:
            effects = self.engine.handle(topic, payload, arrival)
        except Exception as exc:  # the loop must survive our own bugs too
            log.exception("engine failed on a message from %s", topic)
            self.engine.stats.rejected["internal_error"] += 1
            self._dead_letter("internal_error", f"{type(exc).__name__}: {exc}", topic, payload, arrival)
            return
        self._emit(effects)

    async def _drain_inbox(self) -> None:
        """Process what is still waiting (clean stop); suspects are left for the broker to redeliver."""
        if self.suspects:
            return
        ack_topic = f"{self.config.topic_prefix}/ack"
        while self.inbox:
            self._process(self.inbox.get_nowait(), ack_topic)

    async def _final_publish(self, publishing: asyncio.Task[None]) -> None:
        """Give the publisher a moment to flush the outbox, then close its connection."""
        deadline = time.monotonic() + 5.0
        while (self.outbox or self._unconfirmed) and self.publishing and time.monotonic() < deadline:
            self.outbox_ready.set()
            await asyncio.sleep(0.02)
        await self._close(publishing)

    @staticmethod
    async def _close(connection: asyncio.Task[None]) -> None:
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection

    async def _leave_shared_group(self, client: aiomqtt.Client) -> None:
        """Unsubscribe shared topics before a clean stop so the broker routes to the other workers.

        mosquitto keeps routing shared-subscription messages to a disconnected worker whose
        session persists (upstream bug #2662); unsubscribing first strands nothing.
        """
        if not self.config.shared_group or self.connected_protocol != "5":
            return
        with contextlib.suppress(aiomqtt.MqttError):
            for topic in self._device_topics():
                await client.unsubscribe(topic)

    def _v5_refused(self, exc: aiomqtt.MqttError, tried: aiomqtt.ProtocolVersion) -> bool:
        """Whether the broker refused an MQTT v5 attempt in auto mode: both connections then use 3.1.1."""
        if tried != aiomqtt.ProtocolVersion.V5 or self.protocol == "5" or "protocol" not in str(exc).lower():
            return False
        if self.protocol == "auto":  # the other connection may have found out first
            log.warning("broker refused MQTT v5 (%s); using 3.1.1", exc)
            self.protocol = "3.1.1"
        return True

    def _protocol_version(self) -> aiomqtt.ProtocolVersion:
        return aiomqtt.ProtocolVersion.V311 if self.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5

    def _connect_options(self, *, publishing: bool = False) -> dict[str, Any]:
        """Where and how to connect: the same broker and TLS for both connections, each its login.

        A broker that binds every login to its own client id (the generated mosquitto config:
        ``use_username_as_clientid``, so no device can knock another client off by taking its
        id) needs a login per connection: the publishing one uses ``mqtt_publish_username``,
        by default ``<mqtt_username>-pub``, with its own password or the same one.
        """
        cfg = self.config
        url = urlparse(cfg.broker)
        tls = None
        if url.scheme == "mqtts":
            tls = ssl.create_default_context(cafile=cfg.mqtt_ca)
        username, password = cfg.mqtt_username, cfg.mqtt_password
        if publishing and username:
            username = cfg.mqtt_publish_username or f"{username}-pub"
            password = cfg.mqtt_publish_password or password
        return {
            "hostname": url.hostname or "127.0.0.1",
            "port": url.port or (8883 if url.scheme == "mqtts" else 1883),
            "username": username,
            "password": password,
            "tls_context": tls,
            "keepalive": 15,
        }

    def _broker_address(self) -> str:
        """host:port of the broker, for log lines (never the URL: it may carry credentials)."""
        url = urlparse(self.config.broker)
        return f"{url.scheme}://{url.hostname}:{url.port or ''}"

    def _publish_client(self, version: aiomqtt.ProtocolVersion) -> IngestClient:
        """A clean session that subscribes to nothing: the durable outbox republishes what it lost.

        An ``IngestClient`` for its reading (and ``TCP_NODELAY``): aiomqtt's own reads one
        packet per socket wake-up, so under a device flood, where a loop turn is a micro-batch,
        a window of PUBACKs took a turn each.  Most of the delay the ingest benchmark showed
        (alerts p50 1.7 s late at 80 % of the raw rate) was Nagle and delayed ACKs, though: the
        broker needs ``set_tcp_nodelay`` (deploy/broker/mosquitto.conf has it).
        """
        client = IngestClient(
            identifier=f"{self.config.client_id}-pub", protocol=version, sink=self._stray,
            **self._connect_options(publishing=True),
        )
        client.pending_calls_threshold = 4 * PUBLISH_WINDOW  # a full window is not "concerning"
        return client

    def _stray(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        """A message on the publishing connection, which subscribes to nothing: not ours to take."""
        log.warning("ignored a message on %s delivered to the publishing connection", topic)

    def _client(self, version: aiomqtt.ProtocolVersion) -> IngestClient:
        self.connected_protocol = "3.1.1" if version == aiomqtt.ProtocolVersion.V311 else "5"
        kwargs: dict[str, Any] = {}
        if version == aiomqtt.ProtocolVersion.V5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = RECEIVE_MAXIMUM
            kwargs["properties"] = props
            if self.persistent_session:
                props.SessionExpiryInterval = 3600
                kwargs["clean_start"] = False
        else:
            kwargs["clean_session"] = not self.persistent_session
        client = IngestClient(
            identifier=self.config.client_id,
            protocol=version,
            sink=self._receive,
            sink_many=self._receive_many,
            **self._connect_options(),
            **kwargs,
        )
        # private (aiomqtt does not expose it): ack only once processed, with a store only once
        # committed; this is also what bounds how much the broker sends ahead
        client._client.manual_ack_set(True)
        return client

    def _device_topics(self) -> list[str]:
        prefix = self.config.topic_prefix
        topics = [f"{prefix}/dev/+/fix", f"{prefix}/dev/+/event", "owntracks/+/+"]
        group = self.config.shared_group
        if group and self.connected_protocol == "5":
            topics = [f"$share/{group}/{t}" for t in topics]
        return topics

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        topics = [*self._device_topics(), f"{self.config.topic_prefix}/ack"]
        for topic in topics:
            await client.subscribe(topic, qos=1)
