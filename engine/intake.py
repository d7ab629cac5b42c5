"""Receiving device messages: an MQTT client that hands each PUBLISH straight to the service.

aiomqtt's message iterator costs ~100 us per QoS 1 message on this hardware under MQTT v5
(a ``Message`` copy, an ``asyncio.Queue`` put and a task plus ``asyncio.wait`` per message),
about as much as the whole engine spends deciding on a fix; paho's own decoding costs ~30 us.
``IngestClient`` keeps everything aiomqtt does for the connection (connect, subscribe,
publish, keepalive, disconnect detection) and replaces only the per-message path: paho's
``on_message`` appends to the service's ``Inbox``, and one socket wake-up reads every packet
that has arrived instead of one.

Back-pressure without dropping: every QoS 1 message is acknowledged only after it was
processed (and, with a store, committed), so the broker's in-flight window bounds what it
sends; if the inbox still reaches its capacity (QoS 0 traffic, a broker with a large window),
the client stops reading its socket until the inbox has drained to half: TCP flow control then
holds the messages at the broker.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt

Item = TypeVar("Item")

READS_PER_WAKEUP = 256  # packets read per socket wake-up before other tasks get a turn


class Inbox(deque[Item]):
    """Received, not yet processed messages; a waiter wakes when the first one arrives.

    A plain deque filled from a synchronous callback: the reader cannot ``await`` a full
    queue, so fullness is reported (``full``) and acted on by pausing the socket instead.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._nonempty = asyncio.Event()

    def put_nowait(self, item: Item) -> None:
        self.append(item)
        self._nonempty.set()

    def get_nowait(self) -> Item:
        item = self.popleft()
        if not self:
            self._nonempty.clear()
        return item

    def take(self, n: int) -> list[Item]:
        """Up to ``n`` oldest items."""
        batch = [self.popleft() for _ in range(min(n, len(self)))]
        if not self:
            self._nonempty.clear()
        return batch

    async def wait(self) -> None:
        """Return once at least one item is waiting."""
        while not self:
            await self._nonempty.wait()

    def qsize(self) -> int:
        return len(self)

    def empty(self) -> bool:
        return not self

    @property
    def full(self) -> bool:
        return len(self) >= self.capacity

    @property
    def drained(self) -> bool:
        """Low enough to read the socket again (half the capacity: no flapping)."""
        return len(self) <= self.capacity // 2


Sink = Callable[[mqtt.MQTTMessage], None]


class IngestClient(aiomqtt.Client):
    """An ``aiomqtt.Client`` whose received messages go to ``sink`` rather than its iterator.

    ``client.messages`` then never yields; iterating it still raises ``MqttError`` when the
    connection is lost, which is how the service notices.  The overridden methods are
    aiomqtt's private callbacks (aiomqtt 2.x), pinned by ``tests/engine/test_intake.py``.
    """

    def __init__(self, *args: Any, sink: Sink, **kwargs: Any) -> None:
        self._sink = sink
        self._fileno = -1
        self._paused = False
        self.received = 0
        super().__init__(*args, **kwargs)

    # paho calls this for every PUBLISH (on the event loop: aiomqtt reads the socket there)
    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.received += 1
        self._sink(message)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # as aiomqtt's, with our reader, so that reading can be paused and resumed
        def create_misc_task() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._fileno = sock.fileno()
        self._paused = False
        self._loop.call_soon_threadsafe(self._loop.add_reader, self._fileno, self._read_ready)
        self._loop.call_soon_threadsafe(create_misc_task)

    def _read_ready(self) -> None:
        """Read every message that is there (up to a budget), not just one packet per wake-up.

        paho's ``loop_read`` reads one packet and says the same whether there was one or not;
        the count of messages handed to the sink tells.  Another packet type (a PUBACK for an
        alert we published) ends the round early: the socket stays readable and the next
        wake-up continues.
        """
        paho = self._client
        try:
            for _ in range(READS_PER_WAKEUP):
                if self._paused or paho._sock is None:
                    return
                seen = self.received
                paho.loop_read()
                pending = getattr(paho._sock, "pending", None)
                if self.received == seen and not (pending is not None and pending() > 0):
                    return
        except Exception as exc:
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def pause_reading(self) -> None:
        """Stop reading the socket (the broker's messages wait in TCP buffers and its queue)."""
        if not self._paused and self._fileno > -1:
            self._paused = True
            self._loop.remove_reader(self._fileno)

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            if self._client._sock is not None and self._fileno > -1:
                self._loop.add_reader(self._fileno, self._read_ready)
                self._loop.call_soon(self._read_ready)  # TLS may hold decrypted bytes already

    @property
    def paused(self) -> bool:
        return self._paused
