"""Receiving device messages: an MQTT client that hands each PUBLISH straight to the service.

aiomqtt's message iterator costs ~100 us per QoS 1 message on this hardware under MQTT v5
(a ``Message`` copy, an ``asyncio.Queue`` put and a task plus ``asyncio.wait`` per message),
about as much as the whole engine spends deciding on a fix.  paho's own path after that is
~35 us: three ``recv`` calls per packet, a v5 ``Properties`` object (a dict of ~40 names built
per message), an ``MQTTMessage`` with its own ``threading.Condition``, topic matching under
two locks.  ``IngestClient`` keeps everything aiomqtt and paho do for the connection
(connect, subscribe, PUBACKs, keepalive, disconnect detection) and replaces the per-message
paths:

* ``LeanPublishPaho`` reads the socket in 64 KiB chunks and takes every complete QoS 0/1
  PUBLISH of a chunk in one compiled loop (``engine.runtime.intake_frames``; the v5 properties are
  skipped: the engine uses none), handed to the sink as one list; paho reads the other
  packets (and a PUBLISH split across chunks) from the same buffer.  QoS 2 keeps paho's path.
* one socket wake-up reads every message that has arrived, not one packet.
* the outbox's publishes go out as a window of packets in one write, their PUBACKs heard
  without paho's message objects (``publish_many``).

Back-pressure without dropping: every QoS 1 message is acknowledged only after it was
processed (and, with a store, committed), so the broker's in-flight window bounds what it
sends; if the inbox still reaches its capacity (QoS 0 traffic, a broker with a large window),
the client stops reading its socket until the inbox has drained to half: TCP flow control then
holds the messages at the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from engine.runtime.intake_frames import NOT_UTF8, Publish, publish_fields, take_publishes

Item = TypeVar("Item")
log = logging.getLogger(__name__)

READS_PER_WAKEUP = 512  # messages (or other packets) read per wake-up before other tasks run


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

    def put_many(self, items: list[Item]) -> None:
        if items:
            self.extend(items)
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


Sink = Callable[[str, bytes, int, int], None]  # topic, payload, packet id (mid), QoS
SinkMany = Callable[[list[Publish]], None]  # the same for each message of one socket read
CHUNK = 65536


PUBACK_HEADER = 0x40
PUBLISH_QOS1_HEADER = 0x32  # PUBLISH, QoS 1, no DUP, no retain
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
AckCallback = Callable[[int, int], None]  # packet id, PUBACK reason code (0 = success)


def remaining_length(n: int) -> bytes:
    """MQTT's variable byte integer (the fixed header's remaining length)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class LeanPublishPaho(mqtt.Client):
    """paho's client with a lean QoS 0/1 PUBLISH path and buffered socket reads.

    Installed on the paho client aiomqtt made (``__class__`` swap: aiomqtt builds it itself);
    overrides two private methods of paho 2.x, ``_handle_publish`` and ``_sock_recv``, pinned
    by tests/integration/test_intake.py.  The caller sets ``ingest_sink``.
    """

    ingest_sink: Sink
    lean_acks: dict[int, AckCallback]  # packet id of a publish_qos1 -> called on its PUBACK
    _rbuf: bytes = b""
    _rpos: int = 0
    _rsock: Any = None

    def publish_qos1(self, items: Iterable[tuple[str, bytes]]) -> list[int]:
        """QoS 1 PUBLISH packets, in order, as one queued write; their packet ids.

        paho's ``publish`` builds a message object, a packet and a write of its own per
        message, and aiomqtt adds a future and a task: on the ingest benchmark's machine
        ~300 us per alert on the publishing connection, a third of the engine process's time
        outside the rules.  The caller registers the ids in ``lean_acks`` to hear the PUBACKs
        (``_handle_pubackcomp``).  No properties under MQTT v5 (property length 0).
        """
        v5 = self._protocol == mqtt.MQTTv5
        parts: list[bytes] = []
        mids: list[int] = []
        for topic, payload in items:
            mid = self._mid_generate()
            name = topic.encode("utf-8")
            length = 2 + len(name) + 2 + (1 if v5 else 0) + len(payload)
            parts.append(
                b"".join((
                    bytes((PUBLISH_QOS1_HEADER,)), remaining_length(length), _U16.pack(len(name)),
                    name, _U16.pack(mid), b"\x00" if v5 else b"", payload,
                ))
            )
            mids.append(mid)
        if parts:
            # qos 1 here tells paho's writer not to report the packet as published on write
            self._packet_queue(PUBLISH_QOS1_HEADER, b"".join(parts), 0, 1)
        return mids

    def _handle_pubackcomp(self, cmd: Any) -> MQTTErrorCode:
        if cmd == "PUBACK":
            packet = self._in_packet["packet"]
            mid = (packet[0] << 8) | packet[1]
            done = self.lean_acks.pop(mid, None)
            if done is not None:
                # MQTT v5: a reason code may follow (absent: 0, success)
                done(mid, packet[2] if len(packet) > 2 else 0)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACKs for received QoS 1 messages (manual acks) as one queued write.

        paho's ``ack`` queues each PUBACK as a packet of its own, written with a ``send`` of its
        own: with ``TCP_NODELAY`` a 4-byte segment per message, for the engine and the broker.
        The bytes are those ``ack`` would queue (fixed header ``0x40``, length 2, packet id),
        which MQTT 3.1.1 and 5 both accept (v5: reason code 0 may be left out).
        """
        packet = b"".join([_PUBACK.pack(PUBACK_HEADER, 2, mid) for mid in mids])
        if packet:
            self._packet_queue(PUBACK_HEADER, packet, 0, 0)

    def _handle_publish(self) -> MQTTErrorCode:
        """A PUBLISH paho read itself (split across reads, or QoS 2): the fields as
        ``take_publishes`` reads them (``engine.runtime.intake_frames.publish_fields``)."""
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        if qos > 1:
            return super()._handle_publish()  # exactly-once handshake: paho's own path
        packet = bytes(self._in_packet["packet"])  # paho's bytearray
        topic, payload, mid = publish_fields(packet, 0, len(packet), qos, self._protocol == mqtt.MQTTv5)
        self.ingest_sink(topic, payload, mid, qos)
        if qos and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def take_publishes(self) -> list[Publish] | None:
        """The complete QoS 0/1 PUBLISH packets at the front of the read buffer (read from the
        socket first when it is empty), in order; None when the socket has nothing now.

        An empty list means paho must read the next packet itself: paho is inside one, or the
        next is another kind or incomplete, or the connection was closed (paho's read sees that).
        With automatic acks (paho's default, not the service's) their PUBACKs are queued.
        """
        if self._in_packet["command"] != 0:
            return []
        if self._rsock is not self._sock or self._rpos >= len(self._rbuf):
            try:
                data = mqtt.Client._sock_recv(self, CHUNK)  # paho's TLS and error conversions
            except BlockingIOError:
                return None
            if not data:
                return []
            self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        out: list[Publish] = []
        self._rpos = take_publishes(self._rbuf, self._rpos, self._protocol == mqtt.MQTTv5, out)
        if out:
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()  # paho's keepalive reads this
            if not self._manual_ack:
                self.ack_many([mid for _, _, mid, qos in out if qos == 1])
        return out

    def _sock_recv(self, bufsize: int) -> bytes:
        # paho reads a packet as 1 + 1 + rest bytes, each a system call; serve them from a chunk
        if self._rpos >= len(self._rbuf) or self._rsock is not self._sock:
            data = super()._sock_recv(CHUNK)  # paho's TLS and error conversions apply
            if not data:
                return data  # closed
            self._rbuf, self._rpos, self._rsock = data, 0, self._sock
        start = self._rpos
        out = self._rbuf[start : start + bufsize]
        self._rpos = start + len(out)
        return out

    def buffered(self) -> bool:
        """Bytes read from the socket (or decrypted by TLS) that paho has not consumed yet."""
        if self._rsock is self._sock and self._rpos < len(self._rbuf):
            return True
        pending = getattr(self._sock, "pending", None)  # ssl.SSLSocket
        return pending is not None and pending() > 0


class IngestClient(aiomqtt.Client):
    """An ``aiomqtt.Client`` whose received messages go to ``sink`` rather than its iterator.

    ``client.messages`` then never yields; iterating it still raises ``MqttError`` when the
    connection is lost, which is how the service notices.  The overridden methods are
    aiomqtt's private callbacks (aiomqtt 2.x), pinned by tests/integration/test_intake.py.
    """

    def __init__(self, *args: Any, sink: Sink, sink_many: SinkMany | None = None, **kwargs: Any) -> None:
        self._sink = sink
        self._sink_many = sink_many
        self._held: list[Publish] = []  # read, not yet delivered: the sink paused reading
        self._fileno = -1
        self._paused = False
        self.received = 0
        super().__init__(*args, **kwargs)
        if type(self._client) is not mqtt.Client:
            raise TypeError(f"aiomqtt made a {type(self._client).__name__}, not a paho Client")
        self._client.__class__ = LeanPublishPaho
        self._paho: LeanPublishPaho = self._client  # type: ignore[assignment]
        self._paho.ingest_sink = self._deliver
        self._paho.lean_acks = {}

    def _deliver(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        # called from paho's packet handling, on the event loop (aiomqtt reads the socket there)
        self.received += 1
        self._sink(topic, payload, mid, qos)

    def _deliver_many(self, items: list[Publish]) -> None:
        """A socket read's messages: to ``sink_many`` at once, or to ``sink`` one by one until
        it pauses reading (the rest waits in ``_held`` for ``resume_reading``)."""
        if self._sink_many is not None:
            self.received += len(items)
            self._sink_many(items)
            return
        for i, (topic, payload, mid, qos) in enumerate(items):
            if self._paused:
                self._held = items[i:]
                return
            self._deliver(topic, payload, mid, qos)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """paho's callback: here only for QoS 2 messages (LeanPublishPaho takes QoS 0/1)."""
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = NOT_UTF8
        self._deliver(topic, bytes(message.payload), message.mid, message.qos)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        # as aiomqtt's, with our reader, so that reading can be paused and resumed
        def create_misc_task() -> None:
            self._misc_task = self._loop.create_task(self._misc_loop())

        self._fileno = sock.fileno()
        self._paused = False
        # small packets at once (PUBACKs of device messages, alert publishes): paho leaves Nagle
        # on, and with the broker's delayed ACKs a publish window then waited ~40 ms per round
        with contextlib.suppress(OSError):  # not a TCP socket (tests, proxies)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.call_soon_threadsafe(self._loop.add_reader, self._fileno, self._read_ready)
        self._loop.call_soon_threadsafe(create_misc_task)

    def _read_ready(self) -> None:
        """Read every message that is there (up to a budget), not just one packet per wake-up.

        The QoS 0/1 PUBLISH packets of each chunk read from the socket go to the sink at once
        (``LeanPublishPaho.take_publishes``); anything else paho reads, a packet at a time.
        paho's ``loop_read`` says the same whether there was a packet or not; the count of
        messages handed to the sink tells.  Another packet type (a PUBACK for an alert we
        published) ends the round early unless bytes wait in the read buffer, which the
        selector cannot see: those are always read, now or in a round scheduled next.
        """
        paho = self._paho
        try:
            budget = READS_PER_WAKEUP
            while budget > 0:
                if self._paused or paho._sock is None:
                    return
                got: list[Publish] | None
                if self._held:
                    got, self._held = self._held, []
                else:
                    got = paho.take_publishes()
                if got is None:
                    return  # nothing to read now
                if got:
                    budget -= len(got)
                    self._deliver_many(got)
                    continue
                budget -= 1
                seen = self.received
                paho.loop_read()
                if self.received == seen and not paho.buffered():
                    return
            if paho.buffered():
                self._loop.call_soon(self._read_ready)  # the budget is spent; let others run first
        except Exception as exc:  # as aiomqtt: a read error means the connection broke
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge received QoS 1 messages (manual acks) with one socket write."""
        self._paho.ack_many(mids)

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> list[bool]:
        """Publish at QoS 1, in order, in one socket write, and wait for every PUBACK.

        Returns, per item, whether the broker acknowledged it; all True unless the connection
        was lost or the client's ``timeout`` (as for ``publish``) passed first.  A
        PUBACK with a v5 failure reason code counts as acknowledged, as aiomqtt's ``publish``
        has it (the broker will not take the message however often it is sent), and is logged.
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        all_acked: asyncio.Future[None] = loop.create_future()
        acked = [False] * len(items)
        mids = self._paho.publish_qos1(items)
        index = {mid: i for i, mid in enumerate(mids)}
        left = len(mids)

        def on_ack(mid: int, reason: int) -> None:
            nonlocal left
            acked[index[mid]] = True
            left -= 1
            if reason >= 0x80:
                log.warning("broker refused a publish to %s (reason code 0x%02x)", items[index[mid]][0], reason)
            if left == 0 and not all_acked.done():
                all_acked.set_result(None)

        waiting = self._paho.lean_acks
        for mid in mids:
            waiting[mid] = on_ack
        limit = self.timeout
        try:
            await asyncio.wait(
                {all_acked, self._disconnected},
                timeout=None if limit == math.inf else limit,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for mid in mids:
                waiting.pop(mid, None)
        return acked

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
                self._loop.call_soon(self._read_ready)  # bytes may wait in the read buffer

    @property
    def paused(self) -> bool:
        return self._paused
