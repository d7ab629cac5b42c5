"""The asyncio service: the only module that owns the event loop and the MQTT client.

Three tasks around the pure ``Engine``:

* ``_connection``: connects (MQTT v5, falling back to 3.1.1 for brokers that
  refuse it), subscribes, reads messages into a **bounded** inbox (a full
  inbox makes the reader wait: explicit back-pressure, never a silent drop) and
  drains the outbox while connected; reconnects with backoff on any MQTT error.
* ``_processor``: takes micro-batches from the inbox through the engine and
  queues what it produces in the outbox.
* ``_ticker``: drives timers (reorder release, deadlines, silence, expiry).

The outbox survives disconnects, so an alert raised while the broker is down
is published when it comes back instead of being lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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

from engine.alerts import AlertActionError
from engine.config import ServiceConfig
from engine.messages import Outgoing, deadletter
from engine.pipeline import Effects, Engine
from engine.timeutil import format_time

log = logging.getLogger(__name__)

Listener = Callable[[Effects, float], None]
BATCH = 512
TICK_S = 0.2


class Service:
    """Runs an ``Engine`` against an MQTT broker until ``stop`` is set."""

    def __init__(
        self,
        engine: Engine,
        config: ServiceConfig,
        *,
        protocol: str = "auto",
        persistent_session: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.config = config
        self.protocol = protocol
        self.persistent_session = persistent_session
        self.clock = clock
        self.inbox: asyncio.Queue[tuple[float, str, bytes]] = asyncio.Queue(config.queue_size)
        self.outbox: deque[Outgoing] = deque()
        self.outbox_ready = asyncio.Event()
        self.listeners: list[Listener] = []
        self.connected = False
        self.connected_protocol: str | None = None
        self.published = 0
        self.reconnects = 0
        self.last_processed = 0.0

    # --- public ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set; then drain buffered fixes and publish what they raise."""
        tasks = [
            asyncio.create_task(self._connection(stop), name="mqtt"),
            asyncio.create_task(self._processor(stop), name="processor"),
            asyncio.create_task(self._ticker(stop), name="ticker"),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks[1:]:
                task.cancel()
            for task in tasks[1:]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._drain_inbox()
            self._emit(self.engine.flush(self.clock()))
            await self._final_publish(tasks[0])

    def act(self, alert_id: str, action: str, by: str, note: str) -> Effects:
        """An operator action from the HTTP API; published like every other change."""
        effects = self.engine.act(alert_id, action, by, note, self.clock())
        self._emit(effects)
        return effects

    def apply(self, effects: Effects) -> None:
        """Publish and fan out effects produced outside the service loop (e.g. order changes)."""
        self._emit(effects)

    # --- tasks ----------------------------------------------------------------------------
    async def _connection(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            try:
                async with self._client() as client:
                    self.connected = True
                    backoff = 0.2
                    await self._subscribe(client)
                    log.info("connected to %s (MQTT %s)", self.config.broker, self.connected_protocol)
                    publisher = asyncio.create_task(self._publisher(client))
                    try:
                        await self._read(client, stop)
                    finally:
                        publisher.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await publisher
            except aiomqtt.MqttError as exc:
                if self.protocol == "auto" and "protocol" in str(exc).lower() and self.connected_protocol == "5":
                    log.warning("broker refused MQTT v5 (%s); using 3.1.1", exc)
                    self.protocol = "3.1.1"
                    continue
                log.warning("MQTT connection lost or refused: %s; retrying in %.1f s", exc, backoff)
            finally:
                if self.connected:
                    self.reconnects += 1
                self.connected = False
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 10.0)

    async def _read(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        stopper = asyncio.ensure_future(stop.wait())
        nxt: asyncio.Future[aiomqtt.Message] | None = None
        try:
            it = client.messages.__aiter__()
            while True:
                nxt = asyncio.ensure_future(it.__anext__())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    return
                message = nxt.result()
                nxt = None
                payload = message.payload
                raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                await self.inbox.put((self.clock(), message.topic.value, bytes(raw)))
        finally:
            stopper.cancel()
            if nxt is not None:
                nxt.cancel()
                # the read may fail as the connection closes: retrieve it so nothing is logged as lost
                nxt.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _publisher(self, client: aiomqtt.Client) -> None:
        while True:
            while self.outbox:
                msg = self.outbox[0]
                await client.publish(msg.topic, json.dumps(msg.payload, separators=(",", ":")), qos=1)
                self.outbox.popleft()
                self.published += 1
            self.outbox_ready.clear()
            await self.outbox_ready.wait()

    async def _processor(self, stop: asyncio.Event) -> None:
        ack_topic = f"{self.config.topic_prefix}/ack"
        while True:
            first = await self.inbox.get()
            batch = [first]
            while len(batch) < BATCH and not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            for arrival, topic, payload in batch:
                if topic == ack_topic:
                    self._ack(payload)
                else:
                    self._emit(self.engine.handle(topic, payload, arrival))
                self.last_processed = arrival
            await asyncio.sleep(0)

    async def _ticker(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._emit(self.engine.tick(self.clock()))
            await asyncio.sleep(TICK_S)

    # --- helpers --------------------------------------------------------------------------
    def _ack(self, payload: bytes) -> None:
        try:
            doc = json.loads(payload)
            effects = self.engine.act(
                str(doc["alert_id"]), str(doc["action"]), str(doc.get("by", "")),
                str(doc.get("note", "")), self.clock(),
            )
        except (ValueError, KeyError, TypeError, AlertActionError) as exc:
            self._emit_messages([deadletter(self.config.topic_prefix, {
                "reason": "bad_ack", "detail": str(exc), "topic": f"{self.config.topic_prefix}/ack",
                "payload": payload.decode("utf-8", "replace"), "arrival": format_time(self.clock()),
            })])
            return
        self._emit(effects)

    def _emit(self, effects: Effects) -> None:
        if not effects.messages and not effects.changes:
            return
        self._emit_messages(effects.messages)
        now = self.clock()
        for listener in self.listeners:
            try:
                listener(effects, now)
            except Exception:  # a broken listener must never stop the engine
                log.exception("effects listener failed")

    def _emit_messages(self, messages: list[Outgoing]) -> None:
        if messages:
            self.outbox.extend(messages)
            self.outbox_ready.set()

    def _drain_inbox(self) -> None:
        while not self.inbox.empty():
            arrival, topic, payload = self.inbox.get_nowait()
            self._emit(self.engine.handle(topic, payload, arrival))

    async def _final_publish(self, connection: asyncio.Task[None]) -> None:
        """Give the publisher a moment to flush the outbox, then close the connection."""
        deadline = time.monotonic() + 5.0
        while self.outbox and self.connected and time.monotonic() < deadline:
            self.outbox_ready.set()
            await asyncio.sleep(0.02)
        connection.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await connection

    def _client(self) -> aiomqtt.Client:
        url = urlparse(self.config.broker)
        version = aiomqtt.ProtocolVersion.V311 if self.protocol == "3.1.1" else aiomqtt.ProtocolVersion.V5
        self.connected_protocol = "3.1.1" if version == aiomqtt.ProtocolVersion.V311 else "5"
        kwargs: dict[str, Any] = {}
        if version == aiomqtt.ProtocolVersion.V5:
            if self.persistent_session:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = 3600
                kwargs.update(clean_start=False, properties=props)
        else:
            kwargs["clean_session"] = not self.persistent_session
        tls = None
        if url.scheme == "mqtts":
            tls = ssl.create_default_context(cafile=self.config.mqtt_ca)
        return aiomqtt.Client(
            url.hostname or "127.0.0.1",
            url.port or (8883 if url.scheme == "mqtts" else 1883),
            identifier=self.config.client_id,
            username=self.config.mqtt_username,
            password=self.config.mqtt_password,
            protocol=version,
            tls_context=tls,
            keepalive=15,
            **kwargs,
        )

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        prefix = self.config.topic_prefix
        device_topics = [f"{prefix}/dev/+/fix", f"{prefix}/dev/+/event", "owntracks/+/+"]
        group = self.config.shared_group
        if group and self.connected_protocol == "5":
            device_topics = [f"$share/{group}/{t}" for t in device_topics]
        for topic in [*device_topics, f"{prefix}/ack"]:
            await client.subscribe(topic, qos=1)
