"""The outbox: messages on their way to the broker, removed from the store once acknowledged.

Its own connection (client id ``<client_id>-pub``) only publishes.  On the receiving
connection the PUBACK for an alert queued behind every device message the broker had already
written to us: a flood the engine could not keep up with held it there for over 10 s, aiomqtt
gave up and the service reconnected, and the outbox stalled meanwhile.  Entries come from the
service's commits (``release``) with their store ids; an entry leaves the store only after the
broker acknowledged it (``confirm_published``), so a crash republishes rather than loses it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt

from engine.core.messages import Outgoing
from engine.runtime.broker_link import PUBLISH_WINDOW, BrokerLink
from engine.runtime.intake import IngestClient
from engine.runtime.outbound import encode_bounded
from engine.runtime.store import StateStore, StoreUnavailable

log = logging.getLogger(__name__)

# reconnect backoff of both MQTT connections (receiving and publishing): the first wait, doubled
# after each failed attempt up to the last (one policy, so the two connections cannot drift apart)
MQTT_RETRY_FIRST_S = 0.2
MQTT_RETRY_MAX_S = 10.0


class Outbox:
    """What waits to be published, in order, and the connection that publishes it."""

    def __init__(self, link: BrokerLink, store: StateStore | None,
                 on_store_down: Callable[[], None]) -> None:
        self.link = link
        self.store = store
        self.on_store_down = on_store_down  # a confirmation failed: the service is not ready
        self.entries: deque[tuple[int | None, Outgoing]] = deque()  # (store id or None, message)
        self.ready = asyncio.Event()  # set when there is something to publish or confirm
        self.connected = False  # the publishing connection is up
        self.published = 0
        self.oversized = 0  # messages published shortened (engine.runtime.outbound)
        self.unconfirmed: list[int] = []  # acknowledged by the broker, not yet removed from the store

    async def run(self) -> None:
        """The outbox's connection: publishes only, so its PUBACKs never wait behind device traffic.

        Runs until cancelled (after the final publish at shutdown); reconnects with backoff.
        """
        backoff = MQTT_RETRY_FIRST_S
        while True:
            tried = self.link.version()
            try:
                async with self.link.publishing_client(tried) as client:
                    self.connected = True
                    backoff = MQTT_RETRY_FIRST_S
                    await self.publish_on(client)
            except aiomqtt.MqttError as exc:
                if self.link.v5_refused(exc, tried):
                    continue
                log.warning("MQTT publishing connection lost or refused: %s; retrying in %.1f s", exc, backoff)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MQTT_RETRY_MAX_S)

    async def publish_on(self, client: IngestClient) -> None:
        """Publish what waits, as it comes, until this connection is lost (then raise)."""
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
            while self.entries:
                window = self.window()
                acked = await client.publish_many([(m.topic, self.encode(m)) for _, m in window])
                for (outbox_id, _), ok in zip(window, acked, strict=True):
                    if not ok:
                        await self.confirm_published()
                        # the rest stays in the outbox for the next connection
                        raise aiomqtt.MqttError("publishing connection lost or timed out before a PUBACK")
                    self.entries.popleft()
                    self.published += 1
                    if outbox_id is not None:
                        self.unconfirmed.append(outbox_id)
                await self.confirm_published()
            await self.confirm_published()
            self.ready.clear()
            ready = asyncio.ensure_future(self.ready.wait())
            try:
                await asyncio.wait({ready, lost}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
            if lost.done():
                lost.result()  # the MqttError that ended the connection
                raise aiomqtt.MqttError("publishing connection lost")

    def encode(self, message: Outgoing) -> bytes:
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

    def window(self) -> list[tuple[int | None, Outgoing]]:
        """The next outbox entries to have in flight at once, in outbox order.

        Up to PUBLISH_WINDOW QoS 1 publishes share one PUBACK round trip; the client writes them
        in order, so the broker delivers them in order.  A crash between their PUBACKs and the
        outbox confirmation publishes the window again, so a window holds only what a repeat
        cannot harm: without a store, everything (there is nothing to replay).  Alert traffic
        with a durable outbox goes one message at a time: a crash repeats at most one change (an
        identical copy: same alert id and change_seq).  The NATS transport has no such limit:
        the stream drops a repeated message id.
        """
        window: list[tuple[int | None, Outgoing]] = []
        for entry in itertools.islice(self.entries, PUBLISH_WINDOW):
            outbox_id, _ = entry
            if outbox_id is not None:
                return window or [entry]
            window.append(entry)
        return window

    async def confirm_published(self) -> None:
        """Remove broker-acknowledged entries from the durable outbox (retried if the store is down)."""
        if self.store is None:
            return
        while self.unconfirmed:
            done = list(self.unconfirmed)
            try:
                await self.store.published(done)
            except StoreUnavailable:
                self.on_store_down()
                return
            del self.unconfirmed[: len(done)]

    def release(self, entries: list[tuple[int | None, Outgoing]]) -> None:
        if entries:
            self.entries.extend(entries)
            self.ready.set()

    async def flush(self, within_s: float = 5.0) -> None:
        """Give the publisher a moment to send what waits (at shutdown, before its connection closes)."""
        deadline = time.monotonic() + within_s
        while (self.entries or self.unconfirmed) and self.connected and time.monotonic() < deadline:
            self.ready.set()
            await asyncio.sleep(0.02)
