"""The asyncio service: the only module that owns the event loop and the device connection.

Tasks around the pure ``Engine``, each under ``engine.runtime.supervise.Supervisor``:

* ``_connection``: connects (``engine.runtime.broker_link``: MQTT v5, else 3.1.1) and
  subscribes; reconnects with backoff.  Received messages go straight from the client's
  callback into a **bounded** inbox (``engine.runtime.intake``): QoS 1 messages are
  acknowledged only once committed, so the broker's in-flight window limits them, and a full
  inbox stops the socket being read (back-pressure, never a silent drop).
* ``mqtt-publish``: the outbox's own connection (``engine.runtime.outbox``).
* ``_processor``: micro-batches from the inbox through the engine; ``_committer_loop`` commits
  in the background (group commit: while one commit is on its way to the store, the next
  batches are processed and go into the next commit).
* ``_ticker``: timers (reorder release, deadlines, silence, expiry); ``_store_watch``: whether
  the store answers, so readiness knows of an outage even when no commit is due.

A task that dies is logged with its cause and restarted where that is safe (connections,
timers); otherwise (processing, committing) the service stops without acknowledging what it had
not committed, records those messages as suspects (``engine.runtime.poison``) and ``run``
raises ``ServiceFailed``, so the process exits non-zero and is restarted.  ``readiness`` (the
``/readyz`` answer) reports all of it.

With a state store (``emguard serve --redis``) ingest is at-least-once and alerts
effectively-once: a message is acknowledged only after the batch's state and outgoing messages
are committed atomically (a transactional outbox); outbox entries leave the store once the
broker acknowledged them.  After a crash the engine restores the state, republishes the outbox,
and the broker redelivers what was never acknowledged, which the restored dedup memory skips.
While the store is unreachable acks are held and the broker stops at its in-flight limit.
Without a store (demo) a message is acknowledged once processed, and the outbox lives in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt

from devices.timeutil import format_time
from engine.core.alert_records import Alert, AlertActionError
from engine.core.config import ServiceConfig
from engine.core.effects import Effects
from engine.core.messages import Outgoing, deadletter
from engine.core.pipeline import Engine
from engine.runtime.acks import AckCommand, InvalidAck, parse_ack
from engine.runtime.broker_link import BrokerLink
from engine.runtime.intake import Inbox, IngestClient
from engine.runtime.outbox import MQTT_RETRY_FIRST_S, MQTT_RETRY_MAX_S, Outbox
from engine.runtime.poison import POISON_AFTER, Suspects, message_key
from engine.runtime.readiness import readiness_report
from engine.runtime.store import StateStore, StoreUnavailable
from engine.runtime.submissions import Submissions
from engine.runtime.supervise import ServiceFailed, Supervisor

log = logging.getLogger(__name__)

Listener = Callable[[Effects, float], None]
Ack = tuple[int, int, int]  # (connection generation, mid, qos)
BATCH = 64  # messages per micro-batch: alerts of a batch are published when it ends
COMMIT_GATHER_S = 0.005  # longest a processed message waits for its commit to start
GATHER_ACKS = 64  # ... unless this many are unacknowledged already (a 3.1.1 broker may allow only 100)
MAX_UNCOMMITTED = 2048  # processed but not yet committed messages before the processor waits
TICK_S = 0.2
STORE_PING_S = 2.0  # how often the store is asked whether it answers (readiness)


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
        self.link = BrokerLink(config, protocol=protocol, persistent_session=persistent_session)
        self.store = store
        self.clock = clock
        self.inbox: Inbox[tuple[float, str, bytes, Ack | None]] = Inbox(config.queue_size)
        self.out = Outbox(self.link, store, self._store_down)
        self.listeners: list[Listener] = []
        self.before_ack: list[Callable[[], None]] = []  # e.g. flush the evidence log
        self.connected = False  # subscribed: what devices publish from now on reaches us
        self.store_connected = True  # in-memory state is always there; a store is checked at start
        self.reconnects = 0
        self.last_processed = 0.0
        self._client_ref: IngestClient | None = None
        self._generation = 0
        self._staged: list[Outgoing] = []
        self._staged_alerts: dict[str, Alert] = {}
        self._held_acks: list[Ack] = []
        self._commit_lock = asyncio.Lock()
        self._commit_wanted = asyncio.Event()
        self._commit_landed = asyncio.Event()
        self.commits = 0  # durable commits: how many, case parts and bytes of state, seconds spent
        self.committed_parts = 0
        self.committed_bytes = 0
        self.commit_seconds = 0.0
        self.supervisor = Supervisor(asyncio.Event())
        self.suspects = Suspects()
        self._uncommitted: list[tuple[str, bytes]] = []  # messages whose acks are held, in order
        self._suspects_cleared: list[str] = []  # handled suspects to forget with the next commit
        self.poisoned = 0
        self.unreadable_state: list[str] = []  # stored case parts that could not be restored
        self.submissions = Submissions()

    # --- public ---------------------------------------------------------------------------
    @property
    def uncommitted(self) -> int:
        """Messages processed but not yet acknowledged (their commit has not landed)."""
        return len(self._held_acks)

    @property
    def outbox(self) -> deque[tuple[int | None, Outgoing]]:
        """Messages waiting to be published (``engine.runtime.outbox``), in order."""
        return self.out.entries

    @property
    def publishing(self) -> bool:
        """Whether the outbox's own connection is up."""
        return self.out.connected

    @property
    def published(self) -> int:
        """Messages the broker acknowledged since start."""
        return self.out.published

    @property
    def oversized(self) -> int:
        """Messages published shortened because they exceeded the broker's packet limit."""
        return self.out.oversized

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then drain, commit and publish what is left.

        Raises ``ServiceFailed`` when a supervised task failed beyond repair: nothing that was
        not committed is acknowledged then, and the caller should exit non-zero.
        """
        supervisor = self.supervisor = Supervisor(stop)
        await self._recover(stop)
        supervisor.start("mqtt", lambda: self._connection(stop), restartable=True)
        publishing = supervisor.start("mqtt-publish", self.out.run, restartable=True)
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
            self.submissions.fail(supervisor.fatal or "the service stopped before committing it")
            await self.out.flush()
            await self._close(publishing)
            await self._close(supervisor.tasks["mqtt"])
            if self.store is not None:
                await self.store.close()
        if supervisor.fatal is not None:
            raise ServiceFailed(supervisor.fatal)

    def readiness(self) -> dict[str, Any]:
        """Whether the service does its job now, and each reason it may not (``/readyz``)."""
        return readiness_report(self)

    async def submit(self, topic: str, payload: bytes) -> None:
        """A device message that came another way than MQTT (e.g. the victim app over HTTPS).

        It joins the inbox like a message from the broker, so it is decoded, evaluated and
        dead-lettered exactly alike; returns once it is processed and committed (with a store:
        durable), so the caller may then tell the device it can forget the message.
        """
        if self.supervisor.stopping:
            raise ServiceFailed("the service is stopping")
        item = (self.clock(), topic, payload, None)
        done = self.submissions.add(item)
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
        self.out.entries.extend(pending)
        if pending:
            log.info("republishing %d unconfirmed outbox messages", len(pending))
            self.out.ready.set()

    # --- tasks ----------------------------------------------------------------------------
    async def _connection(self, stop: asyncio.Event) -> None:
        backoff = MQTT_RETRY_FIRST_S
        while not stop.is_set():
            tried = self.link.version()
            try:
                async with self.link.receiving_client(tried, self._receive, self._receive_many) as client:
                    self._generation += 1
                    self._client_ref = client
                    backoff = MQTT_RETRY_FIRST_S
                    await self.link.subscribe(client)
                    # only now: /readyz (and the tests) rely on it meaning "messages published
                    # from here on reach us"; a broker drops what arrives before the SUBACK
                    self.connected = True
                    log.info("connected to %s (MQTT %s)", self.link.address(), self.link.connected_protocol)
                    await self._read(client, stop)
                    if stop.is_set():
                        await self.link.leave_shared_group(client)
            except aiomqtt.MqttError as exc:
                if self.link.v5_refused(exc, tried):
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
                self._commit_landed.clear()
                await self._commit_landed.wait()
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
        self.submissions.processed(item)
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
                self.out.ready.set()  # retry confirmations held while the store was down
            elif not up and self.store_connected:
                log.error("state store does not answer")
            self.store_connected = up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STORE_PING_S)

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
                self.out.release(list(zip([None] * len(self._staged), self._staged, strict=True)))
                self._staged.clear()
                acks = list(self._held_acks)
                del self._held_acks[: len(acks)]
                self._uncommitted.clear()
                self.suspects.cleared(self._suspects_cleared)
                self._suspects_cleared.clear()
                self._send_acks(acks)
                self.submissions.committed(self.submissions.processed_count)
                return
            if not (self._staged or self._staged_alerts or self._held_acks or self.engine.state_changed):
                return
            # what this commit covers is fixed here: batches processed while it is on its way
            # (group commit), and operator actions meanwhile, belong to the next one
            messages, staged_alerts = list(self._staged), dict(self._staged_alerts)
            acks = list(self._held_acks)
            uncommitted = len(self._uncommitted)
            cleared = list(self._suspects_cleared)
            submitted = self.submissions.processed_count
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
            self.out.release(list(zip(ids, messages, strict=True)))
            self._send_acks(acks)
            self.submissions.committed(submitted)
            if cleared:
                del self._suspects_cleared[: len(cleared)]
                self.suspects.cleared(cleared)
                await self.store.clear_suspects(cleared)

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

    # --- helpers --------------------------------------------------------------------------
    def _store_down(self) -> None:
        self.store_connected = False

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
            self.out.release([(None, m) for m in self._staged])
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

    @staticmethod
    async def _close(connection: asyncio.Task[None]) -> None:
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection
