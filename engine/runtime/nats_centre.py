"""Feeds a worker's centre-wide view (``engine.runtime.centre_view``) from the NATS cluster.

Two ordered (ephemeral, flow-controlled, self-healing) consumers on ``EM_OUT``:

* ``em.alerts.centre`` from the stream's start: every alert change any worker published, so the
  view holds the latest version of every alert in the stream's retention (7 days), whoever owns
  it.  Once the consumer has nothing pending the view is ``caught_up``.  The open alerts
  archived in Redis are added once at start, for those whose last change left the retention.
* ``em.deadletter`` from now on: an operator action the owner (or the intake) refused comes back
  as a dead letter carrying the action's payload, which answers the HTTP request that sent it.

An action is sent as an ``em.ack`` message (the same JSON as contract §1 ``em/ack``), stored in
``EM_DEV`` and routed by the intake to the alert's partition like one from MQTT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from engine.runtime.centre_view import CentreView
from engine.runtime.nats_jetstream import OUT_STREAM, NatsSettings, follow_until, topic_to_subject
from engine.runtime.store import StoreUnavailable
from engine.runtime.store_redis import RedisStore

log = logging.getLogger(__name__)


class CentreFeed:
    """Runs the two subscriptions into ``view`` and gives it a ``send`` for actions."""

    def __init__(self, js: JetStreamContext, settings: NatsSettings, view: CentreView,
                 archive: RedisStore | None = None) -> None:
        self.js = js
        self.view = view
        self.archive = archive
        self.seeded = False
        self.ack_topic = f"{settings.prefix}/ack"
        self.ack_subject = topic_to_subject(self.ack_topic)
        self.centre_subject = topic_to_subject(f"{settings.prefix}/alerts/centre")
        self.deadletter_subject = topic_to_subject(f"{settings.prefix}/deadletter")

    async def send(self, payload: bytes) -> None:
        """Publish one operator action; returns once JetStream stored it."""
        await self.js.publish(self.ack_subject, payload)

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``; a failure of the feed is retried, never a reason to stop evaluating."""
        await follow_until(stop, self._follow, "centre view feed")

    async def _follow(self, stop: asyncio.Event) -> None:
        subs = []
        try:
            subs.append(await self.js.subscribe(self.deadletter_subject, cb=self._dead_letter, ordered_consumer=True,
                                                deliver_policy=DeliverPolicy.NEW, stream=OUT_STREAM))
            # from the start again after a restart: repeats and older versions are ignored
            subs.append(await self.js.subscribe(self.centre_subject, cb=self._change, ordered_consumer=True,
                                                deliver_policy=DeliverPolicy.ALL, stream=OUT_STREAM))
            self.view.send = self.send
            await self._empty_stream()
            if not self.seeded:
                await self._seed()
            await stop.wait()
        finally:
            self.view.send = None
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _seed(self) -> None:
        """Add the open alerts archived in Redis: one whose last change is older than the
        stream's retention (7 days) is not in the stream any more, yet still needs the centre."""
        if self.archive is None:
            return
        try:
            records = await self.archive.open_alerts()
        except StoreUnavailable as exc:
            log.warning("centre view: open alerts not read from the store (%s); the stream only", exc)
            return
        self.seeded = True
        log.info("centre view: %d open alerts taken from the store", self.view.seed(records))

    async def _empty_stream(self) -> None:
        """An empty stream has no message to say so: then the view is complete at once."""
        info = await self.js.stream_info(OUT_STREAM, subjects_filter=self.centre_subject)
        if not (info.state.subjects or {}).get(self.centre_subject):
            self.view.caught_up = True

    async def _change(self, msg: Msg) -> None:
        doc = _json(msg)
        if doc is not None:
            self.view.apply(doc)
        with contextlib.suppress(Exception):
            if not self.view.caught_up and msg.metadata.num_pending == 0:  # metadata: parsed
                self.view.caught_up = True
                log.info("centre view caught up: %d alerts", len(self.view.alerts))

    async def _dead_letter(self, msg: Msg) -> None:
        doc = _json(msg)
        if doc is not None:
            self.view.refused(doc, self.ack_topic)


def _json(msg: Msg) -> dict[str, Any] | None:
    try:
        doc = json.loads(msg.data)
    except ValueError:
        log.warning("centre view: a message on %s is not JSON", msg.subject)
        return None
    return doc if isinstance(doc, dict) else None
